#include "launch/bench/stream.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>

#include "common/memory.h"
#include "common/report.h"
#include "common/tensor.h"

namespace pszero::bench {

const StreamKernelResult* StreamResult::Find(const std::string& name) const {
  for (const auto& k : kernels) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

namespace {

// "32768K" / "1M" / "512" from sysfs → bytes.
int64_t ParseCacheSize(const std::string& text) {
  if (text.empty()) return 0;
  size_t pos = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &pos);
  } catch (...) {
    return 0;
  }
  const char unit = pos < text.size() ? text[pos] : ' ';
  if (unit == 'K') value <<= 10;
  if (unit == 'M') value <<= 20;
  if (unit == 'G') value <<= 30;
  return value;
}

}  // namespace

int64_t LastLevelCacheBytes() {
  int64_t best = 0;
  int best_level = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream level_in(dir + "/level"), type_in(dir + "/type"), size_in(dir + "/size");
    int level = 0;
    std::string type, size;
    if (!(level_in >> level) || !(type_in >> type) || !(size_in >> size)) continue;
    if (type == "Instruction") continue;
    const int64_t bytes = ParseCacheSize(size);
    if (level > best_level && bytes > 0) {
      best_level = level;
      best = bytes;
    }
  }
  if (best > 0) return best;
  const long l3 = ::sysconf(_SC_LEVEL3_CACHE_SIZE);
  if (l3 > 0) return l3;
  return int64_t{32} << 20;
}

Result<StreamResult> RunStream(const StreamOptions& options) {
  StreamResult result;
  result.options = options;
  if (result.options.array_bytes == 0) result.options.array_bytes = 4 * LastLevelCacheBytes();
  if (options.threads < 1) return Status::InvalidArgument("--threads must be at least 1");
  if (options.iters < 1) return Status::InvalidArgument("--iters must be at least 1");
  const int64_t n = result.options.array_bytes / static_cast<int64_t>(sizeof(double));
  if (n < 1) return Status::InvalidArgument("array too small");
  result.options.array_bytes = n * static_cast<int64_t>(sizeof(double));

  // STREAM streams doubles, which no Tensor dtype names: take raw aligned storage.
  const int64_t array_bytes = result.options.array_bytes;
  PSZERO_ASSIGN_OR_RETURN(
      auto sa, Storage::Allocate(array_bytes, Device::kHost, MemoryCategory::kOther, nullptr));
  PSZERO_ASSIGN_OR_RETURN(
      auto sb, Storage::Allocate(array_bytes, Device::kHost, MemoryCategory::kOther, nullptr));
  PSZERO_ASSIGN_OR_RETURN(
      auto sc, Storage::Allocate(array_bytes, Device::kHost, MemoryCategory::kOther, nullptr));
  double* __restrict a = static_cast<double*>(sa->data());
  double* __restrict b = static_cast<double*>(sb->data());
  double* __restrict c = static_cast<double*>(sc->data());
  const int threads = options.threads;
  const double scalar = 3.0;

  // First touch by the threads that stream each part.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 1.0;
    b[i] = 2.0;
    c[i] = 0.0;
  }

  const char* names[4] = {"copy", "scale", "add", "triad"};
  const int64_t bytes[4] = {16 * n, 16 * n, 24 * n, 24 * n};
  std::vector<double> times[4];
  // One untimed warm-up round, as STREAM does, then `iters` timed rounds.
  for (int iter = 0; iter <= options.iters; ++iter) {
    double t[4];
    Stopwatch sw;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) c[i] = a[i];
    t[0] = sw.ElapsedSeconds();
    sw.Reset();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) b[i] = scalar * c[i];
    t[1] = sw.ElapsedSeconds();
    sw.Reset();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) c[i] = a[i] + b[i];
    t[2] = sw.ElapsedSeconds();
    sw.Reset();
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + scalar * c[i];
    t[3] = sw.ElapsedSeconds();
    if (iter > 0) {
      for (int k = 0; k < 4; ++k) times[k].push_back(t[k]);
    }
  }

  // STREAM's check: replay the recurrence on scalars.
  double ea = 1.0, eb = 2.0, ec = 0.0;
  for (int iter = 0; iter <= options.iters; ++iter) {
    ec = ea;
    eb = scalar * ec;
    ec = ea + eb;
    ea = eb + scalar * ec;
  }
  bool valid = true;
  const int64_t step = std::max<int64_t>(1, n / 4096);
  for (int64_t i = 0; i < n && valid; i += step) {
    valid = std::fabs(a[i] - ea) <= 1e-13 * std::fabs(ea) &&
            std::fabs(b[i] - eb) <= 1e-13 * std::fabs(eb) &&
            std::fabs(c[i] - ec) <= 1e-13 * std::fabs(ec);
  }
  result.valid = valid;

  for (int k = 0; k < 4; ++k) {
    StreamKernelResult kr;
    kr.name = names[k];
    kr.bytes = bytes[k];
    kr.seconds = Summarize(times[k]);
    kr.best_gbps = static_cast<double>(bytes[k]) / kr.seconds.min / 1e9;
    kr.median_gbps = static_cast<double>(bytes[k]) / kr.seconds.median / 1e9;
    result.kernels.push_back(std::move(kr));
  }
  return result;
}

nlohmann::json ToJson(const StreamResult& r) {
  nlohmann::json kernels = nlohmann::json::array();
  for (const auto& k : r.kernels) {
    kernels.push_back({{"name", k.name},
                       {"bytes", k.bytes},
                       {"best_gbps", k.best_gbps},
                       {"median_gbps", k.median_gbps},
                       {"seconds", pszero::ToJson(k.seconds)}});
  }
  return {{"threads", r.options.threads},
          {"array_bytes", r.options.array_bytes},
          {"iters", r.options.iters},
          {"valid", r.valid},
          {"kernels", kernels}};
}

}  // namespace pszero::bench
