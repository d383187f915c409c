#include "kernels/context.h"

#include <string>

#include "kernels/cuda_resources.h"

namespace pszero::kernels {

std::string_view CpuIsaName(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
      return "auto";
    case CpuIsa::kScalar:
      return "scalar";
    case CpuIsa::kAvx2:
      return "avx2";
    case CpuIsa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

bool CpuIsaAvailable(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::kAuto:
    case CpuIsa::kScalar:
      return true;
    case CpuIsa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case CpuIsa::kAvx512:
      return CpuIsaAvailable(CpuIsa::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
  }
  return false;
}

CpuIsa DetectCpuIsa() {
  if (CpuIsaAvailable(CpuIsa::kAvx512)) return CpuIsa::kAvx512;
  if (CpuIsaAvailable(CpuIsa::kAvx2)) return CpuIsa::kAvx2;
  return CpuIsa::kScalar;
}

std::vector<CpuIsa> AvailableCpuIsas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::kScalar, CpuIsa::kAvx2, CpuIsa::kAvx512}) {
    if (CpuIsaAvailable(isa)) out.push_back(isa);
  }
  return out;
}

Status CheckContext(const KernelContext& ctx) {
  if (ctx.device == Device::kHost) {
    if (ctx.threads < 1) {
      return Status::InvalidArgument("kernel threads must be at least 1, got " +
                                     std::to_string(ctx.threads));
    }
    if (!CpuIsaAvailable(ctx.isa)) {
      return Status::InvalidArgument("this CPU does not run the " +
                                     std::string(CpuIsaName(ctx.isa)) + " code path");
    }
    return Status::Ok();
  }
#ifdef PSZERO_HAVE_CUDA
  if (ctx.cuda == nullptr) return Status::InvalidArgument("CUDA kernel call without CudaResources");
  return Status::Ok();
#else
  return Status::Unavailable("CUDA kernels need a CUDA build (built with PSZERO_CUDA=OFF)");
#endif
}

Status Fence(const KernelContext& ctx) {
  if (ctx.device == Device::kHost) return Status::Ok();
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  return ctx.cuda->Synchronize();
}

Status BindThread(const KernelContext& ctx) {
  if (ctx.device == Device::kHost) return Status::Ok();
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  return ctx.cuda->BindThisThread();
}

}  // namespace pszero::kernels
