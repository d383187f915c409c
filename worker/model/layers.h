// Layers with explicit forward and backward, written against a ParamBuffer (their
// parameters and gradients are views into its flat buffers) and TensorParallel (the
// conjugate operators). Each layer saves what its backward needs in activation buffers
// it owns (tracked as activations), sized for a fixed number of tokens, or under
// --recompute full in one set all blocks share (BlockSaved); what a block needs only while
// it runs (BlockScratch) is shared by all blocks of a model.
//
// Megatron-LM's split, on T TP ranks:
//  * ColumnParallel Linear: weight [out/T, in] (rows of the T = 1 weight), bias [out/T];
//    input through copy (f): no communication forward, all-reduce of dx backward.
//  * RowParallel Linear: weight [out, in/T], bias [out] replicated and added after the
//    reduce (g): all-reduce of y forward, none backward.
//  * AttentionBlock: x + RowParallel(attention(ColumnParallel QKV(LN(x)))), heads/T per rank.
//  * MlpBlock: x + RowParallel(GELU(ColumnParallel(LN(x)))).
// Parameter gradients accumulate (+=); activation gradients are overwritten. Layers are
// fp32, or mixed precision when the context says so (ModelContext::bf16), and run only
// kernels: every buffer they touch lives on the kernel context's device (host or
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

// The buffers (fp32, but `probs`) a transformer block uses only while its own forward or
// its own backward runs, never from one to the other: nothing in them is read after the
// call that wrote it returns. Blocks run one at a time, so one set, each buffer grown to
// the largest block's need (never shrunk), serves all blocks of a model
// (ModelContext::block_scratch).
struct BlockScratch {
  Tensor branch;  // [n, d]: the branch's output before the residual add (forward)
  Tensor dln;     // [n, d]: the gradient of the block's LayerNorm output (backward)
  // [n, d/T]: the attention output's gradient; in bf16 forward, its fp32 value before the
  // rounding into the kept bf16 copy.
  Tensor dattn;
  // [batch, heads/T, seq, seq]: the probabilities' gradient; in bf16 forward, the scores.
  Tensor dprobs;
  // Attention: dqkv [n, 3d/T]; MLP: dhidden [n, hidden/T]. In bf16 forward, the QKV (fc)
  // GEMM's fp32 output before the bias add and the rounding into the kept bf16 copy.
  Tensor dwide;
  // --recompute selective: the attention probabilities [batch, heads/T, seq, seq] (bf16 in
  // bf16 mode), written by the forward for P·V and recomputed from q, k by the backward.
  Tensor probs;
};

// Activation recompute (--recompute; Megatron-LM's --recompute-granularity, DeepSpeed's
// activation checkpointing). Every option gives bit for bit the same results: the
// recomputation runs the same kernels on the same inputs.
//  * kNone: every block keeps what its backward reads.
//  * kSelective: the attention probabilities (the [batch, heads, seq, seq] tensor) are not
//    kept; the attention's backward recomputes them from the kept q and k (the scores GEMM
//    and the softmax again, kernels::AttentionProbs) into BlockScratch::probs.
//  * kFull: the model keeps each block's input (its residual stream) only; everything a
//    block saves for backward is in one set shared by all blocks (ModelContext::
//    block_saved), and the model re-runs block l's forward right before block l's
//    backward (after the hooks' BeforeBackward, so ZeRO-3 has gathered its parameters).
//    With ModelContext::recompute_layers N, only the first N blocks do so; the others
//    keep their activations as under kNone.
enum class Recompute : uint8_t { kNone, kSelective, kFull };

// "none", "selective", "full" (the --recompute values); InvalidArgument otherwise.
Result<Recompute> ParseRecompute(const std::string& name);
const char* RecomputeName(Recompute r);

// The blocks --recompute full recomputes (the first ones): recompute_layers, or all when
// -1; 0 without kFull.
int64_t RecomputedBlocks(Recompute r, int64_t recompute_layers, int64_t layers);

// A LayerNorm's per-row statistics, kept from its forward for its backward.
struct LayerNormStats {
  Tensor mean;  // [n]
  Tensor rstd;  // [n]
};

// What an AttentionBlock's forward keeps for its backward: GEMM inputs and qkv in bf16 in
// bf16 mode (EnsureGemmInput); probs stays empty under --recompute selective.
struct AttentionSaved {
  LayerNormStats ln;
  Tensor ln_out, qkv, probs, attn_out;
};

// What an MlpBlock's forward keeps for its backward (bf16 in bf16 mode but the
// statistics). hidden is fc's output, GELU's input, which GELU's backward reads.
struct MlpSaved {
  LayerNormStats ln;
  Tensor ln_out, hidden, act;
};

// --recompute full: one block's saved activations, shared by all blocks (each buffer is
// sized by the block writing it; the blocks of a model are alike, so it is allocated once).
struct BlockSaved {
  AttentionSaved attn;
  MlpSaved mlp;
};

// What every layer of one rank runs with. Owned by the caller; outlives the layers.
struct ModelContext {
  kernels::KernelContext kernels = kernels::KernelContext::Host();
  TensorParallel* tp = nullptr;  // required
  MemoryTracker* tracker = nullptr;
  // Mixed precision (needs the ParamBuffer's bf16 copy): bf16 GEMM operands with fp32
  // accumulation, and the activations saved for backward kept in bf16 only: the LayerNorm,
  // attention and GELU outputs, qkv, the attention probabilities and GELU's input. The
  // residual stream, LayerNorm statistics, logits, losses and all gradients stay fp32.
  bool bf16 = false;
  // How the ParamBuffer is laid out and held (param_buffer.h): a sync strategy's choice.
  int64_t unit_align = 1;
  ParamStorage storage;
  // bf16 mode: where backward casts a GEMM's output gradient for the bf16 GEMMs. It lives
  // only within one MatmulWeightBackward (or one attention backward, which also rounds its
  // dout and scores' gradient there), so one buffer (grown to the largest) serves a whole
  // model: Model points this at one it owns. Null: each layer keeps its own.
  Tensor* grad_bf16_scratch = nullptr;
  // The blocks' fp32 scratch (BlockScratch). Model points this at one it owns; null: each
  // block keeps its own set.
  BlockScratch* block_scratch = nullptr;
  Recompute recompute = Recompute::kNone;
  // --recompute full: the one set of saved activations every block writes (Model points
  // this at one it owns). Null: each block keeps its own.
  BlockSaved* block_saved = nullptr;
  // --recompute full only (--recompute-layers; Megatron's --recompute-num-layers with
  // --recompute-method block): how many blocks, the first ones, are recomputed and share
  // block_saved; the others keep their own saved activations, as under kNone. -1: all.
  int64_t recompute_layers = -1;
};

// A fp32 activation buffer of n elements on the context's device; reallocated only when n
// changes.
Status EnsureBuffer(Tensor& t, int64_t n, const ModelContext& ctx);
// A buffer for an activation that feeds a GEMM: bf16 when ctx.bf16, else fp32 (as above).
Status EnsureGemmInput(Tensor& t, int64_t n, const ModelContext& ctx);

// The bf16 gradient scratch to use: the context's shared one, else `own`.
inline Tensor& GradBf16Scratch(const ModelContext& ctx, Tensor& own) {
  return ctx.grad_bf16_scratch != nullptr ? *ctx.grad_bf16_scratch : own;
}

// The block scratch to use: the context's shared one, else `own`.
inline BlockScratch& BlockScratchOf(const ModelContext& ctx, BlockScratch& own) {
  return ctx.block_scratch != nullptr ? *ctx.block_scratch : own;
}

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
  // With ctx.bf16 a fp32 x is cast into a bf16 copy the layer owns.
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n, float* y);
  // The same for an x already in bf16 (needs ctx.bf16): no copy, x itself is saved.
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const bf16_t* x, int64_t n,
                 float* y);
  // The same with y kept in bf16: the GEMM (and the row-parallel reduce) write the fp32
  // scratch `acc` [n, local_out], and y is acc + b rounded once.
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const bf16_t* x, int64_t n,
                 float* acc, bf16_t* y);
  // What Forward keeps for Backward, without computing y (--recompute full skips a layer
  // whose output backward never reads): only for an x Forward keeps by pointer (fp32 in
  // fp32 mode, bf16 in bf16 mode).
  void KeepInput(const float* x) {
    x_ = x;
    x_bf16_ = nullptr;
  }
  void KeepInput(const bf16_t* x) {
    x_ = nullptr;
    x_bf16_ = x;
  }
  // dW += dy^T x, db += sum dy; dx [n, local_in] = dy W (column-parallel: all-reduced).
  // Needs the x of the last Forward (kept by pointer: the caller keeps it alive).
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dy, int64_t n,
                  float* dx);

 private:
  // y = acc (reduced when row-parallel) + bias; y may equal acc.
  template <typename Y>
  Status AddBias(const ModelContext& ctx, ParamBuffer& params, int64_t n, float* acc, Y* y);

  Parallel parallel_ = Parallel::kNone;
  int weight_ = -1;
  int bias_ = -1;
  int64_t local_in_ = 0;
  int64_t local_out_ = 0;
  const float* x_ = nullptr;        // fp32 mode: the last x
  const bf16_t* x_bf16_ = nullptr;  // bf16 mode: the last x (the caller's, or x_copy_)
  Tensor bias_f32_;                 // upcast bias (bf16-only storage)
  Tensor x_copy_;                   // bf16 copy of a fp32 x (bf16 mode)
  Tensor dy_bf16_;                  // bf16 copy of dy (bf16 mode, no shared scratch)
};

// y = x W^T for a row-major W given by pointer (fp32 or bf16 view of a ParamBuffer), and
// the two backward GEMMs. fp32 mode uses w and the fp32 x; bf16 mode uses w_bf16 and a
// bf16 x: MatmulWeightT's fp32-x form casts x into `x_bf16` (which backward then reads),
// its bf16-x form takes x as it is. dy is cast into the scratch `dy_bf16` (grown when
// smaller than dy, never shrunk).
Status MatmulWeightT(const ModelContext& ctx, const float* x, int64_t n, int64_t in, const float* w,
                     const bf16_t* w_bf16, int64_t out, float* y, Tensor& x_bf16);
Status MatmulWeightT(const ModelContext& ctx, const bf16_t* x, int64_t n, int64_t in,
                     const bf16_t* w_bf16, int64_t out, float* y);
Status MatmulWeightBackward(const ModelContext& ctx, const float* dy, int64_t n, int64_t out,
                            const float* w, const bf16_t* w_bf16, int64_t in, const bf16_t* x_bf16,
                            const float* x, float* dw, float* dx, Tensor& dy_bf16);

// Keeps its statistics in `stats` (a block's saved set), or in its own when null; the
// backward reads those of the last forward (and the x of it, by pointer).
class LayerNorm {
 public:
  Status Declare(ParamBuffer& params, const std::string& name, int64_t dim);
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n, float* y,
                 LayerNormStats* stats = nullptr);
  // The same with y rounded to bf16 (statistics and arithmetic fp32).
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n, bf16_t* y,
                 LayerNormStats* stats = nullptr);
  // dx may not alias dy.
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dy, int64_t n,
                  float* dx);

 private:
  template <typename Y>
  Status ForwardImpl(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n, Y* y,
                     LayerNormStats* stats);

  int gamma_ = -1;
  int beta_ = -1;
  int64_t dim_ = 0;
  const float* x_ = nullptr;
  LayerNormStats own_;
  LayerNormStats* stats_ = nullptr;  // the last forward's `stats` (null: own_)
  Tensor gamma_f32_, beta_f32_;      // upcast (bf16-only storage)
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
  AttentionSaved own_saved_;  // without the context's shared one (--recompute full)
  // Without the context's shared one: branch, dln, and the fp32 gradients of qkv (dwide),
  // the probabilities and the attention output. In bf16 mode each of the last three is also
  // the forward's fp32 scratch for the value it is the gradient of.
  BlockScratch own_;
  Tensor dbf16_;  // bf16 mode without the context's shared scratch: dout and dscores
};

// out = x + RowParallel(GELU(ColumnParallel(LN(x)))). x [n, d].
class MlpBlock {
 public:
  Status Declare(ParamBuffer& params, const std::string& name, int64_t d, int64_t hidden,
                 float residual_std);
  // out == nullptr (--recompute full's re-run before backward): only what Backward reads
  // (LN, the column-parallel GEMM, GELU), without the output projection, its all-reduce
  // and the residual add.
  Status Forward(const ModelContext& ctx, ParamBuffer& params, const float* x, int64_t n,
                 float* out);
  Status Backward(const ModelContext& ctx, ParamBuffer& params, const float* dout, float* dx);

 private:
  LayerNorm ln_;
  Linear fc_;
  Linear proj_;
  int64_t d_ = 0;
  int64_t n_ = 0;
  MlpSaved own_saved_;  // without the context's shared one (--recompute full)
  // Without the context's shared one: branch, dln and dhidden (dwide; in bf16 mode also the
  // forward's scratch for fc's fp32 output).
  BlockScratch own_;
};

}  // namespace pszero::model
