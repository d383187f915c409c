// Model: one TP rank's shard of a preset or custom model (config.h), its flat parameter
// buffer, and forward/backward over one batch, calling LayerHooks around every unit.
//
//  * GPT (byte-level, pre-LN, learned positions, tied embeddings): the token embedding
//    is vocab-parallel (rows [t*V/T, (t+1)*V/T) on TP rank t; ids outside are zeros, then
//    reduce), blocks are AttentionBlock + MlpBlock (layers.h), and the tied head is a
//    column-parallel product with the same shard whose logits are gathered, so every TP
//    rank computes the same cross-entropy.
//  * MLP: `layers` MlpBlocks on x [batch, d], MSE against a fixed random target drawn
//    from the seed.
//
// Create() declares, allocates and initializes the parameters from the seed (the same
// full weights for every T). Forward then Backward, once per step; gradients accumulate
// into params().grads() (the caller zeroes them). With bf16-only storage
// (ParamStorage::fp32_copies false) the layers read the bf16 parameters, and each unit's
// backward accumulates into an fp32 scratch (activations; at most two units' worth, GPT's
// embedding being open through the whole backward) that is cast once into the unit's bf16
// gradients before GradientsReady(unit) reaches the hooks. In bf16 mode every layer casts
// its output gradient into one scratch the model owns (ModelContext::grad_bf16_scratch),
// and all blocks share one set of fp32 buffers for what each needs only while its own
// forward or backward runs (ModelContext::block_scratch: branch outputs, activation
// gradients, bf16 forward's fp32 intermediates). With ModelContext::recompute full the
// blocks also share one set of saved activations (ModelContext::block_saved): forward
// keeps every block's input, and backward re-runs block l's forward from it (no hooks
// called; after BeforeBackward(l)'s, so the parameters are there) before block l's
// backward. With ModelContext::recompute_layers N only the first N blocks share that set
// (and are re-run, but the last of them); the others keep their own, as without
// recompute. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "common/status.h"
#include "worker/model/config.h"
#include "worker/model/hooks.h"
#include "worker/model/layers.h"
#include "worker/model/param_buffer.h"

namespace pszero::model {

// One replica's batch. GPT: tokens and targets [batch * seq]. MLP: inputs [batch, d].
struct Batch {
  std::vector<int32_t> tokens;
  std::vector<int32_t> targets;
  std::vector<float> inputs;
  // The batch's first row within its step (micro-batch m of gradient accumulation:
  // m·batch): the MLP model's target rows start there.
  int64_t first_row = 0;
};

class Model {
 public:
  static Result<std::unique_ptr<Model>> Create(const ModelConfig& config, const ModelContext& ctx,
                                               uint64_t seed);
  virtual ~Model();

  const ModelConfig& config() const { return config_; }
  ParamBuffer& params() { return params_; }
  const ModelContext& context() const { return ctx_; }

  // The mean loss of the batch (identical on every TP rank). `hooks` may be null.
  virtual Result<float> Forward(const Batch& batch, LayerHooks* hooks) = 0;
  // d(loss)/d(params), accumulated into the gradient buffer. bf16-only storage: each
  // unit's fp32 scratch is cast into its bf16 gradients (written), or, `accumulate` (a
  // later micro-batch of gradient accumulation), added to them in fp32 and rounded once.
  Status Backward(LayerHooks* hooks, bool accumulate = false);

 protected:
  Model(const ModelConfig& config, const ModelContext& ctx);
  virtual Status Declare() = 0;
  virtual Status RunBackward(LayerHooks* hooks) = 0;
  virtual Status AfterInitialize(uint64_t /*seed*/) { return Status::Ok(); }
  // --recompute full: whether block l writes the shared saved set (one of the first
  // --recompute-layers blocks, all by default).
  bool SharesSavedSet(int64_t l) const { return l < recomputed_blocks_; }
  // --recompute full: whether block l's forward runs again before its backward (every
  // block of the shared set but the last, whose saved activations are still the
  // forward's: the blocks after it keep their own).
  bool RecomputeBlock(int64_t l) const { return l + 1 < recomputed_blocks_; }
  // The context block l's layers run with: ctx_, or for a block that keeps its own saved
  // activations (--recompute-layers below the layers), ctx_ without the shared set.
  const ModelContext& BlockContext(int64_t l) const { return SharesSavedSet(l) ? ctx_ : kept_ctx_; }

  ModelConfig config_;
  ModelContext ctx_;               // its grad_bf16_scratch, block_scratch and block_saved are below
  ModelContext kept_ctx_;          // ctx_ without block_saved (BlockContext)
  int64_t recomputed_blocks_ = 0;  // --recompute full: the first blocks sharing block_saved_
  ParamBuffer params_;
  Tensor grad_bf16_scratch_;    // bf16 mode: every layer's dy cast, one at a time
  BlockScratch block_scratch_;  // every block's fp32 scratch, one block at a time
  BlockSaved block_saved_;      // --recompute full: every block's saved activations

 private:
  class GradScratch;
  std::unique_ptr<GradScratch> grad_scratch_;  // bf16-only storage
};

}  // namespace pszero::model
