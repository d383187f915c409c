// Internal to kernels/: the CUDA twins, implemented in kernels/cuda/*.cu and called by the
// public entry points after they have checked their arguments. Each enqueues on `stream`
// (a cudaStream_t) and reports launch errors; execution errors surface at the next
// synchronization. Sizes and meanings are those of the public headers.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/internal.h"

namespace pszero::kernels::cuda {

using internal::AdamWConsts;
using internal::SgdConsts;

Status AdamW(const AdamWConsts& c, float* p, const void* g, bool g_bf16, float* m, float* v,
             uint16_t* p_bf16, int64_t n, void* stream);
Status Sgd(const SgdConsts& c, float* p, const void* g, bool g_bf16, float* buf, uint16_t* p_bf16,
           int64_t n, void* stream);

Status Sum(const void* const* in, int k, bool in_bf16, void* out, bool out_bf16, int64_t n,
           bool accumulate, void* stream);
Status SquaredNorm(const void* x, bool bf16, int64_t n, float* out, void* stream);
Status Max(const float* x, int64_t n, float* out, void* stream);

Status Cast(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n, void* stream);

// y is fp32, or bf16 bits (uint16_t) when y_bf16: computed in fp32, rounded on the store.
Status BiasAdd(const float* x, int64_t ldx, const float* bias, void* y, bool y_bf16, int64_t ldy,
               int64_t rows, int64_t cols, void* stream);
Status BiasAddBackward(const float* dy, int64_t lddy, int64_t rows, int64_t cols, float* dbias,
                       void* stream);
Status Add(const float* a, const float* b, float* out, int64_t n, void* stream);
// x is fp32, or bf16 bits when x_bf16 (widened; then y_bf16 too); y as in BiasAdd.
Status GeluForward(const void* x, bool x_bf16, void* y, bool y_bf16, int64_t n, void* stream);
Status GeluBackward(const void* x, bool x_bf16, const float* dy, float* dx, int64_t n,
                    void* stream);

// y as in GeluForward (fp32, or bf16 when y_bf16); mean and rstd fp32.
Status LayerNormForward(const float* x, int64_t ldx, const float* gamma, const float* beta,
                        float eps, void* y, bool y_bf16, int64_t ldy, float* mean, float* rstd,
                        int64_t rows, int64_t cols, void* stream);
Status LayerNormBackward(const float* dy, int64_t lddy, const float* x, int64_t ldx,
                         const float* gamma, const float* mean, const float* rstd, float* dx,
                         int64_t lddx, float* dgamma, float* dbeta, int64_t rows, int64_t cols,
                         void* stream);

// y as in BiasAdd.
Status SoftmaxForward(const float* x, void* y, bool y_bf16, int64_t rows, int64_t cols, int64_t ld,
                      float scale, bool causal, void* stream);
// y and dx both fp32, or both bf16 bits when bf16 (dy fp32 either way).
Status SoftmaxBackward(const void* y, const float* dy, void* dx, bool bf16, int64_t rows,
                       int64_t cols, int64_t ld, float scale, void* stream);

Status CrossEntropyForward(const float* logits, int64_t ld, const int32_t* targets, int64_t rows,
                           int64_t vocab, float* lse, float* mean_loss, void* stream);
Status CrossEntropyBackward(const float* logits, int64_t ld, const int32_t* targets,
                            const float* lse, int64_t rows, int64_t vocab, float dloss,
                            float* dlogits, int64_t ld_dlogits, void* stream);
Status MseLossForward(const float* pred, const float* target, int64_t n, float* loss, void* stream);
Status MseLossBackward(const float* pred, const float* target, int64_t n, float dloss, float* dpred,
                       void* stream);

// Rows [first, first + rows) of the table (fp32, or bf16 when table_bf16); other ids give
// zeros / are skipped.
Status EmbeddingForward(const void* table, bool table_bf16, int64_t first, int64_t rows,
                        int64_t dim, const int32_t* ids, int64_t n, float* out, void* stream);
Status EmbeddingBackward(const float* dout, const int32_t* ids, int64_t n, int64_t first,
                         int64_t rows, int64_t dim, float* dtable, void* stream);

// dst[r, :cols] = src[r, :cols] for `rows` rows of `element_bytes`-byte elements.
Status Copy2D(const void* src, int64_t ld_src, void* dst, int64_t ld_dst, int64_t rows,
              int64_t cols, int64_t element_bytes, void* stream);

}  // namespace pszero::kernels::cuda
