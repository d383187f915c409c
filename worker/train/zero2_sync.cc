#include "worker/train/zero2_sync.h"

#include <algorithm>

namespace pszero::train {

Result<std::unique_ptr<Zero2Sync>> Zero2Sync::Create(model::ParamBuffer* params,
                                                     const DataParallelOptions& options) {
  if (!params->storage().params_resident || params->storage().grads_resident) {
    return Status::Internal("zero2 needs resident parameters and no resident gradients");
  }
  std::unique_ptr<Zero2Sync> s(new Zero2Sync(params, options));
  s->PlanBuckets(/*per_unit=*/false);
  s->pending_units_.resize(s->buckets_.size());
  s->bucket_grads_.resize(s->buckets_.size());
  // The bucket backward starts in (GPT: with the tied embedding, kept to the end), the one
  // being filled, one being reduce-scattered.
  int64_t largest = 0;
  for (const Bucket& b : s->buckets_) largest = std::max(largest, b.size());
  s->pool_ = std::make_unique<BufferPool>(MemoryCategory::kGradBuckets, options.tracker, 3,
                                          params->grad_dtype(), options.kernels.device, largest);
  for (size_t b = 0; b < s->buckets_.size(); ++b) {
    s->pending_units_[b] = s->buckets_[b].end_unit - s->buckets_[b].first_unit;
  }
  PSZERO_ASSIGN_OR_RETURN(
      s->grads_, Tensor::Zeros({s->shard_numel()}, params->grad_dtype(), MemoryCategory::kGrads,
                               options.tracker, s->device()));
  PSZERO_RETURN_IF_ERROR(s->CreateOptimizerState(/*sharded=*/true));
  return s;
}

Zero2Sync::~Zero2Sync() { (void)Synchronize(); }

Status Zero2Sync::BeforeBackward(int unit) {
  const int b = bucket_of_unit_[unit];
  if (bucket_grads_[b].defined()) return Status::Ok();
  const Bucket& bucket = buckets_[b];
  PSZERO_ASSIGN_OR_RETURN(bucket_grads_[b], pool_->Acquire(bucket.size(), /*zero=*/true));
  const auto& units = params_->units();
  for (int u = bucket.first_unit; u < bucket.end_unit; ++u) {
    params_->AttachUnitGradStorage(
        u,
        Elements(bucket_grads_[b].data(), grad_dtype(), units[u].begin - bucket.begin, 1).data());
  }
  return Status::Ok();
}

Status Zero2Sync::GradientsReady(int unit) {
  const int b = bucket_of_unit_[unit];
  if (--pending_units_[b] > 0) return Status::Ok();
  const Bucket& bucket = buckets_[b];
  pending_units_[b] = bucket.end_unit - bucket.first_unit;
  if (!bucket_grads_[b].defined()) {
    return Status::Internal("zero2: gradients of bucket " + std::to_string(b) +
                            " ready before its backward began");
  }
  for (int u = bucket.first_unit; u < bucket.end_unit; ++u)
    params_->AttachUnitGradStorage(u, nullptr);
  PSZERO_RETURN_IF_ERROR(Fence());
  // The op owns the bucket's memory from now on and frees it when it is done.
  Tensor storage = std::move(bucket_grads_[b]);
  bucket_grads_[b] = Tensor();
  Tensor all = Elements(storage.data(), grad_dtype(), 0, bucket.size(), device());
  Tensor mine = Elements(grads_.data(), grad_dtype(), bucket.shard_offset, piece(bucket), device());
  BufferPool* pool = pool_.get();
  EnqueueReduceScatter("reduce-scatter bucket " + std::to_string(b), all, mine,
                       [pool, storage]() mutable { pool->Release(std::move(storage)); });
  return Status::Ok();
}

Status Zero2Sync::Step(int64_t step) {
  PSZERO_RETURN_IF_ERROR(Synchronize());
  PSZERO_RETURN_IF_ERROR(UpdateOwnedPieces(step, grads_.data(), /*grads_in_buffer=*/false));
  EndStepTraffic();
  return Status::Ok();
}

}  // namespace pszero::train
