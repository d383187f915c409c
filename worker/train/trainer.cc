#include "worker/train/trainer.h"

#include <chrono>

namespace pszero::train {

Result<StepResult> Trainer::RunStep(int64_t step) {
  const auto start = std::chrono::steady_clock::now();
  PSZERO_RETURN_IF_ERROR(data_->Next(step, &batch_));
  PSZERO_RETURN_IF_ERROR(model_->params().ZeroGrads());
  PSZERO_ASSIGN_OR_RETURN(float loss, model_->Forward(batch_, sync_));
  PSZERO_RETURN_IF_ERROR(model_->Backward(sync_));
  PSZERO_RETURN_IF_ERROR(sync_->Step(step + 1));
  StepResult r;
  r.step = step;
  r.loss = loss;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace pszero::train
