#include "kernels/attention.h"

#include <cmath>
#include <type_traits>

#include "kernels/gemm.h"
#include "kernels/internal.h"
#include "kernels/softmax.h"

namespace pszero::kernels {

namespace {

Status CheckShape(const char* op, const AttentionShape& s, int64_t ld_qkv, int64_t ld_out) {
  if (s.batch < 0 || s.seq < 0 || s.heads < 0 || s.head_dim < 0) {
    return Status::InvalidArgument(std::string(op) + ": negative attention shape");
  }
  PSZERO_RETURN_IF_ERROR(internal::CheckLd(op, ld_qkv, s.heads * s.head_dim));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd(op, ld_out, s.heads * s.head_dim));
  return Status::Ok();
}

// T is float (everything fp32; scores == probs, computed in place) or bf16_t (q, k, v,
// probs and the GEMMs' operands bf16; scores a separate fp32 buffer).
//
// Per batch element, one strided batched GEMM over heads: head h of token t sits at
// t * ld + h * head_dim, so heads are head_dim apart and tokens ld apart.
//
// probs = softmax(scale * Q K^T), causal: the first half of the forward, on its own for
// recompute (AttentionProbs), so both write the same bits. The shape is checked.
template <typename T>
Status ProbsImpl(const AttentionShape& s, const T* q, const T* k, int64_t ld_qkv, float* scores,
                 T* probs, const KernelContext& ctx) {
  const DType dtype = std::is_same_v<T, float> ? DType::kFloat32 : DType::kBFloat16;
  const int64_t S = s.seq, D = s.head_dim, H = s.heads;
  const GemmBatch scores_batch = {H, D, D, S * S};
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t tok = b * S;
    // scores[h] = Q_h K_h^T : [S, D] x [D, S].
    PSZERO_RETURN_IF_ERROR(GemmStridedBatched(false, true, S, S, D, 1.0f, q + tok * ld_qkv, ld_qkv,
                                              k + tok * ld_qkv, ld_qkv, 0.0f,
                                              scores + b * H * S * S, S, scores_batch, dtype, ctx));
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  return SoftmaxForward(scores, probs, s.batch * H * S, S, S, scale, /*causal=*/true, ctx);
}

template <typename T>
Status ProbsOnly(const AttentionShape& s, const T* q, const T* k, int64_t ld_qkv, float* scores,
                 T* probs, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckShape("AttentionProbs", s, ld_qkv, s.heads * s.head_dim));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs(
      "AttentionProbs", {s.batch, s.seq, s.heads, s.head_dim}, {q, k, scores, probs}));
  if (s.batch == 0 || s.seq == 0 || s.heads == 0 || s.head_dim == 0) return Status::Ok();
  return ProbsImpl(s, q, k, ld_qkv, scores, probs, ctx);
}

template <typename T>
Status ForwardImpl(const AttentionShape& s, const T* q, const T* k, const T* v, int64_t ld_qkv,
                   float* scores, T* probs, float* out, int64_t ld_out, const KernelContext& ctx) {
  const DType dtype = std::is_same_v<T, float> ? DType::kFloat32 : DType::kBFloat16;
  PSZERO_RETURN_IF_ERROR(CheckShape("AttentionForward", s, ld_qkv, ld_out));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs(
      "AttentionForward", {s.batch, s.seq, s.heads, s.head_dim}, {q, k, v, scores, probs, out}));
  if (s.batch == 0 || s.seq == 0 || s.heads == 0 || s.head_dim == 0) return Status::Ok();
  const int64_t S = s.seq, D = s.head_dim, H = s.heads;
  PSZERO_RETURN_IF_ERROR(ProbsImpl(s, q, k, ld_qkv, scores, probs, ctx));
  const GemmBatch out_batch = {H, S * S, D, D};
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t tok = b * S;
    // out[h] = P_h V_h : [S, S] x [S, D].
    PSZERO_RETURN_IF_ERROR(GemmStridedBatched(false, false, S, D, S, 1.0f, probs + b * H * S * S, S,
                                              v + tok * ld_qkv, ld_qkv, 0.0f, out + tok * ld_out,
                                              ld_out, out_batch, dtype, ctx));
  }
  return Status::Ok();
}

// T as in ForwardImpl; the fp32 form passes dscores == dprobs (the softmax backward in place).
template <typename T>
Status BackwardImpl(const AttentionShape& s, const T* q, const T* k, const T* v, int64_t ld_qkv,
                    const T* probs, const T* dout, int64_t ld_out, float* dprobs, T* dscores,
                    float* dq, float* dk, float* dv, int64_t ld_dqkv, const KernelContext& ctx) {
  const DType dtype = std::is_same_v<T, float> ? DType::kFloat32 : DType::kBFloat16;
  PSZERO_RETURN_IF_ERROR(CheckShape("AttentionBackward", s, ld_qkv, ld_out));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("AttentionBackward", ld_dqkv, s.heads * s.head_dim));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("AttentionBackward",
                                             {s.batch, s.seq, s.heads, s.head_dim},
                                             {q, k, v, probs, dout, dprobs, dscores, dq, dk, dv}));
  if (s.batch == 0 || s.seq == 0 || s.heads == 0 || s.head_dim == 0) return Status::Ok();
  const int64_t S = s.seq, D = s.head_dim, H = s.heads;
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t tok = b * S;
    const T* pb = probs + b * H * S * S;
    float* dpb = dprobs + b * H * S * S;
    // dP[h] = dO_h V_h^T : [S, D] x [D, S].
    PSZERO_RETURN_IF_ERROR(GemmStridedBatched(false, true, S, S, D, 1.0f, dout + tok * ld_out,
                                              ld_out, v + tok * ld_qkv, ld_qkv, 0.0f, dpb, S,
                                              {H, D, D, S * S}, dtype, ctx));
    // dV[h] = P_h^T dO_h : [S, S]^T x [S, D].
    PSZERO_RETURN_IF_ERROR(GemmStridedBatched(true, false, S, D, S, 1.0f, pb, S,
                                              dout + tok * ld_out, ld_out, 0.0f, dv + tok * ld_dqkv,
                                              ld_dqkv, {H, S * S, D, D}, dtype, ctx));
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  // dScores = scale * P * (dP - rowsum(dP * P)).
  PSZERO_RETURN_IF_ERROR(
      SoftmaxBackward(probs, dprobs, dscores, s.batch * H * S, S, S, scale, ctx));
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t tok = b * S;
    const T* dsb = dscores + b * H * S * S;
    // dQ[h] = dS_h K_h : [S, S] x [S, D].
    PSZERO_RETURN_IF_ERROR(GemmStridedBatched(false, false, S, D, S, 1.0f, dsb, S, k + tok * ld_qkv,
                                              ld_qkv, 0.0f, dq + tok * ld_dqkv, ld_dqkv,
                                              {H, S * S, D, D}, dtype, ctx));
    // dK[h] = dS_h^T Q_h : [S, S]^T x [S, D].
    PSZERO_RETURN_IF_ERROR(GemmStridedBatched(true, false, S, D, S, 1.0f, dsb, S, q + tok * ld_qkv,
                                              ld_qkv, 0.0f, dk + tok * ld_dqkv, ld_dqkv,
                                              {H, S * S, D, D}, dtype, ctx));
  }
  return Status::Ok();
}

}  // namespace

Status AttentionForward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        int64_t ld_qkv, float* probs, float* out, int64_t ld_out,
                        const KernelContext& ctx) {
  return ForwardImpl(s, q, k, v, ld_qkv, probs, probs, out, ld_out, ctx);
}

Status AttentionForward(const AttentionShape& s, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                        int64_t ld_qkv, float* scores, bf16_t* probs, float* out, int64_t ld_out,
                        const KernelContext& ctx) {
  return ForwardImpl(s, q, k, v, ld_qkv, scores, probs, out, ld_out, ctx);
}

Status AttentionProbs(const AttentionShape& s, const float* q, const float* k, int64_t ld_qkv,
                      float* probs, const KernelContext& ctx) {
  return ProbsOnly(s, q, k, ld_qkv, probs, probs, ctx);
}

Status AttentionProbs(const AttentionShape& s, const bf16_t* q, const bf16_t* k, int64_t ld_qkv,
                      float* scores, bf16_t* probs, const KernelContext& ctx) {
  return ProbsOnly(s, q, k, ld_qkv, scores, probs, ctx);
}

Status AttentionBackward(const AttentionShape& s, const float* q, const float* k, const float* v,
                         int64_t ld_qkv, const float* probs, const float* dout, int64_t ld_out,
                         float* dprobs, float* dq, float* dk, float* dv, int64_t ld_dqkv,
                         const KernelContext& ctx) {
  return BackwardImpl(s, q, k, v, ld_qkv, probs, dout, ld_out, dprobs, dprobs, dq, dk, dv, ld_dqkv,
                      ctx);
}

Status AttentionBackward(const AttentionShape& s, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                         int64_t ld_qkv, const bf16_t* probs, const bf16_t* dout, int64_t ld_out,
                         float* dprobs, bf16_t* dscores, float* dq, float* dk, float* dv,
                         int64_t ld_dqkv, const KernelContext& ctx) {
  return BackwardImpl(s, q, k, v, ld_qkv, probs, dout, ld_out, dprobs, dscores, dq, dk, dv, ld_dqkv,
                      ctx);
}

}  // namespace pszero::kernels
