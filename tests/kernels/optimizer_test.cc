// AdamW and SGD against a double-precision replay of the PyTorch update rule, on every ISA
// path, thread count and awkward size, with fp32 and bf16 gradients and unaligned views.
#include "kernels/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/half.h"
#include "tests/kernels/kernel_test_util.h"

namespace pszero::kernels {
namespace {

using testing::AwkwardSizes;
using testing::Describe;
using testing::ExpectAllClose;
using testing::HostContexts;
using testing::RandomFloats;
using testing::Unaligned;

// fp32 state, compared in relative terms: a few ulps of float rounding per step.
constexpr double kRtol = 2e-6;
constexpr double kAtol = 1e-7;

struct AdamWRef {
  std::vector<double> p, m, v;
};

AdamWRef AdamWReference(const AdamWParams& hp, const std::vector<float>& p,
                        const std::vector<float>& g, const std::vector<float>& m,
                        const std::vector<float>& v) {
  AdamWRef r{{p.begin(), p.end()}, {m.begin(), m.end()}, {v.begin(), v.end()}};
  const double bc1 = 1 - std::pow(static_cast<double>(hp.beta1), static_cast<double>(hp.step));
  const double bc2 = 1 - std::pow(static_cast<double>(hp.beta2), static_cast<double>(hp.step));
  for (size_t i = 0; i < p.size(); ++i) {
    const double gi = static_cast<double>(g[i]) * hp.grad_scale;
    r.m[i] = hp.beta1 * r.m[i] + (1.0 - hp.beta1) * gi;
    r.v[i] = hp.beta2 * r.v[i] + (1.0 - hp.beta2) * gi * gi;
    r.p[i] = r.p[i] * (1.0 - static_cast<double>(hp.lr) * hp.weight_decay) -
             (hp.lr / bc1) * r.m[i] / (std::sqrt(r.v[i]) / std::sqrt(bc2) + hp.eps);
  }
  return r;
}

void RunAdamW(bool bf16_grad, bool bf16_copy) {
  AdamWParams hp;
  hp.lr = 1e-2f;
  hp.step = 7;
  hp.grad_scale = 0.25f;
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      std::vector<float> g = RandomFloats(n, 1 + n);
      if (bf16_grad) {  // the reference sees exactly the values the kernel reads
        for (float& x : g) x = Bf16BitsToFloat(FloatToBf16Bits(x));
      }
      const std::vector<float> p0 = RandomFloats(n, 2 + n);
      const std::vector<float> m0 = RandomFloats(n, 3 + n, -0.1f, 0.1f);
      const std::vector<float> v0 = RandomFloats(n, 4 + n, 0.0f, 0.01f);
      Unaligned<float> p(p0), m(m0), v(v0), gf(g);
      Unaligned<uint16_t> gb(testing::ToBf16(g));
      std::vector<bf16_t> copy(static_cast<size_t>(n));
      const void* grad = bf16_grad ? static_cast<const void*>(gb.data()) : gf.data();
      ASSERT_TRUE(AdamW(hp, p.data(), grad, bf16_grad ? DType::kBFloat16 : DType::kFloat32,
                        m.data(), v.data(), bf16_copy ? copy.data() : nullptr, n, ctx)
                      .ok());
      const AdamWRef want = AdamWReference(hp, p0, g, m0, v0);
      ExpectAllClose(p.values(), want.p, kRtol, kAtol);
      ExpectAllClose(m.values(), want.m, kRtol, kAtol);
      ExpectAllClose(v.values(), want.v, kRtol, kAtol);
      if (bf16_copy) {
        const std::vector<float> pv = p.values();
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(copy[i].bits, FloatToBf16Bits(pv[i])) << "bf16 copy differs at " << i;
        }
      }
    }
  }
}

TEST(AdamWTest, Fp32GradsMatchReference) { RunAdamW(false, false); }
TEST(AdamWTest, Bf16GradsMatchReference) { RunAdamW(true, false); }
TEST(AdamWTest, Bf16ParamCopyIsRoundedMaster) { RunAdamW(false, true); }

TEST(AdamWTest, ShardsGiveTheSameBitsAsTheWhole) {
  const int64_t n = 5000;
  AdamWParams hp;
  std::vector<float> p = RandomFloats(n, 11), g = RandomFloats(n, 12), m(n, 0.0f), v(n, 0.0f);
  std::vector<float> p2 = p, m2 = m, v2 = v;
  const KernelContext ctx = KernelContext::Host();
  ASSERT_TRUE(
      AdamW(hp, p.data(), g.data(), DType::kFloat32, m.data(), v.data(), nullptr, n, ctx).ok());
  for (int64_t s = 0; s < n; s += 1237) {
    const int64_t len = std::min<int64_t>(1237, n - s);
    ASSERT_TRUE(AdamW(hp, p2.data() + s, g.data() + s, DType::kFloat32, m2.data() + s,
                      v2.data() + s, nullptr, len, ctx)
                    .ok());
  }
  EXPECT_EQ(p, p2);
  EXPECT_EQ(m, m2);
  EXPECT_EQ(v, v2);
}

TEST(AdamWTest, RejectsBadArguments) {
  float x = 0;
  const KernelContext ctx = KernelContext::Host();
  AdamWParams hp;
  EXPECT_EQ(AdamW(hp, &x, &x, DType::kFloat32, &x, nullptr, nullptr, 1, ctx).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(AdamW(hp, &x, &x, DType::kInt32, &x, &x, nullptr, 1, ctx).code(),
            StatusCode::kInvalidArgument);
  hp.step = 0;
  EXPECT_EQ(AdamW(hp, &x, &x, DType::kFloat32, &x, &x, nullptr, 1, ctx).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(AdamW(AdamWParams{}, &x, &x, DType::kFloat32, &x, &x, nullptr, -1, ctx).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      AdamW(AdamWParams{}, &x, &x, DType::kFloat32, &x, &x, nullptr, 1, KernelContext::Host(0))
          .code(),
      StatusCode::kInvalidArgument);
}

void RunSgd(float momentum, bool nesterov, float wd) {
  SgdParams hp;
  hp.lr = 0.05f;
  hp.momentum = momentum;
  hp.nesterov = nesterov;
  hp.weight_decay = wd;
  hp.grad_scale = 0.5f;
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const std::vector<float> p0 = RandomFloats(n, 5 + n), g = RandomFloats(n, 6 + n);
      const std::vector<float> b0 = RandomFloats(n, 7 + n);
      Unaligned<float> p(p0), buf(b0), gf(g);
      std::vector<bf16_t> copy(static_cast<size_t>(n));
      ASSERT_TRUE(Sgd(hp, p.data(), gf.data(), DType::kFloat32,
                      momentum != 0 ? buf.data() : nullptr, copy.data(), n, ctx)
                      .ok());
      std::vector<double> wp(p0.begin(), p0.end()), wb(b0.begin(), b0.end());
      for (int64_t i = 0; i < n; ++i) {
        const double gi = static_cast<double>(g[i]) * hp.grad_scale + wd * wp[i];
        if (momentum == 0) {
          wp[i] -= hp.lr * gi;
          continue;
        }
        wb[i] = momentum * wb[i] + gi;
        wp[i] -= hp.lr * (nesterov ? gi + momentum * wb[i] : wb[i]);
      }
      ExpectAllClose(p.values(), wp, kRtol, kAtol);
      if (momentum != 0) ExpectAllClose(buf.values(), wb, kRtol, kAtol);
      const std::vector<float> pv = p.values();
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(copy[i].bits, FloatToBf16Bits(pv[i]));
    }
  }
}

TEST(SgdTest, Plain) { RunSgd(0.0f, false, 0.0f); }
TEST(SgdTest, Momentum) { RunSgd(0.9f, false, 0.01f); }
TEST(SgdTest, Nesterov) { RunSgd(0.9f, true, 0.01f); }

TEST(SgdTest, NesterovWithoutMomentumIsRejected) {
  float x = 0;
  SgdParams hp;
  hp.momentum = 0;
  hp.nesterov = true;
  EXPECT_EQ(Sgd(hp, &x, &x, DType::kFloat32, &x, nullptr, 1, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
}

TEST(ClipTest, GlobalNormClipScale) {
  EXPECT_FLOAT_EQ(GlobalNormClipScale(4.0, 1.0), static_cast<float>(1.0 / (2.0 + 1e-6)));
  EXPECT_FLOAT_EQ(GlobalNormClipScale(0.25, 1.0), 1.0f);
  EXPECT_FLOAT_EQ(GlobalNormClipScale(0.0, 1.0), 1.0f);
}

}  // namespace
}  // namespace pszero::kernels
