#include "worker/train/single_replica_sync.h"

namespace pszero::train {

Result<std::unique_ptr<SingleReplicaSync>> SingleReplicaSync::Create(
    model::ParamBuffer* params, const OptimizerOptions& options,
    const kernels::KernelContext& kernels, MemoryTracker* tracker) {
  std::unique_ptr<SingleReplicaSync> s(new SingleReplicaSync(params, options, kernels));
  PSZERO_ASSIGN_OR_RETURN(s->m_, Tensor::Zeros({params->numel()}, DType::kFloat32,
                                               MemoryCategory::kOptimizer, tracker));
  PSZERO_ASSIGN_OR_RETURN(s->v_, Tensor::Zeros({params->numel()}, DType::kFloat32,
                                               MemoryCategory::kOptimizer, tracker));
  return s;
}

Status SingleReplicaSync::Step(int64_t step) {
  kernels::AdamWParams hp = options_.adamw;
  hp.step = step;
  hp.grad_scale = 1.0f;
  bf16_t* bf16 = params_->has_bf16() ? params_->params_bf16().data<bf16_t>() : nullptr;
  return kernels::AdamW(hp, params_->params().data<float>(), params_->grads().data(),
                        DType::kFloat32, m_.data<float>(), v_.data<float>(), bf16, params_->numel(),
                        kernels_);
}

Result<Moments> SingleReplicaSync::LocalMoments(const model::ParamBuffer&) {
  const int64_t n = params_->numel();
  return Moments{std::vector<float>(m_.data<float>(), m_.data<float>() + n),
                 std::vector<float>(v_.data<float>(), v_.data<float>() + n)};
}

Status SingleReplicaSync::Restore(const std::vector<float>& params, const Moments& moments) {
  std::copy(params.begin(), params.end(), params_->params().data<float>());
  std::copy(moments.m.begin(), moments.m.end(), m_.data<float>());
  std::copy(moments.v.begin(), moments.v.end(), v_.data<float>());
  return params_->RefreshBf16();
}

}  // namespace pszero::train
