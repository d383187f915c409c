#include "worker/model/gpt.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/loss.h"

namespace pszero::model {

namespace {

float ResidualStd(const ModelConfig& c) {
  return 0.02f / std::sqrt(2.0f * static_cast<float>(c.layers));
}

Status Hook(LayerHooks* hooks, Status (LayerHooks::*fn)(int), int unit) {
  return hooks == nullptr ? Status::Ok() : (hooks->*fn)(unit);
}

// The scalar loss, from the model's device.
Result<float> ReadLoss(const Tensor& loss) {
  float value = 0.0f;
  PSZERO_RETURN_IF_ERROR(Tensor::Wrap(&value, {1}, DType::kFloat32).CopyFrom(loss));
  return value;
}

}  // namespace

// ---- GPT ----

Status GptModel::UploadIds() {
  const int64_t n = static_cast<int64_t>(batch_.tokens.size());
  if (ids_.numel() != 2 * n) {
    PSZERO_ASSIGN_OR_RETURN(
        ids_, Tensor::Empty({2 * n}, DType::kInt32, MemoryCategory::kActivations, ctx_.tracker,
                            ctx_.kernels.device));
  }
  ids_host_.resize(static_cast<size_t>(2 * n));
  std::copy(batch_.tokens.begin(), batch_.tokens.end(), ids_host_.begin());
  std::copy(batch_.targets.begin(), batch_.targets.end(), ids_host_.begin() + n);
  return ids_.CopyFrom(Tensor::Wrap(ids_host_.data(), {2 * n}, DType::kInt32));
}

int64_t GptModel::FirstOwnMid() const {
  // --recompute full: blocks 0 .. N-1 share slot 0, block l >= N has slot l - N + 1.
  return recomputed_blocks_ > 0 ? recomputed_blocks_ - 1 : 0;
}

float* GptModel::Mid(int64_t l) {
  const int64_t nd = config_.batch * config_.seq * config_.d_model;
  return mids_.data<float>() + std::max<int64_t>(l - FirstOwnMid(), 0) * nd;
}

Status GptModel::BlockForward(int64_t l, bool recompute) {
  const ModelConfig& c = config_;
  const int64_t nd = c.batch * c.seq * c.d_model;
  float* x = xs_.data<float>() + l * nd;
  const ModelContext& ctx = BlockContext(l);
  PSZERO_RETURN_IF_ERROR(attn_[l].Forward(ctx, params_, x, c.batch, c.seq, Mid(l)));
  return mlp_[l].Forward(ctx, params_, Mid(l), c.batch * c.seq, recompute ? nullptr : x + nd);
}

Status GptModel::Declare() {
  const ModelConfig& c = config_;
  params_.BeginUnit("embed");
  PSZERO_ASSIGN_OR_RETURN(
      wte_, params_.Add({"wte.weight", {c.vocab, c.d_model}, 0, 1, ParamInit::kNormal, 0.02f}));
  PSZERO_ASSIGN_OR_RETURN(
      wpe_, params_.Add({"wpe.weight", {c.seq, c.d_model}, -1, 1, ParamInit::kNormal, 0.01f}));
  attn_.resize(c.layers);
  mlp_.resize(c.layers);
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string name = "h." + std::to_string(l);
    params_.BeginUnit(name);
    PSZERO_RETURN_IF_ERROR(attn_[l].Declare(params_, name, c.d_model, c.heads, ResidualStd(c)));
    PSZERO_RETURN_IF_ERROR(
        mlp_[l].Declare(params_, name, c.d_model, c.d_model * c.ffn_mult, ResidualStd(c)));
  }
  params_.BeginUnit("ln_f");
  return ln_f_.Declare(params_, "ln_f", c.d_model);
}

Result<float> GptModel::Forward(const Batch& batch, LayerHooks* hooks) {
  const ModelConfig& c = config_;
  const int64_t n = c.batch * c.seq;
  const int64_t d = c.d_model;
  const int64_t vl = c.vocab / ctx_.tp->size();
  const int64_t v0 = vl * ctx_.tp->rank();
  if (static_cast<int64_t>(batch.tokens.size()) != n ||
      static_cast<int64_t>(batch.targets.size()) != n) {
    return Status::InvalidArgument("batch holds " + std::to_string(batch.tokens.size()) +
                                   " tokens, the model takes " + std::to_string(n));
  }
  for (int64_t i = 0; i < n; ++i) {
    if (batch.tokens[i] < 0 || batch.tokens[i] >= c.vocab || batch.targets[i] < 0 ||
        batch.targets[i] >= c.vocab) {
      return Status::InvalidArgument("token id out of [0, " + std::to_string(c.vocab) + ")");
    }
  }
  batch_ = batch;
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(xs_, (c.layers + 1) * n * d, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(mids_, (c.layers - FirstOwnMid()) * n * d, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(hf_, n * d, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(logits_local_, n * vl, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(logits_, n * c.vocab, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(lse_, n, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(loss_, 1, ctx_));

  // The batch's ids (tokens, then targets) on the device.
  PSZERO_RETURN_IF_ERROR(UploadIds());

  // Vocab-parallel embedding: this rank's rows, zeros elsewhere, then reduce; + positions.
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeForward, 0));
  float* x0 = xs_.data<float>();
  // fp32 parameters, or (bf16-only storage) the bf16 ones: the embedding reads the bf16
  // rows it needs, the positions are upcast into scratch.
  const float* wte = params_.param(wte_);
  PSZERO_RETURN_IF_ERROR(kernels::EmbeddingShardForward(
      wte != nullptr ? static_cast<const void*>(wte) : params_.param_bf16(wte_),
      wte != nullptr ? DType::kFloat32 : DType::kBFloat16, v0, vl, d, tokens(), n, x0,
      ctx_.kernels));
  PSZERO_ASSIGN_OR_RETURN(const float* wpe, ParamFloats(ctx_, params_, wpe_, wpe_f32_));
  PSZERO_RETURN_IF_ERROR(ctx_.tp->ReduceForward(x0, n * d));
  for (int64_t b = 0; b < c.batch; ++b) {
    float* rows = x0 + b * c.seq * d;
    PSZERO_RETURN_IF_ERROR(kernels::Add(rows, wpe, rows, c.seq * d, ctx_.kernels));
  }
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::ParamsDone, 0));

  for (int64_t l = 0; l < c.layers; ++l) {
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeForward, static_cast<int>(l) + 1));
    PSZERO_RETURN_IF_ERROR(BlockForward(l, /*recompute=*/false));
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::ParamsDone, static_cast<int>(l) + 1));
  }
  const int last = static_cast<int>(c.layers) + 1;
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeForward, last));
  // The final LayerNorm's output is the head's GEMM input: bf16 in bf16 mode.
  const float* x_last = xs_.data<float>() + c.layers * n * d;
  PSZERO_RETURN_IF_ERROR(ctx_.bf16 ? ln_f_.Forward(ctx_, params_, x_last, n, hf_.data<bf16_t>())
                                   : ln_f_.Forward(ctx_, params_, x_last, n, hf_.data<float>()));
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::ParamsDone, last));
  // Tied head: column-parallel on the embedding shard (copy: identity forward), gathered.
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeForward, 0));
  float* logits_local = logits_local_.data<float>();
  PSZERO_RETURN_IF_ERROR(ctx_.bf16 ? MatmulWeightT(ctx_, hf_.data<bf16_t>(), n, d,
                                                   params_.param_bf16(wte_), vl, logits_local)
                                   : kernels::Gemm(false, true, n, vl, d, 1.0f, hf_.data<float>(),
                                                   d, params_.param(wte_), d, 0.0f, logits_local,
                                                   vl, DType::kFloat32, ctx_.kernels));
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::ParamsDone, 0));
  PSZERO_RETURN_IF_ERROR(
      ctx_.tp->GatherLastDimForward(logits_local_.data<float>(), n, vl, logits_.data<float>()));
  PSZERO_RETURN_IF_ERROR(kernels::CrossEntropyForward(logits_.data<float>(), c.vocab, targets(), n,
                                                      c.vocab, lse_.data<float>(),
                                                      loss_.data<float>(), ctx_.kernels));
  return ReadLoss(loss_);
}

Status GptModel::RunBackward(LayerHooks* hooks) {
  const ModelConfig& c = config_;
  const int64_t n = c.batch * c.seq;
  const int64_t d = c.d_model;
  const int64_t vl = c.vocab / ctx_.tp->size();
  const int64_t v0 = vl * ctx_.tp->rank();
  const int last = static_cast<int>(c.layers) + 1;
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(dlogits_local_, n * vl, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(grad_a_, n * d, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(grad_b_, n * d, ctx_));

  // dlogits over the full vocabulary (in place), then gather's backward: this rank's slice.
  float* logits = logits_.data<float>();
  PSZERO_RETURN_IF_ERROR(kernels::CrossEntropyBackward(logits, c.vocab, targets(),
                                                       lse_.data<float>(), n, c.vocab, 1.0f, logits,
                                                       c.vocab, ctx_.kernels));
  PSZERO_RETURN_IF_ERROR(ctx_.tp->SliceLastDim(logits, n, vl, dlogits_local_.data<float>()));
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeBackward, 0));
  float* dh = grad_a_.data<float>();
  PSZERO_RETURN_IF_ERROR(MatmulWeightBackward(
      ctx_, dlogits_local_.data<float>(), n, vl, params_.param(wte_), params_.param_bf16(wte_), d,
      ctx_.bf16 ? hf_.data<bf16_t>() : nullptr, ctx_.bf16 ? nullptr : hf_.data<float>(),
      params_.grad(wte_), dh, grad_bf16_scratch_));
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::ParamsDone, 0));
  PSZERO_RETURN_IF_ERROR(ctx_.tp->CopyBackward(dh, n * d));
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeBackward, last));
  float* dx = grad_b_.data<float>();
  PSZERO_RETURN_IF_ERROR(ln_f_.Backward(ctx_, params_, dh, n, dx));
  PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::GradientsReady, last));

  for (int64_t l = c.layers - 1; l >= 0; --l) {
    const int unit = static_cast<int>(l) + 1;
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeBackward, unit));
    // --recompute full: the block's saved activations, again, from its kept input.
    if (RecomputeBlock(l)) PSZERO_RETURN_IF_ERROR(BlockForward(l, /*recompute=*/true));
    float* other = dx == grad_a_.data<float>() ? grad_b_.data<float>() : grad_a_.data<float>();
    PSZERO_RETURN_IF_ERROR(mlp_[l].Backward(BlockContext(l), params_, dx, other));
    PSZERO_RETURN_IF_ERROR(attn_[l].Backward(BlockContext(l), params_, other, dx));
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::GradientsReady, unit));
  }

  // Embedding: positions get every row (batch after batch: each element summed in
  // ascending row order); this rank's vocabulary rows get theirs.
  float* dwpe = params_.grad(wpe_);
  for (int64_t b = 0; b < c.batch; ++b) {
    PSZERO_RETURN_IF_ERROR(kernels::Add(dwpe, dx + b * c.seq * d, dwpe, c.seq * d, ctx_.kernels));
  }
  PSZERO_RETURN_IF_ERROR(kernels::EmbeddingShardBackward(dx, tokens(), n, v0, vl, d,
                                                         params_.grad(wte_), ctx_.kernels));
  return Hook(hooks, &LayerHooks::GradientsReady, 0);
}

// ---- MLP ----

Status MlpModel::Declare() {
  const ModelConfig& c = config_;
  blocks_.resize(c.layers);
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string name = "block." + std::to_string(l);
    params_.BeginUnit(name);
    PSZERO_RETURN_IF_ERROR(
        blocks_[l].Declare(params_, name, c.d_model, c.d_model * c.ffn_mult, 0.02f));
  }
  return Status::Ok();
}

Status MlpModel::AfterInitialize(uint64_t seed) {
  seed_ = seed;
  const int64_t n = config_.batch * config_.d_model;
  PSZERO_ASSIGN_OR_RETURN(target_, Tensor::Empty({n}, DType::kFloat32, MemoryCategory::kActivations,
                                                 ctx_.tracker, ctx_.kernels.device));
  return LoadTarget(0);
}

Status MlpModel::LoadTarget(int64_t first_row) {
  if (first_row == target_row_) return Status::Ok();
  // Row r of the table is the same whatever the batch: K micro-batches of `batch` rows
  // regress onto the rows one batch of K·batch would (gradient accumulation).
  const ParamSpec spec{"mlp.target", {config_.batch, config_.d_model}, -1, 1, ParamInit::kNormal,
                       1.0f};
  const int64_t first = first_row * config_.d_model;
  std::vector<float> target(static_cast<size_t>(config_.batch * config_.d_model));
  for (size_t i = 0; i < target.size(); ++i) {
    target[i] = InitialValue(seed_, spec, first + static_cast<int64_t>(i));
  }
  const auto n = static_cast<int64_t>(target.size());
  target_row_ = -1;
  PSZERO_RETURN_IF_ERROR(target_.CopyFrom(Tensor::Wrap(target.data(), {n}, DType::kFloat32)));
  target_row_ = first_row;
  return Status::Ok();
}

Result<float> MlpModel::Forward(const Batch& batch, LayerHooks* hooks) {
  const ModelConfig& c = config_;
  const int64_t n = c.batch;
  const int64_t d = c.d_model;
  if (static_cast<int64_t>(batch.inputs.size()) != n * d) {
    return Status::InvalidArgument("batch holds " + std::to_string(batch.inputs.size()) +
                                   " inputs, the model takes " + std::to_string(n * d));
  }
  PSZERO_RETURN_IF_ERROR(LoadTarget(batch.first_row));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(xs_, (c.layers + 1) * n * d, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(loss_, 1, ctx_));
  PSZERO_RETURN_IF_ERROR(Tensor::Wrap(xs_.data(), {n * d}, DType::kFloat32, ctx_.kernels.device)
                             .CopyFrom(Tensor::Wrap(const_cast<float*>(batch.inputs.data()),
                                                    {n * d}, DType::kFloat32)));
  for (int64_t l = 0; l < c.layers; ++l) {
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeForward, static_cast<int>(l)));
    float* x = xs_.data<float>() + l * n * d;
    PSZERO_RETURN_IF_ERROR(blocks_[l].Forward(BlockContext(l), params_, x, n, x + n * d));
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::ParamsDone, static_cast<int>(l)));
  }
  PSZERO_RETURN_IF_ERROR(kernels::MseLossForward(xs_.data<float>() + c.layers * n * d,
                                                 target_.data<float>(), n * d, loss_.data<float>(),
                                                 ctx_.kernels));
  return ReadLoss(loss_);
}

Status MlpModel::RunBackward(LayerHooks* hooks) {
  const ModelConfig& c = config_;
  const int64_t n = c.batch;
  const int64_t d = c.d_model;
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(grad_a_, n * d, ctx_));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(grad_b_, n * d, ctx_));
  float* dx = grad_a_.data<float>();
  PSZERO_RETURN_IF_ERROR(kernels::MseLossBackward(
      xs_.data<float>() + c.layers * n * d, target_.data<float>(), n * d, 1.0f, dx, ctx_.kernels));
  for (int64_t l = c.layers - 1; l >= 0; --l) {
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::BeforeBackward, static_cast<int>(l)));
    if (RecomputeBlock(l)) {
      // The block's saved activations, again, from its kept input (not its output).
      PSZERO_RETURN_IF_ERROR(
          blocks_[l].Forward(BlockContext(l), params_, xs_.data<float>() + l * n * d, n, nullptr));
    }
    float* other = dx == grad_a_.data<float>() ? grad_b_.data<float>() : grad_a_.data<float>();
    PSZERO_RETURN_IF_ERROR(blocks_[l].Backward(BlockContext(l), params_, dx, other));
    dx = other;
    PSZERO_RETURN_IF_ERROR(Hook(hooks, &LayerHooks::GradientsReady, static_cast<int>(l)));
  }
  return Status::Ok();
}

}  // namespace pszero::model
