#include "kernels/cast.h"

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

Status Cast(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
            const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Cast", {n}, {in, out}));
  const bool from_f32 = in_dtype == DType::kFloat32 &&
                        (out_dtype == DType::kBFloat16 || out_dtype == DType::kFloat16);
  const bool to_f32 =
      out_dtype == DType::kFloat32 && (in_dtype == DType::kBFloat16 || in_dtype == DType::kFloat16);
  if (!from_f32 && !to_f32) {
    return Status::InvalidArgument("Cast from " + std::string(DTypeName(in_dtype)) + " to " +
                                   std::string(DTypeName(out_dtype)) + " is not supported");
  }
  if (n == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::Cast(in, in_dtype, out, out_dtype, n, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const bool stream = n >= cpu::kStreamingMinElements;
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int, int64_t b, int64_t e) {
    const auto* f = static_cast<const float*>(in) + b;
    const auto* h = static_cast<const uint16_t*>(in) + b;
    if (from_f32) {
      auto* o = static_cast<uint16_t*>(out) + b;
      if (out_dtype == DType::kBFloat16) {
        k.f32_to_bf16(f, o, e - b, stream);
      } else {
        k.f32_to_fp16(f, o, e - b, stream);
      }
    } else {
      auto* o = static_cast<float*>(out) + b;
      if (in_dtype == DType::kBFloat16) {
        k.bf16_to_f32(h, o, e - b, stream);
      } else {
        k.fp16_to_f32(h, o, e - b, stream);
      }
    }
  });
  return Status::Ok();
}

}  // namespace pszero::kernels
