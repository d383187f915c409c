// Internal to kernels/: splits [0, n) into one contiguous chunk per thread (OpenMP), each
// chunk a multiple of 16 elements (one cache line of fp32) except the last. Work below
// `min_per_thread` items per thread stays on fewer threads, down to the calling one.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace pszero::kernels::cpu {

// Threads ParallelFor will use for n items.
inline int PlanThreads(int threads, int64_t n, int64_t min_per_thread) {
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_thread));
  return static_cast<int>(std::min<int64_t>(threads, by_size));
}

// f(thread_index, begin, end) for each non-empty chunk; thread_index < PlanThreads(...).
template <typename F>
void ParallelFor(int threads, int64_t n, int64_t min_per_thread, F&& f) {
  const int t = PlanThreads(threads, n, min_per_thread);
  if (t <= 1) {
    if (n > 0) f(0, int64_t{0}, n);
    return;
  }
  int64_t chunk = (n + t - 1) / t;
  chunk = (chunk + 15) / 16 * 16;
#pragma omp parallel for num_threads(t) schedule(static, 1)
  for (int id = 0; id < t; ++id) {
    const int64_t begin = std::min<int64_t>(n, id * chunk);
    const int64_t end = std::min<int64_t>(n, begin + chunk);
    if (begin < end) f(id, begin, end);
  }
}

// Elements per thread below which splitting a streaming kernel costs more than it saves.
inline constexpr int64_t kMinElementsPerThread = 1 << 15;

}  // namespace pszero::kernels::cpu
