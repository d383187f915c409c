// Trainer: the training loop of one worker: for each step, the batch of this DP rank,
// zeroed gradients, forward and backward with the strategy as the model's hooks, then the
// strategy's Step. Knows nothing of how replicas synchronize. Not thread-safe.
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
  // All three must outlive the trainer.
  Trainer(model::Model* model, const model::DataSource* data, SyncStrategy* sync)
      : model_(model), data_(data), sync_(sync) {}

  // Runs step `step` (0-based; the optimizer sees step + 1).
  Result<StepResult> RunStep(int64_t step);

 private:
  model::Model* model_;
  const model::DataSource* data_;
  SyncStrategy* sync_;
  model::Batch batch_;
};

}  // namespace pszero::train
