// TrainingRank: everything one rank trains with — the TP operators, the model, its data
// stream, the sync strategy and the loop — built from the training flags in one place, so
// that pszero-worker and `pszero-bench train` train exactly the same thing. Members point
// into each other (the model's context holds the TP operators); keep the object where it
// was built. Used by one thread.
#pragma once

#include <memory>

#include "common/kv_store.h"
#include "common/memory.h"
#include "common/status.h"
#include "kernels/cuda_resources.h"
#include "worker/collectives/communicator.h"
#include "worker/model/data.h"
#include "worker/model/model.h"
#include "worker/train/ps_sync.h"
#include "worker/train/sync_strategy.h"
#include "worker/train/train_flags.h"
#include "worker/train/trainer.h"

namespace pszero::train {

struct TrainingRank {
  kernels::CudaResources* cuda = nullptr;  // --device cuda: the caller's (outlives this)
  std::unique_ptr<model::TensorParallel> tp;
  kernels::KernelContext kernels;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::DataSource> data;
  std::unique_ptr<SyncStrategy> sync;  // last but the trainer: goes before the model
  PsSync* ps = nullptr;                // `sync` when --sync ps
  std::unique_ptr<Trainer> trainer;
};

// `tp_comm` may be null (T = 1). `dp_comm` is the data-parallel group of this TP rank
// (its members: the same TP rank of every replica), used only by the strategy from now on;
// null means one replica and no exchange (SingleReplicaSync). `tracker` must outlive the
// result. The rank reads data part dp_comm->rank() of dp_comm->size(). --sync ps needs
// `ps` (the servers are found through ps->store; the PsSync is also in TrainingRank::ps).
// --device cuda needs `cuda`, the CUDA stream and cuBLAS handle of this rank's GPU (the
// caller has enabled NCCL on the communicators, or their device ops are staged).
struct PsSetup {
  KeyValueStore* store = nullptr;
  PsSyncOptions options;
};
Result<std::unique_ptr<TrainingRank>> BuildTrainingRank(
    const model::ModelConfig& config, const TrainFlags& flags, collectives::Communicator* tp_comm,
    collectives::Communicator* dp_comm, MemoryTracker* tracker, const PsSetup* ps = nullptr,
    kernels::CudaResources* cuda = nullptr);

}  // namespace pszero::train
