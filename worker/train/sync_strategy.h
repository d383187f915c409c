// SyncStrategy: how the replicas of a data-parallel group stay in step. The training loop
// knows only this interface; each mode is one implementation in its own file.
//
// A strategy sees the model's hooks (hooks.h) during forward and backward (to gather
// parameters before a unit runs, or start reducing a unit's gradients as soon as they are
// ready) and runs the optimizer in Step(). It works on the model's flat ParamBuffer
// (params, grads, bf16 copy) and keeps its own optimizer state. Used by one thread.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "kernels/optimizer.h"
#include "worker/model/hooks.h"

namespace pszero::train {

class SyncStrategy : public model::LayerHooks {
 public:
  ~SyncStrategy() override = default;
  virtual std::string_view name() const = 0;
  // After backward: make the gradients consistent across the group and update the
  // parameters (fp32 master, then the bf16 compute copy). `step` is 1-based.
  virtual Status Step(int64_t step) = 0;
};

// Optimizer hyperparameters every strategy applies (DESIGN.md: AdamW 1e-3, 0.9/0.999,
// 1e-8, weight decay 0.01). `step` and `grad_scale` are filled in by the strategy.
struct OptimizerOptions {
  kernels::AdamWParams adamw;
};

}  // namespace pszero::train
