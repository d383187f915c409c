#include "kernels/cpu/cpu_kernels.h"

namespace pszero::kernels::cpu {

const CpuKernels& KernelsFor(CpuIsa isa) {
  if (isa == CpuIsa::kAuto) isa = DetectCpuIsa();
  switch (isa) {
    case CpuIsa::kAvx512:
      return Avx512Kernels();
    case CpuIsa::kAvx2:
      return Avx2Kernels();
    default:
      return ScalarKernels();
  }
}

}  // namespace pszero::kernels::cpu
