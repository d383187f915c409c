#include "kernels/layernorm.h"

#include <algorithm>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

namespace {

// y is float or bf16_t; the CUDA twin and the host table take bf16 as raw bits.
template <typename Y>
Status LayerNormForwardImpl(const float* x, int64_t ldx, const float* gamma, const float* beta,
                            float eps, Y* y, int64_t ldy, float* mean, float* rstd, int64_t rows,
                            int64_t cols, const KernelContext& ctx) {
  constexpr bool kBf16 = std::is_same_v<Y, bf16_t>;
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(
      internal::CheckArgs("LayerNormForward", {rows, cols}, {x, gamma, beta, y, mean, rstd}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("LayerNormForward", ldx, cols));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("LayerNormForward", ldy, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::LayerNormForward(x, ldx, gamma, beta, eps, y, kBf16, ldy, mean,
                                                    rstd, rows, cols, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    if constexpr (kBf16) {
      k.layernorm_bf16(x + b * ldx, ldx, gamma, beta, eps, reinterpret_cast<uint16_t*>(y + b * ldy),
                       ldy, mean + b, rstd + b, e - b, cols);
    } else {
      k.layernorm(x + b * ldx, ldx, gamma, beta, eps, y + b * ldy, ldy, mean + b, rstd + b, e - b,
                  cols);
    }
  });
  return Status::Ok();
}

}  // namespace

Status LayerNormForward(const float* x, int64_t ldx, const float* gamma, const float* beta,
                        float eps, float* y, int64_t ldy, float* mean, float* rstd, int64_t rows,
                        int64_t cols, const KernelContext& ctx) {
  return LayerNormForwardImpl(x, ldx, gamma, beta, eps, y, ldy, mean, rstd, rows, cols, ctx);
}

Status LayerNormForward(const float* x, int64_t ldx, const float* gamma, const float* beta,
                        float eps, bf16_t* y, int64_t ldy, float* mean, float* rstd, int64_t rows,
                        int64_t cols, const KernelContext& ctx) {
  return LayerNormForwardImpl(x, ldx, gamma, beta, eps, y, ldy, mean, rstd, rows, cols, ctx);
}

Status LayerNormBackward(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                         const float* gamma, const float* mean, const float* rstd, float* dx,
                         int64_t lddx, float* dgamma, float* dbeta, int64_t rows, int64_t cols,
                         const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("LayerNormBackward", {rows, cols},
                                             {dy, x, gamma, mean, rstd, dx, dgamma, dbeta}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("LayerNormBackward", lddy, cols));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("LayerNormBackward", ldx, cols));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("LayerNormBackward", lddx, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::LayerNormBackward(dy, lddy, x, ldx, gamma, mean, rstd, dx, lddx,
                                                     dgamma, dbeta, rows, cols,
                                                     ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  const int chunks = cpu::PlanChunks(ctx.threads, rows, min_rows);
  if (chunks <= 1) {
    k.layernorm_backward(dy, lddy, x, ldx, gamma, mean, rstd, dx, lddx, dgamma, dbeta, rows, cols);
    return Status::Ok();
  }
  // Per-chunk dgamma/dbeta partials, added in chunk order.
  std::vector<float> partial(static_cast<size_t>(2 * chunks * cols), 0.0f);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int id, int64_t b, int64_t e) {
    float* pg = partial.data() + 2 * id * cols;
    k.layernorm_backward(dy + b * lddy, lddy, x + b * ldx, ldx, gamma, mean + b, rstd + b,
                         dx + b * lddx, lddx, pg, pg + cols, e - b, cols);
  });
  for (int id = 0; id < chunks; ++id) {
    const float* pg = partial.data() + 2 * id * cols;
    k.add(dgamma, pg, dgamma, cols, false);
    k.add(dbeta, pg + cols, dbeta, cols, false);
  }
  return Status::Ok();
}

}  // namespace pszero::kernels
