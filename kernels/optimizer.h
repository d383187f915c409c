// Fused optimizer steps over flat fp32 master parameters: AdamW and SGD with momentum
// (optionally Nesterov), each one pass over memory, plus the global-norm clipping factor.
//
// One call updates n parameters in place. Gradients are fp32 or bf16 (read as fp32) and
// are multiplied by `grad_scale` first, which folds 1/D averaging, gradient clipping
// (GlobalNormClipScale) and loss-scale removal into the same pass. When `param_bf16` is
// not null the updated parameters are also written there, rounded to bf16 (RNE, as
// common/half.h), in the same pass. Pointers live on ctx.device; `grad` may not overlap
// the others. Element i depends only on element i, so any partition of a tensor (ZeRO
// shards, PS key ranges) gives the same bits as the whole.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

struct AdamWParams {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // decoupled: param *= 1 - lr * weight_decay
  int64_t step = 1;            // 1-based count including this update (bias correction)
  float grad_scale = 1.0f;
};

// PyTorch's AdamW (foreach=False) in fp32:
//   p *= 1 - lr*wd;  g = grad*grad_scale;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g
//   p -= (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)
Status AdamW(const AdamWParams& hp, float* param, const void* grad, DType grad_dtype, float* m,
             float* v, bf16_t* param_bf16, int64_t n, const KernelContext& ctx);

struct SgdParams {
  float lr = 1e-2f;
  float momentum = 0.9f;  // 0: plain SGD (the momentum buffer may then be null)
  float weight_decay = 0.0f;
  bool nesterov = false;
  float grad_scale = 1.0f;
};

// PyTorch's SGD with dampening 0 and a zero-initialized momentum buffer:
//   g = grad*grad_scale + wd*p;  buf = momentum*buf + g;
//   p -= lr * (nesterov ? g + momentum*buf : buf)
Status Sgd(const SgdParams& hp, float* param, const void* grad, DType grad_dtype,
           float* momentum_buf, bf16_t* param_bf16, int64_t n, const KernelContext& ctx);

// The factor that clip_grad_norm_ multiplies every gradient by, from the sum of the
// squared norms of all gradients (SquaredNorm per tensor, summed by the caller, across
// ranks too): min(1, max_norm / (sqrt(total_squared_norm) + 1e-6)). Pass it, times any
// other scale, as grad_scale. Host-side arithmetic.
float GlobalNormClipScale(double total_squared_norm, double max_norm);

}  // namespace pszero::kernels
