#include "worker/train/sync_strategy.h"

#include <algorithm>

namespace pszero::train {

Result<std::vector<float>> SyncStrategy::LocalParams(const model::ParamBuffer& params) {
  if (!params.params().defined()) {
    return Status::Internal(std::string(name()) + ": parameters not resident");
  }
  const float* p = params.params().data<float>();
  return std::vector<float>(p, p + params.numel());
}

Moments CopyMoments(const Tensor& m, const Tensor& v) {
  return Moments{std::vector<float>(m.data<float>(), m.data<float>() + m.numel()),
                 std::vector<float>(v.data<float>(), v.data<float>() + v.numel())};
}

Status RestoreWhole(model::ParamBuffer* params, const std::vector<float>& values,
                    const Moments& moments, Tensor& m, Tensor& v) {
  std::copy(values.begin(), values.end(), params->params().data<float>());
  std::copy(moments.m.begin(), moments.m.end(), m.data<float>());
  std::copy(moments.v.begin(), moments.v.end(), v.data<float>());
  return params->RefreshBf16();
}

Result<Moments> SyncStrategy::LocalMoments(const model::ParamBuffer&) {
  return Status::InvalidArgument("--sync " + std::string(name()) +
                                 ": checkpoints are not supported yet");
}

Status SyncStrategy::Restore(const std::vector<float>&, const Moments&) {
  return Status::InvalidArgument("--sync " + std::string(name()) +
                                 ": checkpoints are not supported yet");
}

}  // namespace pszero::train
