// The baseline x86-64 (SSE2) build of kernels_impl.inc.
#define PSZERO_ISA_NAMESPACE scalar
#define PSZERO_ISA_ENUM ::pszero::kernels::CpuIsa::kScalar
#define PSZERO_ISA_TABLE ScalarKernels
#include "kernels/cpu/kernels_impl.inc"
