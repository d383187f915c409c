// Layers with explicit forward and backward, written against a ParamBuffer (their
// parameters and gradients are views into its flat buffers) and TensorParallel (the
// conjugate operators). Each layer saves what its backward needs in activation buffers
// it owns (tracked as activations), sized for a fixed number of tokens.
//
// Megatron-LM's split, on T TP ranks:
//  * ColumnParallel Linear: weight [out/T, in] (rows of the T = 1 weight), bias [out/T];
//    input through copy (f): no communication forward, all-reduce of dx backward.
//  * RowParallel Linear: weight [out, in/T], bias [out] replicated and added after the
//    reduce (g): all-reduce of y forward, none backward.
//  * AttentionBlock: x + RowParallel(attention(ColumnParallel QKV(LN(x)))), heads/T per rank.
//  * MlpBlock: x + RowParallel(GELU(ColumnParallel(LN(x)))).
// Parameter gradients accumulate (+=); activation gradients are overwritten. Layers are
// fp32, with bf16 GEMM operands (fp32 accumulation) when the context says so, and run
// only kernels: every buffer they touch lives on the kernel context's device (host or
// CUDA), and on CUDA they enqueue work on its stream without waiting for it.
#pragma once

#include <cstdint>
#include <string>

#include "common/memory.h"
#include "common/status.h"
#include "common/tensor.h"
#include "kernels/attention.h"
#include "kernels/context.h"
#include "worker/model/param_buffer.h"
#include "worker/model/tensor_parallel.h"

namespace pszero::model {

// What every layer of one rank runs with. Owned by the caller; outlives the layers.
struct ModelContext {
  kernels::KernelContext kernels = kernels::KernelContext::Host();
  TensorParallel* tp = nullptr;  // required
  MemoryTracker* tracker = nullptr;
  bool bf16 = false;  // bf16 GEMM operands (needs the ParamBuffer's bf16 copy)
  // How the ParamBuffer is laid out and held (param_buffer.h): a sync strategy's choice.
  int64_t unit_align = 1;
  ParamStorage storage;
};

// A fp32 activation buffer of n elements on the context's device; reallocated only when n
// changes.
Status EnsureBuffer(Tensor& t, int64_t n, const ModelContext& ctx);

// The fp32 values of parameter `view`: the parameter itself, or with bf16-only storage
// (no fp32 parameters) its bf16 values upcast into `scratch` (an activation buffer). For
// the small vectors (biases, LayerNorm gains and shifts).
Result<const float*> ParamFloats(const ModelContext& ctx, ParamBuffer& params, int view,
                                 Tensor& scratch);

enum class Parallel : uint8_t { kNone, kColumn, kRow };

class Linear {
 public:
  // Declares weight "<name>.weight" [out, in] and bias "<name>.bias" [out] (full shapes).
  // `parts` > 1 splits the output into equal parts sharded separately (fused QKV).
  Status Declare(ParamBuffer& params, const std::string& name, int64_t in, int64_t out,
                 Parallel parallel, int parts = 1, float std = 0.02f);
  int64_t local_in() const { return local_in_; }
  int64_t local_out() const { return local_out_; }

  // y [n, local_out] = x [n, local_in] W^T + b (row-parallel: all-reduced, then + b).
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n, float* y);
  // dW += dy^T x, db += sum dy; dx [n, local_in] = dy W (column-parallel: all-reduced).
  // Needs the x of the last Forward (kept by pointer: the caller keeps it alive).
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dy, int64_t n,
                  float* dx);

 private:
  Parallel parallel_ = Parallel::kNone;
  int weight_ = -1;
  int bias_ = -1;
  int64_t local_in_ = 0;
  int64_t local_out_ = 0;
  const float* x_ = nullptr;
  Tensor bias_f32_;  // upcast bias (bf16-only storage)
  Tensor x_bf16_;    // bf16 copy of x (bf16 mode)
  Tensor dy_bf16_;   // bf16 copy of dy (bf16 mode)
};

// y = x W^T for a row-major W given by pointer (fp32 or bf16 view of a ParamBuffer), and
// the two backward GEMMs; the bf16 operands are cast into the scratch tensors.
Status MatmulWeightT(const ModelContext& ctx, const float* x, int64_t n, int64_t in, const float* w,
                     const bf16_t* w_bf16, int64_t out, float* y, Tensor& x_bf16);
Status MatmulWeightBackward(const ModelContext& ctx, const float* dy, int64_t n, int64_t out,
                            const float* w, const bf16_t* w_bf16, int64_t in, const Tensor& x_bf16,
                            const float* x, float* dw, float* dx, Tensor& dy_bf16);

class LayerNorm {
 public:
  Status Declare(ParamBuffer& params, const std::string& name, int64_t dim);
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n, float* y);
  // dx may not alias dy.
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dy, int64_t n,
                  float* dx);

 private:
  int gamma_ = -1;
  int beta_ = -1;
  int64_t dim_ = 0;
  const float* x_ = nullptr;
  Tensor mean_;
  Tensor rstd_;
  Tensor gamma_f32_, beta_f32_;  // upcast (bf16-only storage)
};

// out = x + RowParallel(attention(ColumnParallel_qkv(LN(x)))). x [batch*seq, d].
class AttentionBlock {
 public:
  Status Declare(ParamBuffer& params, const std::string& name, int64_t d, int64_t heads,
                 float residual_std);
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t batch,
                 int64_t seq, float* out);
  // dx = dout + d(branch)/dx; dx may not alias dout.
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dout, float* dx);

 private:
  LayerNorm ln_;
  Linear qkv_;
  Linear proj_;
  int64_t d_ = 0;
  int64_t heads_ = 0;
  kernels::AttentionShape shape_;
  Tensor ln_out_, qkv_out_, probs_, attn_out_, branch_, dattn_, dqkv_, dprobs_, dln_;
};

// out = x + RowParallel(GELU(ColumnParallel(LN(x)))). x [n, d].
class MlpBlock {
 public:
  Status Declare(ParamBuffer& params, const std::string& name, int64_t d, int64_t hidden,
                 float residual_std);
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n,
                 float* out);
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dout, float* dx);

 private:
  LayerNorm ln_;
  Linear fc_;
  Linear proj_;
  int64_t d_ = 0;
  int64_t n_ = 0;
  Tensor ln_out_, hidden_, act_, branch_, dhidden_, dln_;
};

}  // namespace pszero::model
