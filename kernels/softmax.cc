#include "kernels/softmax.h"

#include <algorithm>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

Status SoftmaxForward(const float* x, float* y, int64_t rows, int64_t cols, int64_t ld, float scale,
                      bool causal, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("SoftmaxForward", {rows, cols}, {x, y}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("SoftmaxForward", ld, cols));
  if (causal && cols > 0 && rows % cols != 0) {
    return Status::InvalidArgument("SoftmaxForward: causal rows must be a multiple of cols");
  }
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::SoftmaxForward(x, y, rows, cols, ld, scale, causal, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / 4 / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    k.softmax(x + b * ld, y + b * ld, ld, e - b, cols, scale, causal, b);
  });
  return Status::Ok();
}

Status SoftmaxBackward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols,
                       int64_t ld, float scale, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("SoftmaxBackward", {rows, cols}, {y, dy, dx}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("SoftmaxBackward", ld, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::SoftmaxBackward(y, dy, dx, rows, cols, ld, scale, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    k.softmax_backward(y + b * ld, dy + b * ld, dx + b * ld, ld, e - b, cols, scale);
  });
  return Status::Ok();
}

}  // namespace pszero::kernels
