#include "kernels/elementwise.h"

#include <algorithm>
#include <cstring>
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
Status BiasAddImpl(const float* x, int64_t ldx, const float* bias, Y* y, int64_t ldy, int64_t rows,
                   int64_t cols, const KernelContext& ctx) {
  constexpr bool kBf16 = std::is_same_v<Y, bf16_t>;
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("BiasAdd", {rows, cols}, {x, bias, y}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("BiasAdd", ldx, cols));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("BiasAdd", ldy, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::BiasAdd(x, ldx, bias, y, kBf16, ldy, rows, cols, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    if constexpr (kBf16) {
      k.bias_add_bf16(x + b * ldx, ldx, bias, reinterpret_cast<uint16_t*>(y + b * ldy), ldy, e - b,
                      cols);
    } else {
      k.bias_add(x + b * ldx, ldx, bias, y + b * ldy, ldy, e - b, cols);
    }
  });
  return Status::Ok();
}

}  // namespace

Status BiasAdd(const float* x, int64_t ldx, const float* bias, float* y, int64_t ldy, int64_t rows,
               int64_t cols, const KernelContext& ctx) {
  return BiasAddImpl(x, ldx, bias, y, ldy, rows, cols, ctx);
}

Status BiasAdd(const float* x, int64_t ldx, const float* bias, bf16_t* y, int64_t ldy, int64_t rows,
               int64_t cols, const KernelContext& ctx) {
  return BiasAddImpl(x, ldx, bias, y, ldy, rows, cols, ctx);
}

Status BiasAddBackward(const float* dy, int64_t lddy, int64_t rows, int64_t cols, float* dbias,
                       const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("BiasAddBackward", {rows, cols}, {dy, dbias}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("BiasAddBackward", lddy, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::BiasAddBackward(dy, lddy, rows, cols, dbias, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  const int chunks = cpu::PlanChunks(ctx.threads, rows, min_rows);
  if (chunks <= 1) {
    k.col_sum_acc(dy, lddy, rows, cols, dbias);
    return Status::Ok();
  }
  // Per-chunk column sums, added in chunk order: deterministic for a thread count.
  std::vector<float> partial(static_cast<size_t>(chunks * cols), 0.0f);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int id, int64_t b, int64_t e) {
    k.col_sum_acc(dy + b * lddy, lddy, e - b, cols, partial.data() + id * cols);
  });
  for (int id = 0; id < chunks; ++id) k.add(dbias, partial.data() + id * cols, dbias, cols, false);
  return Status::Ok();
}

Status Add(const float* a, const float* b, float* out, int64_t n, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Add", {n}, {a, b, out}));
  if (n == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::Add(a, b, out, n, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const bool stream = n >= cpu::kStreamingMinElements;
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread,
                   [&](int, int64_t s, int64_t e) { k.add(a + s, b + s, out + s, e - s, stream); });
  return Status::Ok();
}

namespace {

// x and y are float or bf16_t (bf16 travels as raw bits to the twins); a bf16 x comes
// only with a bf16 y.
template <typename X, typename Y>
Status GeluForwardImpl(const X* x, Y* y, int64_t n, const KernelContext& ctx) {
  constexpr bool kBf16In = std::is_same_v<X, bf16_t>;
  constexpr bool kBf16Out = std::is_same_v<Y, bf16_t>;
  static_assert(!kBf16In || kBf16Out);
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("GeluForward", {n}, {x, y}));
  if (n == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::GeluForward(x, kBf16In, y, kBf16Out, n, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread / 4, [&](int, int64_t s, int64_t e) {
    if constexpr (kBf16In) {
      k.gelu_bf16_in(reinterpret_cast<const uint16_t*>(x + s), reinterpret_cast<uint16_t*>(y + s),
                     e - s);
    } else if constexpr (kBf16Out) {
      k.gelu_bf16(x + s, reinterpret_cast<uint16_t*>(y + s), e - s);
    } else {
      k.gelu(x + s, y + s, e - s);
    }
  });
  return Status::Ok();
}

template <typename X>
Status GeluBackwardImpl(const X* x, const float* dy, float* dx, int64_t n,
                        const KernelContext& ctx) {
  constexpr bool kBf16 = std::is_same_v<X, bf16_t>;
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("GeluBackward", {n}, {x, dy, dx}));
  if (n == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::GeluBackward(x, kBf16, dy, dx, n, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread / 4, [&](int, int64_t s, int64_t e) {
    if constexpr (kBf16) {
      k.gelu_backward_bf16_in(reinterpret_cast<const uint16_t*>(x + s), dy + s, dx + s, e - s);
    } else {
      k.gelu_backward(x + s, dy + s, dx + s, e - s);
    }
  });
  return Status::Ok();
}

}  // namespace

Status GeluForward(const float* x, float* y, int64_t n, const KernelContext& ctx) {
  return GeluForwardImpl(x, y, n, ctx);
}

Status GeluForward(const float* x, bf16_t* y, int64_t n, const KernelContext& ctx) {
  return GeluForwardImpl(x, y, n, ctx);
}

Status GeluForward(const bf16_t* x, bf16_t* y, int64_t n, const KernelContext& ctx) {
  return GeluForwardImpl(x, y, n, ctx);
}

Status GeluBackward(const float* x, const float* dy, float* dx, int64_t n,
                    const KernelContext& ctx) {
  return GeluBackwardImpl(x, dy, dx, n, ctx);
}

Status GeluBackward(const bf16_t* x, const float* dy, float* dx, int64_t n,
                    const KernelContext& ctx) {
  return GeluBackwardImpl(x, dy, dx, n, ctx);
}

Status Copy2D(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows,
              int64_t cols, DType dtype, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Copy2D", {rows, cols}, {src, dst}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("Copy2D", ld_src, cols));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("Copy2D", ld_dst, cols));
  if (rows == 0 || cols == 0) return Status::Ok();
  const auto es = static_cast<int64_t>(DTypeSize(dtype));
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::Copy2D(src, ld_src, dst, ld_dst, rows, cols, es, ctx.cuda->stream()));
  }
  const auto* s = static_cast<const char*>(src);
  auto* d = static_cast<char*>(dst);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / cols);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      std::memcpy(d + r * ld_dst * es, s + r * ld_src * es, static_cast<size_t>(cols * es));
    }
  });
  return Status::Ok();
}

}  // namespace pszero::kernels
