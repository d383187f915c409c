#include "worker/train/zero1_sync.h"

#include <algorithm>
#include <cstring>

namespace pszero::train {

Result<std::unique_ptr<Zero1Sync>> Zero1Sync::Create(model::ParamBuffer* params,
                                                     const DataParallelOptions& options) {
  if (!params->params().defined() || !params->grads().defined()) {
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
  const int64_t n = s->shard_numel();
  PSZERO_ASSIGN_OR_RETURN(s->m_, Tensor::Zeros({n}, DType::kFloat32, MemoryCategory::kOptimizer,
                                               options.tracker));
  PSZERO_ASSIGN_OR_RETURN(s->v_, Tensor::Zeros({n}, DType::kFloat32, MemoryCategory::kOptimizer,
                                               options.tracker));
  PSZERO_ASSIGN_OR_RETURN(s->scratch_, Tensor::Empty({largest}, DType::kFloat32,
                                                     MemoryCategory::kCommBuffers, options.tracker));
  return s;
}

Zero1Sync::~Zero1Sync() { (void)Synchronize(); }

Status Zero1Sync::GradientsReady(int unit) {
  const int b = bucket_of_unit_[unit];
  if (--pending_units_[b] > 0) return Status::Ok();
  const Bucket& bucket = buckets_[b];
  pending_units_[b] = bucket.end_unit - bucket.first_unit;
  float* g = params_->grads().data<float>();
  Tensor all = Floats(g + bucket.begin, bucket.size());
  float* mine = g + bucket.begin + rank() * piece(bucket);
  Tensor out = Floats(scratch_.data<float>(), piece(bucket));
  collectives::Communicator* group = options_.group;
  Enqueue("reduce-scatter bucket " + std::to_string(b), [group, all, out, mine] {
    PSZERO_RETURN_IF_ERROR(group->ReduceScatter(all, out, collectives::ReduceOp::kSum));
    std::memcpy(mine, out.data(), out.nbytes());
    return Status::Ok();
  });
  return Status::Ok();
}

Status Zero1Sync::Step(int64_t step) {
  PSZERO_RETURN_IF_ERROR(Synchronize());
  float* p = params_->params().data<float>();
  float* g = params_->grads().data<float>();
  for (const Bucket& b : buckets_) {
    const int64_t at = b.begin + rank() * piece(b);
    PSZERO_RETURN_IF_ERROR(Update(step, p + at, g + at, m_.data<float>() + b.shard_offset,
                                  v_.data<float>() + b.shard_offset, nullptr, piece(b)));
  }
  PSZERO_RETURN_IF_ERROR(AllGatherBucketParams());
  EndStepTraffic();
  return Status::Ok();
}

}  // namespace pszero::train
