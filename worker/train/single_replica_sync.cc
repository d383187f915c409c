#include "worker/train/single_replica_sync.h"

namespace pszero::train {

Result<std::unique_ptr<SingleReplicaSync>> SingleReplicaSync::Create(
    model::ParamBuffer* params, const OptimizerOptions& options,
    const kernels::KernelContext& kernels, MemoryTracker* tracker) {
  std::unique_ptr<SingleReplicaSync> s(new SingleReplicaSync(params, options, kernels));
  for (Tensor* t : {&s->m_, &s->v_}) {
    PSZERO_ASSIGN_OR_RETURN(*t, Tensor::Zeros({params->numel()}, DType::kFloat32,
                                              MemoryCategory::kOptimizer, tracker, kernels.device));
  }
  return s;
}

Status SingleReplicaSync::Step(int64_t step) {
  kernels::AdamWParams hp = options_.adamw;
  hp.step = step;
  hp.grad_scale = 1.0f / static_cast<float>(micro_batches());  // the mean over micro-batches
  bf16_t* bf16 = params_->has_bf16() ? params_->params_bf16().data<bf16_t>() : nullptr;
  return kernels::AdamW(hp, params_->params().data<float>(), params_->grads().data(),
                        DType::kFloat32, m_.data<float>(), v_.data<float>(), bf16, params_->numel(),
                        kernels_);
}

Result<Moments> SingleReplicaSync::LocalMoments(const model::ParamBuffer&) {
  return CopyMoments(m_, v_);
}

Status SingleReplicaSync::Restore(const std::vector<float>& params, const Moments& moments) {
  return RestoreWhole(params_, params, moments, m_, v_);
}

}  // namespace pszero::train
