#include "kernels/softmax.h"

#include <algorithm>
#include <type_traits>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

namespace {

// Y is float or bf16_t; the CUDA twin and the host table take bf16 as raw bits.
template <typename Y>
Status SoftmaxForwardImpl(const float* x, Y* y, int64_t rows, int64_t cols, int64_t ld, float scale,
                          bool causal, const KernelContext& ctx) {
  constexpr bool kBf16 = std::is_same_v<Y, bf16_t>;
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("SoftmaxForward", {rows, cols}, {x, y}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("SoftmaxForward", ld, cols));
  if (causal && cols > 0 && rows % cols != 0) {
    return Status::InvalidArgument("SoftmaxForward: causal rows must be a multiple of cols");
  }
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::SoftmaxForward(x, y, kBf16, rows, cols, ld, scale, causal, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / 4 / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    if constexpr (kBf16) {
      k.softmax_bf16(x + b * ld, reinterpret_cast<uint16_t*>(y + b * ld), ld, e - b, cols, scale,
                     causal, b);
    } else {
      k.softmax(x + b * ld, y + b * ld, ld, e - b, cols, scale, causal, b);
    }
  });
  return Status::Ok();
}

// T is float or bf16_t: the type of y and dx.
template <typename T>
Status SoftmaxBackwardImpl(const T* y, const float* dy, T* dx, int64_t rows, int64_t cols,
                           int64_t ld, float scale, const KernelContext& ctx) {
  constexpr bool kBf16 = std::is_same_v<T, bf16_t>;
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("SoftmaxBackward", {rows, cols}, {y, dy, dx}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("SoftmaxBackward", ld, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::SoftmaxBackward(y, dy, dx, kBf16, rows, cols, ld, scale, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    if constexpr (kBf16) {
      k.softmax_backward_bf16(reinterpret_cast<const uint16_t*>(y + b * ld), dy + b * ld,
                              reinterpret_cast<uint16_t*>(dx + b * ld), ld, e - b, cols, scale);
    } else {
      k.softmax_backward(y + b * ld, dy + b * ld, dx + b * ld, ld, e - b, cols, scale);
    }
  });
  return Status::Ok();
}

}  // namespace

Status SoftmaxForward(const float* x, float* y, int64_t rows, int64_t cols, int64_t ld, float scale,
                      bool causal, const KernelContext& ctx) {
  return SoftmaxForwardImpl(x, y, rows, cols, ld, scale, causal, ctx);
}

Status SoftmaxForward(const float* x, bf16_t* y, int64_t rows, int64_t cols, int64_t ld,
                      float scale, bool causal, const KernelContext& ctx) {
  return SoftmaxForwardImpl(x, y, rows, cols, ld, scale, causal, ctx);
}

Status SoftmaxBackward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                       int64_t ld, float scale, const KernelContext& ctx) {
  return SoftmaxBackwardImpl(y, dy, dx, rows, cols, ld, scale, ctx);
}

Status SoftmaxBackward(const bf16_t* y, const float* dy, bf16_t* dx, int64_t rows, int64_t cols,
                       int64_t ld, float scale, const KernelContext& ctx) {
  return SoftmaxBackwardImpl(y, dy, dx, rows, cols, ld, scale, ctx);
}

}  // namespace pszero::kernels
