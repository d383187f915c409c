// kernels_impl.inc compiled with -mavx2 -mfma -mf16c (see kernels/CMakeLists.txt).
#define PSZERO_ISA_NAMESPACE avx2
#define PSZERO_ISA_ENUM ::pszero::kernels::CpuIsa::kAvx2
#define PSZERO_ISA_TABLE Avx2Kernels
#include "kernels/cpu/kernels_impl.inc"
