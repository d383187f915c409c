#include "worker/train/sync_strategy.h"

#include <algorithm>

namespace pszero::train {

Result<std::vector<float>> SyncStrategy::LocalParams(const model::ParamBuffer& params) {
  if (!params.params().defined()) {
    return Status::Internal(std::string(name()) + ": parameters not resident");
  }
  return HostFloats(params.params());
}

Result<std::vector<float>> HostFloats(const Tensor& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  PSZERO_RETURN_IF_ERROR(Tensor::Wrap(out.data(), {t.numel()}, DType::kFloat32).CopyFrom(t));
  return out;
}

Result<Moments> CopyMoments(const Tensor& m, const Tensor& v) {
  Moments out;
  PSZERO_ASSIGN_OR_RETURN(out.m, HostFloats(m));
  PSZERO_ASSIGN_OR_RETURN(out.v, HostFloats(v));
  return out;
}

Status RestoreWhole(model::ParamBuffer* params, const std::vector<float>& values,
                    const Moments& moments, Tensor& m, Tensor& v) {
  auto host = [](const std::vector<float>& x) {
    return Tensor::Wrap(const_cast<float*>(x.data()), {static_cast<int64_t>(x.size())},
                        DType::kFloat32);
  };
  Tensor p = params->params();  // a view
  PSZERO_RETURN_IF_ERROR(p.CopyFrom(host(values)));
  PSZERO_RETURN_IF_ERROR(m.CopyFrom(host(moments.m)));
  PSZERO_RETURN_IF_ERROR(v.CopyFrom(host(moments.v)));
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
