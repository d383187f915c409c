#include "worker/model/model.h"

#include "worker/model/gpt.h"

namespace pszero::model {

Result<std::unique_ptr<Model>> Model::Create(const ModelConfig& config, const ModelContext& ctx,
                                             uint64_t seed) {
  if (ctx.tp == nullptr) return Status::InvalidArgument("ModelContext without TensorParallel");
  PSZERO_RETURN_IF_ERROR(ValidateConfig(config, ctx.tp->size()));
  if (ctx.kernels.device != Device::kHost) {
    return Status::InvalidArgument("--device cuda: the model layers run on the host only so far");
  }
  std::unique_ptr<Model> m;
  if (config.kind == ModelKind::kGpt) {
    m = std::make_unique<GptModel>(config, ctx);
  } else {
    m = std::make_unique<MlpModel>(config, ctx);
  }
  PSZERO_RETURN_IF_ERROR(m->Declare());
  PSZERO_RETURN_IF_ERROR(m->params_.Allocate(ctx.tracker, ctx.bf16, ctx.storage));
  PSZERO_RETURN_IF_ERROR(m->params_.Initialize(seed));
  PSZERO_RETURN_IF_ERROR(m->AfterInitialize(seed));
  return m;
}

}  // namespace pszero::model
