#include "kernels/embedding.h"

#include <algorithm>
#include <cstring>

#include "common/half.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

namespace {

Status CheckIds(const int32_t* ids, int64_t n, int64_t vocab) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return Status::InvalidArgument("embedding id " + std::to_string(ids[i]) + " at " +
                                     std::to_string(i) + " outside [0, " + std::to_string(vocab) +
                                     ")");
    }
  }
  return Status::Ok();
}

}  // namespace

// Row copies and adds are memcpy-shaped: the compiler's baseline vectorization is enough,
// so these have no per-ISA table entry.
Status EmbeddingForward(const float* table, int64_t vocab, int64_t dim, const int32_t* ids,
                        int64_t n, float* out, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("EmbeddingForward", {n, dim}, {table, ids, out}));
  if (vocab < 0) return Status::InvalidArgument("EmbeddingForward: negative vocab");
  if (n == 0 || dim == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::EmbeddingForward(table, false, 0, vocab, dim, ids, n, out, ctx.cuda->stream()));
  }
  PSZERO_RETURN_IF_ERROR(CheckIds(ids, n, vocab));
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / dim);
  cpu::ParallelFor(ctx.threads, n, min_rows, [&](int, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      std::memcpy(out + i * dim, table + static_cast<int64_t>(ids[i]) * dim,
                  static_cast<size_t>(dim) * sizeof(float));
    }
  });
  return Status::Ok();
}

Status EmbeddingBackward(const float* dout, const int32_t* ids, int64_t n, int64_t vocab,
                         int64_t dim, float* dtable, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("EmbeddingBackward", {n, dim}, {dout, ids, dtable}));
  if (vocab < 0) return Status::InvalidArgument("EmbeddingBackward: negative vocab");
  if (n == 0 || dim == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::EmbeddingBackward(dout, ids, n, 0, vocab, dim, dtable, ctx.cuda->stream()));
  }
  PSZERO_RETURN_IF_ERROR(CheckIds(ids, n, vocab));
  // Threads split the columns, so each element of dtable is added to by one thread, in
  // ascending i: the same bits for every thread count.
  const int64_t min_cols = std::max<int64_t>(16, cpu::kMinElementsPerThread / n);
  cpu::ParallelFor(ctx.threads, dim, min_cols, [&](int, int64_t b, int64_t e) {
    for (int64_t i = 0; i < n; ++i) {
      float* __restrict row = dtable + static_cast<int64_t>(ids[i]) * dim;
      const float* __restrict g = dout + i * dim;
      for (int64_t c = b; c < e; ++c) row[c] += g[c];
    }
  });
  return Status::Ok();
}

Status EmbeddingShardForward(const void* table, DType table_dtype, int64_t first, int64_t rows,
                             int64_t dim, const int32_t* ids, int64_t n, float* out,
                             const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("EmbeddingShardForward", {n, dim}, {ids, out}));
  if (rows < 0 || first < 0) return Status::InvalidArgument("EmbeddingShardForward: bad shard");
  if (table_dtype != DType::kFloat32 && table_dtype != DType::kBFloat16) {
    return Status::InvalidArgument("EmbeddingShardForward: fp32 or bf16 tables only");
  }
  if (n == 0 || dim == 0) return Status::Ok();
  if (rows > 0 && table == nullptr) {
    return Status::InvalidArgument("EmbeddingShardForward: null pointer");
  }
  const bool bf16 = table_dtype == DType::kBFloat16;
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::EmbeddingForward(table, bf16, first, rows, dim, ids, n, out, ctx.cuda->stream()));
  }
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / dim);
  cpu::ParallelFor(ctx.threads, n, min_rows, [&](int, int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t id = static_cast<int64_t>(ids[i]) - first;
      float* row = out + i * dim;
      if (id < 0 || id >= rows) {
        std::fill(row, row + dim, 0.0f);
      } else if (bf16) {
        const uint16_t* src = static_cast<const uint16_t*>(table) + id * dim;
        for (int64_t c = 0; c < dim; ++c) row[c] = Bf16BitsToFloat(src[c]);
      } else {
        std::memcpy(row, static_cast<const float*>(table) + id * dim,
                    static_cast<size_t>(dim) * sizeof(float));
      }
    }
  });
  return Status::Ok();
}

Status EmbeddingShardBackward(const float* dout, const int32_t* ids, int64_t n, int64_t first,
                              int64_t rows, int64_t dim, float* dtable, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("EmbeddingShardBackward", {n, dim}, {dout, ids}));
  if (rows < 0 || first < 0) return Status::InvalidArgument("EmbeddingShardBackward: bad shard");
  if (n == 0 || dim == 0 || rows == 0) return Status::Ok();
  if (dtable == nullptr) return Status::InvalidArgument("EmbeddingShardBackward: null pointer");
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::EmbeddingBackward(dout, ids, n, first, rows, dim, dtable, ctx.cuda->stream()));
  }
  const int64_t min_cols = std::max<int64_t>(16, cpu::kMinElementsPerThread / n);
  cpu::ParallelFor(ctx.threads, dim, min_cols, [&](int, int64_t b, int64_t e) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t id = static_cast<int64_t>(ids[i]) - first;
      if (id < 0 || id >= rows) continue;
      float* __restrict row = dtable + id * dim;
      const float* __restrict g = dout + i * dim;
      for (int64_t c = b; c < e; ++c) row[c] += g[c];
    }
  });
  return Status::Ok();
}

}  // namespace pszero::kernels
