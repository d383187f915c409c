// SyncStrategy: how the replicas of a data-parallel group stay in step. The training loop
// knows only this interface; each mode is one implementation in its own file
// (allreduce_sync, zero1_sync, zero2_sync, zero3_sync, ps_sync; single_replica_sync for a
// lone replica), made by MakeSyncStrategy (sync_factory.h).
//
// A strategy sees the model's hooks (hooks.h) during forward and backward (to gather
// parameters before a unit runs, release them after, or start reducing a unit's
// gradients as soon as they are ready) and runs the optimizer in Step(). It works on the
// model's flat ParamBuffer, whose layout and residency it chose before the model was
// built (SyncPlan), and keeps its own optimizer state. Used by one thread.
//
// Gradient accumulation (--grad-accum K, docs/sync.md): a step is K forward/backward
// passes, each announced by BeginMicroBatch(m, K) before its forward; the gradients are
// zeroed once, before micro-batch 0, and add up over the K backward passes (or, where a
// mode keeps no full gradient buffer, in its gradient shard). Step then applies the mean:
// the optimizer's grad_scale carries 1/K beside 1/D. With K = 1 every mode does exactly
// what it did without accumulation.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "kernels/optimizer.h"
#include "worker/model/hooks.h"
#include "worker/model/param_buffer.h"

namespace pszero::train {

// Payload bytes a strategy's own communication moved (tensor-parallel traffic and the
// loss average excluded).
// AdamW's moments (exp_avg, exp_avg_sq) of this TP rank, in the ParamBuffer's layout.
struct Moments {
  std::vector<float> m;
  std::vector<float> v;
  int64_t step = 0;  // steps these moments have seen (set when restoring a checkpoint)
};

struct SyncTraffic {
  int64_t sent = 0;
  int64_t received = 0;
};

class SyncStrategy : public model::LayerHooks {
 public:
  ~SyncStrategy() override = default;
  virtual std::string_view name() const = 0;
  // Micro-batch `micro` (0-based) of the `count` (K >= 1) of the next Step begins (called
  // before its forward). Overrides call this one first.
  virtual Status BeginMicroBatch(int micro, int count) {
    micro_ = micro;
    micro_batches_ = count;
    return Status::Ok();
  }
  // After backward: make the gradients consistent across the group and update the
  // parameters (fp32 master, then the bf16 compute copy). `step` is 1-based.
  virtual Status Step(int64_t step) = 0;
  // The mean of `loss` over the data-parallel group (what the report prints).
  virtual Result<float> AverageLoss(float loss) { return loss; }
  // Every parameter of this TP rank in the ParamBuffer's layout (params.numel() values):
  // for checksums and checkpoints. Collective over the group for sharded parameters.
  virtual Result<std::vector<float>> LocalParams(const model::ParamBuffer& params);
  // The optimizer's moments in the ParamBuffer's layout (checkpoints); collective over
  // the group for sharded state. InvalidArgument by default.
  virtual Result<Moments> LocalMoments(const model::ParamBuffer& params);
  // Restores parameters and moments given in the ParamBuffer's layout (a resumed
  // checkpoint); every rank keeps the part it owns. InvalidArgument by default.
  virtual Status Restore(const std::vector<float>& params, const Moments& moments);
  // Traffic of the last Step's exchange (from the step's first hook to its end), and of
  // the whole run.
  virtual SyncTraffic last_step_traffic() const { return {}; }
  virtual SyncTraffic total_traffic() const { return {}; }

 protected:
  // The step's micro-batches (K), and whether the one running is the last of them (the
  // one whose backward makes the step's gradients final).
  int micro_batches() const { return micro_batches_; }
  bool last_micro_batch() const { return micro_ + 1 >= micro_batches_; }
  bool first_micro_batch() const { return micro_ == 0; }

 private:
  int micro_ = 0;
  int micro_batches_ = 1;
};

// A host copy of an fp32 tensor on any device.
Result<std::vector<float>> HostFloats(const Tensor& t);
// For strategies that keep whole (unsharded) moments m, v of params.numel() values (on
// any device): host copies of them, and a restore of parameters (then the bf16 copy) and
// moments.
Result<Moments> CopyMoments(const Tensor& m, const Tensor& v);
Status RestoreWhole(model::ParamBuffer* params, const std::vector<float>& values,
                    const Moments& moments, Tensor& m, Tensor& v);

// Optimizer hyperparameters every strategy applies (DESIGN.md: AdamW 1e-3, 0.9/0.999,
// 1e-8, weight decay 0.01). `step` and `grad_scale` are filled in by the strategy.
struct OptimizerOptions {
  kernels::AdamWParams adamw;
};

}  // namespace pszero::train
