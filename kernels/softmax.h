// Row softmax of scaled scores, optionally causal, forward and backward (fp32, and a bf16
// form for mixed precision's attention probabilities).
//
// y[r, :] = softmax(scale * x[r, :]). With causal, the rows form consecutive square
// [cols, cols] matrices (rows % cols == 0), and row r only sees columns j <= r % cols;
// masked entries of y are exactly 0. This is the attention-probability op: scores
// [batch * heads * seq, seq]. Backward: dx = scale * y * (dy - sum_j dy*y). Pointers live
// on ctx.device; y may equal x and dx may equal dy. One leading dimension `ld` serves all
// operands.
//
// The bf16 forms keep the probabilities (and the scores' gradient) only in bf16: scores,
// dy and every sum fp32, each bf16 output rounded once on the store (the forward's y is
// bit for bit the fp32 forward then Cast); there y may not alias x, dx may not alias dy.
#pragma once

#include <cstdint>

#include "common/half.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

Status SoftmaxForward(const float* x, float* y, int64_t rows, int64_t cols, int64_t ld, float scale,
                      bool causal, const KernelContext& ctx);

Status SoftmaxForward(const float* x, bf16_t* y, int64_t rows, int64_t cols, int64_t ld,
                      float scale, bool causal, const KernelContext& ctx);

Status SoftmaxBackward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                       int64_t ld, float scale, const KernelContext& ctx);
// bf16 y (the bf16 forward's), fp32 dy, bf16 dx.
Status SoftmaxBackward(const bf16_t* y, const float* dy, bf16_t* dx, int64_t rows, int64_t cols,
                       int64_t ld, float scale, const KernelContext& ctx);

}  // namespace pszero::kernels
