// Internal to kernels/: the table of single-threaded host loops, one table per ISA.
//
// kernels_impl.inc holds the loops once; kernels_scalar.cc, kernels_avx2.cc and
// kernels_avx512.cc each compile it with their own -m flags into their own namespace, so
// the vector width is chosen at run time by picking a table (KernelsFor). Every function
// works on a range the caller has already cut (pointers offset, counts given); the
// public entry points (optimizer.cc, reduce.cc, ...) partition work over threads.
// bf16/fp16 travel as uint16_t bits here.
#pragma once

#include <cstdint>

#include "kernels/context.h"
#include "kernels/internal.h"

namespace pszero::kernels::cpu {

using internal::AdamWConsts;
using internal::SgdConsts;

struct CpuKernels {
  CpuIsa isa;
  void (*adamw_f32)(const AdamWConsts&, float* p, const float* g, float* m, float* v,
                    uint16_t* p_bf16, int64_t n);
  void (*adamw_bf16)(const AdamWConsts&, float* p, const uint16_t* g, float* m, float* v,
                     uint16_t* p_bf16, int64_t n);
  void (*sgd_f32)(const SgdConsts&, float* p, const float* g, float* buf, uint16_t* p_bf16,
                  int64_t n);
  void (*sgd_bf16)(const SgdConsts&, float* p, const uint16_t* g, float* buf, uint16_t* p_bf16,
                   int64_t n);
  // [in is bf16][out is bf16]
  // stream: write the output with non-temporal stores (see kStreamingMinElements).
  void (*sum[2][2])(const void* const* in, int k, void* out, bool accumulate, bool stream,
                    int64_t n);
  double (*sqnorm_f32)(const float* x, int64_t n);
  double (*sqnorm_bf16)(const uint16_t* x, int64_t n);
  float (*max_f32)(const float* x, int64_t n);  // -inf for n == 0, NaN if any NaN
  void (*f32_to_bf16)(const float* in, uint16_t* out, int64_t n, bool stream);
  void (*f32_to_fp16)(const float* in, uint16_t* out, int64_t n, bool stream);
  void (*bf16_to_f32)(const uint16_t* in, float* out, int64_t n, bool stream);
  void (*fp16_to_f32)(const uint16_t* in, float* out, int64_t n, bool stream);
  void (*add)(const float* a, const float* b, float* out, int64_t n, bool stream);
  void (*bias_add)(const float* x, int64_t ldx, const float* bias, float* y, int64_t ldy,
                   int64_t rows, int64_t cols);
  // The same rounded to bf16 on the store.
  void (*bias_add_bf16)(const float* x, int64_t ldx, const float* bias, uint16_t* y, int64_t ldy,
                        int64_t rows, int64_t cols);
  void (*col_sum_acc)(const float* dy, int64_t ld, int64_t rows, int64_t cols, float* acc);
  void (*gelu)(const float* x, float* y, int64_t n);
  // The same values rounded to bf16 on the store (bit-identical to gelu, then f32_to_bf16).
  void (*gelu_bf16)(const float* x, uint16_t* y, int64_t n);
  // bf16 input and output: x widened, fp32 arithmetic, the store rounds.
  void (*gelu_bf16_in)(const uint16_t* x, uint16_t* y, int64_t n);
  void (*gelu_backward)(const float* x, const float* dy, float* dx, int64_t n);
  // GELU' at the widened bf16 x (bit-identical to gelu_backward at those fp32 values).
  void (*gelu_backward_bf16_in)(const uint16_t* x, const float* dy, float* dx, int64_t n);
  void (*layernorm)(const float* x, int64_t ldx, const float* gamma, const float* beta, float eps,
                    float* y, int64_t ldy, float* mean, float* rstd, int64_t rows, int64_t cols);
  // The same with y rounded to bf16 on the store (mean and rstd stay fp32).
  void (*layernorm_bf16)(const float* x, int64_t ldx, const float* gamma, const float* beta,
                         float eps, uint16_t* y, int64_t ldy, float* mean, float* rstd,
                         int64_t rows, int64_t cols);
  // dgamma_acc/dbeta_acc: += per-column sums over these rows.
  void (*layernorm_backward)(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                             const float* gamma, const float* mean, const float* rstd, float* dx,
                             int64_t lddx, float* dgamma_acc, float* dbeta_acc, int64_t rows,
                             int64_t cols);
  // first_row: global index of the first row (for the causal mask).
  void (*softmax)(const float* x, float* y, int64_t ld, int64_t rows, int64_t cols, float scale,
                  bool causal, int64_t first_row);
  void (*softmax_backward)(const float* y, const float* dy, float* dx, int64_t ld, int64_t rows,
                           int64_t cols, float scale);
  // y rounded to bf16 on the store (bit-identical to softmax, then f32_to_bf16).
  void (*softmax_bf16)(const float* x, uint16_t* y, int64_t ld, int64_t rows, int64_t cols,
                       float scale, bool causal, int64_t first_row);
  // bf16 y (widened), fp32 dy, dx rounded to bf16 on the store.
  void (*softmax_backward_bf16)(const uint16_t* y, const float* dy, uint16_t* dx, int64_t ld,
                                int64_t rows, int64_t cols, float scale);
  // Writes lse[r]; returns the sum over rows of lse[r] - logits[r, target[r]].
  double (*cross_entropy)(const float* logits, int64_t ld, const int32_t* targets, int64_t rows,
                          int64_t vocab, float* lse);
  void (*cross_entropy_backward)(const float* logits, int64_t ld, const int32_t* targets,
                                 const float* lse, int64_t rows, int64_t vocab, float coef,
                                 float* dlogits, int64_t ldd);
  double (*mse_sum)(const float* pred, const float* target, int64_t n);
  void (*mse_backward)(const float* pred, const float* target, int64_t n, float coef, float* dpred);
};

// Outputs of at least this many elements per call (Sum without accumulation, casts, Add)
// are written with non-temporal stores, bypassing the cache; see kernels_impl.inc.
inline constexpr int64_t kStreamingMinElements = int64_t{1} << 22;

const CpuKernels& ScalarKernels();
const CpuKernels& Avx2Kernels();
const CpuKernels& Avx512Kernels();
// kAuto resolves to DetectCpuIsa(). The caller has checked availability (CheckContext).
const CpuKernels& KernelsFor(CpuIsa isa);

}  // namespace pszero::kernels::cpu
