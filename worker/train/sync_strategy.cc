#include "worker/train/sync_strategy.h"

namespace pszero::train {

Result<std::vector<float>> SyncStrategy::LocalParams(const model::ParamBuffer& params) {
  if (!params.params().defined()) {
    return Status::Internal(std::string(name()) + ": parameters not resident");
  }
  const float* p = params.params().data<float>();
  return std::vector<float>(p, p + params.numel());
}

}  // namespace pszero::train
