// ParamBuffer: every parameter of one TP rank's model shard in one flat buffer, in a
// canonical order, with a twin gradient buffer at the same offsets. fp32 compute: fp32
// parameters and gradients. bf16 compute: bf16 parameters (what the layers read), and
// either fp32 parameters and gradients beside them (ParamStorage::fp32_copies, as ps keeps
// them) or bf16 gradients only, the fp32 master weights then being the sync strategy's
// optimizer state (the ZeRO paper's mixed-precision split). Sync strategies and
// checkpoints work on these buffers and their views, never on layers.
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
#include "kernels/context.h"

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
// Where the parameter and gradient values of the units live. Resident: one flat tensor
// each (params(), grads()). Not resident (ZeRO-3 params, ZeRO-2/3 gradients): no flat
// tensor; a sync strategy attaches each unit's storage (AttachUnit*) while the model
// reads it, and keeps the owned shard itself.
//
// With bf16 compute, fp32_copies = true keeps fp32 parameters and fp32 gradients beside
// the bf16 parameters (ps, a lone replica). false: the buffer holds bf16 parameters and
// bf16 gradients only (2 + 2 bytes per parameter); backward still accumulates a unit's
// gradients in fp32, in a scratch the model attaches for the unit's backward (AttachUnitGrads)
// and casts into the bf16 gradients when the unit is done (model.h).
struct ParamStorage {
  bool params_resident = true;
  bool grads_resident = true;
  bool fp32_copies = true;
};

// A unit covers [begin, end): its views, then padding (zeros) up to the next multiple of
// the buffer's unit alignment, so that a data-parallel group of D ranks can cut every
// unit, and every run of whole units, into D equal pieces.
struct ParamUnit {
  std::string name;
  int first_view = 0;
  int end_view = 0;
  int64_t begin = 0;
  int64_t end = 0;
};

class ParamBuffer {
 public:
  // Units start and end at multiples of `unit_align` elements (1: packed).
  ParamBuffer(int tp_rank, int tp_size, int64_t unit_align = 1)
      : tp_rank_(tp_rank), tp_size_(tp_size), unit_align_(unit_align < 1 ? 1 : unit_align) {}
  ParamBuffer(const ParamBuffer&) = delete;
  ParamBuffer& operator=(const ParamBuffer&) = delete;

  int tp_rank() const { return tp_rank_; }
  int tp_size() const { return tp_size_; }

  // Declares a parameter; returns its view index. InvalidArgument when the shard
  // dimension does not divide by parts * T.
  Result<int> Add(const ParamSpec& spec);
  // Starts a unit (layer); views added from now on belong to it.
  void BeginUnit(const std::string& name);

  // Allocates the resident params and grads (zeroed), and a resident bf16 parameter copy
  // when `bf16` and the params are resident (bf16-only storage: no fp32 ones, bf16 grads),
  // on the device of `kernels` (host: shared memory, which the intra-host collectives read
  // in place), whose kernels also refresh the bf16 copy.
  Status Allocate(MemoryTracker* tracker, bool bf16, ParamStorage storage = {},
                  const kernels::KernelContext& kernels = kernels::KernelContext::Host());
  // Fills the resident parameters from the seed (and refreshes the bf16 copy); remembers
  // the seed for InitialValues.
  Status Initialize(uint64_t seed);
  // Refreshes the bf16 copy from the fp32 parameters (no-op without both).
  Status RefreshBf16();
  // The initial values of flat elements [begin, end) (padding: 0) into out[0, end-begin),
  // host memory.
  void InitialValues(int64_t begin, int64_t end, float* out) const;
  // The same into `out` on device(), fp32, or (`dtype` bf16) rounded to bf16.
  Status FillInitialValues(int64_t begin, int64_t end, void* out,
                           DType dtype = DType::kFloat32) const;

  // Storage of unit `unit` while it is not resident: fp32 params (and their bf16 copy
  // with bf16 compute; bf16-only: the bf16 params alone), or grads, for elements
  // [unit.begin, unit.end); null detaches. AttachUnitGrads is what backward writes (fp32);
  // bf16-only storage keeps its gradients in AttachUnitGradsBf16's.
  void AttachUnitParams(int unit, float* params, bf16_t* params_bf16);
  void AttachUnitGrads(int unit, float* grads);
  void AttachUnitGradsBf16(int unit, bf16_t* grads);
  // The gradient storage a sync strategy keeps for `unit`, of grad_dtype(): fp32 ones
  // backward writes, or (bf16-only) the bf16 ones the model casts its scratch into.
  void AttachUnitGradStorage(int unit, void* grads);
  // Where unit `unit`'s fp32 / bf16 gradients live now (null: none attached).
  float* unit_grads(int unit) const { return unit_grads_[unit]; }
  bf16_t* unit_grads_bf16(int unit) const { return unit_grads_bf16_[unit]; }

  int64_t numel() const { return numel_; }  // including the units' padding
  // Where the buffers live, and the kernels that work on them (Allocate's).
  Device device() const { return kernels_.device; }
  const kernels::KernelContext& kernels() const { return kernels_; }
  int64_t unit_align() const { return unit_align_; }
  bool bf16() const { return bf16_; }
  // bf16 compute without fp32 copies: bf16 parameters and bf16 gradients only.
  bool bf16_only() const { return bf16_ && !storage_.fp32_copies; }
  // The element type of the parameters a sync strategy keeps in step (all-gathers) and of
  // the gradients it reduces.
  DType param_dtype() const { return bf16_only() ? DType::kBFloat16 : DType::kFloat32; }
  DType grad_dtype() const { return param_dtype(); }
  // Elements of the largest unit (padding included).
  int64_t largest_unit() const;
  const ParamStorage& storage() const { return storage_; }
  // Index of the unit that holds view `view`.
  int unit_of(int view) const { return view_unit_[view]; }
  const std::vector<ParamView>& views() const { return views_; }
  const std::vector<ParamUnit>& units() const { return units_; }

  // Null while the view's unit has no storage attached (not resident); param() is null
  // with bf16-only storage too (read param_bf16).
  float* param(int view) { return At(unit_params_, view); }
  float* grad(int view) { return At(unit_grads_, view); }
  // Null without a bf16 copy.
  const bf16_t* param_bf16(int view) const { return At(unit_params_bf16_, view); }
  bool has_bf16() const { return params_bf16_.defined(); }

  // The resident flat tensors (undefined when not resident).
  const Tensor& params() const { return params_; }
  const Tensor& grads() const { return grads_; }
  const Tensor& params_bf16() const { return params_bf16_; }
  const Tensor& grads_bf16() const { return grads_bf16_; }
  // The resident flat tensors a sync strategy keeps in step: the parameters the model
  // reads and the gradients it reduces (bf16-only: the bf16 ones; else the fp32 ones).
  const Tensor& sync_params() const { return bf16_only() ? params_bf16_ : params_; }
  const Tensor& sync_grads() const { return bf16_only() ? grads_bf16_ : grads_; }
  // Zeroes the resident gradients (attached unit gradients are the strategy's).
  Status ZeroGrads();

  // Index in the full (T = 1) tensor of element `local_index` of `view` on TP rank
  // `tp_rank` of `tp_size`: how shards are assembled into the canonical full vector.
  static int64_t FullIndex(const ParamView& view, int64_t local_index, int tp_rank, int tp_size);

 private:
  template <typename T>
  T* At(const std::vector<T*>& base, int view) const {
    const int u = view_unit_[view];
    T* b = base[u];
    return b == nullptr ? nullptr : b + (views_[view].offset - units_[u].begin);
  }
  void PadUnit();

  int tp_rank_;
  int tp_size_;
  int64_t unit_align_;
  bool bf16_ = false;
  uint64_t seed_ = 0;
  ParamStorage storage_;
  kernels::KernelContext kernels_;
  int64_t numel_ = 0;
  std::vector<int> view_unit_;
  // Per unit: where element unit.begin lives (null: not attached).
  std::vector<float*> unit_params_;
  std::vector<float*> unit_grads_;
  std::vector<bf16_t*> unit_params_bf16_;
  std::vector<bf16_t*> unit_grads_bf16_;
  std::vector<ParamView> views_;
  std::vector<ParamUnit> units_;
  Tensor params_;
  Tensor grads_;
  Tensor params_bf16_;
  Tensor grads_bf16_;
};

// The deterministic initial value of element `full_index` of parameter `name`.
float InitialValue(uint64_t seed, const ParamSpec& spec, int64_t full_index);

}  // namespace pszero::model
