#include "kernels/loss.h"

#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/cuda_kernels.h"
#include "kernels/cuda_resources.h"
#include "kernels/internal.h"

namespace pszero::kernels {

namespace {

Status CheckTargets(const int32_t* targets, int64_t rows, int64_t vocab) {
  for (int64_t r = 0; r < rows; ++r) {
    if (targets[r] < 0 || targets[r] >= vocab) {
      return Status::InvalidArgument("cross-entropy target " + std::to_string(targets[r]) +
                                     " at row " + std::to_string(r) + " outside [0, " +
                                     std::to_string(vocab) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace

Status CrossEntropyForward(const float* logits, int64_t ld, const int32_t* targets, int64_t rows,
                           int64_t vocab, float* lse, float* mean_loss, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("CrossEntropyForward", {1}, {mean_loss}));
  PSZERO_RETURN_IF_ERROR(
      internal::CheckArgs("CrossEntropyForward", {rows}, {logits, targets, lse}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("CrossEntropyForward", ld, vocab));
  if (vocab < 1) return Status::InvalidArgument("CrossEntropyForward: vocab must be at least 1");
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::CrossEntropyForward(logits, ld, targets, rows, vocab, lse,
                                                       mean_loss, ctx.cuda->stream()));
  }
  PSZERO_RETURN_IF_ERROR(CheckTargets(targets, rows, vocab));
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / 4 / vocab);
  std::vector<double> partial(cpu::PlanChunks(ctx.threads, rows, min_rows), 0.0);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int t, int64_t b, int64_t e) {
    partial[t] = k.cross_entropy(logits + b * ld, ld, targets + b, e - b, vocab, lse + b);
  });
  double total = 0;
  for (double p : partial) total += p;
  *mean_loss = rows > 0 ? static_cast<float>(total / static_cast<double>(rows)) : 0.0f;
  return Status::Ok();
}

Status CrossEntropyBackward(const float* logits, int64_t ld, const int32_t* targets,
                            const float* lse, int64_t rows, int64_t vocab, float dloss,
                            float* dlogits, int64_t ld_dlogits, const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(
      internal::CheckArgs("CrossEntropyBackward", {rows}, {logits, targets, lse, dlogits}));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("CrossEntropyBackward", ld, vocab));
  PSZERO_RETURN_IF_ERROR(internal::CheckLd("CrossEntropyBackward", ld_dlogits, vocab));
  if (vocab < 1) return Status::InvalidArgument("CrossEntropyBackward: vocab must be at least 1");
  if (rows == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::CrossEntropyBackward(
        logits, ld, targets, lse, rows, vocab, dloss, dlogits, ld_dlogits, ctx.cuda->stream()));
  }
  PSZERO_RETURN_IF_ERROR(CheckTargets(targets, rows, vocab));
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const float coef = dloss / static_cast<float>(rows);
  const int64_t min_rows = std::max<int64_t>(1, cpu::kMinElementsPerThread / 4 / vocab);
  cpu::ParallelFor(ctx.threads, rows, min_rows, [&](int, int64_t b, int64_t e) {
    k.cross_entropy_backward(logits + b * ld, ld, targets + b, lse + b, e - b, vocab, coef,
                             dlogits + b * ld_dlogits, ld_dlogits);
  });
  return Status::Ok();
}

Status MseLossForward(const float* pred, const float* target, int64_t n, float* loss,
                      const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("MseLossForward", {1}, {loss}));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("MseLossForward", {n}, {pred, target}));
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(cuda::MseLossForward(pred, target, n, loss, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  std::vector<double> partial(cpu::PlanChunks(ctx.threads, n, cpu::kMinElementsPerThread), 0.0);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int t, int64_t b, int64_t e) {
    partial[t] = k.mse_sum(pred + b, target + b, e - b);
  });
  double total = 0;
  for (double p : partial) total += p;
  *loss = n > 0 ? static_cast<float>(total / static_cast<double>(n)) : 0.0f;
  return Status::Ok();
}

Status MseLossBackward(const float* pred, const float* target, int64_t n, float dloss, float* dpred,
                       const KernelContext& ctx) {
  PSZERO_RETURN_IF_ERROR(CheckContext(ctx));
  PSZERO_RETURN_IF_ERROR(internal::CheckArgs("MseLossBackward", {n}, {pred, target, dpred}));
  if (n == 0) return Status::Ok();
  if (ctx.device == Device::kCuda) {
    PSZERO_KERNELS_CUDA_CALL(
        cuda::MseLossBackward(pred, target, n, dloss, dpred, ctx.cuda->stream()));
  }
  const cpu::CpuKernels& k = cpu::KernelsFor(ctx.isa);
  const float coef = 2.0f * dloss / static_cast<float>(n);
  cpu::ParallelFor(ctx.threads, n, cpu::kMinElementsPerThread, [&](int, int64_t b, int64_t e) {
    k.mse_backward(pred + b, target + b, e - b, coef, dpred + b);
  });
  return Status::Ok();
}

}  // namespace pszero::kernels
