// ParamBuffer: every parameter of one TP rank's model shard in one flat fp32 buffer, in a
// canonical order, with a twin gradient buffer at the same offsets (and, for bf16 compute,
// a bf16 copy of the parameters). Sync strategies and checkpoints work on these buffers
// and their views, never on layers.
//
// Layers declare parameters with Add() (full T = 1 shape, how it is split across TP), the
// model calls Allocate() once, then Initialize(seed). A parameter's values are a function
// of (seed, name, index in the full T = 1 tensor) only, so every TP shard is exactly a
// slice of the T = 1 weights. Views keep their order of declaration; `units` group
// consecutive views into the layers the hooks of hooks.h talk about.
// Not thread-safe; owns its memory (tracked as params / grads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/memory.h"
#include "common/status.h"
#include "common/tensor.h"

namespace pszero::model {

enum class ParamInit : uint8_t { kZeros, kOnes, kNormal };

struct ParamSpec {
  std::string name;
  Shape full_shape;    // the T = 1 shape
  int shard_dim = -1;  // -1: replicated on every TP rank
  // The shard dimension is `parts` equal parts (fused Q, K, V: 3), each split across TP,
  // and a shard holds its slice of every part, part after part.
  int parts = 1;
  ParamInit init = ParamInit::kNormal;
  float std = 0.02f;
};

struct ParamView {
  ParamSpec spec;
  Shape shape;         // local shape on this TP rank
  int64_t offset = 0;  // elements from the start of the flat buffer
  int64_t numel = 0;
};

// A contiguous run of views [first_view, end_view) = elements [begin, end): one layer.
struct ParamUnit {
  std::string name;
  int first_view = 0;
  int end_view = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

class ParamBuffer {
 public:
  ParamBuffer(int tp_rank, int tp_size) : tp_rank_(tp_rank), tp_size_(tp_size) {}
  ParamBuffer(const ParamBuffer&) = delete;
  ParamBuffer& operator=(const ParamBuffer&) = delete;

  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }

  // Declares a parameter; returns its view index. InvalidArgument when the shard
  // dimension does not divide by parts * T.
  Result<int> Add(const ParamSpec& spec);
  // Starts a unit (layer); views added from now on belong to it.
  void BeginUnit(const std::string& name);

  // Allocates params and grads (zeroed), and a bf16 parameter copy when `bf16`.
  Status Allocate(MemoryTracker* tracker, bool bf16);
  // Fills the parameters from the seed (and refreshes the bf16 copy).
  Status Initialize(uint64_t seed);
  // Refreshes the bf16 copy from the fp32 parameters (no-op without one).
  Status RefreshBf16();

  int64_t numel() const { return numel_; }
  const std::vector<ParamView>& views() const { return views_; }
  const std::vector<ParamUnit>& units() const { return units_; }

  float* param(int view) { return params_.data<float>() + views_[view].offset; }
  float* grad(int view) { return grads_.data<float>() + views_[view].offset; }
  // Null without a bf16 copy.
  const bf16_t* param_bf16(int view) const {
    return has_bf16() ? params_bf16_.data<bf16_t>() + views_[view].offset : nullptr;
  }
  bool has_bf16() const { return params_bf16_.defined(); }

  const Tensor& params() const { return params_; }
  const Tensor& grads() const { return grads_; }
  const Tensor& params_bf16() const { return params_bf16_; }
  Status ZeroGrads() { return grads_.ZeroFill(); }

  // Index in the full (T = 1) tensor of element `local_index` of `view` on TP rank
  // `tp_rank` of `tp_size`: how shards are assembled into the canonical full vector.
  static int64_t FullIndex(const ParamView& view, int64_t local_index, int tp_rank, int tp_size);

 private:
  int tp_rank_;
  int tp_size_;
  int64_t numel_ = 0;
  std::vector<ParamView> views_;
  std::vector<ParamUnit> units_;
  Tensor params_;
  Tensor grads_;
  Tensor params_bf16_;
};

// The deterministic initial value of element `full_index` of parameter `name`.
float InitialValue(uint64_t seed, const ParamSpec& spec, int64_t full_index);

}  // namespace pszero::model
