#include "worker/train/zero3_sync.h"

#include <algorithm>

#include "common/trace.h"
#include "kernels/cast.h"

namespace pszero::train {

Result<std::unique_ptr<Zero3Sync>> Zero3Sync::Create(model::ParamBuffer* params,
                                                     const DataParallelOptions& options) {
  if (params->params().defined() || params->grads().defined()) {
    return Status::Internal("zero3 needs a ParamBuffer without resident parameters or gradients");
  }
  std::unique_ptr<Zero3Sync> s(new Zero3Sync(params, options));
  s->PlanBuckets(/*per_unit=*/true);
  const size_t units = params->units().size();
  s->gathered_.resize(units);
  s->unit_grads_.resize(units);
  // Two units gathered at once; gradients: embed (kept through backward), the current
  // unit, one being reduce-scattered.
  const Device device = options.kernels.device;
  const int64_t largest = params->largest_unit();
  s->gathered_pool_ = std::make_unique<BufferPool>(MemoryCategory::kGatheredParams, options.tracker,
                                                   2, params->param_dtype(), device, largest);
  s->grad_pool_ = std::make_unique<BufferPool>(MemoryCategory::kGradBuckets, options.tracker, 3,
                                               params->grad_dtype(), device, largest);
  const int64_t n = s->shard_numel();
  // Host: shared memory, the peers' all-gathers read it in place on one host.
  PSZERO_ASSIGN_OR_RETURN(s->param_shard_,
                          device == Device::kHost
                              ? Tensor::EmptyShared({n}, params->param_dtype(),
                                                    MemoryCategory::kParams, options.tracker)
                              : Tensor::Empty({n}, params->param_dtype(), MemoryCategory::kParams,
                                              options.tracker, device));
  PSZERO_ASSIGN_OR_RETURN(
      s->grads_,
      Tensor::Zeros({n}, params->grad_dtype(), MemoryCategory::kGrads, options.tracker, device));
  PSZERO_RETURN_IF_ERROR(s->CreateOptimizerState(/*sharded=*/true));
  if (s->bf16_only()) {
    // The master holds this rank's pieces from the seed; the parameters are their rounding.
    PSZERO_RETURN_IF_ERROR(kernels::Cast(s->master_.data(), DType::kFloat32, s->param_shard_.data(),
                                         DType::kBFloat16, n, options.kernels));
    PSZERO_RETURN_IF_ERROR(s->Fence());  // the first all-gather reads the shard
    return s;
  }
  // This rank's piece of every unit, straight from the seed.
  for (size_t u = 0; u < units; ++u) {
    const Bucket& b = s->buckets_[s->bucket_of_unit_[u]];
    const int64_t begin = b.begin + s->rank() * s->piece(b);
    PSZERO_RETURN_IF_ERROR(params->FillInitialValues(
        begin, begin + s->piece(b), s->param_shard_.data<float>() + b.shard_offset));
  }
  return s;
}

Zero3Sync::~Zero3Sync() { (void)Synchronize(); }

int Zero3Sync::NextUse() const {
  return recorded_ && cursor_ < order_.size() ? order_[cursor_] : -1;
}

Status Zero3Sync::Prefetch(int unit) {
  Gathered& g = gathered_[unit];
  if (g.params.defined()) return Status::Ok();
  const Bucket& b = buckets_[bucket_of_unit_[unit]];
  PSZERO_ASSIGN_OR_RETURN(g.storage, gathered_pool_->Acquire(b.size(), /*zero=*/false));
  g.params = Elements(g.storage.data(), params_->param_dtype(), 0, b.size(), device());
  peak_gathered_ = std::max(peak_gathered_, ++live_units_);
  Tensor mine = ShardPiece(param_shard_, unit);
  Tensor all = g.params;
  collectives::Communicator* group = options_.group;
  g.work = Enqueue("allgather unit " + params_->units()[unit].name,
                   [group, mine, all] { return group->AllGather(mine, all); });
  return Status::Ok();
}

Status Zero3Sync::Attach(int unit) {
  Gathered& g = gathered_[unit];
  if (g.work.valid()) {
    TraceScope scope("wait allgather " + params_->units()[unit].name, "wait");
    PSZERO_RETURN_IF_ERROR(Wait(g.work));
    g.work = collectives::Work();
  }
  if (g.attached) return Status::Ok();
  if (bf16_only()) {
    params_->AttachUnitParams(unit, nullptr, g.params.data<bf16_t>());
  } else {
    params_->AttachUnitParams(unit, g.params.data<float>(), nullptr);
  }
  g.attached = true;
  return Status::Ok();
}

Status Zero3Sync::Release(int unit) {
  Gathered& g = gathered_[unit];
  if (!g.params.defined()) return Status::Ok();
  Status status;
  if (g.work.valid()) status = Wait(g.work);  // never free memory an op still writes
  // nor memory kernels may still read (the pool hands it to the next all-gather)
  if (status.ok()) status = Fence();
  params_->AttachUnitParams(unit, nullptr, nullptr);
  gathered_pool_->Release(std::move(g.storage));
  g = Gathered();
  --live_units_;
  return status;
}

Status Zero3Sync::Use(int unit, bool backward) {
  if (!recorded_) {
    order_.push_back(unit);
  } else if (cursor_ >= order_.size() || order_[cursor_] != unit) {
    return Status::Internal("zero3: unit " + params_->units()[unit].name +
                            " used out of the order recorded in the first step");
  }
  ++cursor_;
  PSZERO_RETURN_IF_ERROR(Prefetch(unit));
  PSZERO_RETURN_IF_ERROR(Attach(unit));
  const int next = NextUse();
  if (next >= 0 && next != unit) PSZERO_RETURN_IF_ERROR(Prefetch(next));
  if (backward && !unit_grads_[unit].defined()) {
    const Bucket& b = buckets_[bucket_of_unit_[unit]];
    PSZERO_ASSIGN_OR_RETURN(unit_grads_[unit], grad_pool_->Acquire(b.size(), /*zero=*/true));
    params_->AttachUnitGradStorage(unit, unit_grads_[unit].data());
  }
  return Status::Ok();
}

Status Zero3Sync::ParamsDone(int unit) {
  if (NextUse() == unit) return Status::Ok();  // needed again right away: keep
  return Release(unit);
}

Status Zero3Sync::GradientsReady(int unit) {
  if (!unit_grads_[unit].defined()) {
    return Status::Internal("zero3: gradients of unit " + params_->units()[unit].name +
                            " ready before its backward began");
  }
  params_->AttachUnitGradStorage(unit, nullptr);
  PSZERO_RETURN_IF_ERROR(Fence());
  Tensor storage = std::move(unit_grads_[unit]);
  unit_grads_[unit] = Tensor();
  const Bucket& b = buckets_[bucket_of_unit_[unit]];
  Tensor all = Elements(storage.data(), grad_dtype(), 0, b.size(), device());
  Tensor mine = ShardPiece(grads_, unit);
  BufferPool* pool = grad_pool_.get();
  // The op hands the buffer back to the pool when it is done with it.
  EnqueueReduceScatter("reduce-scatter unit " + params_->units()[unit].name, all, mine,
                       [pool, storage]() mutable { pool->Release(std::move(storage)); });
  if (NextUse() == unit) return Status::Ok();
  return Release(unit);
}

Status Zero3Sync::BeginMicroBatch(int micro, int count) {
  PSZERO_RETURN_IF_ERROR(DataParallelSync::BeginMicroBatch(micro, count));
  if (micro == 0) return Status::Ok();
  // Every micro-batch uses the units in the order of the first one, which is recorded by
  // now: gather with prefetching, as in later steps (the shard is not updated between
  // micro-batches, so no fence is needed before the gather).
  return RestartOrder();
}

Status Zero3Sync::RestartOrder() {
  recorded_ = true;
  cursor_ = 0;
  if (!order_.empty()) PSZERO_RETURN_IF_ERROR(Prefetch(order_.front()));
  return Status::Ok();
}

Status Zero3Sync::Step(int64_t step) {
  PSZERO_RETURN_IF_ERROR(Synchronize());
  // Every gathered copy is stale once the shard is updated.
  for (size_t u = 0; u < gathered_.size(); ++u) {
    PSZERO_RETURN_IF_ERROR(Release(static_cast<int>(u)));
  }
  if (bf16_only()) {
    PSZERO_RETURN_IF_ERROR(Update(step, master_.data<float>(), grads_.data(), m_.data<float>(),
                                  v_.data<float>(), param_shard_.data<bf16_t>(), shard_numel()));
  } else {
    PSZERO_RETURN_IF_ERROR(Update(step, param_shard_.data<float>(), grads_.data(), m_.data<float>(),
                                  v_.data<float>(), nullptr, shard_numel()));
  }
  EndStepTraffic();
  // The next step's first unit, while the loop finishes this one (after the update).
  PSZERO_RETURN_IF_ERROR(Fence());
  return RestartOrder();
}

Result<std::vector<float>> Zero3Sync::LocalParams(const model::ParamBuffer& params) {
  if (bf16_only()) return DataParallelSync::LocalParams(params);  // the master
  return LocalFromShard(param_shard_);
}

Status Zero3Sync::Restore(const std::vector<float>& params, const Moments& moments) {
  for (size_t u = 0; u < gathered_.size(); ++u) {
    PSZERO_RETURN_IF_ERROR(Release(static_cast<int>(u)));
  }
  PSZERO_RETURN_IF_ERROR(RestorePieces(moments.m, m_.data<float>()));
  PSZERO_RETURN_IF_ERROR(RestorePieces(moments.v, v_.data<float>()));
  if (!bf16_only()) return RestorePieces(params, param_shard_.data<float>());
  PSZERO_RETURN_IF_ERROR(RestorePieces(params, master_.data<float>()));
  PSZERO_RETURN_IF_ERROR(kernels::Cast(master_.data(), DType::kFloat32, param_shard_.data(),
                                       DType::kBFloat16, shard_numel(), options_.kernels));
  return Fence();  // the next all-gather reads the shard
}

}  // namespace pszero::train
