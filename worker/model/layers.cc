#include "worker/model/layers.h"

#include <algorithm>
#include <cmath>

#include "kernels/cast.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/layernorm.h"

namespace pszero::model {

namespace {

constexpr float kLayerNormEps = 1e-5f;

Status EnsureActivation(Tensor& t, int64_t n, DType dtype, const ModelContext& ctx) {
  if (t.defined() && t.numel() == n && t.dtype() == dtype) return Status::Ok();
  PSZERO_ASSIGN_OR_RETURN(
      t, Tensor::Empty({n}, dtype, MemoryCategory::kActivations, ctx.tracker, ctx.kernels.device));
  return Status::Ok();
}

Status EnsureBf16(Tensor& t, int64_t n, const ModelContext& ctx) {
  return EnsureActivation(t, n, DType::kBFloat16, ctx);
}

// A scratch of at least n elements: grown when smaller, never shrunk. Its contents are
// not kept, so the old buffer is freed before the new one is taken (the peak never holds
// both; on CUDA the free waits for the work queued on the old buffer).
Status GrowScratch(Tensor& t, int64_t n, DType dtype, const ModelContext& ctx) {
  if (t.defined() && t.numel() >= n) return Status::Ok();
  t = Tensor();
  return EnsureActivation(t, n, dtype, ctx);
}

Status GrowBf16(Tensor& t, int64_t n, const ModelContext& ctx) {
  return GrowScratch(t, n, DType::kBFloat16, ctx);
}

// fp32 (BlockScratch).
Status GrowFloat(Tensor& t, int64_t n, const ModelContext& ctx) {
  return GrowScratch(t, n, DType::kFloat32, ctx);
}

// A GEMM input's dtype (bf16 in bf16 mode), grown as GrowScratch.
Status GrowGemmInput(Tensor& t, int64_t n, const ModelContext& ctx) {
  const DType dtype = ctx.bf16 ? DType::kBFloat16 : DType::kFloat32;
  if (t.defined() && t.dtype() != dtype) t = Tensor();
  return GrowScratch(t, n, dtype, ctx);
}

// The saved activations a block writes: the context's shared set (--recompute full), or
// its own.
AttentionSaved& SavedOf(const ModelContext& ctx, AttentionSaved& own) {
  return ctx.block_saved != nullptr ? ctx.block_saved->attn : own;
}
MlpSaved& SavedOf(const ModelContext& ctx, MlpSaved& own) {
  return ctx.block_saved != nullptr ? ctx.block_saved->mlp : own;
}

// fp32 mode: y = Linear(LayerNorm(x)), the normalized rows kept in ln_out.
Status NormThenLinear(const ModelContext& ctx, ParamBuffer& params, LayerNorm& ln,
                      LayerNormStats& stats, Linear& linear, const float* x, int64_t n,
                      Tensor& ln_out, float* y) {
  PSZERO_RETURN_IF_ERROR(ln.Forward(ctx, params, x, n, ln_out.data<float>(), &stats));
  return linear.Forward(ctx, params, ln_out.data<float>(), n, y);
}

}  // namespace

Result<Recompute> ParseRecompute(const std::string& name) {
  for (Recompute r : {Recompute::kNone, Recompute::kSelective, Recompute::kFull}) {
    if (name == RecomputeName(r)) return r;
  }
  return Status::InvalidArgument("--recompute: '" + name + "' is not none, selective or full");
}

const char* RecomputeName(Recompute r) {
  switch (r) {
    case Recompute::kSelective:
      return "selective";
    case Recompute::kFull:
      return "full";
    case Recompute::kNone:
      break;
  }
  return "none";
}

int64_t RecomputedBlocks(Recompute r, int64_t recompute_layers, int64_t layers) {
  if (r != Recompute::kFull) return 0;
  return recompute_layers < 0 ? layers : std::min(recompute_layers, layers);
}

Status EnsureBuffer(Tensor& t, int64_t n, const ModelContext& ctx) {
  return EnsureActivation(t, n, DType::kFloat32, ctx);
}

Status EnsureGemmInput(Tensor& t, int64_t n, const ModelContext& ctx) {
  return EnsureActivation(t, n, ctx.bf16 ? DType::kBFloat16 : DType::kFloat32, ctx);
}

Result<const float*> ParamFloats(const ModelContext& ctx, ParamBuffer& params, int view,
                                 Tensor& scratch) {
  if (const float* p = params.param(view); p != nullptr) return p;
  const bf16_t* b = params.param_bf16(view);
  if (b == nullptr) {
    return Status::Internal("parameter " + params.views()[view].spec.name + " not attached");
  }
  const int64_t n = params.views()[view].numel;
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(scratch, n, ctx));
  PSZERO_RETURN_IF_ERROR(
      kernels::Cast(b, DType::kBFloat16, scratch.data(), DType::kFloat32, n, ctx.kernels));
  return scratch.data<float>();
}

Status MatmulWeightT(const ModelContext& ctx, const float* x, int64_t n, int64_t in, const float* w,
                     const bf16_t* w_bf16, int64_t out, float* y, Tensor& x_bf16) {
  if (!ctx.bf16) {
    return kernels::Gemm(false, true, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out, DType::kFloat32,
                         ctx.kernels);
  }
  PSZERO_RETURN_IF_ERROR(EnsureBf16(x_bf16, n * in, ctx));
  PSZERO_RETURN_IF_ERROR(
      kernels::Cast(x, DType::kFloat32, x_bf16.data(), DType::kBFloat16, n * in, ctx.kernels));
  return MatmulWeightT(ctx, x_bf16.data<bf16_t>(), n, in, w_bf16, out, y);
}

Status MatmulWeightT(const ModelContext& ctx, const bf16_t* x, int64_t n, int64_t in,
                     const bf16_t* w_bf16, int64_t out, float* y) {
  if (!ctx.bf16) return Status::Internal("bf16 activations outside bf16 mode");
  if (w_bf16 == nullptr) return Status::Internal("bf16 compute without a bf16 parameter copy");
  return kernels::Gemm(false, true, n, out, in, 1.0f, x, in, w_bf16, in, 0.0f, y, out,
                       DType::kBFloat16, ctx.kernels);
}

Status MatmulWeightBackward(const ModelContext& ctx, const float* dy, int64_t n, int64_t out,
                            const float* w, const bf16_t* w_bf16, int64_t in, const bf16_t* x_bf16,
                            const float* x, float* dw, float* dx, Tensor& dy_bf16) {
  if (!ctx.bf16) {
    PSZERO_RETURN_IF_ERROR(kernels::Gemm(true, false, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw,
                                         in, DType::kFloat32, ctx.kernels));
    if (dx == nullptr) return Status::Ok();
    return kernels::Gemm(false, false, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in,
                         DType::kFloat32, ctx.kernels);
  }
  if (x_bf16 == nullptr || w_bf16 == nullptr) {
    return Status::Internal("bf16 backward without its bf16 operands");
  }
  PSZERO_RETURN_IF_ERROR(GrowBf16(dy_bf16, n * out, ctx));
  PSZERO_RETURN_IF_ERROR(
      kernels::Cast(dy, DType::kFloat32, dy_bf16.data(), DType::kBFloat16, n * out, ctx.kernels));
  PSZERO_RETURN_IF_ERROR(kernels::Gemm(true, false, out, in, n, 1.0f, dy_bf16.data(), out, x_bf16,
                                       in, 1.0f, dw, in, DType::kBFloat16, ctx.kernels));
  if (dx == nullptr) return Status::Ok();
  return kernels::Gemm(false, false, n, in, out, 1.0f, dy_bf16.data(), out, w_bf16, in, 0.0f, dx,
                       in, DType::kBFloat16, ctx.kernels);
}

// ---- Linear ----

Status Linear::Declare(ParamBuffer& params, const std::string& name, int64_t in, int64_t out,
                       Parallel parallel, int parts, float std) {
  parallel_ = parallel;
  const int t = params.tp_size();
  ParamSpec w{name + ".weight", {out, in}, -1, parts, ParamInit::kNormal, std};
  ParamSpec b{name + ".bias", {out}, -1, parts, ParamInit::kZeros, 0.0f};
  local_in_ = in;
  local_out_ = out;
  if (parallel == Parallel::kColumn) {
    w.shard_dim = 0;
    b.shard_dim = 0;
    local_out_ = out / t;
  } else if (parallel == Parallel::kRow) {
    w.shard_dim = 1;
    local_in_ = in / t;
  }
  PSZERO_ASSIGN_OR_RETURN(weight_, params.Add(w));
  PSZERO_ASSIGN_OR_RETURN(bias_, params.Add(b));
  return Status::Ok();
}

Status Linear::Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n,
                       float* y) {
  x_ = x;
  x_bf16_ = nullptr;
  PSZERO_RETURN_IF_ERROR(MatmulWeightT(ctx, x, n, local_in_, params.param(weight_),
                                       params.param_bf16(weight_), local_out_, y, x_copy_));
  if (ctx.bf16) x_bf16_ = x_copy_.data<bf16_t>();
  return AddBias(ctx, params, n, y, y);
}

Status Linear::Forward(const ModelContext& ctx, ParamBuffer& params, const bf16_t* x, int64_t n,
                       float* y) {
  x_ = nullptr;
  x_bf16_ = x;
  PSZERO_RETURN_IF_ERROR(
      MatmulWeightT(ctx, x, n, local_in_, params.param_bf16(weight_), local_out_, y));
  return AddBias(ctx, params, n, y, y);
}

Status Linear::Forward(const ModelContext& ctx, ParamBuffer& params, const bf16_t* x, int64_t n,
                       float* acc, bf16_t* y) {
  x_ = nullptr;
  x_bf16_ = x;
  PSZERO_RETURN_IF_ERROR(
      MatmulWeightT(ctx, x, n, local_in_, params.param_bf16(weight_), local_out_, acc));
  return AddBias(ctx, params, n, acc, y);
}

template <typename Y>
Status Linear::AddBias(const ModelContext& ctx, ParamBuffer& params, int64_t n, float* acc, Y* y) {
  if (parallel_ == Parallel::kRow) {
    PSZERO_RETURN_IF_ERROR(ctx.tp->ReduceForward(acc, n * local_out_));
  }
  PSZERO_ASSIGN_OR_RETURN(const float* bias, ParamFloats(ctx, params, bias_, bias_f32_));
  return kernels::BiasAdd(acc, local_out_, bias, y, local_out_, n, local_out_, ctx.kernels);
}

Status Linear::Backward(const ModelContext& ctx, ParamBuffer& params, const float* dy, int64_t n,
                        float* dx) {
  PSZERO_RETURN_IF_ERROR(
      kernels::BiasAddBackward(dy, local_out_, n, local_out_, params.grad(bias_), ctx.kernels));
  PSZERO_RETURN_IF_ERROR(MatmulWeightBackward(
      ctx, dy, n, local_out_, params.param(weight_), params.param_bf16(weight_), local_in_, x_bf16_,
      x_, params.grad(weight_), dx, GradBf16Scratch(ctx, dy_bf16_)));
  if (parallel_ == Parallel::kColumn && dx != nullptr) {
    PSZERO_RETURN_IF_ERROR(ctx.tp->CopyBackward(dx, n * local_in_));
  }
  return Status::Ok();
}

// ---- LayerNorm ----

Status LayerNorm::Declare(ParamBuffer& params, const std::string& name, int64_t dim) {
  dim_ = dim;
  PSZERO_ASSIGN_OR_RETURN(gamma_,
                          params.Add({name + ".weight", {dim}, -1, 1, ParamInit::kOnes, 0.0f}));
  PSZERO_ASSIGN_OR_RETURN(beta_,
                          params.Add({name + ".bias", {dim}, -1, 1, ParamInit::kZeros, 0.0f}));
  return Status::Ok();
}

template <typename Y>
Status LayerNorm::ForwardImpl(const ModelContext& ctx, ParamBuffer& params, const float* x,
                              int64_t n, Y* y, LayerNormStats* stats) {
  x_ = x;
  stats_ = stats;
  LayerNormStats& st = stats != nullptr ? *stats : own_;
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(st.mean, n, ctx));
  PSZERO_RETURN_IF_ERROR(EnsureBuffer(st.rstd, n, ctx));
  PSZERO_ASSIGN_OR_RETURN(const float* gamma, ParamFloats(ctx, params, gamma_, gamma_f32_));
  PSZERO_ASSIGN_OR_RETURN(const float* beta, ParamFloats(ctx, params, beta_, beta_f32_));
  return kernels::LayerNormForward(x, dim_, gamma, beta, kLayerNormEps, y, dim_,
                                   st.mean.data<float>(), st.rstd.data<float>(), n, dim_,
                                   ctx.kernels);
}

Status LayerNorm::Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n,
                          float* y, LayerNormStats* stats) {
  return ForwardImpl(ctx, params, x, n, y, stats);
}

Status LayerNorm::Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n,
                          bf16_t* y, LayerNormStats* stats) {
  return ForwardImpl(ctx, params, x, n, y, stats);
}

Status LayerNorm::Backward(const ModelContext& ctx, ParamBuffer& params, const float* dy, int64_t n,
                           float* dx) {
  PSZERO_ASSIGN_OR_RETURN(const float* gamma, ParamFloats(ctx, params, gamma_, gamma_f32_));
  const LayerNormStats& st = stats_ != nullptr ? *stats_ : own_;
  return kernels::LayerNormBackward(dy, dim_, x_, dim_, gamma, st.mean.data<float>(),
                                    st.rstd.data<float>(), dx, dim_, params.grad(gamma_),
                                    params.grad(beta_), n, dim_, ctx.kernels);
}

// ---- AttentionBlock ----

Status AttentionBlock::Declare(ParamBuffer& params, const std::string& name, int64_t d,
                               int64_t heads, float residual_std) {
  if (heads <= 0 || d % heads != 0) {
    return Status::InvalidArgument("d-model " + std::to_string(d) + " does not split into " +
                                   std::to_string(heads) + " heads");
  }
  if (heads % params.tp_size() != 0) {
    return Status::InvalidArgument(std::to_string(heads) + " heads do not split across " +
                                   std::to_string(params.tp_size()) + " TP ranks");
  }
  d_ = d;
  heads_ = heads;
  PSZERO_RETURN_IF_ERROR(ln_.Declare(params, name + ".ln_1", d));
  PSZERO_RETURN_IF_ERROR(qkv_.Declare(params, name + ".attn.qkv", d, 3 * d, Parallel::kColumn, 3));
  return proj_.Declare(params, name + ".attn.proj", d, d, Parallel::kRow, 1, residual_std);
}

Status AttentionBlock::Forward(const ModelContext& ctx, ParamBuffer& params, const float* x,
                               int64_t batch, int64_t seq, float* out) {
  const int64_t n = batch * seq;
  const int64_t dl = d_ / ctx.tp->size();
  shape_ = {batch, seq, heads_ / ctx.tp->size(), d_ / heads_};
  const int64_t np = batch * shape_.heads * seq * seq;
  AttentionSaved& a = SavedOf(ctx, own_saved_);
  BlockScratch& s = BlockScratchOf(ctx, own_);
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(a.ln_out, n * d_, ctx));
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(a.qkv, n * 3 * dl, ctx));
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(a.attn_out, n * dl, ctx));
  // --recompute selective: the probabilities live in the block scratch, only while this
  // forward (P·V) or this block's backward (which recomputes them) runs.
  Tensor& probs = ctx.recompute == Recompute::kSelective ? s.probs : a.probs;
  PSZERO_RETURN_IF_ERROR(ctx.recompute == Recompute::kSelective ? GrowGemmInput(probs, np, ctx)
                                                                : EnsureGemmInput(probs, np, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.branch, n * d_, ctx));
  float* branch = s.branch.data<float>();
  if (!ctx.bf16) {
    PSZERO_RETURN_IF_ERROR(
        NormThenLinear(ctx, params, ln_, a.ln, qkv_, x, n, a.ln_out, a.qkv.data<float>()));
    const float* q = a.qkv.data<float>();
    PSZERO_RETURN_IF_ERROR(kernels::AttentionForward(shape_, q, q + dl, q + 2 * dl, 3 * dl,
                                                     probs.data<float>(), a.attn_out.data<float>(),
                                                     dl, ctx.kernels));
    PSZERO_RETURN_IF_ERROR(proj_.Forward(ctx, params, a.attn_out.data<float>(), n, branch));
    return kernels::Add(x, branch, out, n * d_, ctx.kernels);
  }
  // bf16: every fp32 intermediate (the QKV GEMM's output, the scores, the attention's
  // output) goes to the block scratch's buffer for its gradient, unused until backward, and
  // is rounded once, within this call, into the bf16 activation that is kept.
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dwide, n * 3 * dl, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dprobs, np, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dattn, n * dl, ctx));
  float* qkv_acc = s.dwide.data<float>();
  float* scores = s.dprobs.data<float>();
  float* attn_acc = s.dattn.data<float>();
  PSZERO_RETURN_IF_ERROR(ln_.Forward(ctx, params, x, n, a.ln_out.data<bf16_t>(), &a.ln));
  PSZERO_RETURN_IF_ERROR(
      qkv_.Forward(ctx, params, a.ln_out.data<bf16_t>(), n, qkv_acc, a.qkv.data<bf16_t>()));
  const bf16_t* q = a.qkv.data<bf16_t>();
  PSZERO_RETURN_IF_ERROR(kernels::AttentionForward(shape_, q, q + dl, q + 2 * dl, 3 * dl, scores,
                                                   probs.data<bf16_t>(), attn_acc, dl,
                                                   ctx.kernels));
  PSZERO_RETURN_IF_ERROR(kernels::Cast(attn_acc, DType::kFloat32, a.attn_out.data(),
                                       DType::kBFloat16, n * dl, ctx.kernels));
  PSZERO_RETURN_IF_ERROR(proj_.Forward(ctx, params, a.attn_out.data<bf16_t>(), n, branch));
  return kernels::Add(x, branch, out, n * d_, ctx.kernels);
}

Status AttentionBlock::Backward(const ModelContext& ctx, ParamBuffer& params, const float* dout,
                                float* dx) {
  const int64_t n = shape_.batch * shape_.seq;
  const int64_t dl = d_ / ctx.tp->size();
  const int64_t np = shape_.batch * shape_.heads * shape_.seq * shape_.seq;
  AttentionSaved& a = SavedOf(ctx, own_saved_);
  BlockScratch& s = BlockScratchOf(ctx, own_);
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dattn, n * dl, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dwide, n * 3 * dl, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dprobs, np, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dln, n * d_, ctx));
  float* dattn = s.dattn.data<float>();
  float* dprobs = s.dprobs.data<float>();
  float* dln = s.dln.data<float>();
  const bool selective = ctx.recompute == Recompute::kSelective;
  Tensor& probs = selective ? s.probs : a.probs;
  PSZERO_RETURN_IF_ERROR(proj_.Backward(ctx, params, dout, n, dattn));
  float* dq = s.dwide.data<float>();
  if (ctx.bf16) {
    const bf16_t* q = a.qkv.data<bf16_t>();
    if (selective) {
      // The forward's scores GEMM and softmax again, the scores in dprobs as in forward
      // (its gradient is written only after the attention backward has read the probs).
      PSZERO_RETURN_IF_ERROR(GrowGemmInput(probs, np, ctx));
      PSZERO_RETURN_IF_ERROR(kernels::AttentionProbs(shape_, q, q + dl, 3 * dl, dprobs,
                                                     probs.data<bf16_t>(), ctx.kernels));
    }
    // The attention's GEMMs read dout and the scores' gradient in bf16, one after the
    // other, from one scratch (the model's shared one when there is one).
    Tensor& scratch = GradBf16Scratch(ctx, dbf16_);
    PSZERO_RETURN_IF_ERROR(GrowBf16(scratch, std::max(n * dl, np), ctx));
    bf16_t* dbf16 = scratch.data<bf16_t>();
    PSZERO_RETURN_IF_ERROR(
        kernels::Cast(dattn, DType::kFloat32, dbf16, DType::kBFloat16, n * dl, ctx.kernels));
    PSZERO_RETURN_IF_ERROR(kernels::AttentionBackward(
        shape_, q, q + dl, q + 2 * dl, 3 * dl, probs.data<bf16_t>(), dbf16, dl, dprobs, dbf16, dq,
        dq + dl, dq + 2 * dl, 3 * dl, ctx.kernels));
  } else {
    const float* q = a.qkv.data<float>();
    if (selective) {
      PSZERO_RETURN_IF_ERROR(GrowGemmInput(probs, np, ctx));
      PSZERO_RETURN_IF_ERROR(
          kernels::AttentionProbs(shape_, q, q + dl, 3 * dl, probs.data<float>(), ctx.kernels));
    }
    PSZERO_RETURN_IF_ERROR(kernels::AttentionBackward(shape_, q, q + dl, q + 2 * dl, 3 * dl,
                                                      probs.data<float>(), dattn, dl, dprobs, dq,
                                                      dq + dl, dq + 2 * dl, 3 * dl, ctx.kernels));
  }
  PSZERO_RETURN_IF_ERROR(qkv_.Backward(ctx, params, dq, n, dln));
  PSZERO_RETURN_IF_ERROR(ln_.Backward(ctx, params, dln, n, dx));
  return kernels::Add(dx, dout, dx, n * d_, ctx.kernels);
}

// ---- MlpBlock ----

Status MlpBlock::Declare(ParamBuffer& params, const std::string& name, int64_t d, int64_t hidden,
                         float residual_std) {
  d_ = d;
  PSZERO_RETURN_IF_ERROR(ln_.Declare(params, name + ".ln_2", d));
  PSZERO_RETURN_IF_ERROR(fc_.Declare(params, name + ".mlp.fc", d, hidden, Parallel::kColumn));
  return proj_.Declare(params, name + ".mlp.proj", hidden, d, Parallel::kRow, 1, residual_std);
}

Status MlpBlock::Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n,
                         float* out) {
  n_ = n;
  const int64_t hl = fc_.local_out();
  MlpSaved& a = SavedOf(ctx, own_saved_);
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(a.ln_out, n * d_, ctx));
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(a.hidden, n * hl, ctx));
  PSZERO_RETURN_IF_ERROR(EnsureGemmInput(a.act, n * hl, ctx));
  BlockScratch& s = BlockScratchOf(ctx, own_);
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.branch, n * d_, ctx));
  float* branch = s.branch.data<float>();
  if (ctx.bf16) {
    // fc's fp32 output goes to the block scratch's buffer for its gradient (unused until
    // backward) and is kept as bf16 (with its bias): GELU and GELU's backward read that.
    PSZERO_RETURN_IF_ERROR(GrowFloat(s.dwide, n * hl, ctx));
    PSZERO_RETURN_IF_ERROR(ln_.Forward(ctx, params, x, n, a.ln_out.data<bf16_t>(), &a.ln));
    PSZERO_RETURN_IF_ERROR(fc_.Forward(ctx, params, a.ln_out.data<bf16_t>(), n,
                                       s.dwide.data<float>(), a.hidden.data<bf16_t>()));
    PSZERO_RETURN_IF_ERROR(
        kernels::GeluForward(a.hidden.data<bf16_t>(), a.act.data<bf16_t>(), n * hl, ctx.kernels));
    if (out == nullptr) {
      proj_.KeepInput(a.act.data<bf16_t>());
      return Status::Ok();
    }
    PSZERO_RETURN_IF_ERROR(proj_.Forward(ctx, params, a.act.data<bf16_t>(), n, branch));
  } else {
    PSZERO_RETURN_IF_ERROR(
        NormThenLinear(ctx, params, ln_, a.ln, fc_, x, n, a.ln_out, a.hidden.data<float>()));
    PSZERO_RETURN_IF_ERROR(
        kernels::GeluForward(a.hidden.data<float>(), a.act.data<float>(), n * hl, ctx.kernels));
    if (out == nullptr) {
      proj_.KeepInput(a.act.data<float>());
      return Status::Ok();
    }
    PSZERO_RETURN_IF_ERROR(proj_.Forward(ctx, params, a.act.data<float>(), n, branch));
  }
  return kernels::Add(x, branch, out, n * d_, ctx.kernels);
}

Status MlpBlock::Backward(const ModelContext& ctx, ParamBuffer& params, const float* dout,
                          float* dx) {
  const int64_t n = n_;
  const int64_t hl = fc_.local_out();
  MlpSaved& a = SavedOf(ctx, own_saved_);
  BlockScratch& s = BlockScratchOf(ctx, own_);
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dwide, n * hl, ctx));
  PSZERO_RETURN_IF_ERROR(GrowFloat(s.dln, n * d_, ctx));
  float* dln = s.dln.data<float>();
  float* dh = s.dwide.data<float>();
  PSZERO_RETURN_IF_ERROR(proj_.Backward(ctx, params, dout, n, dh));
  PSZERO_RETURN_IF_ERROR(
      ctx.bf16 ? kernels::GeluBackward(a.hidden.data<bf16_t>(), dh, dh, n * hl, ctx.kernels)
               : kernels::GeluBackward(a.hidden.data<float>(), dh, dh, n * hl, ctx.kernels));
  PSZERO_RETURN_IF_ERROR(fc_.Backward(ctx, params, dh, n, dln));
  PSZERO_RETURN_IF_ERROR(ln_.Backward(ctx, params, dln, n, dx));
  return kernels::Add(dx, dout, dx, n * d_, ctx.kernels);
}

}  // namespace pszero::model
