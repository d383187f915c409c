// bf16/fp16 conversions against a table of hand-checked cases (ties, NaN, ±Inf,
// subnormals, max values), exhaustive round trips of all 65536 bit patterns, and random
// floats against independent references: the compiler's own _Float16 conversion for fp16
// and a nearest-neighbour search in double for bf16.
#include "common/half.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace pszero {
namespace {

float F(uint32_t bits) { return std::bit_cast<float>(bits); }

struct Case {
  uint32_t in;
  uint16_t out;
  const char* what;
};

TEST(Bf16Test, Table) {
  const Case cases[] = {
      {0x3F800000, 0x3F80, "1.0"},
      {0xBF800000, 0xBF80, "-1.0"},
      {0x00000000, 0x0000, "+0"},
      {0x80000000, 0x8000, "-0"},
      {0x3F808000, 0x3F80, "tie to even (down)"},
      {0x3F818000, 0x3F82, "tie to even (up)"},
      {0x3F808001, 0x3F81, "just above the tie"},
      {0x3F807FFF, 0x3F80, "just below the tie"},
      {0x7F800000, 0x7F80, "+Inf"},
      {0xFF800000, 0xFF80, "-Inf"},
      {0x7F7FFFFF, 0x7F80, "FLT_MAX overflows to +Inf"},
      {0x7F7F0000, 0x7F7F, "bf16 max is exact"},
      {0xFF7FFFFF, 0xFF80, "-FLT_MAX overflows to -Inf"},
      {0x00000001, 0x0000, "smallest float subnormal rounds to 0"},
      {0x00008000, 0x0000, "subnormal tie to even (0)"},
      {0x00018000, 0x0002, "subnormal tie to even (2)"},
      {0x00010000, 0x0001, "bf16 subnormal exact"},
      {0x007FFFFF, 0x0080, "largest float subnormal rounds to min normal"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FloatToBf16Bits(F(c.in)), c.out) << c.what;
  }
}

TEST(Bf16Test, NaNStaysNaNWithSign) {
  for (uint32_t bits : {0x7FC00000u, 0x7F800001u, 0x7F80FFFFu, 0xFFC00001u, 0x7FFFFFFFu}) {
    const uint16_t h = FloatToBf16Bits(F(bits));
    EXPECT_EQ(h & 0x7F80, 0x7F80) << std::hex << bits;
    EXPECT_NE(h & 0x007F, 0) << "NaN became Inf: " << std::hex << bits;
    EXPECT_EQ(h >> 15, bits >> 31);
    EXPECT_TRUE(std::isnan(Bf16BitsToFloat(h)));
  }
}

TEST(Bf16Test, ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Bf16BitsToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBf16Bits(f), h) << std::hex << h;
  }
}

// Nearest bf16 by searching the two neighbours in double; ties to the even one.
uint16_t ReferenceBf16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t lo = static_cast<uint16_t>(bits >> 16);
  const uint16_t hi = static_cast<uint16_t>(lo + 1);
  const double x = f;
  const double dlo = std::fabs(x - static_cast<double>(Bf16BitsToFloat(lo)));
  // The neighbour past the largest finite value is +/-Inf; IEEE rounds to Inf when x is
  // at least halfway to 2^128, which this distance expresses.
  const double vhi = (hi & 0x7FFF) == 0x7F80 ? std::copysign(std::ldexp(1.0, 128), x)
                                             : static_cast<double>(Bf16BitsToFloat(hi));
  const double dhi = std::fabs(vhi - x);
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Bf16Test, RandomAgainstDoubleReference) {
  std::mt19937 rng(1234);
  for (int i = 0; i < 2000000; ++i) {
    const float f = F(rng());
    if (std::isnan(f) || std::isinf(f)) continue;
    ASSERT_EQ(FloatToBf16Bits(f), ReferenceBf16(f)) << std::hex << std::bit_cast<uint32_t>(f);
  }
}

TEST(Fp16Test, Table) {
  const Case cases[] = {
      {0x3F800000, 0x3C00, "1.0"},
      {0xC0000000, 0xC000, "-2.0"},
      {0x3DCCCCCD, 0x2E66, "0.1"},
      {0x00000000, 0x0000, "+0"},
      {0x80000000, 0x8000, "-0"},
      {0x477FE000, 0x7BFF, "65504 = fp16 max"},
      {0x477FEFFF, 0x7BFF, "just below 65520"},
      {0x477FF000, 0x7C00, "65520 ties to even: Inf"},
      {0x49742400, 0x7C00, "1e6 overflows"},
      {0xC9742400, 0xFC00, "-1e6 overflows"},
      {0x7F800000, 0x7C00, "+Inf"},
      {0xFF800000, 0xFC00, "-Inf"},
      {0x33800000, 0x0001, "2^-24: smallest subnormal"},
      {0x33000000, 0x0000, "2^-25 ties to even: 0"},
      {0x33400000, 0x0001, "0.75 * 2^-24 rounds up"},
      {0x33C00000, 0x0002, "1.5 * 2^-24 ties to even: 2"},
      {0x38800000, 0x0400, "2^-14: min normal"},
      {0x387FC000, 0x03FF, "largest subnormal"},
      {0x387FE000, 0x0400, "halfway between largest subnormal and min normal"},
      {0x3F801000, 0x3C00, "1 + 2^-11 ties to even (down)"},
      {0x3F803000, 0x3C02, "1 + 3*2^-11 ties to even (up)"},
      {0x00000001, 0x0000, "float subnormal underflows"},
      {0x80000001, 0x8000, "negative underflow keeps the sign"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FloatToFp16Bits(F(c.in)), c.out) << c.what;
  }
}

TEST(Fp16Test, NaNStaysNaN) {
  for (uint32_t bits : {0x7FC00000u, 0x7F800001u, 0xFFFFFFFFu}) {
    const uint16_t h = FloatToFp16Bits(F(bits));
    EXPECT_EQ(h & 0x7C00, 0x7C00);
    EXPECT_NE(h & 0x03FF, 0);
    EXPECT_EQ(h >> 15, bits >> 31);
    EXPECT_TRUE(std::isnan(Fp16BitsToFloat(h)));
  }
}

TEST(Fp16Test, DecodeTable) {
  EXPECT_EQ(Fp16BitsToFloat(0x3C00), 1.0f);
  EXPECT_EQ(Fp16BitsToFloat(0x7BFF), 65504.0f);
  EXPECT_EQ(Fp16BitsToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16BitsToFloat(0x03FF), 1023 * std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16BitsToFloat(0x8001), -std::ldexp(1.0f, -24));
  EXPECT_EQ(Fp16BitsToFloat(0x7C00), std::numeric_limits<float>::infinity());
  EXPECT_EQ(Fp16BitsToFloat(0xFC00), -std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::signbit(Fp16BitsToFloat(0x8000)));
}

TEST(Fp16Test, ExhaustiveRoundTrip) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Fp16BitsToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToFp16Bits(f), h) << std::hex << h;
  }
}

#if defined(__FLT16_MAX__)
TEST(Fp16Test, AgainstCompilerFloat16) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const _Float16 ref = std::bit_cast<_Float16>(static_cast<uint16_t>(h));
    const float f = Fp16BitsToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f, static_cast<float>(ref)) << std::hex << h;
  }
  std::mt19937 rng(99);
  std::uniform_real_distribution<float> exponent(-30.0f, 17.0f);
  for (int i = 0; i < 2000000; ++i) {
    // Half random bit patterns, half values in and near fp16's range.
    float f = (i & 1) ? F(rng())
                      : std::ldexp(static_cast<float>(rng() >> 8) / (1 << 24),
                                   static_cast<int>(exponent(rng)));
    if (std::isnan(f)) continue;
    const uint16_t ref = std::bit_cast<uint16_t>(static_cast<_Float16>(f));
    ASSERT_EQ(FloatToFp16Bits(f), ref) << std::hex << std::bit_cast<uint32_t>(f);
  }
}
#else
TEST(Fp16Test, AgainstCompilerFloat16) {
  GTEST_SKIP() << "compiler has no _Float16 to compare against";
}
#endif

}  // namespace
}  // namespace pszero
