#include "common/memory.h"

#include <algorithm>
#include <cassert>

namespace pszero {

std::string_view MemoryCategoryName(MemoryCategory category) {
  switch (category) {
    case MemoryCategory::kParams:
      return "params";
    case MemoryCategory::kGrads:
      return "grads";
    case MemoryCategory::kOptimizer:
      return "optimizer";
    case MemoryCategory::kActivations:
      return "activations";
    case MemoryCategory::kCommBuffers:
      return "comm_buffers";
    case MemoryCategory::kOther:
      return "other";
    case MemoryCategory::kGatheredParams:
      return "gathered_params";
    case MemoryCategory::kGradBuckets:
      return "grad_buckets";
  }
  return "unknown";
}

void MemoryTracker::OnAllocate(MemoryCategory category, Device device, int64_t bytes) {
  std::lock_guard lock(mu_);
  Counter& c = by_category_[static_cast<int>(device)][static_cast<int>(category)];
  c.live += bytes;
  c.peak = std::max(c.peak, c.live);
  Counter& t = total_[static_cast<int>(device)];
  t.live += bytes;
  t.peak = std::max(t.peak, t.live);
}

void MemoryTracker::OnFree(MemoryCategory category, Device device, int64_t bytes) {
  std::lock_guard lock(mu_);
  Counter& c = by_category_[static_cast<int>(device)][static_cast<int>(category)];
  assert(c.live >= bytes && "freeing more than was allocated");
  c.live -= bytes;
  total_[static_cast<int>(device)].live -= bytes;
}

MemoryUsage MemoryTracker::Usage(MemoryCategory category, Device device) const {
  std::lock_guard lock(mu_);
  const Counter& c = by_category_[static_cast<int>(device)][static_cast<int>(category)];
  return {c.live, c.peak};
}

MemoryUsage MemoryTracker::Total(Device device) const {
  std::lock_guard lock(mu_);
  const Counter& t = total_[static_cast<int>(device)];
  return {t.live, t.peak};
}

void MemoryTracker::ResetPeaks() {
  std::lock_guard lock(mu_);
  for (auto& device : by_category_) {
    for (Counter& c : device) c.peak = c.live;
  }
  for (Counter& t : total_) t.peak = t.live;
}

}  // namespace pszero
