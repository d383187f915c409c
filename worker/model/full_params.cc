#include "worker/model/full_params.h"

#include "common/safetensors.h"

namespace pszero::model {

Result<std::vector<float>> GatherFullParams(const ParamBuffer& params, TensorParallel& tp) {
  if (!params.params().defined()) {
    return Status::Internal("GatherFullParams: the parameters are not resident");
  }
  std::vector<float> mine(static_cast<size_t>(params.numel()));
  PSZERO_RETURN_IF_ERROR(
      Tensor::Wrap(mine.data(), {params.numel()}, DType::kFloat32).CopyFrom(params.params()));
  return GatherFullParams(params, mine.data(), tp);
}

Result<std::vector<float>> GatherFullParams(const ParamBuffer& params, const float* mine,
                                            TensorParallel& tp) {
  const int t = tp.size();
  const int64_t local = params.numel();
  std::vector<float> shards(static_cast<size_t>(local) * t);
  std::copy(mine, mine + local, shards.begin() + tp.rank() * local);
  if (t > 1) {
    PSZERO_RETURN_IF_ERROR(tp.comm()->AllGather(
        Tensor::Wrap(shards.data() + tp.rank() * local, {local}, DType::kFloat32),
        Tensor::Wrap(shards.data(), {local * t}, DType::kFloat32)));
  }
  std::vector<int64_t> full_offset;
  int64_t total = 0;
  for (const ParamView& v : params.views()) {
    full_offset.push_back(total);
    total += ShapeNumel(v.spec.full_shape);
  }
  std::vector<float> full(total);
  for (int r = 0; r < t; ++r) {
    const float* shard = shards.data() + r * local;
    for (size_t i = 0; i < params.views().size(); ++i) {
      const ParamView& v = params.views()[i];
      for (int64_t j = 0; j < v.numel; ++j) {
        full[full_offset[i] + ParamBuffer::FullIndex(v, j, r, t)] = shard[v.offset + j];
      }
    }
  }
  return full;
}

int64_t FullNumel(const ParamBuffer& params) {
  int64_t total = 0;
  for (const ParamView& v : params.views()) total += ShapeNumel(v.spec.full_shape);
  return total;
}

Result<std::vector<float>> LocalFromFull(const ParamBuffer& params, const std::vector<float>& full,
                                         int tp_rank, int tp_size) {
  if (static_cast<int64_t>(full.size()) != FullNumel(params)) {
    return Status::InvalidArgument("full parameter vector of " + std::to_string(full.size()) +
                                   " values for a model of " + std::to_string(FullNumel(params)));
  }
  std::vector<float> local(static_cast<size_t>(params.numel()), 0.0f);
  int64_t full_offset = 0;
  for (const ParamView& v : params.views()) {
    for (int64_t j = 0; j < v.numel; ++j) {
      local[v.offset + j] = full[full_offset + ParamBuffer::FullIndex(v, j, tp_rank, tp_size)];
    }
    full_offset += ShapeNumel(v.spec.full_shape);
  }
  return local;
}

std::string Sha256Hex(const std::vector<float>& full) {
  return BytesSha256(
      std::string_view(reinterpret_cast<const char*>(full.data()), full.size() * sizeof(float)));
}

}  // namespace pszero::model
