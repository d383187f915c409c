// CUDA twin of kernels/cast.h: grid-stride, four elements per thread with 16-byte loads
// when every pointer allows it.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace pszero::kernels::cuda {

namespace {

enum class CastKind { kF32ToBf16, kF32ToFp16, kBf16ToF32, kFp16ToF32 };

template <CastKind kKind>
__device__ __forceinline__ void CastOne(const void* in, void* out, int64_t i) {
  if constexpr (kKind == CastKind::kF32ToBf16) {
    static_cast<uint16_t*>(out)[i] = F32ToBf16(static_cast<const float*>(in)[i]);
  } else if constexpr (kKind == CastKind::kF32ToFp16) {
    static_cast<uint16_t*>(out)[i] = F32ToFp16(static_cast<const float*>(in)[i]);
  } else if constexpr (kKind == CastKind::kBf16ToF32) {
    static_cast<float*>(out)[i] = Bf16ToF32(static_cast<const uint16_t*>(in)[i]);
  } else {
    static_cast<float*>(out)[i] = Fp16ToF32(static_cast<const uint16_t*>(in)[i]);
  }
}

template <CastKind kKind>
__global__ void CastKernel(const void* in, void* out, int64_t n, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      if constexpr (kKind == CastKind::kF32ToBf16 || kKind == CastKind::kF32ToFp16) {
        const float4 x = reinterpret_cast<const float4*>(in)[i];
        ushort4 y;
        if constexpr (kKind == CastKind::kF32ToBf16) {
          y = make_ushort4(F32ToBf16(x.x), F32ToBf16(x.y), F32ToBf16(x.z), F32ToBf16(x.w));
        } else {
          y = make_ushort4(F32ToFp16(x.x), F32ToFp16(x.y), F32ToFp16(x.z), F32ToFp16(x.w));
        }
        reinterpret_cast<ushort4*>(out)[i] = y;
      } else {
        const ushort4 x = reinterpret_cast<const ushort4*>(in)[i];
        float4 y;
        if constexpr (kKind == CastKind::kBf16ToF32) {
          y = make_float4(Bf16ToF32(x.x), Bf16ToF32(x.y), Bf16ToF32(x.z), Bf16ToF32(x.w));
        } else {
          y = make_float4(Fp16ToF32(x.x), Fp16ToF32(x.y), Fp16ToF32(x.z), Fp16ToF32(x.w));
        }
        reinterpret_cast<float4*>(out)[i] = y;
      }
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) CastOne<kKind>(in, out, i);
}

}  // namespace

Status Cast(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n, void* stream) {
  const bool vec = Aligned(in, 16) && Aligned(out, 16);
  const int grid = GridFor(n, vec ? 4 : 1);
  cudaStream_t s = AsStream(stream);
  if (in_dtype == DType::kFloat32 && out_dtype == DType::kBFloat16) {
    CastKernel<CastKind::kF32ToBf16><<<grid, kThreads, 0, s>>>(in, out, n, vec);
  } else if (in_dtype == DType::kFloat32) {
    CastKernel<CastKind::kF32ToFp16><<<grid, kThreads, 0, s>>>(in, out, n, vec);
  } else if (in_dtype == DType::kBFloat16) {
    CastKernel<CastKind::kBf16ToF32><<<grid, kThreads, 0, s>>>(in, out, n, vec);
  } else {
    CastKernel<CastKind::kFp16ToF32><<<grid, kThreads, 0, s>>>(in, out, n, vec);
  }
  return LaunchStatus("Cast");
}

}  // namespace pszero::kernels::cuda
