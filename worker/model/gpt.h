// The GPT and MLP models behind Model::Create (model.h).
#pragma once

#include "worker/model/model.h"

namespace pszero::model {

class GptModel final : public Model {
 public:
  GptModel(const ModelConfig& config, const ModelContext& ctx) : Model(config, ctx) {}
  Result<float> Forward(const Batch& batch, LayerHooks* hooks) override;

 private:
  Status Declare() override;
  Status RunBackward(LayerHooks* hooks) override;

  int wte_ = -1;
  int wpe_ = -1;
  std::vector<AttentionBlock> attn_;
  std::vector<MlpBlock> mlp_;
  LayerNorm ln_f_;
  Batch batch_;
  Tensor xs_;    // [layers + 1][n, d]: input of every block, then the last output
  Tensor mids_;  // [layers][n, d]: between a block's attention and its MLP
  Tensor hf_, logits_local_, logits_, lse_, loss_, dlogits_local_, grad_a_, grad_b_;
  Tensor hf_bf16_, dlogits_bf16_;
};

class MlpModel final : public Model {
 public:
  MlpModel(const ModelConfig& config, const ModelContext& ctx) : Model(config, ctx) {}
  Result<float> Forward(const Batch& batch, LayerHooks* hooks) override;

 private:
  Status Declare() override;
  Status RunBackward(LayerHooks* hooks) override;
  Status AfterInitialize(uint64_t seed) override;

  std::vector<MlpBlock> blocks_;
  std::vector<float> target_;
  Tensor xs_, loss_, grad_a_, grad_b_;
};

}  // namespace pszero::model
