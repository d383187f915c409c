// Matrix multiply as linear layers call it: row-major C = alpha * op(A) op(B) + beta * C,
// with leading dimensions (elements between rows) and a strided batched form.
//
// op(A) is [m, k] and op(B) is [k, n]; transpose_a means A is stored [k, m]. dtype kFloat32:
// A, B, C fp32. dtype kBFloat16: A and B bf16, C fp32, fp32 accumulation (bf16 tensor cores
// on CUDA; on the host the operands are widened to fp32, exactly, since Debian's OpenBLAS
// has no cblas_sbgemm). Host: OpenBLAS cblas_sgemm, with ctx.threads as OpenBLAS's thread
// count (a process-wide OpenBLAS setting: one worker per process keeps this sound). CUDA:
// cublasGemmEx / cublasGemmStridedBatchedEx on ctx.cuda's handle, fp32 compute without
// TF32. Pointers live on ctx.device.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

struct GemmBatch {
  int64_t count = 1;     // number of products
  int64_t stride_a = 0;  // elements between consecutive A matrices
  int64_t stride_b = 0;
  int64_t stride_c = 0;
};

Status Gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
            const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c,
            int64_t ldc, DType dtype, const KernelContext& ctx);

Status GemmStridedBatched(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                          float alpha, const void* a, int64_t lda, const void* b, int64_t ldb,
                          float beta, float* c, int64_t ldc, const GemmBatch& batch, DType dtype,
                          const KernelContext& ctx);

}  // namespace pszero::kernels
