#include "worker/train/allreduce_sync.h"

namespace pszero::train {

Result<std::unique_ptr<AllReduceSync>> AllReduceSync::Create(model::ParamBuffer* params,
                                                             const DataParallelOptions& options) {
  if (!params->params().defined() || !params->grads().defined()) {
    return Status::Internal("allreduce needs resident parameters and gradients");
  }
  std::unique_ptr<AllReduceSync> s(new AllReduceSync(params, options));
  s->PlanBuckets(/*per_unit=*/false);
  s->pending_units_.resize(s->buckets_.size());
  for (size_t b = 0; b < s->buckets_.size(); ++b) {
    s->pending_units_[b] = s->buckets_[b].end_unit - s->buckets_[b].first_unit;
  }
  const int64_t n = params->numel();
  PSZERO_ASSIGN_OR_RETURN(
      s->m_, Tensor::Zeros({n}, DType::kFloat32, MemoryCategory::kOptimizer, options.tracker));
  PSZERO_ASSIGN_OR_RETURN(
      s->v_, Tensor::Zeros({n}, DType::kFloat32, MemoryCategory::kOptimizer, options.tracker));
  return s;
}

AllReduceSync::~AllReduceSync() { (void)Synchronize(); }

Status AllReduceSync::GradientsReady(int unit) {
  const int b = bucket_of_unit_[unit];
  if (--pending_units_[b] > 0) return Status::Ok();
  const Bucket& bucket = buckets_[b];
  pending_units_[b] = bucket.end_unit - bucket.first_unit;  // for the next step
  Tensor grads = Floats(params_->grads().data<float>() + bucket.begin, bucket.size());
  collectives::Communicator* group = options_.group;
  Enqueue("allreduce bucket " + std::to_string(b),
          [group, grads] { return group->AllReduce(grads, collectives::ReduceOp::kSum); });
  return Status::Ok();
}

Status AllReduceSync::Step(int64_t step) {
  PSZERO_RETURN_IF_ERROR(Synchronize());
  EndStepTraffic();
  bf16_t* bf16 = params_->has_bf16() ? params_->params_bf16().data<bf16_t>() : nullptr;
  return Update(step, params_->params().data<float>(), params_->grads().data<float>(),
                m_.data<float>(), v_.data<float>(), bf16, params_->numel());
}

Result<Moments> AllReduceSync::LocalMoments(const model::ParamBuffer&) {
  return CopyMoments(m_, v_);
}

Status AllReduceSync::Restore(const std::vector<float>& params, const Moments& moments) {
  return RestoreWhole(params_, params, moments, m_, v_);
}

}  // namespace pszero::train
