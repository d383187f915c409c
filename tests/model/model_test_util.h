// Helpers for the model tests: small configurations, a T = 1 context, running a few
// training steps and assembling a TP rank's shards into the canonical full vector.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "worker/model/data.h"
#include "worker/model/full_params.h"
#include "worker/model/model.h"
#include "worker/train/single_replica_sync.h"
#include "worker/train/trainer.h"

namespace pszero::testing {

inline model::ModelConfig SmallGpt() {
  model::ModelConfig c;
  c.name = "custom";
  c.kind = model::ModelKind::kGpt;
  c.layers = 2;
  c.d_model = 32;
  c.heads = 4;
  c.seq = 8;
  c.batch = 2;
  c.ffn_mult = 4;
  c.vocab = 64;
  return c;
}

inline model::ModelConfig SmallMlp() {
  model::ModelConfig c;
  c.name = "custom-mlp";
  c.kind = model::ModelKind::kMlp;
  c.layers = 2;
  c.d_model = 16;
  c.heads = 1;
  c.seq = 1;
  c.batch = 4;
  c.ffn_mult = 4;
  c.vocab = 0;
  return c;
}

// SmallMlp, twice as wide: the ps tests' model (its buffer cuts into several slices).
inline model::ModelConfig TinyMlp() {
  model::ModelConfig c = SmallMlp();
  c.d_model = 32;
  return c;
}

// What one rank ends with after some steps.
struct RunResult {
  std::vector<float> losses;
  std::vector<float> first_grads;      // full (T = 1 layout) after step 1, before the update
  std::vector<float> final_params;     // full after the last step
  std::vector<float> gathered_params;  // GatherFullParams after the last step
  int64_t activations_peak = 0;        // MemoryTracker peak of the activations, bytes
};

// Scatters this rank's flat buffer into `full` (sized to the T = 1 numel).
inline void ScatterShard(const model::ParamBuffer& shard, const float* local,
                         const std::vector<int64_t>& full_offsets, std::vector<float>& full) {
  for (size_t v = 0; v < shard.views().size(); ++v) {
    const model::ParamView& view = shard.views()[v];
    for (int64_t i = 0; i < view.numel; ++i) {
      const int64_t f = model::ParamBuffer::FullIndex(view, i, shard.tp_rank(), shard.tp_size());
      full[full_offsets[v] + f] = local[view.offset + i];
    }
  }
}

// Offsets of each view in the T = 1 buffer, from full shapes (same order on every T).
inline std::vector<int64_t> FullOffsets(const model::ParamBuffer& shard, int64_t* total) {
  std::vector<int64_t> offsets;
  int64_t at = 0;
  for (const model::ParamView& v : shard.views()) {
    offsets.push_back(at);
    at += ShapeNumel(v.spec.full_shape);
  }
  *total = at;
  return offsets;
}

// Trains `steps` steps on one rank; `full` results are this rank's part (others zero).
inline Status TrainSteps(const model::ModelConfig& config, model::TensorParallel* tp, bool bf16,
                         int steps, uint64_t seed, const std::string& data_path, RunResult* out,
                         model::Recompute recompute = model::Recompute::kNone,
                         int64_t recompute_layers = -1) {
  MemoryTracker tracker;
  model::ModelContext ctx;
  ctx.tp = tp;
  ctx.tracker = &tracker;
  ctx.bf16 = bf16;
  ctx.recompute = recompute;
  ctx.recompute_layers = recompute_layers;
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<model::Model> m, model::Model::Create(config, ctx, seed));
  model::DataOptions dopt;
  dopt.seed = seed;
  dopt.path = data_path;
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<model::DataSource> data,
                          model::DataSource::Create(config, dopt));
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<train::SingleReplicaSync> sync,
                          train::SingleReplicaSync::Create(&m->params(), train::OptimizerOptions{},
                                                           ctx.kernels, &tracker));
  train::Trainer trainer(m.get(), data.get(), sync.get());
  int64_t total = 0;
  const std::vector<int64_t> offsets = FullOffsets(m->params(), &total);
  out->first_grads.assign(total, 0.0f);
  out->final_params.assign(total, 0.0f);
  for (int s = 0; s < steps; ++s) {
    PSZERO_ASSIGN_OR_RETURN(train::StepResult r, trainer.RunStep(s));
    out->losses.push_back(r.loss);
    if (s == 0) {
      ScatterShard(m->params(), m->params().grads().data<float>(), offsets, out->first_grads);
    }
  }
  ScatterShard(m->params(), m->params().params().data<float>(), offsets, out->final_params);
  PSZERO_ASSIGN_OR_RETURN(out->gathered_params, model::GatherFullParams(m->params(), *tp));
  out->activations_peak = tracker.Usage(MemoryCategory::kActivations).peak_bytes;
  return Status::Ok();
}

// ||a - b|| / ||b||.
inline double RelativeError(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

}  // namespace pszero::testing
