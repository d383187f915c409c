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
#pragma once

#include <cstdint>

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

}  // namespace pszero::kernels
