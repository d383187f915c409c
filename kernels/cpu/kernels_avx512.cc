// kernels_impl.inc compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq (512-bit
// vectors preferred; see kernels/CMakeLists.txt).
#define PSZERO_ISA_NAMESPACE avx512
#define PSZERO_ISA_ENUM ::pszero::kernels::CpuIsa::kAvx512
#define PSZERO_ISA_TABLE Avx512Kernels
#include "kernels/cpu/kernels_impl.inc"
