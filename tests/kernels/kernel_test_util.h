// Shared by the kernel tests: seeded random data, the sizes every kernel is run at, the
// ISA paths and thread counts to run on, unaligned views, and the tolerance check.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "kernels/context.h"

namespace pszero::kernels::testing {

// Awkward sizes: empty, one, below/at/above a vector width, odd, and large enough to be
// split across threads (> 2 * 32768).
inline std::vector<int64_t> AwkwardSizes() { return {0, 1, 7, 16, 17, 1023, 1025, 100003}; }

// Every ISA path this CPU runs, each at 1 and 3 threads.
inline std::vector<KernelContext> HostContexts() {
  std::vector<KernelContext> out;
  for (CpuIsa isa : AvailableCpuIsas()) {
    out.push_back(KernelContext::Host(1, isa));
    out.push_back(KernelContext::Host(3, isa));
  }
  return out;
}

inline std::string Describe(const KernelContext& ctx) {
  return std::string(CpuIsaName(ctx.isa)) + " x" + std::to_string(ctx.threads);
}

inline std::vector<float> RandomFloats(int64_t n, uint64_t seed, float lo = -1.0f,
                                       float hi = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

inline std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBf16Bits(v[i]);
  return out;
}

// A copy of `v` that starts one element past a 64-byte boundary: an unaligned view.
template <typename T>
class Unaligned {
 public:
  explicit Unaligned(const std::vector<T>& v) : storage_(v.size() + 1) {
    for (size_t i = 0; i < v.size(); ++i) storage_[i + 1] = v[i];
  }
  T* data() { return storage_.data() + 1; }
  const T* data() const { return storage_.data() + 1; }
  T& operator[](size_t i) { return storage_[i + 1]; }
  std::vector<T> values() const { return std::vector<T>(storage_.begin() + 1, storage_.end()); }

 private:
  std::vector<T> storage_;
};

// |got - want| <= atol + rtol * |want|, with a message naming the element.
inline ::testing::AssertionResult Close(double got, double want, double rtol, double atol,
                                        int64_t index) {
  if (std::isnan(want) ? std::isnan(got) : std::fabs(got - want) <= atol + rtol * std::fabs(want)) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "element " << index << ": got " << got << ", want "
                                       << want << " (rtol " << rtol << ", atol " << atol << ")";
}

template <typename A, typename B>
void ExpectAllClose(const A& got, const B& want, double rtol, double atol) {
  ASSERT_EQ(got.size(), want.size());
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 5; ++i) {
    auto r = Close(got[i], want[i], rtol, atol, static_cast<int64_t>(i));
    if (!r) {
      ADD_FAILURE() << r.message();
      ++failures;
    }
  }
}

}  // namespace pszero::kernels::testing
