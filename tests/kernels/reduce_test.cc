// k-way Sum, Accumulate, SquaredNorm and Max against serial references. Sum promises a
// canonical order (out, then inputs in order, in fp32), so it is checked bit for bit
// against a serial fp32 replay of that order, and loosely against a double sum.
#include "kernels/reduce.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/half.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/elementwise.h"
#include "tests/kernels/kernel_test_util.h"

namespace pszero::kernels {
namespace {

using testing::AwkwardSizes;
using testing::Describe;
using testing::HostContexts;
using testing::RandomFloats;

float Read(const std::vector<float>& v, size_t i) { return v[i]; }
float Read(const std::vector<uint16_t>& v, size_t i) { return Bf16BitsToFloat(v[i]); }

template <typename In, typename Out>
void RunSum(DType in_dtype, DType out_dtype, bool accumulate) {
  auto make = [](const std::vector<float>& f) {
    if constexpr (sizeof(In) == 2) {
      return testing::ToBf16(f);
    } else {
      return f;
    }
  };
  auto make_out = [](const std::vector<float>& f) {
    if constexpr (sizeof(Out) == 2) {
      return testing::ToBf16(f);
    } else {
      return f;
    }
  };
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : AwkwardSizes()) {
      for (int k : {1, 2, 3, 8}) {
        SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
        std::vector<std::vector<In>> inputs;
        std::vector<const void*> ptrs;
        for (int j = 0; j < k; ++j) inputs.push_back(make(RandomFloats(n + 1, 100 * j + n)));
        for (int j = 0; j < k; ++j) ptrs.push_back(inputs[j].data() + 1);  // unaligned views
        const std::vector<Out> out0 = make_out(RandomFloats(n + 1, 999 + n));
        std::vector<Out> out = out0;
        ASSERT_TRUE(Sum(ptrs, in_dtype, out.data() + 1, out_dtype, n, accumulate, ctx).ok());
        for (int64_t i = 0; i < n; ++i) {
          const size_t e = static_cast<size_t>(i + 1);
          float serial = accumulate ? Read(out0, e) : Read(inputs[0], e);
          double exact = accumulate ? Read(out0, e) : 0.0;
          for (int j = accumulate ? 0 : 1; j < k; ++j) serial += Read(inputs[j], e);
          for (int j = 0; j < k; ++j) exact += Read(inputs[j], e);
          float want = serial;
          if constexpr (sizeof(Out) == 2) want = Bf16BitsToFloat(FloatToBf16Bits(serial));
          ASSERT_EQ(Read(out, e), want) << "element " << i;
          // Independent check of the fp32 sum itself (bf16 output: half an ulp of bf16).
          const double tol = sizeof(Out) == 2 ? std::fabs(exact) / 256 + 1e-6 : 1e-6 * (k + 1);
          ASSERT_NEAR(Read(out, e), exact, tol) << "element " << i;
        }
        EXPECT_EQ(Read(out, 0), Read(out0, 0)) << "wrote before the view";
      }
    }
  }
}

TEST(SumTest, Fp32ToFp32) { RunSum<float, float>(DType::kFloat32, DType::kFloat32, false); }
TEST(SumTest, Fp32Accumulate) { RunSum<float, float>(DType::kFloat32, DType::kFloat32, true); }
TEST(SumTest, Bf16ToFp32) { RunSum<uint16_t, float>(DType::kBFloat16, DType::kFloat32, false); }
TEST(SumTest, Bf16ToBf16) { RunSum<uint16_t, uint16_t>(DType::kBFloat16, DType::kBFloat16, false); }
TEST(SumTest, Bf16AccumulateInPlace) {
  RunSum<uint16_t, uint16_t>(DType::kBFloat16, DType::kBFloat16, true);
}
TEST(SumTest, Fp32ToBf16) { RunSum<float, uint16_t>(DType::kFloat32, DType::kBFloat16, false); }

// Outputs of cpu::kStreamingMinElements and more (per call) leave through non-temporal
// stores: the same bits, from every output alignment.
TEST(SumTest, LargeOutputsKeepTheCanonicalOrder) {
  const int64_t n = cpu::kStreamingMinElements + 29;
  std::vector<std::vector<float>> in;
  for (int j = 0; j < 3; ++j) in.push_back(RandomFloats(n + 3, 200 + j));
  std::vector<KernelContext> contexts = {KernelContext::Host(3)};
  for (CpuIsa isa : AvailableCpuIsas()) contexts.push_back(KernelContext::Host(1, isa));
  for (const KernelContext& ctx : contexts) {
    for (int offset : {0, 1, 3}) {
      SCOPED_TRACE(Describe(ctx) + " offset " + std::to_string(offset));
      std::vector<const void*> ptrs;
      for (const auto& v : in) ptrs.push_back(v.data() + offset);
      std::vector<float> out(n + 3, -7.0f);
      ASSERT_TRUE(
          Sum(ptrs, DType::kFloat32, out.data() + offset, DType::kFloat32, n, false, ctx).ok());
      for (int64_t i = 0; i < n; ++i) {
        const float want = in[0][i + offset] + in[1][i + offset] + in[2][i + offset];
        ASSERT_EQ(out[i + offset], want) << "element " << i;
      }
      for (int i = 0; i < offset; ++i) EXPECT_EQ(out[i], -7.0f);
      for (int64_t i = n + offset; i < n + 3; ++i) EXPECT_EQ(out[i], -7.0f);
      // bf16 output and the residual Add take the same streaming path.
      std::vector<uint16_t> out16(n + 3, 0xabcd);
      ASSERT_TRUE(
          Sum(ptrs, DType::kFloat32, out16.data() + offset, DType::kBFloat16, n, false, ctx).ok());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(out16[i + offset],
                  FloatToBf16Bits(in[0][i + offset] + in[1][i + offset] + in[2][i + offset]));
      }
      for (int i = 0; i < offset; ++i) EXPECT_EQ(out16[i], 0xabcd);
      ASSERT_TRUE(
          Add(in[0].data() + offset, in[1].data() + offset, out.data() + offset, n, ctx).ok());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(out[i + offset], in[0][i + offset] + in[1][i + offset]) << "element " << i;
      }
    }
  }
}

TEST(SumTest, AccumulateAddsOneInput) {
  std::vector<float> out = {1, 2, 3}, in = {10, 20, 30};
  ASSERT_TRUE(
      Accumulate(in.data(), DType::kFloat32, out.data(), DType::kFloat32, 3, KernelContext::Host())
          .ok());
  EXPECT_EQ(out, (std::vector<float>{11, 22, 33}));
}

TEST(SumTest, RejectsTooManyOrNoInputs) {
  float x = 0;
  std::vector<const void*> nine(9, &x);
  EXPECT_EQ(Sum(nine, DType::kFloat32, &x, DType::kFloat32, 1, false, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Sum({}, DType::kFloat32, &x, DType::kFloat32, 1, false, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
  std::vector<const void*> one = {&x};
  EXPECT_EQ(Sum(one, DType::kFloat16, &x, DType::kFloat32, 1, false, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
}

TEST(SquaredNormTest, MatchesDoubleReference) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const std::vector<float> x = RandomFloats(n + 1, 40 + n, -3.0f, 3.0f);
      const std::vector<uint16_t> xb = testing::ToBf16(x);
      double want = 0, want_b = 0;
      for (int64_t i = 1; i <= n; ++i) {
        want += static_cast<double>(x[i]) * x[i];
        want_b += static_cast<double>(Bf16BitsToFloat(xb[i])) * Bf16BitsToFloat(xb[i]);
      }
      float got = -1, got_b = -1;
      ASSERT_TRUE(SquaredNorm(x.data() + 1, DType::kFloat32, n, &got, ctx).ok());
      ASSERT_TRUE(SquaredNorm(xb.data() + 1, DType::kBFloat16, n, &got_b, ctx).ok());
      // 16 fp32 partial sums of at most 256 positive terms each, double across blocks:
      // at most 256 roundings of 2^-24 each, 1.5e-5 relative in the worst case.
      EXPECT_NEAR(got, want, 1.5e-5 * want + 1e-30);
      EXPECT_NEAR(got_b, want_b, 1.5e-5 * want_b + 1e-30);
    }
  }
}

TEST(MaxTest, MatchesSerialMax) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      std::vector<float> x = RandomFloats(n + 1, 50 + n, -100.0f, 100.0f);
      float want = -INFINITY;
      for (int64_t i = 1; i <= n; ++i) want = std::max(want, x[i]);
      float got = 0;
      ASSERT_TRUE(Max(x.data() + 1, n, &got, ctx).ok());
      EXPECT_EQ(got, want);
      if (n > 3) {
        x[n - 2] = NAN;
        ASSERT_TRUE(Max(x.data() + 1, n, &got, ctx).ok());
        EXPECT_TRUE(std::isnan(got));
      }
    }
  }
}

}  // namespace
}  // namespace pszero::kernels
