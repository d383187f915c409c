#include "common/stats.h"

#include <algorithm>
#include <numeric>

namespace pszero {

namespace {

double SortedPercentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double pos = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

}  // namespace

double Percentile(std::vector<double> samples, double q) {
  std::sort(samples.begin(), samples.end());
  return SortedPercentile(samples, q);
}

Summary Summarize(const std::vector<double>& samples) {
  Summary s;
  if (samples.empty()) return s;
  std::vector<double> sorted = samples;
  std::sort(sorted.begin(), sorted.end());
  s.count = sorted.size();
  s.min = sorted.front();
  s.max = sorted.back();
  s.mean = std::accumulate(sorted.begin(), sorted.end(), 0.0) / static_cast<double>(s.count);
  s.median = SortedPercentile(sorted, 0.5);
  s.p10 = SortedPercentile(sorted, 0.1);
  s.p90 = SortedPercentile(sorted, 0.9);
  return s;
}

}  // namespace pszero
