#include "worker/train/sync_strategy.h"

namespace pszero::train {

Result<std::vector<float>> SyncStrategy::LocalParams(const model::ParamBuffer& params) {
  if (!params.params().defined()) {
    return Status::Internal(std::string(name()) + ": parameters not resident");
  }
  const float* p = params.params().data<float>();
  return std::vector<float>(p, p + params.numel());
}

Result<Moments> SyncStrategy::LocalMoments(const model::ParamBuffer&) {
  return Status::InvalidArgument("--sync " + std::string(name()) + ": checkpoints are not supported yet");
}

Status SyncStrategy::Restore(const std::vector<float>&, const Moments&) {
  return Status::InvalidArgument("--sync " + std::string(name()) + ": checkpoints are not supported yet");
}

}  // namespace pszero::train
