// allreduce (DDP, "ZeRO-0"): every rank holds all parameters, gradients and optimizer
// state (16Ψ bytes in fp32; bf16: 2Ψ params, 2Ψ grads, 12Ψ fp32 master + m + v). Gradients are
// bucketed (--bucket-mb, from the last unit backwards, as backward produces them) and each bucket
// is all-reduced on the stream the moment its last unit is ready, overlapping the rest of backward;
// Step waits for them and runs fused AdamW over everything with grad_scale 1/D. With gradient
// accumulation (K micro-batches) the buckets are all-reduced only in the last micro-batch's
// backward, earlier ones adding into the buffer (DDP's no_sync()); grad_scale 1/(D·K).
#pragma once

#include <memory>

#include "worker/train/data_parallel.h"

namespace pszero::train {

class AllReduceSync final : public DataParallelSync {
 public:
  static Result<std::unique_ptr<AllReduceSync>> Create(model::ParamBuffer* params,
                                                       const DataParallelOptions& options);
  ~AllReduceSync() override;
  std::string_view name() const override { return "allreduce"; }
  Status GradientsReady(int unit) override;
  Status Step(int64_t step) override;

 private:
  using DataParallelSync::DataParallelSync;

  std::vector<int> pending_units_;  // per bucket: units not yet ready this step
};

}  // namespace pszero::train
