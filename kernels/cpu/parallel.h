// Internal to kernels/: splits [0, n) into contiguous chunks, each a multiple of 16
// elements (one cache line of fp32) except the last, and runs them on up to `threads`
// OpenMP threads. With more than one thread there are up to four chunks per thread, handed
// out dynamically, so that a thread the OS preempts (a shared machine, a worker's
// communication thread) delays the call by one small chunk, not by half of it. The chunk
// plan depends only on (threads, n, min_per_thread): per-chunk partial results, combined
// in chunk order, give the same bits on every run. Work below `min_per_thread` items per
// chunk stays on fewer chunks, down to one on the calling thread.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace pszero::kernels::cpu {

inline constexpr int kChunksPerThread = 4;

// Chunks ParallelFor cuts n items into (>= 1).
inline int PlanChunks(int threads, int64_t n, int64_t min_per_chunk) {
  const int64_t by_size = std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_chunk));
  if (threads <= 1) return 1;
  return static_cast<int>(std::min<int64_t>(int64_t{threads} * kChunksPerThread, by_size));
}

// f(chunk_index, begin, end) for each non-empty chunk; chunk_index < PlanChunks(...).
template <typename F>
void ParallelFor(int threads, int64_t n, int64_t min_per_chunk, F&& f) {
  const int chunks = PlanChunks(threads, n, min_per_chunk);
  if (chunks <= 1) {
    if (n > 0) f(0, int64_t{0}, n);
    return;
  }
  int64_t size = (n + chunks - 1) / chunks;
  size = (size + 15) / 16 * 16;
  const int t = std::min(threads, chunks);
#pragma omp parallel for num_threads(t) schedule(dynamic, 1)
  for (int c = 0; c < chunks; ++c) {
    const int64_t begin = std::min<int64_t>(n, c * size);
    const int64_t end = std::min<int64_t>(n, begin + size);
    if (begin < end) f(c, begin, end);
  }
}

// Elements per chunk below which splitting a streaming kernel costs more than it saves.
inline constexpr int64_t kMinElementsPerThread = 1 << 15;

}  // namespace pszero::kernels::cpu
