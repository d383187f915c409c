// zero1 (ZeRO stage 1): optimizer state partitioned 1/D. Every rank keeps all parameters
// and a full gradient buffer (8Ψ + 8Ψ/D bytes in fp32); each gradient bucket is
// reduce-scattered on the stream as soon as backward fills it, rank r receiving the sum
// of piece r of the bucket (written back into its gradient buffer); Step updates the
// owned pieces with fused AdamW, then all-gathers every bucket's updated parameters.
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
  Result<Moments> LocalMoments(const model::ParamBuffer&) override { return GatherMoments(m_, v_); }
  Status Restore(const std::vector<float>& params, const Moments& moments) override {
    std::copy(params.begin(), params.end(), params_->params().data<float>());
    ScatterPieces(moments.m.data(), m_.data<float>());
    ScatterPieces(moments.v.data(), v_.data<float>());
    return params_->RefreshBf16();
  }

 private:
  using DataParallelSync::DataParallelSync;

  std::vector<int> pending_units_;
  Tensor m_;        // shard
  Tensor v_;        // shard
  Tensor scratch_;  // one bucket piece: the reduce-scatter's output (stream thread only)
};

}  // namespace pszero::train
