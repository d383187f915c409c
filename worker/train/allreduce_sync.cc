#include "worker/train/allreduce_sync.h"

namespace pszero::train {

Result<std::unique_ptr<AllReduceSync>> AllReduceSync::Create(model::ParamBuffer* params,
                                                             const DataParallelOptions& options) {
  if (!params->storage().params_resident || !params->storage().grads_resident) {
    return Status::Internal("allreduce needs resident parameters and gradients");
  }
  std::unique_ptr<AllReduceSync> s(new AllReduceSync(params, options));
  s->PlanBuckets(/*per_unit=*/false);
  s->pending_units_.resize(s->buckets_.size());
  for (size_t b = 0; b < s->buckets_.size(); ++b) {
    s->pending_units_[b] = s->buckets_[b].end_unit - s->buckets_[b].first_unit;
  }
  PSZERO_RETURN_IF_ERROR(s->CreateOptimizerState(/*sharded=*/false));
  return s;
}

AllReduceSync::~AllReduceSync() { (void)Synchronize(); }

Status AllReduceSync::GradientsReady(int unit) {
  // Earlier micro-batches only add into the gradient buffer (DDP's no_sync()).
  if (!last_micro_batch()) return Status::Ok();
  const int b = bucket_of_unit_[unit];
  if (--pending_units_[b] > 0) return Status::Ok();
  const Bucket& bucket = buckets_[b];
  pending_units_[b] = bucket.end_unit - bucket.first_unit;  // for the next step
  // The kernels that wrote the bucket's gradients have run before the collective reads them.
  PSZERO_RETURN_IF_ERROR(Fence());
  Tensor grads =
      Elements(params_->sync_grads().data(), grad_dtype(), bucket.begin, bucket.size(), device());
  collectives::Communicator* group = options_.group;
  Enqueue("allreduce bucket " + std::to_string(b),
          [group, grads] { return group->AllReduce(grads, collectives::ReduceOp::kSum); });
  return Status::Ok();
}

Status AllReduceSync::Step(int64_t step) {
  PSZERO_RETURN_IF_ERROR(Synchronize());
  EndStepTraffic();
  if (bf16_only()) {
    return Update(step, master_.data<float>(), params_->grads_bf16().data(), m_.data<float>(),
                  v_.data<float>(), params_->params_bf16().data<bf16_t>(), params_->numel());
  }
  bf16_t* bf16 = params_->has_bf16() ? params_->params_bf16().data<bf16_t>() : nullptr;
  return Update(step, params_->params().data<float>(), params_->grads().data<float>(),
                m_.data<float>(), v_.data<float>(), bf16, params_->numel());
}

}  // namespace pszero::train
