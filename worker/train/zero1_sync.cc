#include "worker/train/zero1_sync.h"

#include <algorithm>

namespace pszero::train {

Result<std::unique_ptr<Zero1Sync>> Zero1Sync::Create(model::ParamBuffer* params,
                                                     const DataParallelOptions& options) {
  if (!params->storage().params_resident || !params->storage().grads_resident) {
    return Status::Internal("zero1 needs resident parameters and gradients");
  }
  std::unique_ptr<Zero1Sync> s(new Zero1Sync(params, options));
  s->PlanBuckets(/*per_unit=*/false);
  s->pending_units_.resize(s->buckets_.size());
  int64_t largest = 0;
  for (size_t b = 0; b < s->buckets_.size(); ++b) {
    s->pending_units_[b] = s->buckets_[b].end_unit - s->buckets_[b].first_unit;
    largest = std::max(largest, s->piece(s->buckets_[b]));
  }
  PSZERO_RETURN_IF_ERROR(s->CreateOptimizerState(/*sharded=*/true));
  PSZERO_ASSIGN_OR_RETURN(
      s->scratch_, Tensor::Empty({largest}, params->grad_dtype(), MemoryCategory::kCommBuffers,
                                 options.tracker, options.kernels.device));
  return s;
}

Zero1Sync::~Zero1Sync() { (void)Synchronize(); }

Status Zero1Sync::GradientsReady(int unit) {
  // Earlier micro-batches only add into the gradient buffer (DDP's no_sync()).
  if (!last_micro_batch()) return Status::Ok();
  const int b = bucket_of_unit_[unit];
  if (--pending_units_[b] > 0) return Status::Ok();
  const Bucket& bucket = buckets_[b];
  pending_units_[b] = bucket.end_unit - bucket.first_unit;
  PSZERO_RETURN_IF_ERROR(Fence());
  void* g = params_->sync_grads().data();
  Tensor all = Elements(g, grad_dtype(), bucket.begin, bucket.size(), device());
  Tensor mine =
      Elements(g, grad_dtype(), bucket.begin + rank() * piece(bucket), piece(bucket), device());
  Tensor out = Elements(scratch_.data(), grad_dtype(), 0, piece(bucket), device());
  collectives::Communicator* group = options_.group;
  Enqueue("reduce-scatter bucket " + std::to_string(b), [group, all, out, mine]() mutable {
    PSZERO_RETURN_IF_ERROR(group->ReduceScatter(all, out, collectives::ReduceOp::kSum));
    return mine.CopyFrom(out);
  });
  return Status::Ok();
}

Status Zero1Sync::Step(int64_t step) {
  PSZERO_RETURN_IF_ERROR(Synchronize());
  PSZERO_RETURN_IF_ERROR(
      UpdateOwnedPieces(step, params_->sync_grads().data(), /*grads_in_buffer=*/true));
  EndStepTraffic();
  return Status::Ok();
}

}  // namespace pszero::train
