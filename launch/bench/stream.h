// STREAM (McCalpin) copy / scale / add / triad on host memory: the memory bandwidth that
// every memory-bound kernel and host-side collective of pszero is measured against.
//
// Three double arrays, each by default 4x the last-level cache, first-touched by the
// threads that later stream them. Bandwidth counts the bytes STREAM counts (copy and
// scale 16 B per element, add and triad 24 B), best and median over the iterations.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/stats.h"
#include "common/status.h"

namespace pszero::bench {

struct StreamOptions {
  int64_t array_bytes = 0;  // per array; 0 = 4x the last-level cache
  int threads = 1;
  int iters = 10;
};

struct StreamKernelResult {
  std::string name;        // copy, scale, add, triad
  int64_t bytes = 0;       // bytes moved per iteration
  Summary seconds;         // per-iteration time
  double best_gbps = 0;    // bytes / fastest iteration, 1e9 B/s
  double median_gbps = 0;  // bytes / median iteration
};

struct StreamResult {
  StreamOptions options;  // array_bytes resolved
  std::vector<StreamKernelResult> kernels;
  bool valid = false;  // array contents match STREAM's closed-form check
  const StreamKernelResult* Find(const std::string& name) const;
};

// Bytes of the last-level cache of CPU 0 (sysfs, then sysconf; 32 MiB if neither knows).
int64_t LastLevelCacheBytes();

Result<StreamResult> RunStream(const StreamOptions& options);

nlohmann::json ToJson(const StreamResult& result);

}  // namespace pszero::bench
