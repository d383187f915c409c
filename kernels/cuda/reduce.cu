// CUDA twins of kernels/reduce.h and of the MSE loss: k-way sum (grid-stride, inputs
// passed by value), and two-pass reductions (per-block partials in stream-ordered scratch
// memory, then one block) that give the same bits on every run.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace pszero::kernels::cuda {

namespace {

struct Inputs {
  const void* p[8];
};

template <typename In, typename Out>
__global__ void SumKernel(Inputs in, int k, Out* out, int64_t n, bool accumulate) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    float acc;
    int j = 0;
    if (accumulate) {
      acc = LoadF(out, i);
    } else {
      acc = LoadF(static_cast<const In*>(in.p[0]), i);
      j = 1;
    }
    for (; j < k; ++j) acc += LoadF(static_cast<const In*>(in.p[j]), i);
    StoreF(out, i, acc);
  }
}

// fp32 in and out, 16-byte aligned: four elements per thread.
__global__ void SumKernelVec4(Inputs in, int k, float* out, int64_t n4, bool accumulate) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n4;
       i += stride) {
    float4 acc;
    int j = 0;
    if (accumulate) {
      acc = reinterpret_cast<const float4*>(out)[i];
    } else {
      acc = reinterpret_cast<const float4*>(in.p[0])[i];
      j = 1;
    }
    for (; j < k; ++j) {
      const float4 x = reinterpret_cast<const float4*>(in.p[j])[i];
      acc.x += x.x;
      acc.y += x.y;
      acc.z += x.z;
      acc.w += x.w;
    }
    reinterpret_cast<float4*>(out)[i] = acc;
  }
}

template <typename In, typename Out>
void LaunchSum(const Inputs& in, int k, void* out, int64_t n, bool accumulate, cudaStream_t s) {
  SumKernel<In, Out><<<GridFor(n), kThreads, 0, s>>>(in, k, static_cast<Out*>(out), n, accumulate);
}

enum class ReduceOp { kSquares, kMax, kSquaredDiff };

constexpr int kReduceBlocks = 1024;

template <ReduceOp kOp, typename T>
__global__ void PartialKernel(const T* x, const float* y, int64_t n, float* partial) {
  __shared__ float shared[32];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  float acc = kOp == ReduceOp::kMax ? -INFINITY : 0.0f;
  bool nan = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float v = LoadF(x, i);
    if constexpr (kOp == ReduceOp::kSquares) {
      acc += v * v;
    } else if constexpr (kOp == ReduceOp::kSquaredDiff) {
      const float d = v - y[i];
      acc += d * d;
    } else {
      nan = nan || v != v;
      acc = fmaxf(acc, v);
    }
  }
  if constexpr (kOp == ReduceOp::kMax) {
    acc = BlockMax(nan ? INFINITY : acc, shared);
    const float any_nan = BlockMax(nan ? 1.0f : 0.0f, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = any_nan > 0 ? NAN : acc;
  } else {
    acc = BlockSum(acc, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
  }
}

// One block: partials -> *out (sum in double, times `scale`; or max with NaN).
template <ReduceOp kOp>
__global__ void FinalKernel(const float* partial, int count, float scale, float* out) {
  __shared__ double sums[kThreads];
  __shared__ float maxes[32];
  if constexpr (kOp == ReduceOp::kMax) {
    float m = -INFINITY, nan = 0.0f;
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
      const float p = partial[i];
      if (p != p)
        nan = 1.0f;
      else
        m = fmaxf(m, p);
    }
    m = BlockMax(m, maxes);
    nan = BlockMax(nan, maxes);
    if (threadIdx.x == 0) *out = nan > 0 ? NAN : m;
  } else {
    double s = 0;
    for (int i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
    sums[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0;
      for (int i = 0; i < static_cast<int>(blockDim.x); ++i) total += sums[i];
      *out = static_cast<float>(total * scale);
    }
  }
}

template <ReduceOp kOp, typename T>
Status Reduce(const T* x, const float* y, int64_t n, float scale, float* out, cudaStream_t s,
              const char* what) {
  const int blocks = GridFor(n, 4) < kReduceBlocks ? GridFor(n, 4) : kReduceBlocks;
  StreamScratch partial(s);
  PSZERO_RETURN_IF_ERROR(partial.Allocate(static_cast<size_t>(blocks) * sizeof(float), what));
  PartialKernel<kOp, T><<<blocks, kThreads, 0, s>>>(x, y, n, partial.As<float>());
  FinalKernel<kOp><<<1, kThreads, 0, s>>>(partial.As<float>(), blocks, scale, out);
  return LaunchStatus(what);
}

}  // namespace

Status Sum(const void* const* in, int k, bool in_bf16, void* out, bool out_bf16, int64_t n,
           bool accumulate, void* stream) {
  Inputs inputs = {};
  bool aligned = Aligned(out, 16);
  for (int j = 0; j < k; ++j) {
    inputs.p[j] = in[j];
    aligned = aligned && Aligned(in[j], 16);
  }
  cudaStream_t s = AsStream(stream);
  if (!in_bf16 && !out_bf16 && aligned) {
    const int64_t n4 = n / 4;
    if (n4 > 0) {
      SumKernelVec4<<<GridFor(n4), kThreads, 0, s>>>(inputs, k, static_cast<float*>(out), n4,
                                                     accumulate);
    }
    if (n4 * 4 < n) {
      Inputs tail = inputs;
      for (int j = 0; j < k; ++j) tail.p[j] = static_cast<const float*>(inputs.p[j]) + n4 * 4;
      LaunchSum<float, float>(tail, k, static_cast<float*>(out) + n4 * 4, n - n4 * 4, accumulate,
                              s);
    }
  } else if (!in_bf16 && !out_bf16) {
    LaunchSum<float, float>(inputs, k, out, n, accumulate, s);
  } else if (!in_bf16) {
    LaunchSum<float, uint16_t>(inputs, k, out, n, accumulate, s);
  } else if (!out_bf16) {
    LaunchSum<uint16_t, float>(inputs, k, out, n, accumulate, s);
  } else {
    LaunchSum<uint16_t, uint16_t>(inputs, k, out, n, accumulate, s);
  }
  return LaunchStatus("Sum");
}

Status SquaredNorm(const void* x, bool bf16, int64_t n, float* out, void* stream) {
  if (bf16) {
    return Reduce<ReduceOp::kSquares>(static_cast<const uint16_t*>(x), nullptr, n, 1.0f, out,
                                      AsStream(stream), "SquaredNorm");
  }
  return Reduce<ReduceOp::kSquares>(static_cast<const float*>(x), nullptr, n, 1.0f, out,
                                    AsStream(stream), "SquaredNorm");
}

Status Max(const float* x, int64_t n, float* out, void* stream) {
  return Reduce<ReduceOp::kMax>(x, nullptr, n, 1.0f, out, AsStream(stream), "Max");
}

Status MseLossForward(const float* pred, const float* target, int64_t n, float* loss,
                      void* stream) {
  const float scale = n > 0 ? 1.0f / static_cast<float>(n) : 0.0f;
  return Reduce<ReduceOp::kSquaredDiff>(pred, target, n, scale, loss, AsStream(stream),
                                        "MseLossForward");
}

}  // namespace pszero::kernels::cuda
