#include "kernels/gemm.h"

#include <cblas.h>

#include <climits>
#include <string>
#include <vector>

#include "kernels/cast.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

#ifdef PSZERO_HAVE_CUDA
#include <cublas_v2.h>
#endif

namespace pszero::kernels {

namespace {

Status CheckGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const void* a, int64_t lda,
                 const void* b, int64_t ldb, const float* c, int64_t ldc, const GemmBatch& batch,
                 DType dtype) {
  if (dtype != DType::kFloat32 && dtype != DType::kBFloat16) {
    return Status::InvalidArgument("Gemm: dtype must be fp32 or bf16, got " +
                                   std::string(DTypeName(dtype)));
  }
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Gemm", {m, n, batch.count}, {c}));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("Gemm", {m, n, k, batch.count}, {a, b}));
  // Row-major: A is [m, k] (or [k, m] transposed), B is [k, n] (or [n, k]), C is [m, n].
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("Gemm A", lda, ta ? m : k));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("Gemm B", ldb, tb ? k : n));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("Gemm C", ldc, n));
  for (int64_t v : {m, n, k, lda, ldb, ldc}) {
    if (v > INT_MAX) return Status::InvalidArgument("Gemm: dimension beyond 32-bit BLAS range");
  }
  if (batch.stride_a < 0 || batch.stride_b < 0 || batch.stride_c < 0) {
    return Status::InvalidArgument("Gemm: negative batch stride");
  }
  return Status::Ok();
}

#ifdef PSZERO_HAVE_CUDA
Status CudaGemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const void* a,
                int64_t lda, const void* b, int64_t ldb, float beta, float* c, int64_t ldc,
                const GemmBatch& batch, DType dtype, const KernelContext& ctx) {
  auto handle = static_cast<cublasHandle_t>(ctx.cuda->cublas());
  const cudaDataType_t ab_type = dtype == DType::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const cublasOperation_t op_b = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_a = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasStatus_t st;
  if (batch.count == 1) {
    st = cublasGemmEx(handle, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                      static_cast<int>(k), &alpha, b, ab_type, static_cast<int>(ldb), a, ab_type,
                      static_cast<int>(lda), &beta, c, CUDA_R_32F, static_cast<int>(ldc),
                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  } else {
    st = cublasGemmStridedBatchedEx(
        handle, op_b, op_a, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
        b, ab_type, static_cast<int>(ldb), batch.stride_b, a, ab_type, static_cast<int>(lda),
        batch.stride_a, &beta, c, CUDA_R_32F, static_cast<int>(ldc), batch.stride_c,
        static_cast<int>(batch.count), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    return Status::Internal(std::string("cuBLAS gemm: ") + cublasGetStatusString(st));
  }
  return Status::Ok();
}
#endif

}  // namespace

Status GemmStridedBatched(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k,
                          float alpha, const void* a, int64_t lda, const void* b, int64_t ldb,
                          float beta, float* c, int64_t ldc, const GemmBatch& batch, DType dtype,
                          const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(
      CheckGemm(transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc, batch, dtype));
  if (m == 0 || n == 0 || batch.count == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(CudaGemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb,
                                      beta, c, ldc, batch, dtype, ctx));
  }
  if (openblas_get_num_threads() != ctx.threads) openblas_set_num_threads(ctx.threads);
  const CBLAS_TRANSPOSE ta = transpose_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = transpose_b ? CblasTrans : CblasNoTrans;
  const float* fa = static_cast<const float*>(a);
  const float* fb = static_cast<const float*>(b);
  std::vector<float> wide_a, wide_b;
  if (dtype == DType::kBFloat16) {
    // Debian's OpenBLAS is built without cblas_sbgemm: widen the bf16 operands to fp32
    // (exact) and multiply in fp32, which is what sbgemm computes. Each operand is widened
    // once over the span all products read (batched products may overlap: attention's
    // heads share their tokens' rows).
    const int64_t a_rows = transpose_a ? k : m, a_cols = transpose_a ? m : k;
    const int64_t b_rows = transpose_b ? n : k, b_cols = transpose_b ? k : n;
    const int64_t a_span = a_rows > 0 && k > 0 ? (a_rows - 1) * lda + a_cols : 0;
    const int64_t b_span = b_rows > 0 && k > 0 ? (b_rows - 1) * ldb + b_cols : 0;
    const int64_t a_total = a_span > 0 ? (batch.count - 1) * batch.stride_a + a_span : 0;
    const int64_t b_total = b_span > 0 ? (batch.count - 1) * batch.stride_b + b_span : 0;
    wide_a.resize(static_cast<size_t>(a_total));
    wide_b.resize(static_cast<size_t>(b_total));
    const KernelContext cast_ctx = KernelContext::Host(ctx.threads, ctx.isa);
    PSZERO_RETURN_IF_ERROR(
        Cast(a, DType::kBFloat16, wide_a.data(), DType::kFloat32, a_total, cast_ctx));
    PSZERO_RETURN_IF_ERROR(
        Cast(b, DType::kBFloat16, wide_b.data(), DType::kFloat32, b_total, cast_ctx));
    fa = wide_a.data();
    fb = wide_b.data();
  }
  for (int64_t i = 0; i < batch.count; ++i) {
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<blasint>(m), static_cast<blasint>(n),
                static_cast<blasint>(k), alpha, fa + i * batch.stride_a, static_cast<blasint>(lda),
                fb + i * batch.stride_b, static_cast<blasint>(ldb), beta, c + i * batch.stride_c,
                static_cast<blasint>(ldc));
  }
  return Status::Ok();
}

Status Gemm(bool transpose_a, bool transpose_b, int64_t m, int64_t n, int64_t k, float alpha,
            const void* a, int64_t lda, const void* b, int64_t ldb, float beta, float* c,
            int64_t ldc, DType dtype, const KernelContext& ctx) {
  return GemmStridedBatched(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc,
                            GemmBatch{}, dtype, ctx);
}

}  // namespace pszero::kernels
