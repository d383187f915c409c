// Trainer: the training loop of one worker: for each step, zeroed gradients, then for
// each of the K micro-batches (--grad-accum, 1 by default) this DP rank's micro-batch,
// forward and backward with the strategy as the model's hooks (gradients adding up),
// then the strategy's Step. Knows nothing of how replicas synchronize. Not thread-safe.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "worker/model/data.h"
#include "worker/model/model.h"
#include "worker/train/sync_strategy.h"

namespace pszero::train {

struct StepResult {
  int64_t step = 0;  // 0-based
  float loss = 0.0f;
  double seconds = 0.0;
};

class Trainer {
 public:
  // All three must outlive the trainer. `micro_batches` (K >= 1) forward/backward passes
  // per step.
  Trainer(model::Model* model, const model::DataSource* data, SyncStrategy* sync,
          int micro_batches = 1)
      : model_(model), data_(data), sync_(sync), micro_batches_(micro_batches) {}

  // Runs step `step` (0-based; the optimizer sees step + 1). The loss is the mean over the
  // step's micro-batches.
  Result<StepResult> RunStep(int64_t step);

 private:
  model::Model* model_;
  const model::DataSource* data_;
  SyncStrategy* sync_;
  int micro_batches_;
  model::Batch batch_;
};

}  // namespace pszero::train
