// Casts are bit-identical to common/half.h: checked on special values, random bit
// patterns, a sweep through the whole fp32 range, and every fp16/bf16 pattern, on every
// ISA path and thread count, including unaligned views and awkward sizes.
#include "kernels/cast.h"

#include <gtest/gtest.h>

#include <bit>
#include <random>

#include "common/half.h"
#include "kernels/cpu/cpu_kernels.h"
#include "tests/kernels/kernel_test_util.h"

namespace pszero::kernels {
namespace {

using testing::Describe;
using testing::HostContexts;

std::vector<float> InterestingFloats() {
  std::vector<uint32_t> bits = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                                0xffc00001u, 0x7f800001u, 0x7fbfffffu, 0x00000001u, 0x807fffffu,
                                0x33000000u, 0x33000001u, 0x387fe000u, 0x38800000u, 0x477fefffu,
                                0x477ff000u, 0x7f7fffffu, 0x3f808000u, 0x3f818000u, 0x3f7fffffu};
  std::mt19937 rng(7);
  for (int i = 0; i < 200000; ++i) bits.push_back(rng());
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 65537)
    bits.push_back(static_cast<uint32_t>(b));
  std::vector<float> out;
  for (uint32_t b : bits) out.push_back(std::bit_cast<float>(b));
  return out;
}

TEST(CastTest, Fp32ToHalfMatchesReferenceBitForBit) {
  const std::vector<float> in = InterestingFloats();
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    for (int64_t offset : {0, 1, 3}) {
      const int64_t n = static_cast<int64_t>(in.size()) - offset;
      std::vector<uint16_t> bf(in.size() + 1), hf(in.size() + 1);
      ASSERT_TRUE(
          Cast(in.data() + offset, DType::kFloat32, bf.data() + 1, DType::kBFloat16, n, ctx).ok());
      ASSERT_TRUE(
          Cast(in.data() + offset, DType::kFloat32, hf.data() + 1, DType::kFloat16, n, ctx).ok());
      for (int64_t i = 0; i < n; ++i) {
        const float x = in[i + offset];
        ASSERT_EQ(bf[i + 1], FloatToBf16Bits(x)) << "bf16 of bits " << std::bit_cast<uint32_t>(x);
        ASSERT_EQ(hf[i + 1], FloatToFp16Bits(x)) << "fp16 of bits " << std::bit_cast<uint32_t>(x);
      }
    }
  }
}

TEST(CastTest, HalfToFp32MatchesReferenceForEveryPattern) {
  std::vector<uint16_t> in(65536 + 1);
  for (uint32_t i = 0; i < 65536; ++i) in[i + 1] = static_cast<uint16_t>(i);
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    std::vector<float> from_bf(65536), from_hf(65536);
    ASSERT_TRUE(
        Cast(in.data() + 1, DType::kBFloat16, from_bf.data(), DType::kFloat32, 65536, ctx).ok());
    ASSERT_TRUE(
        Cast(in.data() + 1, DType::kFloat16, from_hf.data(), DType::kFloat32, 65536, ctx).ok());
    for (uint32_t i = 0; i < 65536; ++i) {
      const uint16_t h = static_cast<uint16_t>(i);
      ASSERT_EQ(std::bit_cast<uint32_t>(from_bf[i]), std::bit_cast<uint32_t>(Bf16BitsToFloat(h)))
          << "bf16 pattern " << i;
      ASSERT_EQ(std::bit_cast<uint32_t>(from_hf[i]), std::bit_cast<uint32_t>(Fp16BitsToFloat(h)))
          << "fp16 pattern " << i;
    }
  }
}

TEST(CastTest, AwkwardSizesRoundTrip) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : testing::AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const std::vector<float> x = testing::RandomFloats(n, n);
      std::vector<uint16_t> h(static_cast<size_t>(n) + 1, 0xabcd);
      std::vector<float> back(static_cast<size_t>(n));
      ASSERT_TRUE(Cast(x.data(), DType::kFloat32, h.data(), DType::kBFloat16, n, ctx).ok());
      EXPECT_EQ(h[n], 0xabcd) << "wrote past the end";
      ASSERT_TRUE(Cast(h.data(), DType::kBFloat16, back.data(), DType::kFloat32, n, ctx).ok());
      for (int64_t i = 0; i < n; ++i) ASSERT_NEAR(back[i], x[i], std::fabs(x[i]) / 256);
    }
  }
}

// Casts of cpu::kStreamingMinElements and more (per call) leave through non-temporal
// stores.
TEST(CastTest, LargeCastsMatchReference) {
  const int64_t n = cpu::kStreamingMinElements + 77;
  std::vector<uint16_t> in(n + 2);
  std::mt19937 rng(9);
  for (auto& h : in) h = static_cast<uint16_t>(rng());
  std::vector<KernelContext> contexts = {KernelContext::Host(3)};
  for (CpuIsa isa : AvailableCpuIsas()) contexts.push_back(KernelContext::Host(1, isa));
  for (const KernelContext& ctx : contexts) {
    for (int offset : {0, 1}) {
      SCOPED_TRACE(Describe(ctx) + " offset " + std::to_string(offset));
      std::vector<float> bf(n + 1), hf(n + 1);
      ASSERT_TRUE(
          Cast(in.data() + offset, DType::kBFloat16, bf.data() + offset, DType::kFloat32, n, ctx)
              .ok());
      ASSERT_TRUE(
          Cast(in.data() + offset, DType::kFloat16, hf.data() + offset, DType::kFloat32, n, ctx)
              .ok());
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = in[i + offset];
        ASSERT_EQ(std::bit_cast<uint32_t>(bf[i + offset]),
                  std::bit_cast<uint32_t>(Bf16BitsToFloat(h)));
        ASSERT_EQ(std::bit_cast<uint32_t>(hf[i + offset]),
                  std::bit_cast<uint32_t>(Fp16BitsToFloat(h)));
      }
      // And back: narrowing casts of as many elements stream too.
      std::vector<uint16_t> bf_back(n + 1), hf_back(n + 1);
      ASSERT_TRUE(Cast(bf.data() + offset, DType::kFloat32, bf_back.data() + offset,
                       DType::kBFloat16, n, ctx)
                      .ok());
      ASSERT_TRUE(Cast(hf.data() + offset, DType::kFloat32, hf_back.data() + offset,
                       DType::kFloat16, n, ctx)
                      .ok());
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(bf_back[i + offset], FloatToBf16Bits(bf[i + offset])) << i;
        ASSERT_EQ(hf_back[i + offset], FloatToFp16Bits(hf[i + offset])) << i;
      }
    }
  }
}

TEST(CastTest, UnsupportedPairIsRejected) {
  float x = 0, y = 0;
  EXPECT_EQ(Cast(&x, DType::kFloat32, &y, DType::kFloat32, 1, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Cast(&x, DType::kBFloat16, &y, DType::kFloat16, 1, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pszero::kernels
