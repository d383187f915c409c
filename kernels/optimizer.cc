#include "kernels/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

namespace {

Status CheckGradDType(DType dtype) {
  if (dtype != DType::kFloat32 && dtype != DType::kBFloat16) {
    return Status::InvalidArgument("optimizer gradients must be fp32 or bf16, got " +
                                   std::string(DTypeName(dtype)));
  }
  return Status::Ok();
}

}  // namespace

Status AdamW(const AdamWParams& hp, float* param, const void* grad, DType grad_dtype, float* m,
             float* v, bf16_t* param_bf16, int64_t n, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("AdamW", {n}, {param, grad, m, v}));
  PSZERO_RETURN_IF_ERROR(CheckGradDType(grad_dtype));
  if (hp.step < 1) return Status::InvalidArgument("AdamW: step must be at least 1");
  if (n == 0) return Status::Ok();
  const double bc1 = 1.0 - std::pow(static_cast<double>(hp.beta1), static_cast<double>(hp.step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(hp.beta2), static_cast<double>(hp.step));
  const internal::AdamWConsts c = {hp.lr,
                                   hp.beta1,
                                   hp.beta2,
                                   hp.eps,
                                   hp.weight_decay,
                                   hp.grad_scale,
                                   static_cast<float>(hp.lr / bc1),
                                   static_cast<float>(1.0 / std::sqrt(bc2))};
  uint16_t* pb = reinterpret_cast<uint16_t*>(param_bf16);
  const bool g_bf16 = grad_dtype == DType::kBFloat16;
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::AdamW(c, param, grad, g_bf16, m, v, pb, n, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int, int64_t b, int64_t e) {
    uint16_t* pbb = pb != nullptr ? pb + b : nullptr;
    if (g_bf16) {
      k.adamw_bf16(c, param + b, static_cast<const uint16_t*>(grad) + b, m + b, v + b, pbb, e - b);
    } else {
      k.adamw_f32(c, param + b, static_cast<const float*>(grad) + b, m + b, v + b, pbb, e - b);
    }
  });
  return Status::Ok();
}

Status Sgd(const SgdParams& hp, float* param, const void* grad, DType grad_dtype,
           float* momentum_buf, bf16_t* param_bf16, int64_t n, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Sgd", {n}, {param, grad}));
  PSZERO_RETURN_IF_ERROR(CheckGradDType(grad_dtype));
  if (hp.momentum != 0.0f && momentum_buf == nullptr && n > 0) {
    return Status::InvalidArgument("Sgd: momentum needs a momentum buffer");
  }
  if (hp.nesterov && hp.momentum == 0.0f) {
    return Status::InvalidArgument("Sgd: Nesterov needs a non-zero momentum");
  }
  if (n == 0) return Status::Ok();
  float* buf = hp.momentum != 0.0f ? momentum_buf : nullptr;
  const internal::SgdConsts c = {hp.lr, hp.momentum, hp.weight_decay, hp.grad_scale, hp.nesterov};
  uint16_t* pb = reinterpret_cast<uint16_t*>(param_bf16);
  const bool g_bf16 = grad_dtype == DType::kBFloat16;
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::Sgd(c, param, grad, g_bf16, buf, pb, n, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int, int64_t b, int64_t e) {
    uint16_t* pbb = pb != nullptr ? pb + b : nullptr;
    float* bb = buf != nullptr ? buf + b : nullptr;
    if (g_bf16) {
      k.sgd_bf16(c, param + b, static_cast<const uint16_t*>(grad) + b, bb, pbb, e - b);
    } else {
      k.sgd_f32(c, param + b, static_cast<const float*>(grad) + b, bb, pbb, e - b);
    }
  });
  return Status::Ok();
}

float GlobalNormClipScale(double total_squared_norm, double max_norm) {
  const double coef = max_norm / (std::sqrt(std::max(0.0, total_squared_norm)) + 1e-6);
  return static_cast<float>(std::min(1.0, coef));
}

}  // namespace pszero::kernels
