#include "worker/model/model.h"

#include <vector>

#include "kernels/cast.h"
#include "kernels/reduce.h"
#include "worker/model/gpt.h"

namespace pszero::model {

// Forwards every hook; gives a unit an fp32 gradient scratch from its BeforeBackward on
// (after the inner hook attached the bf16 gradient storage), and casts the scratch into
// the bf16 gradients before the inner GradientsReady. Buffers are the largest unit's size,
// kept for reuse.
class Model::GradScratch final : public LayerHooks {
 public:
  GradScratch(ParamBuffer* params, const ModelContext& ctx)
      : params_(params), ctx_(ctx), open_(params->units().size()) {}
  void set_inner(LayerHooks* inner, bool accumulate) {
    inner_ = inner;
    accumulate_ = accumulate;
  }

  Status BeforeForward(int unit) override {
    return inner_ == nullptr ? Status::Ok() : inner_->BeforeForward(unit);
  }
  Status ParamsDone(int unit) override {
    return inner_ == nullptr ? Status::Ok() : inner_->ParamsDone(unit);
  }
  Status BeforeBackward(int unit) override {
    if (inner_ != nullptr) PSZERO_RETURN_IF_ERROR(inner_->BeforeBackward(unit));
    if (open_[unit].defined()) return Status::Ok();  // GPT's embedding: open already
    if (!spare_.empty()) {
      open_[unit] = std::move(spare_.back());
      spare_.pop_back();
    } else {
      PSZERO_ASSIGN_OR_RETURN(open_[unit], Tensor::Empty({params_->largest_unit()}, DType::kFloat32,
                                                         MemoryCategory::kActivations, ctx_.tracker,
                                                         ctx_.kernels.device));
    }
    const ParamUnit& u = params_->units()[unit];
    PSZERO_RETURN_IF_ERROR(
        Tensor::Wrap(open_[unit].data(), {u.end - u.begin}, DType::kFloat32, ctx_.kernels.device)
            .ZeroFill());
    params_->AttachUnitGrads(unit, open_[unit].data<float>());
    return Status::Ok();
  }
  Status GradientsReady(int unit) override {
    if (!open_[unit].defined()) {
      return Status::Internal("gradients of unit " + params_->units()[unit].name +
                              " ready before its backward began");
    }
    bf16_t* out = params_->unit_grads_bf16(unit);
    if (out == nullptr) {
      return Status::Internal("unit " + params_->units()[unit].name +
                              ": no bf16 gradient storage attached");
    }
    const ParamUnit& u = params_->units()[unit];
    if (accumulate_) {
      PSZERO_RETURN_IF_ERROR(kernels::Accumulate(open_[unit].data(), DType::kFloat32, out,
                                                 DType::kBFloat16, u.end - u.begin, ctx_.kernels));
    } else {
      PSZERO_RETURN_IF_ERROR(kernels::Cast(open_[unit].data(), DType::kFloat32, out,
                                           DType::kBFloat16, u.end - u.begin, ctx_.kernels));
    }
    params_->AttachUnitGrads(unit, nullptr);
    spare_.push_back(std::move(open_[unit]));
    open_[unit] = Tensor();
    return inner_ == nullptr ? Status::Ok() : inner_->GradientsReady(unit);
  }

 private:
  ParamBuffer* params_;
  const ModelContext& ctx_;
  LayerHooks* inner_ = nullptr;
  bool accumulate_ = false;   // add into the bf16 gradients (a later micro-batch)
  std::vector<Tensor> open_;  // per unit, while its backward runs
  std::vector<Tensor> spare_;
};

Model::Model(const ModelConfig& config, const ModelContext& ctx)
    : config_(config), ctx_(ctx), params_(ctx.tp->rank(), ctx.tp->size(), ctx.unit_align) {
  ctx_.grad_bf16_scratch = &grad_bf16_scratch_;
  ctx_.block_scratch = &block_scratch_;
  ctx_.block_saved = ctx.recompute == Recompute::kFull ? &block_saved_ : nullptr;
  // A kept block runs as without recompute (selective stays selective).
  kept_ctx_ = ctx_;
  if (ctx.recompute == Recompute::kFull) kept_ctx_.recompute = Recompute::kNone;
  kept_ctx_.block_saved = nullptr;
  recomputed_blocks_ = RecomputedBlocks(ctx.recompute, ctx.recompute_layers, config.layers);
}

Model::~Model() = default;

Status Model::Backward(LayerHooks* hooks, bool accumulate) {
  if (!params_.bf16_only()) return RunBackward(hooks);
  if (grad_scratch_ == nullptr) grad_scratch_ = std::make_unique<GradScratch>(&params_, ctx_);
  grad_scratch_->set_inner(hooks, accumulate);
  return RunBackward(grad_scratch_.get());
}

Result<std::unique_ptr<Model>> Model::Create(const ModelConfig& config, const ModelContext& ctx,
                                             uint64_t seed) {
  if (ctx.tp == nullptr) return Status::InvalidArgument("ModelContext without TensorParallel");
  PSZERO_RETURN_IF_ERROR(ValidateConfig(config, ctx.tp->size()));
  PSZERO_RETURN_IF_ERROR(
      CheckRecomputeLayers(RecomputeName(ctx.recompute), ctx.recompute_layers, config.layers));
  PSZERO_RETURN_IF_ERROR(kernels::CheckContext(ctx.kernels));
  std::unique_ptr<Model> m;
  if (config.kind == ModelKind::kGpt) {
    m = std::make_unique<GptModel>(config, ctx);
  } else {
    m = std::make_unique<MlpModel>(config, ctx);
  }
  PSZERO_RETURN_IF_ERROR(m->Declare());
  PSZERO_RETURN_IF_ERROR(m->params_.Allocate(ctx.tracker, ctx.bf16, ctx.storage, ctx.kernels));
  PSZERO_RETURN_IF_ERROR(m->params_.Initialize(seed));
  PSZERO_RETURN_IF_ERROR(m->AfterInitialize(seed));
  return m;
}

}  // namespace pszero::model
