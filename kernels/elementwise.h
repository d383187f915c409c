// Pointwise transformer ops, forward and backward: bias add, residual add, GELU (tanh
// form, as GPT-2). fp32, row-major; the bf16 forms are for mixed precision, where an
// activation is kept only in bf16: arithmetic in fp32 (a bf16 input widened exactly), and
// a bf16 output rounded once, to nearest even, on the store.
//
// Convention for every transformer op in kernels/: activation gradients are written
// (overwritten); parameter gradients (dbias, dgamma, dbeta, dtable) are accumulated (+=),
// so the caller zeroes them once per step and micro-batches add up. Pointers live on
// ctx.device. An output may alias its input where a comment says so.
#pragma once

#include <cstdint>

#include "common/half.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

// y[r, c] = x[r, c] + bias[c] for a [rows, cols] matrix; y may equal x (same ld).
Status BiasAdd(const float* x, int64_t ldx, const float* bias, float* y, int64_t ldy, int64_t rows,
               int64_t cols, const KernelContext& ctx);
// The same with y rounded to bf16 (bit for bit the fp32 BiasAdd then Cast): a GEMM's fp32
// output plus its bias, kept in bf16. y may not alias x.
Status BiasAdd(const float* x, int64_t ldx, const float* bias, bf16_t* y, int64_t ldy, int64_t rows,
               int64_t cols, const KernelContext& ctx);
// dbias[c] += sum over r of dy[r, c]. (dx = dy: nothing to compute.)
Status BiasAddBackward(const float* dy, int64_t lddy, int64_t rows, int64_t cols, float* dbias,
                       const KernelContext& ctx);

// out[i] = a[i] + b[i] (residual add; its backward is the identity on both inputs, i.e.
// Add(dresidual, dy, dresidual)). out may equal a or b.
Status Add(const float* a, const float* b, float* out, int64_t n, const KernelContext& ctx);

// y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))); y may equal x.
Status GeluForward(const float* x, float* y, int64_t n, const KernelContext& ctx);
// The same computed in fp32 and rounded to a bf16 y (bit for bit GeluForward then Cast):
// the bf16 input of the next GEMM under mixed precision.
Status GeluForward(const float* x, bf16_t* y, int64_t n, const KernelContext& ctx);
// A bf16 pre-activation (kept in bf16 for backward) to a bf16 output: GELU in fp32 of the
// widened x, rounded on the store; y may equal x.
Status GeluForward(const bf16_t* x, bf16_t* y, int64_t n, const KernelContext& ctx);
// dx = dy * GELU'(x); dx may equal dy.
Status GeluBackward(const float* x, const float* dy, float* dx, int64_t n,
                    const KernelContext& ctx);
// The same with GELU' evaluated at the widened bf16 x (bit for bit the fp32 GeluBackward of
// those values); dy and dx fp32, dx may equal dy.
Status GeluBackward(const bf16_t* x, const float* dy, float* dx, int64_t n,
                    const KernelContext& ctx);

// dst[r, 0:cols] = src[r, 0:cols] for r < rows, rows of `dtype` elements with leading
// dimensions ld_src and ld_dst (a strided block copy: the transposes around TP's
// gathers). The two blocks must not overlap.
Status Copy2D(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows,
              int64_t cols, DType dtype, const KernelContext& ctx);

}  // namespace pszero::kernels
