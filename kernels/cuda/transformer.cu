// CUDA twins of the transformer ops (elementwise.h, layernorm.h, softmax.h, loss.h,
// embedding.h). Pointwise ops are grid-stride loops; row ops give one block to a row and
// reduce within it; column sums (dbias, dgamma, dbeta) reduce fixed row chunks in parallel
// and add the chunk sums in order, and the embedding gradient sorts the ids and walks each
// id's tokens in order, so all of them are deterministic without atomics.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_kernels.h"

namespace pszero::kernels::cuda {

namespace {

constexpr float kGeluK0 = 0.7978845608028654f;
constexpr float kGeluK1 = 0.044715f;

#define PSZERO_GRID_STRIDE(i, n)                                                         \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// Y: float, or uint16_t for a bf16 output (StoreF rounds the fp32 value to nearest even).
template <typename Y>
__global__ void BiasAddKernel(const float* x, int64_t ldx, const float* bias, Y* y, int64_t ldy,
                              int64_t rows, int64_t cols) {
  PSZERO_GRID_STRIDE(i, rows * cols) {
    const int64_t r = i / cols, c = i % cols;
    StoreF(y, r * ldy + c, x[r * ldx + c] + bias[c]);
  }
}

// Column sums (dbias; dgamma and dbeta in LayerNormParamGradKernel) in two passes, with an
// order that depends only on (rows, cols), never on timing, and no atomics.
// Pass 1: grid (row chunk, column tile), block kColTile x kRowLanes threads. Thread
// (x, y) adds rows y, y + kRowLanes, ... of its chunk (ascending) for column x of the
// tile, so that each warp reads kColTile contiguous floats of one row (coalesced); the
// kRowLanes partials of a column are then added in lane order. With one chunk the sum
// goes straight into the output, otherwise to partial[chunk, c]. Pass 2
// (ColSumFinalKernel): one thread per column adds the chunk sums in ascending chunk order
// and adds the total to the output once. The scratch is 1/32 of the input's size.
constexpr int kColTile = 32;
constexpr int kRowLanes = 8;
constexpr int kChunkRows = 128;  // 16 independent loads in flight per thread
constexpr int kRowsPerLane = kChunkRows / kRowLanes;

// Every thread of the block calls it with its lane's sum; lane y == 0 gets the column's
// chunk sum (lanes added 0, 1, 2, ...). `shared` is free again when it returns.
__device__ __forceinline__ float ChunkColumnSum(float v, float (*shared)[kColTile]) {
  shared[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  float s = 0;
  if (threadIdx.y == 0) {
    for (int k = 0; k < kRowLanes; ++k) s += shared[k][threadIdx.x];
  }
  __syncthreads();
  return s;
}

// A chunk sum of column c: into out[c] when the grid has one chunk, else partial[chunk, c].
__device__ __forceinline__ void StoreChunkSum(float s, int64_t c, int64_t cols, float* out,
                                              float* partial) {
  if (gridDim.x == 1) {
    out[c] += s;
  } else {
    partial[static_cast<int64_t>(blockIdx.x) * cols + c] = s;
  }
}

__global__ void ColSumAccKernel(const float* dy, int64_t ld, int64_t rows, int64_t cols, float* acc,
                                float* partial) {
  __shared__ float shared[kRowLanes][kColTile];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kChunkRows + threadIdx.y;
  for (int64_t tile = blockIdx.y; tile * kColTile < cols; tile += gridDim.y) {
    const int64_t c = tile * kColTile + threadIdx.x;
    float s = 0;
    if (c < cols) {
#pragma unroll
      for (int k = 0; k < kRowsPerLane; ++k) {
        const int64_t r = r0 + static_cast<int64_t>(k) * kRowLanes;
        if (r < rows) s += dy[r * ld + c];
      }
    }
    s = ChunkColumnSum(s, shared);
    if (threadIdx.y == 0 && c < cols) StoreChunkSum(s, c, cols, acc, partial);
  }
}

// Pass 2: out[c] += partial[0, c] + partial[1, c] + ... (ascending chunks, from 0).
__global__ void ColSumFinalKernel(const float* partial, int64_t chunks, int64_t cols, float* out) {
  PSZERO_GRID_STRIDE(c, cols) {
    float s = 0;
#pragma unroll 8
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
    out[c] += s;
  }
}

__global__ void AddKernel(const float* a, const float* b, float* out, int64_t n) {
  PSZERO_GRID_STRIDE(i, n) { out[i] = a[i] + b[i]; }
}

// X, Y: float, or uint16_t for bf16 (LoadF widens, StoreF rounds as in BiasAddKernel).
template <typename X, typename Y>
__global__ void GeluKernel(const X* x, Y* y, int64_t n) {
  PSZERO_GRID_STRIDE(i, n) {
    const float xi = LoadF(x, i);
    const float t = tanhf(kGeluK0 * (xi + kGeluK1 * xi * xi * xi));
    StoreF(y, i, 0.5f * xi * (1.0f + t));
  }
}

template <typename X>
__global__ void GeluBackwardKernel(const X* x, const float* dy, float* dx, int64_t n) {
  PSZERO_GRID_STRIDE(i, n) {
    const float xi = LoadF(x, i);
    const float t = tanhf(kGeluK0 * (xi + kGeluK1 * xi * xi * xi));
    const float dt = kGeluK0 * (1.0f + 3.0f * kGeluK1 * xi * xi);
    dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * xi * (1.0f - t * t) * dt);
  }
}

// Y as in GeluKernel: statistics and arithmetic in fp32, only the store rounds.
template <typename Y>
__global__ void LayerNormKernel(const float* x, int64_t ldx, const float* gamma, const float* beta,
                                float eps, Y* y, int64_t ldy, float* mean, float* rstd,
                                int64_t cols) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * ldx;
  Y* yr = y + r * ldy;
  float s = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
  const float mu = BlockSum(s, shared) / static_cast<float>(cols);
  float q = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) q += (xr[c] - mu) * (xr[c] - mu);
  const float rs = rsqrtf(BlockSum(q, shared) / static_cast<float>(cols) + eps);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    StoreF(yr, c, (xr[c] - mu) * rs * gamma[c] + beta[c]);
  }
  if (threadIdx.x == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
}

__global__ void LayerNormBackwardKernel(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                                        const float* gamma, const float* mean, const float* rstd,
                                        float* dx, int64_t lddx, int64_t cols) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* dyr = dy + r * lddy;
  const float* xr = x + r * ldx;
  float* dxr = dx + r * lddx;
  const float mu = mean[r], rs = rstd[r];
  float s1 = 0, s2 = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float gdy = dyr[c] * gamma[c];
    s1 += gdy;
    s2 += gdy * (xr[c] - mu) * rs;
  }
  s1 = BlockSum(s1, shared) / static_cast<float>(cols);
  s2 = BlockSum(s2, shared) / static_cast<float>(cols);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float xhat = (xr[c] - mu) * rs;
    dxr[c] = rs * (dyr[c] * gamma[c] - s1 - xhat * s2);
  }
}

// Pass 1 of the column sums (see ColSumAccKernel) of dy * xhat (dgamma) and dy (dbeta);
// their chunk partials are partial[0 .. chunks*cols) and partial[chunks*cols ..).
__global__ void LayerNormParamGradKernel(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                                         const float* mean, const float* rstd, float* dgamma,
                                         float* dbeta, int64_t rows, int64_t cols, float* partial) {
  __shared__ float shared[kRowLanes][kColTile];
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kChunkRows + threadIdx.y;
  const int64_t beta_offset = static_cast<int64_t>(gridDim.x) * cols;
  for (int64_t tile = blockIdx.y; tile * kColTile < cols; tile += gridDim.y) {
    const int64_t c = tile * kColTile + threadIdx.x;
    float g = 0, b = 0;
    if (c < cols) {
#pragma unroll
      for (int k = 0; k < kRowsPerLane; ++k) {
        const int64_t r = r0 + static_cast<int64_t>(k) * kRowLanes;
        if (r < rows) {
          const float d = dy[r * lddy + c];
          g += d * ((x[r * ldx + c] - mean[r]) * rstd[r]);
          b += d;
        }
      }
    }
    g = ChunkColumnSum(g, shared);
    b = ChunkColumnSum(b, shared);
    if (threadIdx.y == 0 && c < cols) {
      StoreChunkSum(g, c, cols, dgamma, partial);
      StoreChunkSum(b, c, cols, dbeta, partial == nullptr ? nullptr : partial + beta_offset);
    }
  }
}

// Y as in BiasAddKernel.
template <typename Y>
__global__ void SoftmaxKernel(const float* x, Y* y, int64_t cols, int64_t ld, float scale,
                              bool causal) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * ld;
  Y* yr = y + r * ld;
  const int64_t valid = causal ? r % cols + 1 : cols;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < valid; c += blockDim.x) m = fmaxf(m, xr[c] * scale);
  m = BlockMax(m, shared);
  float s = 0;
  for (int64_t c = threadIdx.x; c < valid; c += blockDim.x) s += expf(xr[c] * scale - m);
  const float inv = 1.0f / BlockSum(s, shared);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    StoreF(yr, c, c < valid ? expf(xr[c] * scale - m) * inv : 0.0f);
  }
}

// T: y and dx both float, or both uint16_t (bf16: y widened, dx rounded on the store).
template <typename T>
__global__ void SoftmaxBackwardKernel(const T* y, const float* dy, T* dx, int64_t cols, int64_t ld,
                                      float scale) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const T* yr = y + r * ld;
  const float* dyr = dy + r * ld;
  T* dxr = dx + r * ld;
  float dot = 0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += LoadF(yr, c) * dyr[c];
  dot = BlockSum(dot, shared);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    StoreF(dxr, c, scale * LoadF(yr, c) * (dyr[c] - dot));
  }
}

__global__ void LogSumExpKernel(const float* logits, int64_t ld, int64_t vocab, float* lse) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const float* xr = logits + r * ld;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) m = fmaxf(m, xr[c]);
  m = BlockMax(m, shared);
  float s = 0;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) s += expf(xr[c] - m);
  s = BlockSum(s, shared);
  if (threadIdx.x == 0) lse[r] = m + logf(s);
}

// One block: mean over rows of lse[r] - logits[r, target[r]], in double.
__global__ void CrossEntropyMeanKernel(const float* logits, int64_t ld, const int32_t* targets,
                                       const float* lse, int64_t rows, int64_t vocab,
                                       float* mean_loss) {
  __shared__ double sums[kThreads];
  double s = 0;
  for (int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    const int32_t t = targets[r];
    s += (t >= 0 && t < vocab) ? static_cast<double>(lse[r]) - logits[r * ld + t] : NAN;
  }
  sums[threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int i = 0; i < static_cast<int>(blockDim.x); ++i) total += sums[i];
    *mean_loss = rows > 0 ? static_cast<float>(total / static_cast<double>(rows)) : 0.0f;
  }
}

__global__ void CrossEntropyBackwardKernel(const float* logits, int64_t ld, const int32_t* targets,
                                           const float* lse, int64_t vocab, float coef,
                                           float* dlogits, int64_t ldd) {
  const int64_t r = blockIdx.x;
  const float* xr = logits + r * ld;
  float* dr = dlogits + r * ldd;
  const float l = lse[r];
  const int32_t t = targets[r];
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    dr[c] = (expf(xr[c] - l) - (c == t ? 1.0f : 0.0f)) * coef;
  }
}

__global__ void MseBackwardKernel(const float* pred, const float* target, int64_t n, float coef,
                                  float* dpred) {
  PSZERO_GRID_STRIDE(i, n) { dpred[i] = coef * (pred[i] - target[i]); }
}

__device__ __forceinline__ float TableValue(const float* t, int64_t i) { return t[i]; }
__device__ __forceinline__ float TableValue(const uint16_t* t, int64_t i) {
  return Bf16ToF32(t[i]);
}

template <typename T>
__global__ void EmbeddingForwardKernel(const T* table, int64_t first, int64_t rows, int64_t dim,
                                       const int32_t* ids, int64_t n, float* out) {
  PSZERO_GRID_STRIDE(i, n * dim) {
    const int64_t row = i / dim, c = i % dim;
    const int64_t id = static_cast<int64_t>(ids[row]) - first;
    out[i] = (id >= 0 && id < rows) ? TableValue(table, id * dim + c) : 0.0f;
  }
}

// Embedding gradient, dtable[id(i)] += dout[i] in ascending i, without atomics and bit for
// bit the host's result. Tokens are parallel only across distinct ids: two tokens of one
// id add to the same row, and any split of a row's tokens into partial sums would change
// the bits (and float atomics the order). So: (1) EmbeddingKeysKernel makes (row, i)
// pairs, ids outside [first, first + rows) keyed `rows` (sorted last, skipped); (2) a
// stable radix sort by row (cub) groups each row's tokens into one segment, ascending in
// i; (3) EmbeddingSegmentKernel gives one block to each (sorted position, column tile);
// only a segment's first position works: each thread walks the segment for its column,
// adding the dout rows in order. Cost: a sort of n keys plus one read of dout; a row
// repeated m times is m serial adds (loads issued kSegmentBatch at a time).
// The alternatives: one thread per (table row, column) scanning all ids costs
// rows * n * dim; one thread per column (the former kernel) uses dim threads in all.
__global__ void EmbeddingKeysKernel(const int32_t* ids, int64_t n, int64_t first, int64_t rows,
                                    uint32_t* keys, int32_t* positions) {
  PSZERO_GRID_STRIDE(i, n) {
    const int64_t id = static_cast<int64_t>(ids[i]) - first;
    keys[i] = static_cast<uint32_t>(id >= 0 && id < rows ? id : rows);
    positions[i] = static_cast<int32_t>(i);
  }
}

constexpr int kSegmentBatch = 8;

__global__ void EmbeddingSegmentKernel(const float* dout, const uint32_t* keys,
                                       const int32_t* positions, int64_t n, uint32_t rows,
                                       int64_t dim, float* dtable) {
  const int64_t k = blockIdx.x;
  const uint32_t key = keys[k];
  if (key == rows || (k > 0 && keys[k - 1] == key)) return;  // not a segment's first
  float* row = dtable + static_cast<int64_t>(key) * dim;
  for (int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; c < dim;
       c += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    float acc = row[c];
    for (int64_t j = k;; j += kSegmentBatch) {
      // Keys ascend, so the segment's positions in [j, j + kSegmentBatch) are a prefix.
      float v[kSegmentBatch];
      int count = 0;
#pragma unroll
      for (int u = 0; u < kSegmentBatch; ++u) {
        const int64_t p = j + u;
        const bool in = p < n && keys[p] == key;
        v[u] = in ? dout[static_cast<int64_t>(positions[p]) * dim + c] : 0.0f;
        count += in ? 1 : 0;
      }
#pragma unroll
      for (int u = 0; u < kSegmentBatch; ++u) {
        if (u < count) acc += v[u];
      }
      if (count < kSegmentBatch) break;
    }
    row[c] = acc;
  }
}

#undef PSZERO_GRID_STRIDE

// Row kernels launch one block per row; grids are limited to 2^31-1 blocks.
Status CheckRows(int64_t rows, const char* what) {
  if (rows > 0x7fffffff) return Status::InvalidArgument(std::string(what) + ": too many rows");
  return Status::Ok();
}

// Launch shape of the column sums' pass 1: one block per (row chunk, column tile), tiles
// beyond the 65535 of grid.y taken in a block-stride loop.
struct ColumnSumPlan {
  int64_t chunks;
  dim3 grid;
  dim3 block;
};

ColumnSumPlan PlanColumnSums(int64_t rows, int64_t cols) {
  const int64_t chunks = (rows + kChunkRows - 1) / kChunkRows;
  const int64_t tiles = (cols + kColTile - 1) / kColTile;
  return {chunks,
          dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(tiles < 65535 ? tiles : 65535)),
          dim3(kColTile, kRowLanes)};
}

}  // namespace

Status BiasAdd(const float* x, int64_t ldx, const float* bias, void* y, bool y_bf16, int64_t ldy,
               int64_t rows, int64_t cols, void* stream) {
  if (y_bf16) {
    BiasAddKernel<<<GridFor(rows * cols), kThreads, 0, AsStream(stream)>>>(
        x, ldx, bias, static_cast<uint16_t*>(y), ldy, rows, cols);
  } else {
    BiasAddKernel<<<GridFor(rows * cols), kThreads, 0, AsStream(stream)>>>(
        x, ldx, bias, static_cast<float*>(y), ldy, rows, cols);
  }
  return LaunchStatus("BiasAdd");
}

Status BiasAddBackward(const float* dy, int64_t lddy, int64_t rows, int64_t cols, float* dbias,
                       void* stream) {
  if (rows <= 0 || cols <= 0) return Status::Ok();
  PSZERO_RETURN_IF_ERROR(CheckRows((rows + kChunkRows - 1) / kChunkRows, "BiasAddBackward"));
  const ColumnSumPlan plan = PlanColumnSums(rows, cols);
  cudaStream_t s = AsStream(stream);
  StreamScratch partial(s);
  if (plan.chunks > 1) {
    PSZERO_RETURN_IF_ERROR(partial.Allocate(static_cast<size_t>(plan.chunks * cols) * sizeof(float),
                                            "BiasAddBackward"));
  }
  ColSumAccKernel<<<plan.grid, plan.block, 0, s>>>(dy, lddy, rows, cols, dbias,
                                                   partial.As<float>());
  if (plan.chunks > 1) {
    ColSumFinalKernel<<<GridFor(cols), kThreads, 0, s>>>(partial.As<float>(), plan.chunks, cols,
                                                         dbias);
  }
  return LaunchStatus("BiasAddBackward");
}

Status Add(const float* a, const float* b, float* out, int64_t n, void* stream) {
  AddKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(a, b, out, n);
  return LaunchStatus("Add");
}

Status GeluForward(const void* x, bool x_bf16, void* y, bool y_bf16, int64_t n, void* stream) {
  if (x_bf16 && !y_bf16) return Status::InvalidArgument("GeluForward: bf16 x needs a bf16 y");
  if (x_bf16) {
    GeluKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(static_cast<const uint16_t*>(x),
                                                              static_cast<uint16_t*>(y), n);
  } else if (y_bf16) {
    GeluKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(static_cast<const float*>(x),
                                                              static_cast<uint16_t*>(y), n);
  } else {
    GeluKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(static_cast<const float*>(x),
                                                              static_cast<float*>(y), n);
  }
  return LaunchStatus("GeluForward");
}

Status GeluBackward(const void* x, bool x_bf16, const float* dy, float* dx, int64_t n,
                    void* stream) {
  if (x_bf16) {
    GeluBackwardKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(
        static_cast<const uint16_t*>(x), dy, dx, n);
  } else {
    GeluBackwardKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(static_cast<const float*>(x),
                                                                      dy, dx, n);
  }
  return LaunchStatus("GeluBackward");
}

Status LayerNormForward(const float* x, int64_t ldx, const float* gamma, const float* beta,
                        float eps, void* y, bool y_bf16, int64_t ldy, float* mean, float* rstd,
                        int64_t rows, int64_t cols, void* stream) {
  PSZERO_RETURN_IF_ERROR(CheckRows(rows, "LayerNormForward"));
  const auto blocks = static_cast<unsigned>(rows);
  if (y_bf16) {
    LayerNormKernel<<<blocks, kThreads, 0, AsStream(stream)>>>(
        x, ldx, gamma, beta, eps, static_cast<uint16_t*>(y), ldy, mean, rstd, cols);
  } else {
    LayerNormKernel<<<blocks, kThreads, 0, AsStream(stream)>>>(
        x, ldx, gamma, beta, eps, static_cast<float*>(y), ldy, mean, rstd, cols);
  }
  return LaunchStatus("LayerNormForward");
}

Status LayerNormBackward(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                         const float* gamma, const float* mean, const float* rstd, float* dx,
                         int64_t lddx, float* dgamma, float* dbeta, int64_t rows, int64_t cols,
                         void* stream) {
  PSZERO_RETURN_IF_ERROR(CheckRows(rows, "LayerNormBackward"));
  if (rows <= 0 || cols <= 0) return Status::Ok();
  // Parameter gradients first (pass 1 reads dy; pass 2 only the partials): dx may
  // overwrite dy.
  const ColumnSumPlan plan = PlanColumnSums(rows, cols);
  cudaStream_t s = AsStream(stream);
  StreamScratch partial(s);
  if (plan.chunks > 1) {
    PSZERO_RETURN_IF_ERROR(partial.Allocate(
        static_cast<size_t>(2 * plan.chunks * cols) * sizeof(float), "LayerNormBackward"));
  }
  LayerNormParamGradKernel<<<plan.grid, plan.block, 0, s>>>(dy, lddy, x, ldx, mean, rstd, dgamma,
                                                            dbeta, rows, cols, partial.As<float>());
  if (plan.chunks > 1) {
    ColSumFinalKernel<<<GridFor(cols), kThreads, 0, s>>>(partial.As<float>(), plan.chunks, cols,
                                                         dgamma);
    ColSumFinalKernel<<<GridFor(cols), kThreads, 0, s>>>(partial.As<float>() + plan.chunks * cols,
                                                         plan.chunks, cols, dbeta);
  }
  LayerNormBackwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, AsStream(stream)>>>(
      dy, lddy, x, ldx, gamma, mean, rstd, dx, lddx, cols);
  return LaunchStatus("LayerNormBackward");
}

Status SoftmaxForward(const float* x, void* y, bool y_bf16, int64_t rows, int64_t cols, int64_t ld,
                      float scale, bool causal, void* stream) {
  PSZERO_RETURN_IF_ERROR(CheckRows(rows, "SoftmaxForward"));
  const auto blocks = static_cast<unsigned>(rows);
  if (y_bf16) {
    SoftmaxKernel<<<blocks, kThreads, 0, AsStream(stream)>>>(x, static_cast<uint16_t*>(y), cols, ld,
                                                             scale, causal);
  } else {
    SoftmaxKernel<<<blocks, kThreads, 0, AsStream(stream)>>>(x, static_cast<float*>(y), cols, ld,
                                                             scale, causal);
  }
  return LaunchStatus("SoftmaxForward");
}

Status SoftmaxBackward(const void* y, const float* dy, void* dx, bool bf16, int64_t rows,
                       int64_t cols, int64_t ld, float scale, void* stream) {
  PSZERO_RETURN_IF_ERROR(CheckRows(rows, "SoftmaxBackward"));
  const auto blocks = static_cast<unsigned>(rows);
  if (bf16) {
    SoftmaxBackwardKernel<<<blocks, kThreads, 0, AsStream(stream)>>>(
        static_cast<const uint16_t*>(y), dy, static_cast<uint16_t*>(dx), cols, ld, scale);
  } else {
    SoftmaxBackwardKernel<<<blocks, kThreads, 0, AsStream(stream)>>>(
        static_cast<const float*>(y), dy, static_cast<float*>(dx), cols, ld, scale);
  }
  return LaunchStatus("SoftmaxBackward");
}

Status CrossEntropyForward(const float* logits, int64_t ld, const int32_t* targets, int64_t rows,
                           int64_t vocab, float* lse, float* mean_loss, void* stream) {
  PSZERO_RETURN_IF_ERROR(CheckRows(rows, "CrossEntropyForward"));
  if (rows > 0) {
    LogSumExpKernel<<<static_cast<unsigned>(rows), kThreads, 0, AsStream(stream)>>>(logits, ld,
                                                                                    vocab, lse);
  }
  CrossEntropyMeanKernel<<<1, kThreads, 0, AsStream(stream)>>>(logits, ld, targets, lse, rows,
                                                               vocab, mean_loss);
  return LaunchStatus("CrossEntropyForward");
}

Status CrossEntropyBackward(const float* logits, int64_t ld, const int32_t* targets,
                            const float* lse, int64_t rows, int64_t vocab, float dloss,
                            float* dlogits, int64_t ld_dlogits, void* stream) {
  PSZERO_RETURN_IF_ERROR(CheckRows(rows, "CrossEntropyBackward"));
  const float coef = dloss / static_cast<float>(rows);
  CrossEntropyBackwardKernel<<<static_cast<unsigned>(rows), kThreads, 0, AsStream(stream)>>>(
      logits, ld, targets, lse, vocab, coef, dlogits, ld_dlogits);
  return LaunchStatus("CrossEntropyBackward");
}

Status MseLossBackward(const float* pred, const float* target, int64_t n, float dloss, float* dpred,
                       void* stream) {
  const float coef = 2.0f * dloss / static_cast<float>(n);
  MseBackwardKernel<<<GridFor(n), kThreads, 0, AsStream(stream)>>>(pred, target, n, coef, dpred);
  return LaunchStatus("MseLossBackward");
}

Status EmbeddingForward(const void* table, bool table_bf16, int64_t first, int64_t rows,
                        int64_t dim, const int32_t* ids, int64_t n, float* out, void* stream) {
  if (table_bf16) {
    EmbeddingForwardKernel<<<GridFor(n * dim), kThreads, 0, AsStream(stream)>>>(
        static_cast<const uint16_t*>(table), first, rows, dim, ids, n, out);
  } else {
    EmbeddingForwardKernel<<<GridFor(n * dim), kThreads, 0, AsStream(stream)>>>(
        static_cast<const float*>(table), first, rows, dim, ids, n, out);
  }
  return LaunchStatus("EmbeddingForward");
}

Status EmbeddingBackward(const float* dout, const int32_t* ids, int64_t n, int64_t first,
                         int64_t rows, int64_t dim, float* dtable, void* stream) {
  if (n <= 0 || dim <= 0 || rows <= 0) return Status::Ok();
  if (n > 0x7fffffff || rows > 0x7fffffff) {
    return Status::InvalidArgument("EmbeddingBackward: more than 2^31-1 ids or table rows");
  }
  cudaStream_t s = AsStream(stream);
  // Keys are in [0, rows] (rows: outside the shard), so the sort needs only their bits.
  const int key_bits = 64 - __builtin_clzll(static_cast<unsigned long long>(rows));
  const int items = static_cast<int>(n);
  size_t sort_bytes = 0;
  cudaError_t err = cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), items, 0, key_bits, s);
  if (err != cudaSuccess) {
    return Status::Internal(std::string("EmbeddingBackward: sort size: ") +
                            cudaGetErrorString(err));
  }
  // Scratch: keys in/out, positions in/out (256-byte aligned each), then the sort's own.
  const size_t array_bytes = (static_cast<size_t>(n) * 4 + 255) / 256 * 256;
  StreamScratch scratch(s);
  PSZERO_RETURN_IF_ERROR(scratch.Allocate(4 * array_bytes + sort_bytes, "EmbeddingBackward"));
  uint32_t* keys_in = scratch.As<uint32_t>(0);
  uint32_t* keys = scratch.As<uint32_t>(array_bytes);
  int32_t* positions_in = scratch.As<int32_t>(2 * array_bytes);
  int32_t* positions = scratch.As<int32_t>(3 * array_bytes);
  EmbeddingKeysKernel<<<GridFor(n), kThreads, 0, s>>>(ids, n, first, rows, keys_in, positions_in);
  err = cub::DeviceRadixSort::SortPairs(scratch.As<void>(4 * array_bytes), sort_bytes, keys_in,
                                        keys, positions_in, positions, items, 0, key_bits, s);
  if (err != cudaSuccess) {
    return Status::Internal(std::string("EmbeddingBackward: sort: ") + cudaGetErrorString(err));
  }
  const int64_t tiles = (dim + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>(tiles < 65535 ? tiles : 65535));
  EmbeddingSegmentKernel<<<grid, kThreads, 0, s>>>(dout, keys, positions, n,
                                                   static_cast<uint32_t>(rows), dim, dtable);
  return LaunchStatus("EmbeddingBackward");
}

Status Copy2D(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows,
              int64_t cols, int64_t element_bytes, void* stream) {
  const cudaError_t err = cudaMemcpy2DAsync(
      dst, static_cast<size_t>(ld_dst * element_bytes), src,
      static_cast<size_t>(ld_src * element_bytes), static_cast<size_t>(cols * element_bytes),
      static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, AsStream(stream));
  if (err != cudaSuccess)
    return Status::Internal(std::string("Copy2D: ") + cudaGetErrorString(err));
  return Status::Ok();
}

}  // namespace pszero::kernels::cuda
