// zero2 (ZeRO stage 2): optimizer state and gradients partitioned 1/D; every rank keeps
// all parameters (4Ψ + 12Ψ/D bytes in fp32, 2Ψ + 14Ψ/D in bf16). No full gradient buffer exists: a
// bucket's gradient memory (grad_buckets) is allocated when backward first writes into it,
// reduce-scattered on the stream as soon as its last unit is ready (rank r keeping the
// sum of piece r in its gradient shard), and freed when that op is done. Step updates the
// owned pieces with fused AdamW, then all-gathers every bucket's parameters. With gradient
// accumulation every micro-batch reduce-scatters its buckets (as DeepSpeed stage 2), later
// ones adding into the shard: (K+1)Ψ(D-1)/D elements sent per step.
#pragma once

#include <algorithm>
#include <memory>

#include "worker/train/data_parallel.h"

namespace pszero::train {

class Zero2Sync final : public DataParallelSync {
 public:
  static Result<std::unique_ptr<Zero2Sync>> Create(model::ParamBuffer* params,
                                                   const DataParallelOptions& options);
  ~Zero2Sync() override;
  std::string_view name() const override { return "zero2"; }
  Status BeforeBackward(int unit) override;
  Status GradientsReady(int unit) override;
  Status Step(int64_t step) override;

 private:
  using DataParallelSync::DataParallelSync;

  std::vector<int> pending_units_;
  std::vector<Tensor> bucket_grads_;  // per bucket (pool buffers), while backward fills it
  std::unique_ptr<BufferPool> pool_;
  Tensor grads_;  // shard (grad_dtype())
};

}  // namespace pszero::train
