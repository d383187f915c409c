// CUDA twins of kernels/optimizer.h: one grid-stride pass, four elements per thread with
// 16-byte loads when every pointer allows it. Same arithmetic, in the same order, as the
// host loops (kernels/cpu/kernels_impl.inc).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace pszero::kernels::cuda {

namespace {

__device__ __forceinline__ float AdamWOne(const AdamWConsts& c, float g, float& p, float& m,
                                          float& v) {
  const float gi = g * c.grad_scale;
  m = c.beta1 * m + (1.0f - c.beta1) * gi;
  v = c.beta2 * v + (1.0f - c.beta2) * gi * gi;
  p = p * (1.0f - c.lr * c.weight_decay) - c.step_size * m / (sqrtf(v) * c.inv_sqrt_bc2 + c.eps);
  return p;
}

__device__ __forceinline__ float SgdOne(const SgdConsts& c, float g, float& p, float* buf) {
  const float gi = g * c.grad_scale + c.weight_decay * p;
  if (buf == nullptr) {
    p = p - c.lr * gi;
    return p;
  }
  const float bi = c.momentum * *buf + gi;
  *buf = bi;
  p = p - c.lr * (c.nesterov ? gi + c.momentum * bi : bi);
  return p;
}

template <typename G>
__device__ __forceinline__ float4 Load4(const G* g, int64_t i4) {
  if constexpr (sizeof(G) == 4) {
    return reinterpret_cast<const float4*>(g)[i4];
  } else {
    const ushort4 h = reinterpret_cast<const ushort4*>(g)[i4];
    return make_float4(Bf16ToF32(h.x), Bf16ToF32(h.y), Bf16ToF32(h.z), Bf16ToF32(h.w));
  }
}

template <typename G>
__global__ void AdamWKernel(AdamWConsts c, float* p, const G* g, float* m, float* v, uint16_t* pb,
                            int64_t n, bool vec) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  int64_t done = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = tid; i < n4; i += stride) {
      float4 P = reinterpret_cast<float4*>(p)[i];
      float4 M = reinterpret_cast<float4*>(m)[i];
      float4 V = reinterpret_cast<float4*>(v)[i];
      const float4 gr = Load4(g, i);
      AdamWOne(c, gr.x, P.x, M.x, V.x);
      AdamWOne(c, gr.y, P.y, M.y, V.y);
      AdamWOne(c, gr.z, P.z, M.z, V.z);
      AdamWOne(c, gr.w, P.w, M.w, V.w);
      reinterpret_cast<float4*>(p)[i] = P;
      reinterpret_cast<float4*>(m)[i] = M;
      reinterpret_cast<float4*>(v)[i] = V;
      if (pb != nullptr) {
        reinterpret_cast<ushort4*>(pb)[i] =
            make_ushort4(F32ToBf16(P.x), F32ToBf16(P.y), F32ToBf16(P.z), F32ToBf16(P.w));
      }
    }
    done = n4 * 4;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    float P = p[i], M = m[i], V = v[i];
    AdamWOne(c, LoadF(g, i), P, M, V);
    p[i] = P;
    m[i] = M;
    v[i] = V;
    if (pb != nullptr) pb[i] = F32ToBf16(P);
  }
}

template <typename G>
__global__ void SgdKernel(SgdConsts c, float* p, const G* g, float* buf, uint16_t* pb, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    float P = p[i];
    SgdOne(c, LoadF(g, i), P, buf != nullptr ? buf + i : nullptr);
    p[i] = P;
    if (pb != nullptr) pb[i] = F32ToBf16(P);
  }
}

}  // namespace

Status AdamW(const AdamWConsts& c, float* p, const void* g, bool g_bf16, float* m, float* v,
             uint16_t* p_bf16, int64_t n, void* stream) {
  const bool vec = Aligned(p, 16) && Aligned(m, 16) && Aligned(v, 16) &&
                   Aligned(g, g_bf16 ? 8 : 16) && (p_bf16 == nullptr || Aligned(p_bf16, 8));
  const int grid = GridFor(n, vec ? 4 : 1);
  if (g_bf16) {
    AdamWKernel<uint16_t><<<grid, kThreads, 0, AsStream(stream)>>>(
        c, p, static_cast<const uint16_t*>(g), m, v, p_bf16, n, vec);
  } else {
    AdamWKernel<float><<<grid, kThreads, 0, AsStream(stream)>>>(c, p, static_cast<const float*>(g),
                                                                m, v, p_bf16, n, vec);
  }
  return LaunchStatus("AdamW");
}

Status Sgd(const SgdConsts& c, float* p, const void* g, bool g_bf16, float* buf, uint16_t* p_bf16,
           int64_t n, void* stream) {
  if (g_bf16) {
    SgdKernel<uint16_t><<<GridFor(n), kThreads, 0, AsStream(stream)>>>(
        c, p, static_cast<const uint16_t*>(g), buf, p_bf16, n);
  } else {
    SgdKernel<float><<<GridFor(n), kThreads, 0, AsStream(stream)>>>(
        c, p, static_cast<const float*>(g), buf, p_bf16, n);
  }
  return LaunchStatus("Sgd");
}

}  // namespace pszero::kernels::cuda
