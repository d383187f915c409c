// TrainingRank: everything one rank trains with — the TP operators, the model, its data
// stream, the sync strategy and the loop — built from the training flags in one place, so
// that pszero-worker and `pszero-bench train` train exactly the same thing. Members point
// into each other (the model's context holds the TP operators); keep the object where it
// was built. Used by one thread.
#pragma once

#include <memory>

#include "common/memory.h"
#include "common/status.h"
#include "worker/collectives/communicator.h"
#include "worker/model/data.h"
#include "worker/model/model.h"
#include "worker/train/single_replica_sync.h"
#include "worker/train/train_flags.h"
#include "worker/train/trainer.h"

namespace pszero::train {

struct TrainingRank {
  std::unique_ptr<model::TensorParallel> tp;
  kernels::KernelContext kernels;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::DataSource> data;
  std::unique_ptr<SingleReplicaSync> sync;
  std::unique_ptr<Trainer> trainer;
};

// `tp_comm` may be null (T = 1); `tracker` must outlive the result. The rank reads data
// part `dp_rank` of `dp_size`.
Result<std::unique_ptr<TrainingRank>> BuildTrainingRank(const model::ModelConfig& config,
                                                        const TrainFlags& flags,
                                                        collectives::Communicator* tp_comm,
                                                        MemoryTracker* tracker, int dp_rank,
                                                        int dp_size);

}  // namespace pszero::train
