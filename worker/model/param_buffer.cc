#include "worker/model/param_buffer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/half.h"
#include "kernels/cast.h"

namespace pszero::model {

namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
  return h;
}

// Uniform in (0, 1), never 0 (log below).
double Uniform(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }

}  // namespace

float InitialValue(uint64_t seed, const ParamSpec& spec, int64_t full_index) {
  switch (spec.init) {
    case ParamInit::kZeros:
      return 0.0f;
    case ParamInit::kOnes:
      return 1.0f;
    case ParamInit::kNormal:
      break;
  }
  const uint64_t key = SplitMix64(seed ^ Fnv1a(spec.name));
  const double u1 = Uniform(SplitMix64(key + 2 * static_cast<uint64_t>(full_index)));
  const double u2 = Uniform(SplitMix64(key + 2 * static_cast<uint64_t>(full_index) + 1));
  const double z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  return static_cast<float>(z * spec.std);
}

Result<int> ParamBuffer::Add(const ParamSpec& spec) {
  if (params_.defined()) return Status::Internal("ParamBuffer::Add after Allocate");
  if (units_.empty()) BeginUnit("all");
  ParamView v;
  v.spec = spec;
  v.shape = spec.full_shape;
  if (spec.shard_dim >= 0) {
    if (spec.shard_dim >= static_cast<int>(spec.full_shape.size()) || spec.parts < 1 ||
        spec.full_shape[spec.shard_dim] % (static_cast<int64_t>(spec.parts) * tp_size_) != 0) {
      return Status::InvalidArgument(
          "parameter " + spec.name + " " + ShapeToString(spec.full_shape) + ": dimension " +
          std::to_string(spec.shard_dim) + " does not split into " + std::to_string(spec.parts) +
          " x " + std::to_string(tp_size_) + " TP shards");
    }
    v.shape[spec.shard_dim] /= tp_size_;
  }
  v.offset = numel_;
  v.numel = ShapeNumel(v.shape);
  numel_ += v.numel;
  views_.push_back(std::move(v));
  view_unit_.push_back(static_cast<int>(units_.size()) - 1);
  {
    units_.back().end_view = static_cast<int>(views_.size());
    units_.back().end = numel_;
  }
  return static_cast<int>(views_.size()) - 1;
}

void ParamBuffer::PadUnit() {
  numel_ = (numel_ + unit_align_ - 1) / unit_align_ * unit_align_;
  if (!units_.empty()) units_.back().end = numel_;
}

void ParamBuffer::BeginUnit(const std::string& name) {
  PadUnit();
  ParamUnit u;
  u.name = name;
  u.first_view = u.end_view = static_cast<int>(views_.size());
  u.begin = u.end = numel_;
  units_.push_back(std::move(u));
}

Status ParamBuffer::Allocate(MemoryTracker* tracker, bool bf16, ParamStorage storage,
                             const kernels::KernelContext& kernels) {
  if (!unit_params_.empty()) return Status::Internal("ParamBuffer::Allocate twice");
  PadUnit();
  bf16_ = bf16;
  storage_ = storage;
  kernels_ = kernels;
  const Device device = kernels.device;
  // Host buffers are shared memory: the intra-host collectives read them in place.
  auto zeros = [&](DType dtype, MemoryCategory category) {
    return device == Device::kHost ? Tensor::ZerosShared({numel_}, dtype, category, tracker)
                                   : Tensor::Zeros({numel_}, dtype, category, tracker, device);
  };
  const bool fp32 = !bf16_only();
  const size_t units = units_.size();
  unit_params_.assign(units, nullptr);
  unit_grads_.assign(units, nullptr);
  unit_params_bf16_.assign(units, nullptr);
  unit_grads_bf16_.assign(units, nullptr);
  if (storage.params_resident) {
    if (fp32) {
      PSZERO_ASSIGN_OR_RETURN(params_, zeros(DType::kFloat32, MemoryCategory::kParams));
    }
    if (bf16) {
      PSZERO_ASSIGN_OR_RETURN(params_bf16_, zeros(DType::kBFloat16, MemoryCategory::kParams));
    }
    for (size_t u = 0; u < units; ++u) {
      if (fp32) unit_params_[u] = params_.data<float>() + units_[u].begin;
      if (bf16) unit_params_bf16_[u] = params_bf16_.data<bf16_t>() + units_[u].begin;
    }
  }
  if (storage.grads_resident) {
    if (fp32) {
      PSZERO_ASSIGN_OR_RETURN(grads_, zeros(DType::kFloat32, MemoryCategory::kGrads));
      for (size_t u = 0; u < units; ++u) unit_grads_[u] = grads_.data<float>() + units_[u].begin;
    } else {
      PSZERO_ASSIGN_OR_RETURN(grads_bf16_, zeros(DType::kBFloat16, MemoryCategory::kGrads));
      for (size_t u = 0; u < units; ++u) {
        unit_grads_bf16_[u] = grads_bf16_.data<bf16_t>() + units_[u].begin;
      }
    }
  }
  return Status::Ok();
}

Status ParamBuffer::ZeroGrads() {
  if (grads_.defined()) PSZERO_RETURN_IF_ERROR(grads_.ZeroFill());
  if (grads_bf16_.defined()) PSZERO_RETURN_IF_ERROR(grads_bf16_.ZeroFill());
  return Status::Ok();
}

int64_t ParamBuffer::largest_unit() const {
  int64_t n = 0;
  for (const ParamUnit& u : units_) n = std::max(n, u.end - u.begin);
  return n;
}

void ParamBuffer::AttachUnitParams(int unit, float* params, bf16_t* params_bf16) {
  unit_params_[unit] = params;
  unit_params_bf16_[unit] = params_bf16;
}

void ParamBuffer::AttachUnitGrads(int unit, float* grads) { unit_grads_[unit] = grads; }

void ParamBuffer::AttachUnitGradsBf16(int unit, bf16_t* grads) { unit_grads_bf16_[unit] = grads; }

void ParamBuffer::AttachUnitGradStorage(int unit, void* grads) {
  if (bf16_only()) {
    AttachUnitGradsBf16(unit, static_cast<bf16_t*>(grads));
  } else {
    AttachUnitGrads(unit, static_cast<float*>(grads));
  }
}

void ParamBuffer::InitialValues(int64_t begin, int64_t end, float* out) const {
  std::fill(out, out + (end - begin), 0.0f);
  for (const ParamView& v : views_) {
    const int64_t lo = std::max(begin, v.offset);
    const int64_t hi = std::min(end, v.offset + v.numel);
    for (int64_t i = lo; i < hi; ++i) {
      out[i - begin] = InitialValue(seed_, v.spec, FullIndex(v, i - v.offset, tp_rank_, tp_size_));
    }
  }
}

int64_t ParamBuffer::FullIndex(const ParamView& view, int64_t local_index, int tp_rank,
                               int tp_size) {
  const ParamSpec& s = view.spec;
  if (s.shard_dim < 0 || tp_size == 1) return local_index;
  int64_t inner = 1;
  for (size_t d = s.shard_dim + 1; d < s.full_shape.size(); ++d) inner *= s.full_shape[d];
  const int64_t local_dim = view.shape[s.shard_dim];
  const int64_t full_dim = s.full_shape[s.shard_dim];
  const int64_t outer = local_index / (local_dim * inner);
  const int64_t c = (local_index / inner) % local_dim;
  const int64_t j = local_index % inner;
  const int64_t part_len = full_dim / s.parts;
  const int64_t shard_len = part_len / tp_size;
  const int64_t full_c = (c / shard_len) * part_len + tp_rank * shard_len + c % shard_len;
  return (outer * full_dim + full_c) * inner + j;
}

Status ParamBuffer::FillInitialValues(int64_t begin, int64_t end, void* out, DType dtype) const {
  const int64_t n = end - begin;
  if (n <= 0) return Status::Ok();
  if (dtype == DType::kFloat32 && device() == Device::kHost) {
    InitialValues(begin, end, static_cast<float*>(out));
    return Status::Ok();
  }
  std::vector<float> values(static_cast<size_t>(n));
  InitialValues(begin, end, values.data());
  if (dtype == DType::kFloat32) {
    return Tensor::Wrap(out, {n}, DType::kFloat32, device())
        .CopyFrom(Tensor::Wrap(values.data(), {n}, DType::kFloat32));
  }
  if (dtype != DType::kBFloat16) return Status::Internal("FillInitialValues: fp32 or bf16 only");
  std::vector<bf16_t> rounded(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) rounded[i].bits = FloatToBf16Bits(values[i]);
  return Tensor::Wrap(out, {n}, DType::kBFloat16, device())
      .CopyFrom(Tensor::Wrap(rounded.data(), {n}, DType::kBFloat16));
}

Status ParamBuffer::Initialize(uint64_t seed) {
  if (unit_params_.empty()) return Status::Internal("ParamBuffer::Initialize before Allocate");
  seed_ = seed;
  if (params_.defined()) {
    PSZERO_RETURN_IF_ERROR(FillInitialValues(0, numel_, params_.data()));
    return RefreshBf16();
  }
  if (params_bf16_.defined()) {  // bf16 only: the rounded initial values
    return FillInitialValues(0, numel_, params_bf16_.data(), DType::kBFloat16);
  }
  return Status::Ok();
}

Status ParamBuffer::RefreshBf16() {
  if (!has_bf16() || !params_.defined()) return Status::Ok();
  return kernels::Cast(params_.data(), DType::kFloat32, params_bf16_.data(), DType::kBFloat16,
                       numel_, kernels_);
}

}  // namespace pszero::model
