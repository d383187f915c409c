// zero1 (ZeRO stage 1): optimizer state partitioned 1/D. Every rank keeps all parameters
// and a full gradient buffer (8Ψ + 8Ψ/D bytes in fp32, 4Ψ + 12Ψ/D in bf16); each gradient bucket is
// reduce-scattered on the stream as soon as backward fills it, rank r receiving the sum
// of piece r of the bucket (written back into its gradient buffer); Step updates the
// owned pieces with fused AdamW, then all-gathers every bucket's updated parameters. With
// gradient accumulation the buckets are reduce-scattered only in the last micro-batch's
// backward (the buffer sums the micro-batches): the bytes per step do not change.
#pragma once

#include <algorithm>
#include <memory>

#include "worker/train/data_parallel.h"

namespace pszero::train {

class Zero1Sync final : public DataParallelSync {
 public:
  static Result<std::unique_ptr<Zero1Sync>> Create(model::ParamBuffer* params,
                                                   const DataParallelOptions& options);
  ~Zero1Sync() override;
  std::string_view name() const override { return "zero1"; }
  Status GradientsReady(int unit) override;
  Status Step(int64_t step) override;

 private:
  using DataParallelSync::DataParallelSync;

  std::vector<int> pending_units_;
  Tensor scratch_;  // one bucket piece: the reduce-scatter's output (stream thread only)
};

}  // namespace pszero::train
