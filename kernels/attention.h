// Causal multi-head self-attention built from strided batched GEMM and the causal softmax
// (softmax.h), forward and backward; the same code drives the host and the CUDA twins.
//
// Layout is what a fused QKV projection produces: q, k and v are [batch, seq, heads,
// head_dim] with `ld_qkv` elements between consecutive tokens (heads*head_dim for separate
// tensors, 3*heads*head_dim when q, k, v point into one [tokens, 3*d] buffer). The output
// (and dout) is [batch, seq, heads, head_dim] with `ld_out` between tokens, ready for the
// output projection. `probs` [batch, heads, seq, seq] is written by forward and read by
// backward; backward needs a scratch `dprobs` of the same size. Scale 1/sqrt(head_dim).
// Pointers live on ctx.device.
//
// The bf16 forms are mixed precision's attention: q, k, v and the saved probabilities in
// bf16 only, bf16 GEMM operands with fp32 accumulation. Scores, softmax statistics and the
// output are fp32; each bf16 value is rounded once, on the store. Backward reads the bf16
// copies and rounds dout and the scores' gradient to bf16 for its GEMMs (as a Linear
// rounds its output gradient), while dprobs, dq, dk, dv stay fp32.
#pragma once

#include <cstdint>

#include "common/half.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

struct AttentionShape {
  int64_t batch = 0;
  int64_t seq = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
};

Status AttentionForward(const AttentionShape& shape, const float* q, const float* k, const float* v,
                        int64_t ld_qkv, float* probs, float* out, int64_t ld_out,
                        const KernelContext& ctx);

// Writes dq, dk, dv (same layout and ld_dqkv for all three; they may point into one fused
// [tokens, 3*d] gradient buffer).
Status AttentionBackward(const AttentionShape& shape, const float* q, const float* k,
                         const float* v, int64_t ld_qkv, const float* probs, const float* dout,
                         int64_t ld_out, float* dprobs, float* dq, float* dk, float* dv,
                         int64_t ld_dqkv, const KernelContext& ctx);

// `scores`: a fp32 scratch the size of probs (the scores before the softmax; its contents
// afterwards are unspecified). probs [batch, heads, seq, seq] in bf16.
Status AttentionForward(const AttentionShape& shape, const bf16_t* q, const bf16_t* k,
                        const bf16_t* v, int64_t ld_qkv, float* scores, bf16_t* probs, float* out,
                        int64_t ld_out, const KernelContext& ctx);

// The probabilities alone, exactly as AttentionForward writes them (the same scores GEMM
// and softmax): what activation recompute (--recompute selective) runs in backward instead
// of keeping them. fp32: scores is probs (computed in place); bf16: `scores` is the fp32
// scratch of the bf16 AttentionForward.
Status AttentionProbs(const AttentionShape& shape, const float* q, const float* k, int64_t ld_qkv,
                      float* probs, const KernelContext& ctx);
Status AttentionProbs(const AttentionShape& shape, const bf16_t* q, const bf16_t* k, int64_t ld_qkv,
                      float* scores, bf16_t* probs, const KernelContext& ctx);

// dout in bf16 (the caller rounds it); `dprobs` a fp32 scratch and `dscores` a bf16 scratch,
// both the size of probs. dscores may alias dout: dout is last read before dscores is
// written.
Status AttentionBackward(const AttentionShape& shape, const bf16_t* q, const bf16_t* k,
                         const bf16_t* v, int64_t ld_qkv, const bf16_t* probs, const bf16_t* dout,
                         int64_t ld_out, float* dprobs, bf16_t* dscores, float* dq, float* dk,
                         float* dv, int64_t ld_dqkv, const KernelContext& ctx);

}  // namespace pszero::kernels
