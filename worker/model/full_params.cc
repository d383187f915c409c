#include "worker/model/full_params.h"

#include <openssl/evp.h>

#include <cstdio>

namespace pszero::model {

Result<std::vector<float>> GatherFullParams(const ParamBuffer& params, TensorParallel& tp) {
  if (!params.params().defined()) {
    return Status::Internal("GatherFullParams: the parameters are not resident");
  }
  return GatherFullParams(params, params.params().data<float>(), tp);
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

std::string Sha256Hex(const std::vector<float>& full) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(full.data(), full.size() * sizeof(float), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

}  // namespace pszero::model
