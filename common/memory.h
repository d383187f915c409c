// MemoryTracker: live and peak bytes per category (params, grads, optimizer state,
// activations, communication buffers) and per device, for one rank.
//
// Every Tensor that owns memory reports its allocation and release to the tracker it was
// created with, so run reports can show what a rank really holds beside the ZeRO
// formulas. There is no process-wide tracker: each rank's context owns one, and tests
// build several in one process. The tracker must outlive the tensors that point to it.
// Thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string_view>

#include "common/dtype.h"

namespace pszero {

enum class MemoryCategory : uint8_t {
  kParams,
  kGrads,
  kOptimizer,
  kActivations,
  kCommBuffers,
  kOther,
  // Transient model state of the sharded sync modes: a zero3 layer's parameters gathered
  // for its forward or backward, gradient buckets waiting for their reduce-scatter.
  kGatheredParams,
  kGradBuckets,
};
inline constexpr int kNumMemoryCategories = 8;
inline constexpr int kNumDevices = 2;

// "params", "grads", "optimizer", "activations", "comm_buffers", "other",
// "gathered_params", "grad_buckets".
std::string_view MemoryCategoryName(MemoryCategory category);

struct MemoryUsage {
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
};

class MemoryTracker {
 public:
  MemoryTracker() = default;
  MemoryTracker(const MemoryTracker&) = delete;
  MemoryTracker& operator=(const MemoryTracker&) = delete;

  void OnAllocate(MemoryCategory category, Device device, int64_t bytes);
  void OnFree(MemoryCategory category, Device device, int64_t bytes);

  MemoryUsage Usage(MemoryCategory category, Device device = Device::kHost) const;
  // Live bytes of all categories together, and the peak of that sum (which is at most,
  // and usually less than, the sum of the per-category peaks).
  MemoryUsage Total(Device device = Device::kHost) const;

  // Sets every peak to the current live value (e.g. after initialization).
  void ResetPeaks();

 private:
  struct Counter {
    int64_t live = 0;
    int64_t peak = 0;
  };
  mutable std::mutex mu_;
  std::array<std::array<Counter, kNumMemoryCategories>, kNumDevices> by_category_{};
  std::array<Counter, kNumDevices> total_{};
};

}  // namespace pszero
