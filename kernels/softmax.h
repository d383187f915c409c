// Row softmax of scaled scores, optionally causal, forward and backward (fp32).
//
// y[r, :] = softmax(scale * x[r, :]). With causal, the rows form consecutive square
// [cols, cols] matrices (rows % cols == 0), and row r only sees columns j <= r % cols;
// masked entries of y are exactly 0. This is the attention-probability op: scores
// [batch * heads * seq, seq]. Backward: dx = scale * y * (dy - sum_j dy*y). Pointers live
// on ctx.device; y may equal x and dx may equal dy. One leading dimension `ld` serves all
// operands.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

Status SoftmaxForward(const float* x, float* y, int64_t rows, int64_t cols, int64_t ld, float scale,
                      bool causal, const KernelContext& ctx);

Status SoftmaxBackward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                       int64_t ld, float scale, const KernelContext& ctx);

}  // namespace pszero::kernels
