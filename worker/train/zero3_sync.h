// zero3 (ZeRO stage 3, FSDP FULL_SHARD): parameters, gradients and optimizer state all
// partitioned 1/D (16Ψ/D bytes in fp32 and in bf16, where the shard is bf16 parameters
// and gradients beside the fp32 master, m and v). Rank r owns piece r of every unit
// (layer), and initializes it from the seed without ever building the full model.
//
// A unit's parameters are all-gathered (gathered_params) just before its forward and
// again before its backward, and released when the model says it is done with them
// (ParamsDone / GradientsReady). The order in which units are used is recorded in the
// first step; from then on the next unit of that order is prefetched while the current
// one computes, and a unit needed again right away (GPT's tied embedding, from the head's
// forward into its backward) is kept. At most two units are gathered at once. A unit's
// gradients live in a buffer of its own (grad_buckets) from its backward until its
// reduce-scatter into this rank's gradient shard is done. Per step each rank sends
// 3Ψ(D-1)/D elements: two all-gathers and one reduce-scatter of every unit. With
// gradient accumulation every micro-batch gathers and reduce-scatters again (3KΨ(D-1)/D),
// later micro-batches adding their reduce-scattered gradients into the shard.
#pragma once

#include <memory>
#include <vector>

#include "worker/train/data_parallel.h"

namespace pszero::train {

class Zero3Sync final : public DataParallelSync {
 public:
  static Result<std::unique_ptr<Zero3Sync>> Create(model::ParamBuffer* params,
                                                   const DataParallelOptions& options);
  ~Zero3Sync() override;
  std::string_view name() const override { return "zero3"; }
  Status BeginMicroBatch(int micro, int count) override;
  Status BeforeForward(int unit) override { return Use(unit, false); }
  Status BeforeBackward(int unit) override { return Use(unit, true); }
  Status ParamsDone(int unit) override;
  Status GradientsReady(int unit) override;
  Status Step(int64_t step) override;
  Result<std::vector<float>> LocalParams(const model::ParamBuffer& params) override;
  Status Restore(const std::vector<float>& params, const Moments& moments) override;

  // Largest number of units gathered at once so far (tests: at most two).
  int peak_gathered_units() const { return peak_gathered_; }

 private:
  using DataParallelSync::DataParallelSync;

  struct Gathered {
    Tensor storage;          // from the pool (may be larger than the unit)
    Tensor params;           // view of storage: the whole (padded) unit, in param_dtype()
    collectives::Work work;  // the all-gather, while in flight
    bool attached = false;
  };

  Status Use(int unit, bool backward);
  // Queues the all-gather of `unit` unless it is gathered or on its way.
  Status Prefetch(int unit);
  // The recorded use order starts again (a new step or micro-batch): its first unit is
  // prefetched.
  Status RestartOrder();
  // Waits for `unit`'s all-gather and points the ParamBuffer at it.
  Status Attach(int unit);
  Status Release(int unit);
  // The unit used after the current position of the recorded order (-1: none known).
  int NextUse() const;
  // This rank's piece of `unit` in a shard-layout tensor.
  Tensor ShardPiece(Tensor& t, int unit) {
    const Bucket& b = buckets_[bucket_of_unit_[unit]];
    return Elements(t.data(), t.dtype(), b.shard_offset, piece(b), t.device());
  }

  std::vector<Gathered> gathered_;
  std::vector<Tensor> unit_grads_;  // pool buffers while backward fills them
  std::unique_ptr<BufferPool> gathered_pool_;
  std::unique_ptr<BufferPool> grad_pool_;
  std::vector<int> order_;  // units in order of use, recorded in the first step
  bool recorded_ = false;
  size_t cursor_ = 0;  // uses so far this step
  int live_units_ = 0;
  int peak_gathered_ = 0;
  Tensor param_shard_;  // param_dtype(): the fp32 master in fp32, bf16 beside master_ in bf16
  Tensor grads_;        // shard (grad_dtype())
};

}  // namespace pszero::train
