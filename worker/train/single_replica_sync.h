// SingleReplicaSync: the strategy for a data-parallel degree of 1 (any TP degree): no
// gradient exchange at all; each TP rank runs fused AdamW on its own shard of the flat
// buffer. Optimizer state (m, v: 8 bytes per parameter) is tracked as optimizer memory.
#pragma once

#include <memory>

#include "common/memory.h"
#include "common/tensor.h"
#include "kernels/context.h"
#include "worker/model/param_buffer.h"
#include "worker/train/sync_strategy.h"

namespace pszero::train {

class SingleReplicaSync final : public SyncStrategy {
 public:
  // `params` must outlive the strategy.
  static Result<std::unique_ptr<SingleReplicaSync>> Create(model::ParamBuffer* params,
                                                           const OptimizerOptions& options,
                                                           const kernels::KernelContext& kernels,
                                                           MemoryTracker* tracker);
  std::string_view name() const override { return "single"; }
  Status Step(int64_t step) override;
  Result<Moments> LocalMoments(const model::ParamBuffer& params) override;
  Status Restore(const std::vector<float>& params, const Moments& moments) override;

 private:
  SingleReplicaSync(model::ParamBuffer* params, const OptimizerOptions& options,
                    const kernels::KernelContext& kernels)
      : params_(params), options_(options), kernels_(kernels) {}

  model::ParamBuffer* params_;
  OptimizerOptions options_;
  kernels::KernelContext kernels_;
  Tensor m_;
  Tensor v_;
};

}  // namespace pszero::train
