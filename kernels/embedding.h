// Embedding lookup and its scatter-add gradient (fp32 table [vocab, dim], int32 ids).
//
// Forward: out[i, :] = table[ids[i], :], out [n, dim] contiguous. Backward:
// dtable[ids[i], :] += dout[i, :], added in ascending i on every device and thread count
// (no atomics), so repeated ids give the same bits everywhere. The host checks ids
// (kInvalidArgument); the CUDA twin skips out-of-range ids (forward writes zeros).
// Pointers live on ctx.device.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

Status EmbeddingForward(const float* table, int64_t vocab, int64_t dim, const int32_t* ids,
                        int64_t n, float* out, const KernelContext& ctx);

Status EmbeddingBackward(const float* dout, const int32_t* ids, int64_t n, int64_t vocab,
                         int64_t dim, float* dtable, const KernelContext& ctx);

// A vocabulary-parallel shard (Megatron's VocabParallelEmbedding): `table` holds rows
// [first, first + rows) of the full table, and ids are full-table ids. Forward writes the
// row of an id in the shard and zeros for every other id; backward adds only the rows of
// ids in the shard (ascending i, as above). Ids are not checked (the caller validated
// them against the full vocabulary). The forward's table may be fp32 or bf16
// (`table_dtype`; bf16 rows are widened exactly), the output is fp32.
Status EmbeddingShardForward(const void* table, DType table_dtype, int64_t first, int64_t rows,
                             int64_t dim, const int32_t* ids, int64_t n, float* out,
                             const KernelContext& ctx);
Status EmbeddingShardBackward(const float* dout, const int32_t* ids, int64_t n, int64_t first,
                              int64_t rows, int64_t dim, float* dtable, const KernelContext& ctx);

}  // namespace pszero::kernels
