// Transformer ops against double-precision references: forward on random inputs of
// awkward shapes with leading dimensions wider than the rows, on every ISA path and
// thread count; backward against central finite differences of the double forward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "kernels/attention.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/layernorm.h"
#include "kernels/loss.h"
#include "kernels/softmax.h"
#include "tests/kernels/kernel_test_util.h"

namespace pszero::kernels {
namespace {

using testing::Describe;
using testing::ExpectAllClose;
using testing::HostContexts;
using testing::RandomFloats;

using Vec = std::vector<double>;
using Fn = std::function<double(const Vec&)>;

// Forward ops in fp32 against double: a few ulps, plus the exp polynomial (~2 ulp).
constexpr double kFwdRtol = 1e-5, kFwdAtol = 1e-6;
// Backward ops in fp32 against double finite differences (h = 1e-6, error ~1e-9).
constexpr double kBwdRtol = 1e-4, kBwdAtol = 2e-5;
// bf16 outputs against double: rounding to nearest costs at most half a bf16 ulp (2^-8
// relative: bf16 keeps 8 significant bits), plus the fp32 error above.
constexpr double kBf16Rtol = 1.0 / 256 + 1e-5;

Vec ToDouble(const std::vector<float>& v) { return Vec(v.begin(), v.end()); }

std::vector<float> FromBf16(const std::vector<bf16_t>& v) {
  std::vector<float> out;
  for (bf16_t h : v) out.push_back(Bf16BitsToFloat(h.bits));
  return out;
}

std::vector<bf16_t> ToBf16(const std::vector<float>& v) {
  std::vector<bf16_t> out;
  for (float f : v) out.push_back(bf16_t{FloatToBf16Bits(f)});
  return out;
}

// Each bf16 output must be the fp32 output rounded (the kernels round only on the store).
void ExpectRoundedFrom(const std::vector<bf16_t>& got, const std::vector<float>& fp32) {
  ASSERT_EQ(got.size(), fp32.size());
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 10; ++i) {
    if (got[i].bits != FloatToBf16Bits(fp32[i])) {
      ADD_FAILURE() << "element " << i << ": bf16 bits " << got[i].bits << ", fp32 " << fp32[i]
                    << " rounds to " << FloatToBf16Bits(fp32[i]);
      ++failures;
    }
  }
}

Vec FiniteDiff(const Fn& f, Vec x) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double h = 1e-6 * std::max(1.0, std::fabs(x[i]));
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

struct Shape2 {
  int64_t rows, cols;
};
std::vector<Shape2> RowShapes() {
  return {{0, 5}, {4, 0}, {1, 1}, {3, 7}, {2, 17}, {5, 1023}, {300, 257}};
}

// Takes the [rows, cols] matrix out of a buffer with leading dimension ld.
std::vector<float> Dense(const std::vector<float>& buf, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) out.push_back(buf[r * ld + c]);
  }
  return out;
}

// ------------------------------------------------------------------------------ GELU

double GeluRef(double x) {
  return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

TEST(GeluTest, ForwardMatchesReference) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : testing::AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      testing::Unaligned<float> x(RandomFloats(n, n, -6.0f, 6.0f));
      std::vector<float> y(static_cast<size_t>(n));
      ASSERT_TRUE(GeluForward(x.data(), y.data(), n, ctx).ok());
      Vec want;
      for (float v : x.values()) want.push_back(GeluRef(v));
      ExpectAllClose(y, want, kFwdRtol, kFwdAtol);
    }
  }
}

TEST(GeluTest, Bf16OutputMatchesReferenceAndRoundsTheFp32Output) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : testing::AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      testing::Unaligned<float> x(RandomFloats(n, n + 1, -6.0f, 6.0f));
      testing::Unaligned<bf16_t> y(std::vector<bf16_t>(static_cast<size_t>(n), bf16_t{0x7fc1}));
      std::vector<float> y32(static_cast<size_t>(n));
      ASSERT_TRUE(GeluForward(x.data(), y.data(), n, ctx).ok());
      ASSERT_TRUE(GeluForward(x.data(), y32.data(), n, ctx).ok());
      Vec want;
      for (float v : x.values()) want.push_back(GeluRef(v));
      ExpectAllClose(FromBf16(y.values()), want, kBf16Rtol, kFwdAtol);
      ExpectRoundedFrom(y.values(), y32);
    }
  }
}

TEST(GeluTest, BackwardMatchesFiniteDifferences) {
  const std::vector<float> x = RandomFloats(64, 3, -5.0f, 5.0f), dy = RandomFloats(64, 4);
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    std::vector<float> dx(64);
    ASSERT_TRUE(GeluBackward(x.data(), dy.data(), dx.data(), 64, ctx).ok());
    const Vec want = FiniteDiff(
        [&](const Vec& xs) {
          double l = 0;
          for (size_t i = 0; i < xs.size(); ++i) l += dy[i] * GeluRef(xs[i]);
          return l;
        },
        ToDouble(x));
    ExpectAllClose(dx, want, kBwdRtol, kBwdAtol);
  }
}

// A bf16 pre-activation (mixed precision keeps fc's output in bf16): the forward is GELU of
// the widened value rounded once, the backward GELU' at the widened value, each against
// the double reference and bit for bit the fp32 kernels on the widened inputs.
TEST(GeluTest, Bf16InputForwardAndBackward) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : testing::AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const std::vector<bf16_t> xb = ToBf16(RandomFloats(n, n + 2, -6.0f, 6.0f));
      const std::vector<float> xw = FromBf16(xb), dy = RandomFloats(n, n + 3);
      testing::Unaligned<bf16_t> x(xb);
      testing::Unaligned<bf16_t> y(std::vector<bf16_t>(static_cast<size_t>(n), bf16_t{0x7fc1}));
      ASSERT_TRUE(GeluForward(x.data(), y.data(), n, ctx).ok());
      std::vector<float> y32(static_cast<size_t>(n)), dx(static_cast<size_t>(n)),
          dx32(static_cast<size_t>(n));
      ASSERT_TRUE(GeluForward(xw.data(), y32.data(), n, ctx).ok());
      Vec want, want_dx;
      for (float v : xw) want.push_back(GeluRef(v));
      ExpectAllClose(FromBf16(y.values()), want, kBf16Rtol, kFwdAtol);
      ExpectRoundedFrom(y.values(), y32);
      ASSERT_TRUE(GeluBackward(x.data(), dy.data(), dx.data(), n, ctx).ok());
      ASSERT_TRUE(GeluBackward(xw.data(), dy.data(), dx32.data(), n, ctx).ok());
      for (int64_t i = 0; i < n; ++i) {
        const double xi = xw[i], h = 1e-6 * std::max(1.0, std::fabs(xi));
        want_dx.push_back(dy[i] * (GeluRef(xi + h) - GeluRef(xi - h)) / (2 * h));
      }
      ExpectAllClose(dx, want_dx, kBwdRtol, kBwdAtol);
      EXPECT_EQ(dx, dx32);
      // In place, as the MLP runs it: dx over dy.
      std::vector<float> inplace = dy;
      ASSERT_TRUE(GeluBackward(x.data(), inplace.data(), inplace.data(), n, ctx).ok());
      EXPECT_EQ(inplace, dx);
    }
  }
}

// ------------------------------------------------------------------- bias and residual

TEST(BiasAddTest, ForwardAndBackward) {
  for (const KernelContext& ctx : HostContexts()) {
    for (Shape2 s : RowShapes()) {
      SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols));
      const int64_t ld = s.cols + 3;
      const std::vector<float> x = RandomFloats(s.rows * ld, 1), b = RandomFloats(s.cols, 2);
      std::vector<float> y(static_cast<size_t>(s.rows * ld), 0.0f);
      ASSERT_TRUE(BiasAdd(x.data(), ld, b.data(), y.data(), ld, s.rows, s.cols, ctx).ok());
      Vec want;
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t c = 0; c < s.cols; ++c) want.push_back(double(x[r * ld + c]) + b[c]);
      }
      ExpectAllClose(Dense(y, s.rows, s.cols, ld), want, 1e-7, 0);
      // dbias accumulates the column sums of dy.
      std::vector<float> db(static_cast<size_t>(s.cols), 1.0f);
      ASSERT_TRUE(BiasAddBackward(x.data(), ld, s.rows, s.cols, db.data(), ctx).ok());
      Vec want_db(static_cast<size_t>(s.cols), 1.0);
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t c = 0; c < s.cols; ++c) want_db[c] += x[r * ld + c];
      }
      ExpectAllClose(db, want_db, 1e-5, 1e-5);
    }
  }
}

// A GEMM's output plus its bias kept in bf16 (mixed precision's qkv and fc output).
TEST(BiasAddTest, Bf16OutputMatchesReferenceAndRoundsTheFp32Output) {
  const bf16_t kUntouched{0x7fc1};
  for (const KernelContext& ctx : HostContexts()) {
    for (Shape2 s : RowShapes()) {
      SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols));
      const int64_t ldx = s.cols + 3, ldy = s.cols + 1;
      const std::vector<float> x = RandomFloats(s.rows * ldx, 3, -4.0f, 4.0f),
                               b = RandomFloats(s.cols, 4);
      std::vector<bf16_t> y(static_cast<size_t>(s.rows * ldy), kUntouched);
      std::vector<float> y32(static_cast<size_t>(s.rows * ldy));
      ASSERT_TRUE(BiasAdd(x.data(), ldx, b.data(), y.data(), ldy, s.rows, s.cols, ctx).ok());
      ASSERT_TRUE(BiasAdd(x.data(), ldx, b.data(), y32.data(), ldy, s.rows, s.cols, ctx).ok());
      std::vector<bf16_t> dense;
      std::vector<float> dense32;
      Vec want;
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t c = 0; c < ldy; ++c) {
          if (c < s.cols) {
            dense.push_back(y[r * ldy + c]);
            dense32.push_back(y32[r * ldy + c]);
            want.push_back(double(x[r * ldx + c]) + b[c]);
          } else {
            EXPECT_EQ(y[r * ldy + c].bits, kUntouched.bits) << "row " << r << " col " << c;
          }
        }
      }
      ExpectAllClose(FromBf16(dense), want, kBf16Rtol, 1e-7);
      ExpectRoundedFrom(dense, dense32);
    }
  }
}

TEST(AddTest, ResidualAdd) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : testing::AwkwardSizes()) {
      testing::Unaligned<float> a(RandomFloats(n, 1)), b(RandomFloats(n, 2));
      ASSERT_TRUE(Add(a.data(), b.data(), a.data(), n, ctx).ok());  // in place
      const std::vector<float> a0 = RandomFloats(n, 1), b0 = RandomFloats(n, 2);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a[i], a0[i] + b0[i]);
    }
  }
}

// ------------------------------------------------------------------------- LayerNorm

Vec LayerNormRef(const Vec& x, const Vec& g, const Vec& b, int64_t rows, int64_t cols, double eps) {
  Vec y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0, var = 0;
    for (int64_t c = 0; c < cols; ++c) mu += x[r * cols + c];
    mu /= cols;
    for (int64_t c = 0; c < cols; ++c) var += (x[r * cols + c] - mu) * (x[r * cols + c] - mu);
    var /= cols;
    for (int64_t c = 0; c < cols; ++c) {
      y[r * cols + c] = (x[r * cols + c] - mu) / std::sqrt(var + eps) * g[c] + b[c];
    }
  }
  return y;
}

TEST(LayerNormTest, ForwardMatchesReference) {
  for (const KernelContext& ctx : HostContexts()) {
    for (Shape2 s : RowShapes()) {
      SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols));
      const int64_t ld = s.cols + 5;
      const std::vector<float> x = RandomFloats(s.rows * ld, 7, -2.0f, 3.0f);
      const std::vector<float> g = RandomFloats(s.cols, 8), b = RandomFloats(s.cols, 9);
      std::vector<float> y(static_cast<size_t>(s.rows * ld)), mean(s.rows), rstd(s.rows);
      ASSERT_TRUE(LayerNormForward(x.data(), ld, g.data(), b.data(), 1e-5f, y.data(), ld,
                                   mean.data(), rstd.data(), s.rows, s.cols, ctx)
                      .ok());
      const Vec want = LayerNormRef(ToDouble(Dense(x, s.rows, s.cols, ld)), ToDouble(g),
                                    ToDouble(b), s.rows, s.cols, 1e-5);
      ExpectAllClose(Dense(y, s.rows, s.cols, ld), want, 1e-5, 1e-5);
    }
  }
}

TEST(LayerNormTest, Bf16OutputMatchesReferenceAndRoundsTheFp32Output) {
  const bf16_t kUntouched{0x7fc1};  // a NaN pattern no output has
  for (const KernelContext& ctx : HostContexts()) {
    for (Shape2 s : RowShapes()) {
      SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols));
      const int64_t ld = s.cols + 5;
      const std::vector<float> x = RandomFloats(s.rows * ld, 17, -2.0f, 3.0f);
      const std::vector<float> g = RandomFloats(s.cols, 18), b = RandomFloats(s.cols, 19);
      std::vector<bf16_t> y(static_cast<size_t>(s.rows * ld), kUntouched);
      std::vector<float> y32(static_cast<size_t>(s.rows * ld)), mean(s.rows), rstd(s.rows),
          mean32(s.rows), rstd32(s.rows);
      ASSERT_TRUE(LayerNormForward(x.data(), ld, g.data(), b.data(), 1e-5f, y.data(), ld,
                                   mean.data(), rstd.data(), s.rows, s.cols, ctx)
                      .ok());
      ASSERT_TRUE(LayerNormForward(x.data(), ld, g.data(), b.data(), 1e-5f, y32.data(), ld,
                                   mean32.data(), rstd32.data(), s.rows, s.cols, ctx)
                      .ok());
      std::vector<bf16_t> dense;
      std::vector<float> dense32;
      for (int64_t r = 0; r < s.rows; ++r) {
        for (int64_t c = 0; c < ld; ++c) {
          if (c < s.cols) {
            dense.push_back(y[r * ld + c]);
            dense32.push_back(y32[r * ld + c]);
          } else {
            EXPECT_EQ(y[r * ld + c].bits, kUntouched.bits) << "row " << r << " col " << c;
          }
        }
      }
      const Vec want = LayerNormRef(ToDouble(Dense(x, s.rows, s.cols, ld)), ToDouble(g),
                                    ToDouble(b), s.rows, s.cols, 1e-5);
      ExpectAllClose(FromBf16(dense), want, kBf16Rtol, 1e-5);
      ExpectRoundedFrom(dense, dense32);
      EXPECT_EQ(mean, mean32);  // the statistics stay fp32, as in the fp32 forward
      EXPECT_EQ(rstd, rstd32);
    }
  }
}

TEST(LayerNormTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 7, ld = 9;
  const std::vector<float> x = RandomFloats(rows * ld, 10, -2.0f, 2.0f);
  const std::vector<float> dy = RandomFloats(rows * ld, 11);
  const std::vector<float> g = RandomFloats(cols, 12), b = RandomFloats(cols, 13);
  const Vec xd = ToDouble(Dense(x, rows, cols, ld)), dyd = ToDouble(Dense(dy, rows, cols, ld));
  const Vec gd = ToDouble(g), bd = ToDouble(b);
  auto loss = [&](const Vec& xs, const Vec& gs, const Vec& bs) {
    const Vec y = LayerNormRef(xs, gs, bs, rows, cols, 1e-5);
    double l = 0;
    for (size_t i = 0; i < y.size(); ++i) l += dyd[i] * y[i];
    return l;
  };
  const Vec want_dx = FiniteDiff([&](const Vec& v) { return loss(v, gd, bd); }, xd);
  const Vec want_dg = FiniteDiff([&](const Vec& v) { return loss(xd, v, bd); }, gd);
  const Vec want_db = FiniteDiff([&](const Vec& v) { return loss(xd, gd, v); }, bd);
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    std::vector<float> y(rows * ld), mean(rows), rstd(rows), dx(rows * ld);
    ASSERT_TRUE(LayerNormForward(x.data(), ld, g.data(), b.data(), 1e-5f, y.data(), ld, mean.data(),
                                 rstd.data(), rows, cols, ctx)
                    .ok());
    std::vector<float> dg(cols, 0.0f), db(cols, 0.0f);
    ASSERT_TRUE(LayerNormBackward(dy.data(), ld, x.data(), ld, g.data(), mean.data(), rstd.data(),
                                  dx.data(), ld, dg.data(), db.data(), rows, cols, ctx)
                    .ok());
    ExpectAllClose(Dense(dx, rows, cols, ld), want_dx, kBwdRtol, kBwdAtol);
    ExpectAllClose(dg, want_dg, kBwdRtol, kBwdAtol);
    ExpectAllClose(db, want_db, kBwdRtol, kBwdAtol);
  }
}

TEST(LayerNormTest, ThreadedBackwardMatchesOneThread) {
  const int64_t rows = 600, cols = 129;
  const std::vector<float> x = RandomFloats(rows * cols, 20), dy = RandomFloats(rows * cols, 21);
  const std::vector<float> g = RandomFloats(cols, 22), b = RandomFloats(cols, 23);
  std::vector<float> y(rows * cols), mean(rows), rstd(rows);
  ASSERT_TRUE(LayerNormForward(x.data(), cols, g.data(), b.data(), 1e-5f, y.data(), cols,
                               mean.data(), rstd.data(), rows, cols, KernelContext::Host())
                  .ok());
  std::vector<float> dx1(rows * cols), dx3(rows * cols), dg1(cols, 0), db1(cols, 0), dg3(cols, 0),
      db3(cols, 0);
  ASSERT_TRUE(LayerNormBackward(dy.data(), cols, x.data(), cols, g.data(), mean.data(), rstd.data(),
                                dx1.data(), cols, dg1.data(), db1.data(), rows, cols,
                                KernelContext::Host(1))
                  .ok());
  ASSERT_TRUE(LayerNormBackward(dy.data(), cols, x.data(), cols, g.data(), mean.data(), rstd.data(),
                                dx3.data(), cols, dg3.data(), db3.data(), rows, cols,
                                KernelContext::Host(3))
                  .ok());
  EXPECT_EQ(dx1, dx3);
  ExpectAllClose(dg3, dg1, 1e-5, 1e-5);
  ExpectAllClose(db3, db1, 1e-5, 1e-5);
}

// --------------------------------------------------------------------------- Softmax

Vec SoftmaxRef(const Vec& x, int64_t rows, int64_t cols, double scale, bool causal) {
  Vec y(x.size(), 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t valid = causal ? r % cols + 1 : cols;
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < valid; ++c) m = std::max(m, scale * x[r * cols + c]);
    for (int64_t c = 0; c < valid; ++c) s += std::exp(scale * x[r * cols + c] - m);
    for (int64_t c = 0; c < valid; ++c) y[r * cols + c] = std::exp(scale * x[r * cols + c] - m) / s;
  }
  return y;
}

TEST(SoftmaxTest, ForwardMatchesReference) {
  for (const KernelContext& ctx : HostContexts()) {
    for (bool causal : {false, true}) {
      for (Shape2 s : std::vector<Shape2>{{0, 3}, {1, 1}, {7, 7}, {34, 17}, {2046, 1023}}) {
        SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                     (causal ? " causal" : ""));
        const int64_t ld = s.cols;
        const std::vector<float> x = RandomFloats(s.rows * ld, 30, -8.0f, 8.0f);
        std::vector<float> y(x.size(), -1.0f);
        ASSERT_TRUE(SoftmaxForward(x.data(), y.data(), s.rows, s.cols, ld, 0.7f, causal, ctx).ok());
        ExpectAllClose(y, SoftmaxRef(ToDouble(x), s.rows, s.cols, 0.7, causal), kFwdRtol, kFwdAtol);
      }
    }
  }
}

// Mixed precision's probabilities: bf16 y, each the fp32 forward's value rounded once;
// backward from a bf16 y to a bf16 dx against the double formula on the widened y.
TEST(SoftmaxTest, Bf16ForwardAndBackward) {
  for (const KernelContext& ctx : HostContexts()) {
    for (bool causal : {false, true}) {
      for (Shape2 s : std::vector<Shape2>{{0, 3}, {1, 1}, {7, 7}, {34, 17}, {2046, 1023}}) {
        SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                     (causal ? " causal" : ""));
        const int64_t ld = s.cols;
        const std::vector<float> x = RandomFloats(s.rows * ld, 33, -8.0f, 8.0f);
        const std::vector<float> dy = RandomFloats(s.rows * ld, 34);
        std::vector<bf16_t> y(x.size(), bf16_t{0x7fc1}), dx(x.size(), bf16_t{0x7fc1});
        std::vector<float> y32(x.size());
        ASSERT_TRUE(SoftmaxForward(x.data(), y.data(), s.rows, s.cols, ld, 0.7f, causal, ctx).ok());
        ASSERT_TRUE(
            SoftmaxForward(x.data(), y32.data(), s.rows, s.cols, ld, 0.7f, causal, ctx).ok());
        ExpectAllClose(FromBf16(y), SoftmaxRef(ToDouble(x), s.rows, s.cols, 0.7, causal), kBf16Rtol,
                       kFwdAtol);
        ExpectRoundedFrom(y, y32);
        ASSERT_TRUE(
            SoftmaxBackward(y.data(), dy.data(), dx.data(), s.rows, s.cols, ld, 0.7f, ctx).ok());
        const std::vector<float> yw = FromBf16(y);
        Vec want(x.size());
        for (int64_t r = 0; r < s.rows; ++r) {
          double dot = 0;
          for (int64_t c = 0; c < s.cols; ++c) dot += double(yw[r * ld + c]) * dy[r * ld + c];
          for (int64_t c = 0; c < s.cols; ++c) {
            want[r * ld + c] = 0.7 * yw[r * ld + c] * (dy[r * ld + c] - dot);
          }
        }
        // Rounding the output (half a bf16 ulp) after the fp32 row sum.
        ExpectAllClose(FromBf16(dx), want, kBf16Rtol, 1e-5);
      }
    }
  }
}

TEST(SoftmaxTest, CausalNeedsWholeMatrices) {
  float x[6] = {};
  EXPECT_EQ(SoftmaxForward(x, x, 3, 2, 2, 1.0f, true, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);
}

TEST(SoftmaxTest, BackwardMatchesFiniteDifferences) {
  for (bool causal : {false, true}) {
    const int64_t rows = 10, cols = 5;
    const std::vector<float> x = RandomFloats(rows * cols, 31, -3.0f, 3.0f);
    const std::vector<float> dy = RandomFloats(rows * cols, 32);
    const Vec want = FiniteDiff(
        [&](const Vec& xs) {
          const Vec y = SoftmaxRef(xs, rows, cols, 0.5, causal);
          double l = 0;
          for (size_t i = 0; i < y.size(); ++i) l += dy[i] * y[i];
          return l;
        },
        ToDouble(x));
    for (const KernelContext& ctx : HostContexts()) {
      SCOPED_TRACE(Describe(ctx) + (causal ? " causal" : ""));
      std::vector<float> y(x.size()), dx = dy;
      ASSERT_TRUE(SoftmaxForward(x.data(), y.data(), rows, cols, cols, 0.5f, causal, ctx).ok());
      ASSERT_TRUE(
          SoftmaxBackward(y.data(), dx.data(), dx.data(), rows, cols, cols, 0.5f, ctx).ok());
      ExpectAllClose(dx, want, kBwdRtol, kBwdAtol);
    }
  }
}

// ------------------------------------------------------------------------- Attention

// q, k, v: [B, S, H, D] with row stride ld; returns out [B, S, H, D] contiguous.
Vec AttentionRef(const AttentionShape& s, const Vec& q, const Vec& k, const Vec& v, int64_t ld) {
  const int64_t B = s.batch, S = s.seq, H = s.heads, D = s.head_dim;
  Vec out(static_cast<size_t>(B * S * H * D), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < S; ++i) {
        Vec p(static_cast<size_t>(i + 1));
        double m = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) {
            dot += q[(b * S + i) * ld + h * D + d] * k[(b * S + j) * ld + h * D + d];
          }
          p[j] = dot * scale;
          m = std::max(m, p[j]);
        }
        for (auto& pj : p) sum += (pj = std::exp(pj - m));
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= i; ++j) o += p[j] / sum * v[(b * S + j) * ld + h * D + d];
          out[((b * S + i) * H + h) * D + d] = o;
        }
      }
    }
  }
  return out;
}

TEST(AttentionTest, ForwardMatchesReferenceWithFusedQkvLayout) {
  for (const KernelContext& ctx : HostContexts()) {
    for (AttentionShape s : {AttentionShape{1, 1, 1, 1}, AttentionShape{2, 7, 3, 5},
                             AttentionShape{1, 33, 2, 16}, AttentionShape{0, 4, 2, 2}}) {
      SCOPED_TRACE(Describe(ctx) + " S=" + std::to_string(s.seq));
      const int64_t d = s.heads * s.head_dim, ld = 3 * d, tokens = s.batch * s.seq;
      const std::vector<float> qkv = RandomFloats(tokens * ld, 40, -2.0f, 2.0f);
      std::vector<float> probs(s.batch * s.heads * s.seq * s.seq), out(tokens * d);
      ASSERT_TRUE(AttentionForward(s, qkv.data(), qkv.data() + d, qkv.data() + 2 * d, ld,
                                   probs.data(), out.data(), d, ctx)
                      .ok());
      const Vec all = ToDouble(qkv);
      Vec q(all), k(all.size()), v(all.size());
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t c = 0; c < d; ++c) {
          k[t * ld + c] = all[t * ld + d + c];
          v[t * ld + c] = all[t * ld + 2 * d + c];
        }
      }
      ExpectAllClose(out, AttentionRef(s, q, k, v, ld), 1e-5, 1e-5);
    }
  }
}

TEST(AttentionTest, BackwardMatchesFiniteDifferences) {
  const AttentionShape s{2, 5, 2, 3};
  const int64_t d = s.heads * s.head_dim, tokens = s.batch * s.seq, n = tokens * d;
  const std::vector<float> q = RandomFloats(n, 50), k = RandomFloats(n, 51),
                           v = RandomFloats(n, 52);
  const std::vector<float> dout = RandomFloats(n, 53);
  auto loss = [&](const Vec& qs, const Vec& ks, const Vec& vs) {
    const Vec o = AttentionRef(s, qs, ks, vs, d);
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += dout[i] * o[i];
    return l;
  };
  const Vec qd = ToDouble(q), kd = ToDouble(k), vd = ToDouble(v);
  const Vec want_dq = FiniteDiff([&](const Vec& x) { return loss(x, kd, vd); }, qd);
  const Vec want_dk = FiniteDiff([&](const Vec& x) { return loss(qd, x, vd); }, kd);
  const Vec want_dv = FiniteDiff([&](const Vec& x) { return loss(qd, kd, x); }, vd);
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    std::vector<float> probs(s.batch * s.heads * s.seq * s.seq), dprobs(probs.size()), out(n);
    std::vector<float> dq(n), dk(n), dv(n);
    ASSERT_TRUE(
        AttentionForward(s, q.data(), k.data(), v.data(), d, probs.data(), out.data(), d, ctx)
            .ok());
    ASSERT_TRUE(AttentionBackward(s, q.data(), k.data(), v.data(), d, probs.data(), dout.data(), d,
                                  dprobs.data(), dq.data(), dk.data(), dv.data(), d, ctx)
                    .ok());
    ExpectAllClose(dq, want_dq, kBwdRtol, kBwdAtol);
    ExpectAllClose(dk, want_dk, kBwdRtol, kBwdAtol);
    ExpectAllClose(dv, want_dv, kBwdRtol, kBwdAtol);
  }
}

// Mixed precision's attention: bf16 q, k, v (a fused [tokens, 3d] buffer) and probs, bf16
// GEMM operands with fp32 accumulation. Against the double attention of the same (widened)
// bf16 inputs and its finite-difference gradients: the probabilities, dout and the scores'
// gradient are rounded to bf16 once each (2^-9 relative), so the outputs agree within about
// 1% of their largest magnitude.
TEST(AttentionTest, Bf16MatchesReference) {
  const AttentionShape s{2, 9, 2, 4};
  const int64_t d = s.heads * s.head_dim, ld = 3 * d, tokens = s.batch * s.seq, n = tokens * d;
  const int64_t np = s.batch * s.heads * s.seq * s.seq;
  const std::vector<bf16_t> qkv = ToBf16(RandomFloats(tokens * ld, 54, -2.0f, 2.0f));
  const std::vector<bf16_t> dout = ToBf16(RandomFloats(n, 55));
  const Vec all = ToDouble(FromBf16(qkv)), doutd = ToDouble(FromBf16(dout));
  // q, k, v as separate [tokens, d] doubles.
  Vec qd(n), kd(n), vd(n);
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t c = 0; c < d; ++c) {
      qd[t * d + c] = all[t * ld + c];
      kd[t * d + c] = all[t * ld + d + c];
      vd[t * d + c] = all[t * ld + 2 * d + c];
    }
  }
  auto loss = [&](const Vec& qs, const Vec& ks, const Vec& vs) {
    const Vec o = AttentionRef(s, qs, ks, vs, d);
    double l = 0;
    for (size_t i = 0; i < o.size(); ++i) l += doutd[i] * o[i];
    return l;
  };
  const Vec want_out = AttentionRef(s, qd, kd, vd, d);
  const Vec want_dq = FiniteDiff([&](const Vec& x) { return loss(x, kd, vd); }, qd);
  const Vec want_dk = FiniteDiff([&](const Vec& x) { return loss(qd, x, vd); }, kd);
  const Vec want_dv = FiniteDiff([&](const Vec& x) { return loss(qd, kd, x); }, vd);
  auto max_abs = [](const Vec& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
  };
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    std::vector<float> scores(np), dprobs(np), out(n), dq(tokens * ld);
    std::vector<bf16_t> probs(np);
    // dout and the scores' gradient share one scratch, as the attention block runs it.
    std::vector<bf16_t> scratch(std::max(n, np));
    std::copy(dout.begin(), dout.end(), scratch.begin());
    const bf16_t* q = qkv.data();
    ASSERT_TRUE(AttentionForward(s, q, q + d, q + 2 * d, ld, scores.data(), probs.data(),
                                 out.data(), d, ctx)
                    .ok());
    ASSERT_TRUE(AttentionBackward(s, q, q + d, q + 2 * d, ld, probs.data(), scratch.data(), d,
                                  dprobs.data(), scratch.data(), dq.data(), dq.data() + d,
                                  dq.data() + 2 * d, ld, ctx)
                    .ok());
    ExpectAllClose(out, want_out, 1e-2, 1e-2 * max_abs(want_out));
    std::vector<float> gq, gk, gv;
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < d; ++c) {
        gq.push_back(dq[t * ld + c]);
        gk.push_back(dq[t * ld + d + c]);
        gv.push_back(dq[t * ld + 2 * d + c]);
      }
    }
    ExpectAllClose(gq, want_dq, 2e-2, 2e-2 * max_abs(want_dq));
    ExpectAllClose(gk, want_dk, 2e-2, 2e-2 * max_abs(want_dk));
    ExpectAllClose(gv, want_dv, 2e-2, 2e-2 * max_abs(want_dv));
    // The probabilities are the fp32 softmax of the same scores, rounded once.
    std::vector<float> probs32(np), out32(n);
    std::vector<float> qkv32 = FromBf16(qkv);
    ASSERT_TRUE(AttentionForward(s, qkv32.data(), qkv32.data() + d, qkv32.data() + 2 * d, ld,
                                 probs32.data(), out32.data(), d, ctx)
                    .ok());
    ExpectRoundedFrom(probs, probs32);
  }
}

// ----------------------------------------------------------------------------- Losses

double CrossEntropyRef(const Vec& logits, const std::vector<int32_t>& t, int64_t rows,
                       int64_t vocab) {
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < vocab; ++c) m = std::max(m, logits[r * vocab + c]);
    for (int64_t c = 0; c < vocab; ++c) s += std::exp(logits[r * vocab + c] - m);
    total += m + std::log(s) - logits[r * vocab + t[r]];
  }
  return rows > 0 ? total / rows : 0.0;
}

std::vector<int32_t> RandomTargets(int64_t rows, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(static_cast<size_t>(rows));
  for (auto& x : t) x = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return t;
}

TEST(CrossEntropyTest, ForwardMatchesReference) {
  for (const KernelContext& ctx : HostContexts()) {
    for (Shape2 s : std::vector<Shape2>{{0, 3}, {1, 1}, {3, 7}, {17, 256}, {400, 1023}}) {
      SCOPED_TRACE(Describe(ctx) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols));
      const int64_t ld = s.cols + 1;
      const std::vector<float> x = RandomFloats(s.rows * ld, 60, -10.0f, 10.0f);
      const std::vector<int32_t> t = RandomTargets(s.rows, s.cols, 61);
      std::vector<float> lse(s.rows);
      float loss = -1;
      ASSERT_TRUE(
          CrossEntropyForward(x.data(), ld, t.data(), s.rows, s.cols, lse.data(), &loss, ctx).ok());
      EXPECT_NEAR(loss, CrossEntropyRef(ToDouble(Dense(x, s.rows, s.cols, ld)), t, s.rows, s.cols),
                  1e-5);
    }
  }
}

TEST(CrossEntropyTest, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 4, vocab = 9;
  const std::vector<float> x = RandomFloats(rows * vocab, 62, -3.0f, 3.0f);
  const std::vector<int32_t> t = RandomTargets(rows, vocab, 63);
  const Vec want = FiniteDiff(
      [&](const Vec& xs) { return 2.5 * CrossEntropyRef(xs, t, rows, vocab); }, ToDouble(x));
  for (const KernelContext& ctx : HostContexts()) {
    SCOPED_TRACE(Describe(ctx));
    std::vector<float> lse(rows), dx = x;
    float loss = 0;
    ASSERT_TRUE(
        CrossEntropyForward(x.data(), vocab, t.data(), rows, vocab, lse.data(), &loss, ctx).ok());
    ASSERT_TRUE(CrossEntropyBackward(dx.data(), vocab, t.data(), lse.data(), rows, vocab, 2.5f,
                                     dx.data(), vocab, ctx)
                    .ok());  // in place over the logits
    ExpectAllClose(dx, want, kBwdRtol, kBwdAtol);
  }
}

TEST(CrossEntropyTest, OutOfRangeTargetIsRejected) {
  std::vector<float> x(6), lse(2);
  std::vector<int32_t> t = {1, 3};
  float loss;
  EXPECT_EQ(
      CrossEntropyForward(x.data(), 3, t.data(), 2, 3, lse.data(), &loss, KernelContext::Host())
          .code(),
      StatusCode::kInvalidArgument);
}

TEST(MseTest, ForwardAndBackward) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : testing::AwkwardSizes()) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const std::vector<float> p = RandomFloats(n, 70), t = RandomFloats(n, 71);
      double want = 0;
      for (int64_t i = 0; i < n; ++i) want += (double(p[i]) - t[i]) * (double(p[i]) - t[i]);
      want = n > 0 ? want / n : 0;
      float loss = -1;
      ASSERT_TRUE(MseLossForward(p.data(), t.data(), n, &loss, ctx).ok());
      // Same blocked fp32 partial sums as SquaredNorm: 1.5e-5 relative worst case.
      EXPECT_NEAR(loss, want, 1.5e-5 * want + 1e-12);
      std::vector<float> dp(static_cast<size_t>(n));
      ASSERT_TRUE(MseLossBackward(p.data(), t.data(), n, 3.0f, dp.data(), ctx).ok());
      Vec want_dp;
      for (int64_t i = 0; i < n; ++i) want_dp.push_back(3.0 * 2 * (double(p[i]) - t[i]) / n);
      ExpectAllClose(dp, want_dp, 1e-5, 1e-12);
    }
  }
}

TEST(MseTest, BackwardMatchesFiniteDifferences) {
  const std::vector<float> p = RandomFloats(13, 72), t = RandomFloats(13, 73);
  const Vec want = FiniteDiff(
      [&](const Vec& ps) {
        double l = 0;
        for (size_t i = 0; i < ps.size(); ++i) l += (ps[i] - t[i]) * (ps[i] - t[i]);
        return l / ps.size();
      },
      ToDouble(p));
  std::vector<float> dp(13);
  ASSERT_TRUE(MseLossBackward(p.data(), t.data(), 13, 1.0f, dp.data(), KernelContext::Host()).ok());
  ExpectAllClose(dp, want, kBwdRtol, kBwdAtol);
}

// -------------------------------------------------------------------------- Embedding

TEST(EmbeddingTest, LookupAndScatterAddGradient) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : {0, 1, 7, 1023, 5000}) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const int64_t vocab = 37, dim = 19;
      const std::vector<float> table = RandomFloats(vocab * dim, 80);
      const std::vector<int32_t> ids = RandomTargets(n, vocab, 81 + n);  // many repeats
      std::vector<float> out(static_cast<size_t>(n * dim));
      ASSERT_TRUE(EmbeddingForward(table.data(), vocab, dim, ids.data(), n, out.data(), ctx).ok());
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < dim; ++c) ASSERT_EQ(out[i * dim + c], table[ids[i] * dim + c]);
      }
      const std::vector<float> dout = RandomFloats(n * dim, 82);
      std::vector<float> dtable(static_cast<size_t>(vocab * dim), 0.5f);
      ASSERT_TRUE(
          EmbeddingBackward(dout.data(), ids.data(), n, vocab, dim, dtable.data(), ctx).ok());
      std::vector<float> want(static_cast<size_t>(vocab * dim), 0.5f);  // serial, ascending i
      for (int64_t i = 0; i < n; ++i) {
        for (int64_t c = 0; c < dim; ++c) want[ids[i] * dim + c] += dout[i * dim + c];
      }
      EXPECT_EQ(dtable, want);
    }
  }
}

TEST(EmbeddingTest, VocabShardLooksUpItsRowsAndZerosTheRest) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t n : {0, 1, 7, 1023, 5000}) {
      SCOPED_TRACE(Describe(ctx) + " n=" + std::to_string(n));
      const int64_t vocab = 37, dim = 19, first = 12, rows = 13;  // rows [12, 25)
      const std::vector<float> full = RandomFloats(vocab * dim, 83);
      const std::vector<int32_t> ids = RandomTargets(n, vocab, 84 + n);
      const float* shard = full.data() + first * dim;
      std::vector<float> out(static_cast<size_t>(n * dim), -1.0f);
      ASSERT_TRUE(EmbeddingShardForward(shard, DType::kFloat32, first, rows, dim, ids.data(), n,
                                        out.data(), ctx)
                      .ok());
      for (int64_t i = 0; i < n; ++i) {
        const bool mine = ids[i] >= first && ids[i] < first + rows;
        for (int64_t c = 0; c < dim; ++c) {
          ASSERT_EQ(out[i * dim + c], mine ? full[ids[i] * dim + c] : 0.0f);
        }
      }
      const std::vector<float> dout = RandomFloats(n * dim, 85);
      std::vector<float> dshard(static_cast<size_t>(rows * dim), 0.25f);
      ASSERT_TRUE(
          EmbeddingShardBackward(dout.data(), ids.data(), n, first, rows, dim, dshard.data(), ctx)
              .ok());
      std::vector<float> want(static_cast<size_t>(rows * dim), 0.25f);  // serial, ascending i
      for (int64_t i = 0; i < n; ++i) {
        if (ids[i] < first || ids[i] >= first + rows) continue;
        for (int64_t c = 0; c < dim; ++c) want[(ids[i] - first) * dim + c] += dout[i * dim + c];
      }
      EXPECT_EQ(dshard, want);
      // A bf16 table: its rows widened exactly.
      std::vector<uint16_t> shard_bf16(static_cast<size_t>(rows * dim));
      for (size_t i = 0; i < shard_bf16.size(); ++i) shard_bf16[i] = FloatToBf16Bits(shard[i]);
      ASSERT_TRUE(EmbeddingShardForward(shard_bf16.data(), DType::kBFloat16, first, rows, dim,
                                        ids.data(), n, out.data(), ctx)
                      .ok());
      for (int64_t i = 0; i < n; ++i) {
        const bool mine = ids[i] >= first && ids[i] < first + rows;
        for (int64_t c = 0; c < dim; ++c) {
          ASSERT_EQ(out[i * dim + c],
                    mine ? Bf16BitsToFloat(shard_bf16[(ids[i] - first) * dim + c]) : 0.0f);
        }
      }
    }
  }
}

TEST(Copy2DTest, CopiesBlocksBetweenStrides) {
  for (const KernelContext& ctx : HostContexts()) {
    for (int64_t rows : {0, 1, 3, 2000}) {
      SCOPED_TRACE(Describe(ctx) + " rows=" + std::to_string(rows));
      const int64_t cols = 5, ld_src = 9, ld_dst = 7;
      const std::vector<float> src = RandomFloats(rows * ld_src, 86);
      std::vector<float> dst(static_cast<size_t>(rows * ld_dst), -3.0f);
      ASSERT_TRUE(
          Copy2D(src.data() + 2, ld_src, dst.data() + 1, ld_dst, rows, cols, DType::kFloat32, ctx)
              .ok());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < ld_dst; ++c) {
          const float want = c >= 1 && c < 1 + cols ? src[r * ld_src + 2 + c - 1] : -3.0f;
          ASSERT_EQ(dst[r * ld_dst + c], want) << r << "," << c;
        }
      }
    }
  }
  std::vector<float> a(4), b(4);
  EXPECT_EQ(Copy2D(a.data(), 1, b.data(), 2, 2, 2, DType::kFloat32, KernelContext::Host()).code(),
            StatusCode::kInvalidArgument);  // ld_src < cols
}

TEST(EmbeddingTest, OutOfRangeIdIsRejected) {
  std::vector<float> table(6), out(2);
  std::vector<int32_t> ids = {3};
  EXPECT_EQ(
      EmbeddingForward(table.data(), 3, 2, ids.data(), 1, out.data(), KernelContext::Host()).code(),
      StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pszero::kernels
