// A monotonic stopwatch and order statistics of timing samples. Plain values.
#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

namespace pszero {

class Stopwatch {
 public:
  Stopwatch() : start_(std::chrono::steady_clock::now()) {}
  void Reset() { start_ = std::chrono::steady_clock::now(); }
  double ElapsedSeconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

struct Summary {
  size_t count = 0;
  double min = 0, max = 0, mean = 0, median = 0, p10 = 0, p90 = 0;
};

// Percentile q in [0, 1] by linear interpolation between order statistics (numpy's
// default); 0 for no samples.
double Percentile(std::vector<double> samples, double q);
Summary Summarize(const std::vector<double>& samples);

}  // namespace pszero
