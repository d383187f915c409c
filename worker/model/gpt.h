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
  // Copies the batch's tokens and targets to ids_ (on the model's device).
  Status UploadIds();
  const int32_t* tokens() const { return ids_.data<int32_t>(); }
  const int32_t* targets() const { return ids_.data<int32_t>() + ids_.numel() / 2; }
  // Block l's forward (attention, then MLP) from xs_[l] into xs_[l + 1]; with `recompute`
  // (--recompute full, in backward) only the activations backward reads (the MLP's output
  // projection and xs_[l + 1] are skipped).
  Status BlockForward(int64_t l, bool recompute);
  // Block l's slot in mids_, and the blocks before the first that has its own slot.
  float* Mid(int64_t l);
  int64_t FirstOwnMid() const;

  int wte_ = -1;
  int wpe_ = -1;
  // Sized once in Declare and never moved: a block's layers point into its own saved set
  // between its forward and its backward.
  std::vector<AttentionBlock> attn_;
  std::vector<MlpBlock> mlp_;
  LayerNorm ln_f_;
  Batch batch_;
  Tensor xs_;  // [layers + 1][n, d]: input of every block, then the last output
  // [layers][n, d]: between a block's attention and its MLP; --recompute full: one [n, d]
  // for the blocks of the shared saved set (the one being run, forward or recomputed),
  // then one per block after them (--recompute-layers below the layers).
  Tensor mids_;
  Tensor hf_;  // the final LayerNorm's output: bf16 in bf16 mode (EnsureGemmInput)
  Tensor logits_local_, logits_, lse_, loss_, dlogits_local_, grad_a_, grad_b_;
  Tensor wte_f32_, wpe_f32_;       // upcast embeddings (bf16-only storage)
  Tensor ids_;                     // [2n] int32: tokens, then targets
  std::vector<int32_t> ids_host_;  // their host staging
};

class MlpModel final : public Model {
 public:
  MlpModel(const ModelConfig& config, const ModelContext& ctx) : Model(config, ctx) {}
  Result<float> Forward(const Batch& batch, LayerHooks* hooks) override;

 private:
  Status Declare() override;
  Status RunBackward(LayerHooks* hooks) override;
  Status AfterInitialize(uint64_t seed) override;
  // Rows first_row .. first_row + batch − 1 of the target table (a function of the seed and
  // the row) into target_, unless they are there already.
  Status LoadTarget(int64_t first_row);

  std::vector<MlpBlock> blocks_;  // sized once in Declare and never moved (as GptModel's)
  uint64_t seed_ = 0;
  int64_t target_row_ = -1;  // the first row target_ holds
  Tensor target_;            // [batch, d] on the model's device
  Tensor xs_, loss_, grad_a_, grad_b_;
};

}  // namespace pszero::model
