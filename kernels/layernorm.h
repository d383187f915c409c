// LayerNorm over the last dimension of a row-major [rows, cols] fp32 matrix, forward
// (saving per-row mean and 1/std for backward) and backward.
//
// y = (x - mean) * rstd * gamma + beta, rstd = 1 / sqrt(var + eps), var the biased
// variance. Backward writes dx and accumulates dgamma, dbeta (+=, see elementwise.h).
// Pointers live on ctx.device; y may equal x, dx may equal dy (same ld).
//
// The bf16-output forward is for mixed precision, where the normalized rows are the bf16
// input of the next GEMM: statistics and arithmetic stay fp32 and only the store rounds
// (to nearest even), so y is bit for bit the fp32 forward followed by Cast.
#pragma once

#include <cstdint>

#include "common/half.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

Status LayerNormForward(const float* x, int64_t ldx, const float* gamma, const float* beta,
                        float eps, float* y, int64_t ldy, float* mean, float* rstd, int64_t rows,
                        int64_t cols, const KernelContext& ctx);
// The same with a bf16 y (mean and rstd fp32); y may not alias x.
Status LayerNormForward(const float* x, int64_t ldx, const float* gamma, const float* beta,
                        float eps, bf16_t* y, int64_t ldy, float* mean, float* rstd, int64_t rows,
                        int64_t cols, const KernelContext& ctx);

Status LayerNormBackward(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                         const float* gamma, const float* mean, const float* rstd, float* dx,
                         int64_t lddx, float* dgamma, float* dbeta, int64_t rows, int64_t cols,
                         const KernelContext& ctx);

}  // namespace pszero::kernels
