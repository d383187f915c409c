// Reductions over flat arrays: k-way elementwise sum (gradient aggregation), in-place
// accumulation, squared L2 norm (for global-norm clipping) and maximum.
//
// Sum adds in a fixed order, out (when accumulating) then inputs[0], inputs[1], ..., in
// fp32 whatever the storage type, and rounds once to the output type (bf16: RNE). The
// order is the canonical order --deterministic relies on: the same inputs in the same
// order give the same bits on every thread count and ISA of the same device. Scalar
// results (SquaredNorm, Max) are written to a float on ctx.device. Pointers live on
// ctx.device; an output may alias an input only when it is that same array.
#pragma once

#include <cstdint>
#include <span>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

inline constexpr int kMaxSumInputs = 8;

// out[i] = (accumulate ? out[i] : 0) + inputs[0][i] + ... + inputs[k-1][i], for
// 1 <= k <= kMaxSumInputs. Input and output dtypes: fp32 or bf16, in any combination.
Status Sum(std::span<const void* const> inputs, DType in_dtype, void* out, DType out_dtype,
           int64_t n, bool accumulate, const KernelContext& ctx);

// out[i] += in[i]: Sum with one input, accumulating.
Status Accumulate(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                  const KernelContext& ctx);

// *out = sum of x[i]^2 (fp32 or bf16 input; fp32 partial sums, double across blocks on
// the host). 0 for n == 0.
Status SquaredNorm(const void* x, DType dtype, int64_t n, float* out, const KernelContext& ctx);

// *out = max of x[i] (fp32); NaN if any element is NaN; -Inf for n == 0.
Status Max(const float* x, int64_t n, float* out, const KernelContext& ctx);

}  // namespace pszero::kernels
