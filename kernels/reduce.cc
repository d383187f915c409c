#include "kernels/reduce.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

namespace {

Status CheckFloatDType(const char* op, DType dtype) {
  if (dtype != DType::kFloat32 && dtype != DType::kBFloat16) {
    return Status::InvalidArgument(std::string(op) + ": dtype must be fp32 or bf16, got " +
                                   std::string(DTypeName(dtype)));
  }
  return Status::Ok();
}

}  // namespace

Status Sum(std::span<const void* const> inputs, DType in_dtype, void* out, DType out_dtype,
           int64_t n, bool accumulate, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(CheckFloatDType("Sum", in_dtype));
  PSZERO_RETURN_IF_ERROR(CheckFloatDType("Sum", out_dtype));
  const int k = static_cast<int>(inputs.size());
  if (k < 1 || k > kMaxSumInputs) {
    return Status::InvalidArgument("Sum: between 1 and 8 inputs, got " + std::to_string(k));
  }
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Sum", {n}, {out}));
  for (const void* p : inputs) PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Sum", {n}, {p}));
  if (n == 0) return Status::Ok();
  const bool in_bf16 = in_dtype == DType::kBFloat16, out_bf16 = out_dtype == DType::kBFloat16;
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::Sum(inputs.data(), k, in_bf16, out, out_bf16, n, accumulate, ctx.cuda->stream()));
  }
  const auto fn = cpu::KernelsFor(ctx.isa).sum[in_bf16][out_bf16];
  const size_t in_size = DTypeSize(in_dtype), out_size = DTypeSize(out_dtype);
  const bool stream = n >= cpu::kStreamingMinElements;
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int, int64_t b, int64_t e) {
    const void* in[kMaxSumInputs];
    for (int j = 0; j < k; ++j) in[j] = static_cast<const char*>(inputs[j]) + b * in_size;
    fn(in, k, static_cast<char*>(out) + b * out_size, accumulate, stream, e - b);
  });
  return Status::Ok();
}

Status Accumulate(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
                  const KernelContext& ctx) {
  const void* inputs[1] = {in};
  return Sum(inputs, in_dtype, out, out_dtype, n, /*accumulate=*/true, ctx);
}

Status SquaredNorm(const void* x, DType dtype, int64_t n, float* out, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(CheckFloatDType("SquaredNorm", dtype));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("SquaredNorm", {1}, {out}));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("SquaredNorm", {n}, {x}));
  const bool bf16 = dtype == DType::kBFloat16;
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::SquaredNorm(x, bf16, n, out, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  std::vector<double> partial(cpu::PlanChunks(ctx.threads, n, cpu::kMinElementsPerThread), 0.0);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int t, int64_t b, int64_t e) {
    partial[t] = bf16 ? k.sqnorm_bf16(static_cast<const uint16_t*>(x) + b, e - b)
                      : k.sqnorm_f32(static_cast<const float*>(x) + b, e - b);
  });
  double total = 0;
  for (double p : partial) total += p;
  *out = static_cast<float>(total);
  return Status::Ok();
}

Status Max(const float* x, int64_t n, float* out, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Max", {1}, {out}));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Max", {n}, {x}));
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::Max(x, n, out, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  std::vector<float> partial(cpu::PlanChunks(ctx.threads, n, cpu::kMinElementsPerThread),
                             -INFINITY);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread,
                   [&](int t, int64_t b, int64_t e) { partial[t] = k.max_f32(x + b, e - b); });
  float m = -INFINITY;
  for (float p : partial) m = (std::isnan(p) || std::isnan(m)) ? NAN : (p > m ? p : m);
  *out = m;
  return Status::Ok();
}

}  // namespace pszero::kernels
