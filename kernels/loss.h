// Losses: cross-entropy from logits (fused log-softmax) and mean squared error, forward
// and backward (fp32).
//
// Cross-entropy: rows of logits [rows, vocab] (leading dimension ld) against int32
// targets in [0, vocab). Forward writes lse[r] = log(sum_j exp(logits[r, j])) (kept for
// backward) and *mean_loss = mean over rows of lse[r] - logits[r, target[r]]. Backward:
// dlogits = (softmax(logits) - onehot(target)) * dloss / rows; dlogits may equal logits.
// The host checks targets (kInvalidArgument); the CUDA twin cannot report, and gives a NaN
// mean loss and no one-hot term for out-of-range targets. MSE: *loss = mean (pred -
// target)^2, dpred = 2 (pred - target) dloss / n. Means over zero rows or elements are 0.
// Scalars are written to floats on ctx.device.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

Status CrossEntropyForward(const float* logits, int64_t ld, const int32_t* targets, int64_t rows,
                           int64_t vocab, float* lse, float* mean_loss, const KernelContext& ctx);

Status CrossEntropyBackward(const float* logits, int64_t ld, const int32_t* targets,
                            const float* lse, int64_t rows, int64_t vocab, float dloss,
                            float* dlogits, int64_t ld_dlogits, const KernelContext& ctx);

Status MseLossForward(const float* pred, const float* target, int64_t n, float* loss,
                      const KernelContext& ctx);

Status MseLossBackward(const float* pred, const float* target, int64_t n, float dloss, float* dpred,
                       const KernelContext& ctx);

}  // namespace pszero::kernels
