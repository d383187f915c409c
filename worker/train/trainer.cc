#include "worker/train/trainer.h"

#include <chrono>
#include <map>
#include <string>
#include <utility>

#include "common/trace.h"

namespace pszero::train {

namespace {

// Forwards every hook to the strategy and, when tracing, records each unit's forward
// (BeforeForward .. ParamsDone) and backward (BeforeBackward .. ParamsDone or
// GradientsReady) as timeline events, without the strategy's own work in the hooks.
class TracingHooks final : public model::LayerHooks {
 public:
  TracingHooks(model::LayerHooks* inner, const model::ParamBuffer& params)
      : inner_(inner), params_(params) {}
  Status BeforeForward(int unit) override {
    PSZERO_RETURN_IF_ERROR(inner_->BeforeForward(unit));
    Open(unit, "forward ");
    return Status::Ok();
  }
  Status BeforeBackward(int unit) override {
    PSZERO_RETURN_IF_ERROR(inner_->BeforeBackward(unit));
    Open(unit, "backward ");
    return Status::Ok();
  }
  Status ParamsDone(int unit) override {
    Close(unit);
    return inner_->ParamsDone(unit);
  }
  Status GradientsReady(int unit) override {
    Close(unit);
    return inner_->GradientsReady(unit);
  }

 private:
  void Open(int unit, const char* what) {
    Tracer* t = Tracer::Get();
    if (t == nullptr) return;
    open_[unit] = {what + params_.units()[unit].name, Tracer::NowUs()};
  }
  void Close(int unit) {
    Tracer* t = Tracer::Get();
    auto it = open_.find(unit);
    if (t == nullptr || it == open_.end()) return;
    t->Complete(it->second.first, "compute", it->second.second,
                Tracer::NowUs() - it->second.second);
    open_.erase(it);
  }

  model::LayerHooks* inner_;
  const model::ParamBuffer& params_;
  std::map<int, std::pair<std::string, int64_t>> open_;
};

}  // namespace

Result<StepResult> Trainer::RunStep(int64_t step) {
  const auto start = std::chrono::steady_clock::now();
  TraceScope step_scope("step " + std::to_string(step + 1), "step");
  PSZERO_RETURN_IF_ERROR(model_->params().ZeroGrads());
  TracingHooks hooks(sync_, model_->params());
  float loss = 0.0f;
  for (int micro = 0; micro < micro_batches_; ++micro) {
    PSZERO_RETURN_IF_ERROR(data_->Next(step, micro, &batch_));
    PSZERO_RETURN_IF_ERROR(sync_->BeginMicroBatch(micro, micro_batches_));
    float micro_loss = 0.0f;
    {
      TraceScope scope("forward", "phase");
      PSZERO_ASSIGN_OR_RETURN(micro_loss, model_->Forward(batch_, &hooks));
    }
    {
      TraceScope scope("backward", "phase");
      PSZERO_RETURN_IF_ERROR(model_->Backward(&hooks, /*accumulate=*/micro > 0));
    }
    loss += micro_loss;
  }
  if (micro_batches_ > 1) loss /= static_cast<float>(micro_batches_);
  {
    TraceScope scope("sync step (" + std::string(sync_->name()) + ")", "phase");
    PSZERO_RETURN_IF_ERROR(sync_->Step(step + 1));
    // On a GPU the step's kernels may still run: the step ends when they have.
    PSZERO_RETURN_IF_ERROR(kernels::Fence(model_->context().kernels));
  }
  StepResult r;
  r.step = step;
  r.loss = loss;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace pszero::train
