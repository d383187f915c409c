// Every CUDA twin against its CPU twin on the same inputs (label gpu). Without a CUDA
// device (a CPU build, or no GPU) every test is skipped with a message saying so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "common/tensor.h"
#include "kernels/attention.h"
#include "kernels/cast.h"
#include "kernels/cuda_resources.h"
#include "kernels/elementwise.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/layernorm.h"
#include "kernels/loss.h"
#include "kernels/optimizer.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"
#include "tests/kernels/kernel_test_util.h"

namespace pszero::kernels {
namespace {

using testing::ExpectAllClose;
using testing::RandomFloats;

// GPU math (fused multiply-add, __expf, tanhf, other summation trees) against the host.
constexpr double kRtol = 1e-5, kAtol = 1e-5;

template <typename T>
DType DTypeFor() {
  if constexpr (std::is_same_v<T, float>) return DType::kFloat32;
  if constexpr (std::is_same_v<T, uint16_t>) return DType::kBFloat16;  // 16-bit storage
  if constexpr (std::is_same_v<T, int32_t>) return DType::kInt32;
}

class CudaTwinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (CudaDeviceCount() == 0) {
      GTEST_SKIP() << "no CUDA device present (CPU build or no GPU): CUDA twins not run";
    }
    auto r = CudaResources::Create(0);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    res_ = std::move(r).value();
  }

  KernelContext Gpu() const { return KernelContext::Cuda(res_.get()); }
  static KernelContext Cpu() { return KernelContext::Host(); }

  template <typename T>
  Tensor Up(const std::vector<T>& v) {
    auto t = Tensor::Empty({static_cast<int64_t>(v.size())}, DTypeFor<T>(), MemoryCategory::kOther,
                           nullptr, Device::kCuda);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_TRUE(t->CopyFrom(Tensor::Wrap(const_cast<T*>(v.data()), {static_cast<int64_t>(v.size())},
                                         DTypeFor<T>()))
                    .ok());
    return std::move(t).value();
  }

  template <typename T>
  std::vector<T> Down(const Tensor& t) {
    EXPECT_TRUE(res_->Synchronize().ok());
    std::vector<T> v(static_cast<size_t>(t.numel()));
    Tensor host = Tensor::Wrap(v.data(), {t.numel()}, DTypeFor<T>());
    EXPECT_TRUE(host.CopyFrom(t).ok());
    return v;
  }

  template <typename T>
  static T* P(const Tensor& t) {
    return static_cast<T*>(t.data());
  }

  std::unique_ptr<CudaResources> res_;
};

TEST_F(CudaTwinTest, AdamWAndSgd) {
  for (int64_t n : {1, 7, 1023, 100003}) {
    for (bool bf16 : {false, true}) {
      const std::vector<float> g = RandomFloats(n, 1), p = RandomFloats(n, 2);
      const std::vector<float> m = RandomFloats(n, 3, -0.1f, 0.1f),
                               v = RandomFloats(n, 4, 0, 0.01f);
      const std::vector<uint16_t> gb = testing::ToBf16(g);
      AdamWParams hp;
      hp.step = 3;
      std::vector<float> hp_p = p, hp_m = m, hp_v = v;
      std::vector<bf16_t> hcopy(n);
      const void* hg = bf16 ? static_cast<const void*>(gb.data()) : g.data();
      const DType gd = bf16 ? DType::kBFloat16 : DType::kFloat32;
      ASSERT_TRUE(
          AdamW(hp, hp_p.data(), hg, gd, hp_m.data(), hp_v.data(), hcopy.data(), n, Cpu()).ok());
      Tensor dp = Up(p), dm = Up(m), dv = Up(v), dg = bf16 ? Up(gb) : Up(g);
      Tensor dcopy = Up(std::vector<uint16_t>(n));
      ASSERT_TRUE(AdamW(hp, P<float>(dp), dg.data(), gd, P<float>(dm), P<float>(dv),
                        static_cast<bf16_t*>(dcopy.data()), n, Gpu())
                      .ok());
      ExpectAllClose(Down<float>(dp), hp_p, kRtol, 1e-7);
      ExpectAllClose(Down<float>(dm), hp_m, kRtol, 1e-7);
      ExpectAllClose(Down<float>(dv), hp_v, kRtol, 1e-7);
      const std::vector<float> gp = Down<float>(dp);
      const std::vector<uint16_t> gcopy = Down<uint16_t>(dcopy);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(gcopy[i], FloatToBf16Bits(gp[i]));

      SgdParams sp;
      sp.nesterov = true;
      sp.weight_decay = 0.01f;
      std::vector<float> sp_p = p, sp_b = m;
      ASSERT_TRUE(Sgd(sp, sp_p.data(), hg, gd, sp_b.data(), nullptr, n, Cpu()).ok());
      Tensor sdp = Up(p), sdb = Up(m);
      ASSERT_TRUE(Sgd(sp, P<float>(sdp), dg.data(), gd, P<float>(sdb), nullptr, n, Gpu()).ok());
      ExpectAllClose(Down<float>(sdp), sp_p, kRtol, 1e-7);
      ExpectAllClose(Down<float>(sdb), sp_b, kRtol, 1e-7);
    }
  }
}

TEST_F(CudaTwinTest, SumIsBitIdenticalToHost) {
  for (int64_t n : {1, 7, 1023, 100003}) {
    for (int k : {2, 5, 8}) {
      std::vector<std::vector<float>> in;
      std::vector<Tensor> din;
      std::vector<const void*> hp, dp;
      for (int j = 0; j < k; ++j) in.push_back(RandomFloats(n, 10 + j));
      for (int j = 0; j < k; ++j) {
        din.push_back(Up(in[j]));
        hp.push_back(in[j].data());
        dp.push_back(din[j].data());
      }
      std::vector<float> hout(n);
      ASSERT_TRUE(Sum(hp, DType::kFloat32, hout.data(), DType::kFloat32, n, false, Cpu()).ok());
      Tensor dout = Up(std::vector<float>(n));
      ASSERT_TRUE(Sum(dp, DType::kFloat32, dout.data(), DType::kFloat32, n, false, Gpu()).ok());
      EXPECT_EQ(Down<float>(dout), hout);
      // bf16 in, bf16 out, accumulating.
      std::vector<std::vector<uint16_t>> inb;
      std::vector<Tensor> dinb;
      std::vector<const void*> hpb, dpb;
      for (int j = 0; j < k; ++j) inb.push_back(testing::ToBf16(in[j]));
      for (int j = 0; j < k; ++j) {
        dinb.push_back(Up(inb[j]));
        hpb.push_back(inb[j].data());
        dpb.push_back(dinb[j].data());
      }
      std::vector<uint16_t> hacc = testing::ToBf16(RandomFloats(n, 99));
      Tensor dacc = Up(hacc);
      ASSERT_TRUE(Sum(hpb, DType::kBFloat16, hacc.data(), DType::kBFloat16, n, true, Cpu()).ok());
      ASSERT_TRUE(Sum(dpb, DType::kBFloat16, dacc.data(), DType::kBFloat16, n, true, Gpu()).ok());
      EXPECT_EQ(Down<uint16_t>(dacc), hacc);
    }
  }
}

// The sync strategies' collective thread adds later micro-batches' reduce-scatter results
// on a non-blocking side stream while the compute stream is busy: same bits as the host,
// and its Synchronize waits for its own work.
TEST_F(CudaTwinTest, AccumulateOnANonBlockingSideStreamIsBitIdenticalToHost) {
  auto side = CudaResources::Create(0, CudaResources::StreamKind::kNonBlocking);
  ASSERT_TRUE(side.ok()) << side.status().ToString();
  const KernelContext s = KernelContext::Cuda(side->get());
  const int64_t n = 1 << 20;
  // Work on the compute stream at the same time (not ordered with the side stream).
  Tensor busy = Up(RandomFloats(n, 5));
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(Add(P<float>(busy), P<float>(busy), P<float>(busy), n, Gpu()).ok());
  }
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    const std::vector<float> in = RandomFloats(n, 21), acc = RandomFloats(n, 22);
    if (dt == DType::kFloat32) {
      std::vector<float> h = acc;
      Tensor din = Up(in), dacc = Up(acc);
      ASSERT_TRUE(Accumulate(in.data(), dt, h.data(), dt, n, Cpu()).ok());
      ASSERT_TRUE(Accumulate(din.data(), dt, dacc.data(), dt, n, s).ok());
      ASSERT_TRUE((*side)->Synchronize().ok());
      EXPECT_EQ(Down<float>(dacc), h);
    } else {
      const std::vector<uint16_t> inb = testing::ToBf16(in);
      std::vector<uint16_t> h = testing::ToBf16(acc);
      Tensor din = Up(inb), dacc = Up(h);
      ASSERT_TRUE(Accumulate(inb.data(), dt, h.data(), dt, n, Cpu()).ok());
      ASSERT_TRUE(Accumulate(din.data(), dt, dacc.data(), dt, n, s).ok());
      ASSERT_TRUE((*side)->Synchronize().ok());
      EXPECT_EQ(Down<uint16_t>(dacc), h);
    }
  }
}

TEST_F(CudaTwinTest, NormMaxAndMse) {
  for (int64_t n : {0, 1, 1023, 1000003}) {
    const std::vector<float> x = RandomFloats(n, 20), y = RandomFloats(n, 21);
    float hn = 0, hm = 0, hl = 0;
    ASSERT_TRUE(SquaredNorm(x.data(), DType::kFloat32, n, &hn, Cpu()).ok());
    ASSERT_TRUE(Max(x.data(), n, &hm, Cpu()).ok());
    ASSERT_TRUE(MseLossForward(x.data(), y.data(), n, &hl, Cpu()).ok());
    Tensor dx = Up(x), dy = Up(y), out = Up(std::vector<float>(3));
    ASSERT_TRUE(SquaredNorm(dx.data(), DType::kFloat32, n, P<float>(out), Gpu()).ok());
    ASSERT_TRUE(Max(P<float>(dx), n, P<float>(out) + 1, Gpu()).ok());
    ASSERT_TRUE(MseLossForward(P<float>(dx), P<float>(dy), n, P<float>(out) + 2, Gpu()).ok());
    const std::vector<float> got = Down<float>(out);
    EXPECT_NEAR(got[0], hn, 1e-5 * hn);
    EXPECT_EQ(got[1], hm);
    EXPECT_NEAR(got[2], hl, 1e-5 * hl);
  }
}

TEST_F(CudaTwinTest, CastsAreBitIdentical) {
  std::vector<float> x = RandomFloats(100003, 30, -70000.0f, 70000.0f);
  for (uint32_t b = 0; b < 65536; ++b) x.push_back(std::bit_cast<float>(b << 13 | (b & 7)));
  const int64_t n = static_cast<int64_t>(x.size());
  Tensor dx = Up(x);
  for (DType half : {DType::kBFloat16, DType::kFloat16}) {
    std::vector<uint16_t> h(n);
    ASSERT_TRUE(Cast(x.data(), DType::kFloat32, h.data(), half, n, Cpu()).ok());
    Tensor dh = Up(std::vector<uint16_t>(n));
    ASSERT_TRUE(Cast(dx.data(), DType::kFloat32, dh.data(), half, n, Gpu()).ok());
    EXPECT_EQ(Down<uint16_t>(dh), h);
    std::vector<float> back(n);
    ASSERT_TRUE(Cast(h.data(), half, back.data(), DType::kFloat32, n, Cpu()).ok());
    Tensor dback = Up(std::vector<float>(n));
    ASSERT_TRUE(Cast(dh.data(), half, dback.data(), DType::kFloat32, n, Gpu()).ok());
    const std::vector<float> gb = Down<float>(dback);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(gb[i]), std::bit_cast<uint32_t>(back[i])) << i;
    }
  }
}

TEST_F(CudaTwinTest, GemmFp32AndBf16) {
  const int64_t m = 70, n = 33, k = 129, batch = 3;
  std::vector<float> a = RandomFloats(batch * m * k, 40), b = RandomFloats(batch * k * n, 41);
  for (DType dt : {DType::kFloat32, DType::kBFloat16}) {
    for (bool tb : {false, true}) {
      std::vector<uint16_t> ab = testing::ToBf16(a), bb = testing::ToBf16(b);
      const void* ha = dt == DType::kFloat32 ? static_cast<const void*>(a.data()) : ab.data();
      const void* hb = dt == DType::kFloat32 ? static_cast<const void*>(b.data()) : bb.data();
      const int64_t ldb = tb ? k : n;
      const GemmBatch gb = {batch, m * k, k * n, m * n};
      std::vector<float> hc(batch * m * n, 1.0f);
      ASSERT_TRUE(GemmStridedBatched(false, tb, m, n, k, 1.0f, ha, k, hb, ldb, 0.5f, hc.data(), n,
                                     gb, dt, Cpu())
                      .ok());
      Tensor da = dt == DType::kFloat32 ? Up(a) : Up(ab),
             db = dt == DType::kFloat32 ? Up(b) : Up(bb);
      Tensor dc = Up(std::vector<float>(batch * m * n, 1.0f));
      ASSERT_TRUE(GemmStridedBatched(false, tb, m, n, k, 1.0f, da.data(), k, db.data(), ldb, 0.5f,
                                     P<float>(dc), n, gb, dt, Gpu())
                      .ok());
      ExpectAllClose(Down<float>(dc), hc, 1e-4, 1e-4);
    }
  }
}

TEST_F(CudaTwinTest, TransformerOpsForwardAndBackward) {
  const int64_t rows = 64, cols = 257, n = rows * cols;
  const std::vector<float> x = RandomFloats(n, 50, -3.0f, 3.0f), dy = RandomFloats(n, 51);
  const std::vector<float> g = RandomFloats(cols, 52), b = RandomFloats(cols, 53);
  Tensor dx = Up(x), ddy = Up(dy), dg = Up(g), db = Up(b);
  // GELU, bias add, residual add.
  {
    std::vector<float> h(n), h2(n);
    ASSERT_TRUE(GeluForward(x.data(), h.data(), n, Cpu()).ok());
    ASSERT_TRUE(GeluBackward(x.data(), dy.data(), h2.data(), n, Cpu()).ok());
    Tensor o = Up(std::vector<float>(n)), o2 = Up(std::vector<float>(n));
    ASSERT_TRUE(GeluForward(P<float>(dx), P<float>(o), n, Gpu()).ok());
    ASSERT_TRUE(GeluBackward(P<float>(dx), P<float>(ddy), P<float>(o2), n, Gpu()).ok());
    ExpectAllClose(Down<float>(o), h, kRtol, kAtol);
    ExpectAllClose(Down<float>(o2), h2, kRtol, kAtol);
    ASSERT_TRUE(BiasAdd(x.data(), cols, b.data(), h.data(), cols, rows, cols, Cpu()).ok());
    ASSERT_TRUE(
        BiasAdd(P<float>(dx), cols, P<float>(db), P<float>(o), cols, rows, cols, Gpu()).ok());
    ExpectAllClose(Down<float>(o), h, 0, 0);
    std::vector<float> hb(cols, 0.0f);
    Tensor ob = Up(hb);
    ASSERT_TRUE(BiasAddBackward(dy.data(), cols, rows, cols, hb.data(), Cpu()).ok());
    ASSERT_TRUE(BiasAddBackward(P<float>(ddy), cols, rows, cols, P<float>(ob), Gpu()).ok());
    ExpectAllClose(Down<float>(ob), hb, kRtol, kAtol);
    ASSERT_TRUE(Add(x.data(), dy.data(), h.data(), n, Cpu()).ok());
    ASSERT_TRUE(Add(P<float>(dx), P<float>(ddy), P<float>(o), n, Gpu()).ok());
    ExpectAllClose(Down<float>(o), h, 0, 0);
  }
  // LayerNorm.
  {
    std::vector<float> y(n), mean(rows), rstd(rows), gx(n), gg(cols, 0), gbeta(cols, 0);
    ASSERT_TRUE(LayerNormForward(x.data(), cols, g.data(), b.data(), 1e-5f, y.data(), cols,
                                 mean.data(), rstd.data(), rows, cols, Cpu())
                    .ok());
    ASSERT_TRUE(LayerNormBackward(dy.data(), cols, x.data(), cols, g.data(), mean.data(),
                                  rstd.data(), gx.data(), cols, gg.data(), gbeta.data(), rows, cols,
                                  Cpu())
                    .ok());
    Tensor oy = Up(y), om = Up(mean), orr = Up(rstd), ogx = Up(gx),
           ogg = Up(std::vector<float>(cols)), ogb = Up(std::vector<float>(cols));
    ASSERT_TRUE(LayerNormForward(P<float>(dx), cols, P<float>(dg), P<float>(db), 1e-5f,
                                 P<float>(oy), cols, P<float>(om), P<float>(orr), rows, cols, Gpu())
                    .ok());
    ASSERT_TRUE(LayerNormBackward(P<float>(ddy), cols, P<float>(dx), cols, P<float>(dg),
                                  P<float>(om), P<float>(orr), P<float>(ogx), cols, P<float>(ogg),
                                  P<float>(ogb), rows, cols, Gpu())
                    .ok());
    ExpectAllClose(Down<float>(oy), y, kRtol, kAtol);
    ExpectAllClose(Down<float>(ogx), gx, 1e-4, 1e-4);
    ExpectAllClose(Down<float>(ogg), gg, 1e-4, 1e-4);
    ExpectAllClose(Down<float>(ogb), gbeta, 1e-4, 1e-4);
  }
  // Causal softmax over four whole [32, 32] score matrices.
  {
    const int64_t s = 32, r = 4 * s;
    const std::vector<float> sx = RandomFloats(r * s, 54, -5.0f, 5.0f),
                             sdy = RandomFloats(r * s, 55);
    std::vector<float> y(r * s), gx(r * s);
    ASSERT_TRUE(SoftmaxForward(sx.data(), y.data(), r, s, s, 0.3f, true, Cpu()).ok());
    ASSERT_TRUE(SoftmaxBackward(y.data(), sdy.data(), gx.data(), r, s, s, 0.3f, Cpu()).ok());
    Tensor dsx = Up(sx), dsdy = Up(sdy), oy = Up(y), ogx = Up(gx);
    ASSERT_TRUE(SoftmaxForward(P<float>(dsx), P<float>(oy), r, s, s, 0.3f, true, Gpu()).ok());
    ASSERT_TRUE(
        SoftmaxBackward(P<float>(oy), P<float>(dsdy), P<float>(ogx), r, s, s, 0.3f, Gpu()).ok());
    ExpectAllClose(Down<float>(oy), y, kRtol, kAtol);
    ExpectAllClose(Down<float>(ogx), gx, 1e-4, kAtol);
  }
  // Cross-entropy and MSE backward.
  {
    std::vector<int32_t> t(rows);
    for (int64_t i = 0; i < rows; ++i) t[i] = static_cast<int32_t>((i * 37) % cols);
    std::vector<float> lse(rows), dl(n), dm(n);
    float loss = 0;
    ASSERT_TRUE(
        CrossEntropyForward(x.data(), cols, t.data(), rows, cols, lse.data(), &loss, Cpu()).ok());
    ASSERT_TRUE(CrossEntropyBackward(x.data(), cols, t.data(), lse.data(), rows, cols, 1.0f,
                                     dl.data(), cols, Cpu())
                    .ok());
    ASSERT_TRUE(MseLossBackward(x.data(), dy.data(), n, 1.0f, dm.data(), Cpu()).ok());
    Tensor dt = Up(t), olse = Up(lse), oloss = Up(std::vector<float>(1)), odl = Up(dl),
           odm = Up(dm);
    ASSERT_TRUE(CrossEntropyForward(P<float>(dx), cols, P<int32_t>(dt), rows, cols, P<float>(olse),
                                    P<float>(oloss), Gpu())
                    .ok());
    ASSERT_TRUE(CrossEntropyBackward(P<float>(dx), cols, P<int32_t>(dt), P<float>(olse), rows, cols,
                                     1.0f, P<float>(odl), cols, Gpu())
                    .ok());
    ASSERT_TRUE(MseLossBackward(P<float>(dx), P<float>(ddy), n, 1.0f, P<float>(odm), Gpu()).ok());
    EXPECT_NEAR(Down<float>(oloss)[0], loss, 1e-5 * std::fabs(loss));
    ExpectAllClose(Down<float>(olse), lse, kRtol, kAtol);
    ExpectAllClose(Down<float>(odl), dl, 1e-4, 1e-7);
    ExpectAllClose(Down<float>(odm), dm, kRtol, 1e-9);
  }
}

// Whether two float vectors hold the same bits (a determinism check: -0 and +0 differ).
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The column sums (dbias; dgamma, dbeta) against a double-precision reference, on shapes
// around the GPU's decomposition: rows = 1, rows below, at and one past its 128-row chunk,
// rows not a multiple of it, columns not a multiple of its 32-column tile, a leading
// dimension wider than the row, and a 4096 x 3072 MLP bias. The accumulators start
// nonzero (the kernels add). Tolerance: the GPU adds each column in a fixed tree (a
// thread adds up to 16 rows, 8 thread partials are added, then ceil(rows / 128) chunk
// sums in order, then the total into the accumulator): a chain of at most
// 16 + 8 + 32 + 1 = 57 fp32 additions for rows <= 4096, and dy * xhat rounds 3 times, so
// the classical bound is 60 * 2^-24 < 4e-6 of (|initial| + sum |term|). We allow 1e-5 of
// that sum: still well below one lost or doubled row (about 1/rows of it). Two runs from
// the same inputs must give the same bits.
TEST_F(CudaTwinTest, ColumnSumsAgainstDoubleReference) {
  struct Shape {
    int64_t rows, cols, ld;
  };
  const Shape shapes[] = {{1, 1, 1},        {1, 768, 768},   {7, 5, 5},
                          {64, 257, 257},   {128, 32, 32},   {129, 33, 40},
                          {1000, 100, 100}, {300, 768, 771}, {4096, 3072, 3072}};
  for (const Shape& sh : shapes) {
    const int64_t rows = sh.rows, cols = sh.cols, ld = sh.ld, n = rows * ld;
    SCOPED_TRACE(std::to_string(rows) + " x " + std::to_string(cols) + ", ld " +
                 std::to_string(ld));
    const std::vector<float> dy = RandomFloats(n, 70), x = RandomFloats(n, 71, -3.0f, 3.0f);
    const std::vector<float> mean = RandomFloats(rows, 72),
                             rstd = RandomFloats(rows, 73, 0.5f, 2.0f);
    const std::vector<float> gamma = RandomFloats(cols, 74), bias0 = RandomFloats(cols, 75),
                             gamma0 = RandomFloats(cols, 76), beta0 = RandomFloats(cols, 77);
    // Reference sums and the bound's scale (|initial| + sum |term|), per column.
    std::vector<double> sum_dy(cols, 0), abs_dy(cols, 0), sum_g(cols, 0), abs_g(cols, 0);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const double d = dy[r * ld + c];
        const double g = d * ((static_cast<double>(x[r * ld + c]) - mean[r]) * rstd[r]);
        sum_dy[c] += d;
        abs_dy[c] += std::fabs(d);
        sum_g[c] += g;
        abs_g[c] += std::fabs(g);
      }
    }
    Tensor ddy = Up(dy), dx = Up(x), dmean = Up(mean), drstd = Up(rstd), dgamma = Up(gamma);
    Tensor dgx = Up(std::vector<float>(n));
    auto run = [&](std::vector<float>* dbias, std::vector<float>* dg, std::vector<float>* db) {
      Tensor ob = Up(bias0), og = Up(gamma0), obeta = Up(beta0);
      ASSERT_TRUE(BiasAddBackward(P<float>(ddy), ld, rows, cols, P<float>(ob), Gpu()).ok());
      ASSERT_TRUE(LayerNormBackward(P<float>(ddy), ld, P<float>(dx), ld, P<float>(dgamma),
                                    P<float>(dmean), P<float>(drstd), P<float>(dgx), ld,
                                    P<float>(og), P<float>(obeta), rows, cols, Gpu())
                      .ok());
      *dbias = Down<float>(ob);
      *dg = Down<float>(og);
      *db = Down<float>(obeta);
    };
    std::vector<float> gbias, ggamma, gbeta;
    run(&gbias, &ggamma, &gbeta);
    for (int64_t c = 0; c < cols; ++c) {
      const double tol_dy = 1e-5 * (std::fabs(bias0[c]) + abs_dy[c]);
      ASSERT_LE(std::fabs(gbias[c] - (bias0[c] + sum_dy[c])), tol_dy) << "dbias " << c;
      ASSERT_LE(std::fabs(gbeta[c] - (beta0[c] + sum_dy[c])),
                1e-5 * (std::fabs(beta0[c]) + abs_dy[c]))
          << "dbeta " << c;
      ASSERT_LE(std::fabs(ggamma[c] - (gamma0[c] + sum_g[c])),
                1e-5 * (std::fabs(gamma0[c]) + abs_g[c]))
          << "dgamma " << c;
    }
    std::vector<float> gbias2, ggamma2, gbeta2;
    run(&gbias2, &ggamma2, &gbeta2);
    EXPECT_TRUE(SameBits(gbias, gbias2));
    EXPECT_TRUE(SameBits(ggamma, ggamma2));
    EXPECT_TRUE(SameBits(gbeta, gbeta2));
  }
}

// The embedding gradient (a stable sort of the ids, then each id's tokens added in order)
// is bit for bit the host's, which adds every id's rows in ascending token order too.
// Cases: one token; a one-row table (every token repeats it); repeated ids in segments
// longer than, and not a multiple of, the 8-token load batch (every third token is one
// frequent id); dims below, at and across the 256-column tile; a gpt-small step
// (8192 tokens, 50257 x 768); vocabulary shards, whose other ids are skipped. The table
// gradient starts nonzero (the kernel adds); two runs give the same bits.
TEST_F(CudaTwinTest, EmbeddingBackwardBitIdenticalToHost) {
  struct Case {
    int64_t vocab, dim, n;
  };
  const Case cases[] = {{1, 1, 1},       {1, 5, 37},        {50, 24, 1},
                        {50, 300, 2000}, {1000, 256, 3000}, {50257, 768, 8192}};
  for (const Case& k : cases) {
    const int64_t vocab = k.vocab, dim = k.dim, n = k.n;
    SCOPED_TRACE("vocab " + std::to_string(vocab) + ", dim " + std::to_string(dim) + ", n " +
                 std::to_string(n));
    std::mt19937_64 rng(80);
    std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
    std::vector<int32_t> ids(n);
    for (int64_t i = 0; i < n; ++i)
      ids[i] = i % 3 == 0 ? static_cast<int32_t>(vocab / 2) : pick(rng);
    const std::vector<float> gout = RandomFloats(n * dim, 81), init = RandomFloats(vocab * dim, 82);
    Tensor gids = Up(ids), ggo = Up(gout);

    std::vector<float> host = init;
    ASSERT_TRUE(EmbeddingBackward(gout.data(), ids.data(), n, vocab, dim, host.data(), Cpu()).ok());
    std::vector<float> runs[2];
    for (std::vector<float>& got : runs) {
      Tensor gdt = Up(init);
      ASSERT_TRUE(
          EmbeddingBackward(P<float>(ggo), P<int32_t>(gids), n, vocab, dim, P<float>(gdt), Gpu())
              .ok());
      got = Down<float>(gdt);
    }
    EXPECT_TRUE(SameBits(runs[0], host));
    EXPECT_TRUE(SameBits(runs[1], runs[0]));

    // The middle third of the vocabulary as a shard (at least one row).
    const int64_t first = vocab / 3, rows = std::max<int64_t>(1, vocab / 3);
    const std::vector<float> shard_init(init.begin() + first * dim,
                                        init.begin() + (first + rows) * dim);
    std::vector<float> host_shard = shard_init;
    ASSERT_TRUE(EmbeddingShardBackward(gout.data(), ids.data(), n, first, rows, dim,
                                       host_shard.data(), Cpu())
                    .ok());
    Tensor gshard = Up(shard_init);
    ASSERT_TRUE(EmbeddingShardBackward(P<float>(ggo), P<int32_t>(gids), n, first, rows, dim,
                                       P<float>(gshard), Gpu())
                    .ok());
    EXPECT_TRUE(SameBits(Down<float>(gshard), host_shard));
  }
}

// The bf16-output forwards (mixed precision's GEMM inputs): the GPU's fp32 value may differ
// from the host's by a few fp32 ulps, so the rounded values agree within one bf16 ulp
// (at most 2^-7 relative); the fp32 statistics as in the fp32 LayerNorm.
TEST_F(CudaTwinTest, Bf16OutputsOfGeluAndLayerNorm) {
  const int64_t rows = 64, cols = 257, ld = cols + 3, n = rows * ld;
  const std::vector<float> x = RandomFloats(n, 56, -3.0f, 3.0f);
  const std::vector<float> g = RandomFloats(cols, 57), b = RandomFloats(cols, 58);
  const double rtol = 1.0 / 128, atol = 1e-5;
  auto widen = [](const std::vector<uint16_t>& h) {
    std::vector<float> f;
    for (uint16_t v : h) f.push_back(Bf16BitsToFloat(v));
    return f;
  };
  Tensor dx = Up(x), dg = Up(g), db = Up(b);
  {
    std::vector<uint16_t> h(n);
    ASSERT_TRUE(GeluForward(x.data(), reinterpret_cast<bf16_t*>(h.data()), n, Cpu()).ok());
    Tensor o = Up(std::vector<uint16_t>(n));
    ASSERT_TRUE(GeluForward(P<float>(dx), P<bf16_t>(o), n, Gpu()).ok());
    ExpectAllClose(widen(Down<uint16_t>(o)), widen(h), rtol, atol);
  }
  {
    // Padding columns hold a marker both sides must leave alone.
    std::vector<uint16_t> y(n, 0x7fc1);
    std::vector<float> mean(rows), rstd(rows);
    ASSERT_TRUE(LayerNormForward(x.data(), ld, g.data(), b.data(), 1e-5f,
                                 reinterpret_cast<bf16_t*>(y.data()), ld, mean.data(), rstd.data(),
                                 rows, cols, Cpu())
                    .ok());
    Tensor oy = Up(std::vector<uint16_t>(n, 0x7fc1)), om = Up(mean), orr = Up(rstd);
    ASSERT_TRUE(LayerNormForward(P<float>(dx), ld, P<float>(dg), P<float>(db), 1e-5f, P<bf16_t>(oy),
                                 ld, P<float>(om), P<float>(orr), rows, cols, Gpu())
                    .ok());
    const std::vector<uint16_t> gy = Down<uint16_t>(oy);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = cols; c < ld; ++c) ASSERT_EQ(gy[r * ld + c], 0x7fc1) << r << "," << c;
    }
    ExpectAllClose(widen(gy), widen(y), rtol, atol);
    ExpectAllClose(Down<float>(om), mean, kRtol, kAtol);
    ExpectAllClose(Down<float>(orr), rstd, kRtol, kAtol);
  }
}

// Mixed precision's bf16-saved activations: the bias add into bf16 (qkv, fc's output),
// GELU from a bf16 input, the bf16 softmax and its backward, and the bf16 attention. Rounded
// values within one bf16 ulp as above; fp32 results as their fp32 twins'.
TEST_F(CudaTwinTest, Bf16SavedActivations) {
  const int64_t rows = 64, cols = 257, ld = cols + 3, n = rows * ld;
  const double rtol = 1.0 / 128, atol = 1e-5;
  auto widen = [](const std::vector<uint16_t>& h) {
    std::vector<float> f;
    for (uint16_t v : h) f.push_back(Bf16BitsToFloat(v));
    return f;
  };
  const std::vector<float> x = RandomFloats(n, 70, -3.0f, 3.0f), dy = RandomFloats(n, 71);
  const std::vector<float> bias = RandomFloats(cols, 72);
  const std::vector<uint16_t> xb = testing::ToBf16(x);
  Tensor dx = Up(x), ddy = Up(dy), dbias = Up(bias), dxb = Up(xb);
  {
    std::vector<uint16_t> y(n, 0x7fc1);
    ASSERT_TRUE(BiasAdd(x.data(), ld, bias.data(), reinterpret_cast<bf16_t*>(y.data()), ld, rows,
                        cols, Cpu())
                    .ok());
    Tensor o = Up(std::vector<uint16_t>(n, 0x7fc1));
    ASSERT_TRUE(
        BiasAdd(P<float>(dx), ld, P<float>(dbias), P<bf16_t>(o), ld, rows, cols, Gpu()).ok());
    EXPECT_EQ(Down<uint16_t>(o), y);  // one fp32 addition, rounded: the same bits
  }
  {
    std::vector<uint16_t> y(n);
    std::vector<float> g(n);
    ASSERT_TRUE(GeluForward(reinterpret_cast<const bf16_t*>(xb.data()),
                            reinterpret_cast<bf16_t*>(y.data()), n, Cpu())
                    .ok());
    ASSERT_TRUE(
        GeluBackward(reinterpret_cast<const bf16_t*>(xb.data()), dy.data(), g.data(), n, Cpu())
            .ok());
    Tensor o = Up(std::vector<uint16_t>(n)), og = Up(std::vector<float>(n));
    ASSERT_TRUE(GeluForward(P<bf16_t>(dxb), P<bf16_t>(o), n, Gpu()).ok());
    ASSERT_TRUE(GeluBackward(P<bf16_t>(dxb), P<float>(ddy), P<float>(og), n, Gpu()).ok());
    ExpectAllClose(widen(Down<uint16_t>(o)), widen(y), rtol, atol);
    ExpectAllClose(Down<float>(og), g, kRtol, kAtol);
  }
  {
    // Causal softmax over four whole [32, 32] score matrices.
    const int64_t s = 32, r = 4 * s;
    const std::vector<float> sx = RandomFloats(r * s, 73, -5.0f, 5.0f),
                             sdy = RandomFloats(r * s, 74);
    std::vector<uint16_t> y(r * s), gx(r * s);
    ASSERT_TRUE(
        SoftmaxForward(sx.data(), reinterpret_cast<bf16_t*>(y.data()), r, s, s, 0.3f, true, Cpu())
            .ok());
    ASSERT_TRUE(SoftmaxBackward(reinterpret_cast<const bf16_t*>(y.data()), sdy.data(),
                                reinterpret_cast<bf16_t*>(gx.data()), r, s, s, 0.3f, Cpu())
                    .ok());
    Tensor dsx = Up(sx), dsdy = Up(sdy), oy = Up(std::vector<uint16_t>(r * s)), hy = Up(y),
           ogx = Up(std::vector<uint16_t>(r * s));
    ASSERT_TRUE(SoftmaxForward(P<float>(dsx), P<bf16_t>(oy), r, s, s, 0.3f, true, Gpu()).ok());
    // Backward from the host's probabilities, so that only the backward's math differs.
    ASSERT_TRUE(
        SoftmaxBackward(P<bf16_t>(hy), P<float>(dsdy), P<bf16_t>(ogx), r, s, s, 0.3f, Gpu()).ok());
    ExpectAllClose(widen(Down<uint16_t>(oy)), widen(y), rtol, atol);
    ExpectAllClose(widen(Down<uint16_t>(ogx)), widen(gx), rtol, 1e-4);
  }
  {
    const AttentionShape s{2, 16, 3, 8};
    const int64_t d = s.heads * s.head_dim, tokens = s.batch * s.seq, qld = 3 * d;
    const int64_t np = s.batch * s.heads * s.seq * s.seq, m = std::max(tokens * d, np);
    const std::vector<uint16_t> qkv = testing::ToBf16(RandomFloats(tokens * qld, 75));
    std::vector<uint16_t> dout = testing::ToBf16(RandomFloats(tokens * d, 76));
    dout.resize(m);  // dout and the scores' gradient share one scratch
    const auto* hq = reinterpret_cast<const bf16_t*>(qkv.data());
    std::vector<uint16_t> probs(np), scratch = dout;
    std::vector<float> scores(np), dprobs(np), out(tokens * d), dqkv(tokens * qld);
    ASSERT_TRUE(AttentionForward(s, hq, hq + d, hq + 2 * d, qld, scores.data(),
                                 reinterpret_cast<bf16_t*>(probs.data()), out.data(), d, Cpu())
                    .ok());
    auto* hs = reinterpret_cast<bf16_t*>(scratch.data());
    ASSERT_TRUE(AttentionBackward(s, hq, hq + d, hq + 2 * d, qld,
                                  reinterpret_cast<const bf16_t*>(probs.data()), hs, d,
                                  dprobs.data(), hs, dqkv.data(), dqkv.data() + d,
                                  dqkv.data() + 2 * d, qld, Cpu())
                    .ok());
    Tensor gqkv = Up(qkv), gp = Up(std::vector<uint16_t>(np)), gscores = Up(scores),
           gdp = Up(dprobs), go = Up(out), gs = Up(dout), gd = Up(dqkv);
    const bf16_t* q = P<bf16_t>(gqkv);
    ASSERT_TRUE(AttentionForward(s, q, q + d, q + 2 * d, qld, P<float>(gscores), P<bf16_t>(gp),
                                 P<float>(go), d, Gpu())
                    .ok());
    float* dq = P<float>(gd);
    ASSERT_TRUE(AttentionBackward(s, q, q + d, q + 2 * d, qld, P<bf16_t>(gp), P<bf16_t>(gs), d,
                                  P<float>(gdp), P<bf16_t>(gs), dq, dq + d, dq + 2 * d, qld, Gpu())
                    .ok());
    ExpectAllClose(widen(Down<uint16_t>(gp)), widen(probs), rtol, atol);
    // The device's probabilities may round the other way (one bf16 ulp), which the output
    // and the gradients carry: about 1% of their largest magnitude.
    ExpectAllClose(Down<float>(go), out, 1e-2, 1e-2);
    ExpectAllClose(Down<float>(gd), dqkv, 2e-2, 2e-2);
  }
}

TEST_F(CudaTwinTest, AttentionAndEmbedding) {
  const AttentionShape s{2, 16, 3, 8};
  const int64_t d = s.heads * s.head_dim, tokens = s.batch * s.seq, n = tokens * d;
  const std::vector<float> q = RandomFloats(n, 60), k = RandomFloats(n, 61),
                           v = RandomFloats(n, 62);
  const std::vector<float> dout = RandomFloats(n, 63);
  const int64_t np = s.batch * s.heads * s.seq * s.seq;
  std::vector<float> probs(np), dprobs(np), out(n), dq(n), dk(n), dv(n);
  ASSERT_TRUE(
      AttentionForward(s, q.data(), k.data(), v.data(), d, probs.data(), out.data(), d, Cpu())
          .ok());
  ASSERT_TRUE(AttentionBackward(s, q.data(), k.data(), v.data(), d, probs.data(), dout.data(), d,
                                dprobs.data(), dq.data(), dk.data(), dv.data(), d, Cpu())
                  .ok());
  Tensor gq = Up(q), gk = Up(k), gv = Up(v), gdo = Up(dout), gp = Up(probs), gdp = Up(dprobs),
         go = Up(out), gdq = Up(dq), gdk = Up(dk), gdv = Up(dv);
  ASSERT_TRUE(AttentionForward(s, P<float>(gq), P<float>(gk), P<float>(gv), d, P<float>(gp),
                               P<float>(go), d, Gpu())
                  .ok());
  ASSERT_TRUE(AttentionBackward(s, P<float>(gq), P<float>(gk), P<float>(gv), d, P<float>(gp),
                                P<float>(gdo), d, P<float>(gdp), P<float>(gdq), P<float>(gdk),
                                P<float>(gdv), d, Gpu())
                  .ok());
  ExpectAllClose(Down<float>(go), out, 1e-4, 1e-5);
  ExpectAllClose(Down<float>(gdq), dq, 1e-4, 1e-5);
  ExpectAllClose(Down<float>(gdk), dk, 1e-4, 1e-5);
  ExpectAllClose(Down<float>(gdv), dv, 1e-4, 1e-5);

  const int64_t vocab = 50, dim = 24, m = 300;
  const std::vector<float> table = RandomFloats(vocab * dim, 64), gout = RandomFloats(m * dim, 65);
  std::vector<int32_t> ids(m);
  for (int64_t i = 0; i < m; ++i) ids[i] = static_cast<int32_t>((i * 7) % vocab);
  std::vector<float> emb(m * dim), dtable(vocab * dim, 0.0f);
  ASSERT_TRUE(EmbeddingForward(table.data(), vocab, dim, ids.data(), m, emb.data(), Cpu()).ok());
  ASSERT_TRUE(EmbeddingBackward(gout.data(), ids.data(), m, vocab, dim, dtable.data(), Cpu()).ok());
  Tensor gt = Up(table), gids = Up(ids), gemb = Up(emb), ggo = Up(gout),
         gdt = Up(std::vector<float>(vocab * dim, 0.0f));
  ASSERT_TRUE(
      EmbeddingForward(P<float>(gt), vocab, dim, P<int32_t>(gids), m, P<float>(gemb), Gpu()).ok());
  ASSERT_TRUE(
      EmbeddingBackward(P<float>(ggo), P<int32_t>(gids), m, vocab, dim, P<float>(gdt), Gpu()).ok());
  EXPECT_EQ(Down<float>(gemb), emb);
  EXPECT_EQ(Down<float>(gdt), dtable);  // same order of additions on both devices
}

TEST_F(CudaTwinTest, EmbeddingShardAndCopy2D) {
  const int64_t vocab = 50, dim = 24, m = 300, first = 20, rows = 17;
  const std::vector<float> full = RandomFloats(vocab * dim, 66), gout = RandomFloats(m * dim, 67);
  const std::vector<float> shard(full.begin() + first * dim, full.begin() + (first + rows) * dim);
  std::vector<int32_t> ids(m);
  for (int64_t i = 0; i < m; ++i) ids[i] = static_cast<int32_t>((i * 7) % vocab);
  std::vector<float> emb(m * dim), dshard(rows * dim, 0.0f);
  ASSERT_TRUE(EmbeddingShardForward(shard.data(), DType::kFloat32, first, rows, dim, ids.data(), m,
                                    emb.data(), Cpu())
                  .ok());
  ASSERT_TRUE(
      EmbeddingShardBackward(gout.data(), ids.data(), m, first, rows, dim, dshard.data(), Cpu())
          .ok());
  Tensor gt = Up(shard), gids = Up(ids), gemb = Up(std::vector<float>(m * dim, -1.0f)),
         ggo = Up(gout), gdt = Up(std::vector<float>(rows * dim, 0.0f));
  ASSERT_TRUE(EmbeddingShardForward(P<float>(gt), DType::kFloat32, first, rows, dim,
                                    P<int32_t>(gids), m, P<float>(gemb), Gpu())
                  .ok());
  ASSERT_TRUE(EmbeddingShardBackward(P<float>(ggo), P<int32_t>(gids), m, first, rows, dim,
                                     P<float>(gdt), Gpu())
                  .ok());
  EXPECT_EQ(Down<float>(gemb), emb);
  EXPECT_EQ(Down<float>(gdt), dshard);
  std::vector<uint16_t> shard_bf16(shard.size());
  for (size_t i = 0; i < shard.size(); ++i) shard_bf16[i] = FloatToBf16Bits(shard[i]);
  std::vector<float> emb_bf16(m * dim);
  ASSERT_TRUE(EmbeddingShardForward(shard_bf16.data(), DType::kBFloat16, first, rows, dim,
                                    ids.data(), m, emb_bf16.data(), Cpu())
                  .ok());
  Tensor gtb = Up(shard_bf16);
  ASSERT_TRUE(EmbeddingShardForward(P<uint16_t>(gtb), DType::kBFloat16, first, rows, dim,
                                    P<int32_t>(gids), m, P<float>(gemb), Gpu())
                  .ok());
  EXPECT_EQ(Down<float>(gemb), emb_bf16);

  const int64_t r = 33, cols = 10, ld_src = 17, ld_dst = 12;
  const std::vector<float> src = RandomFloats(r * ld_src, 68);
  std::vector<float> dst(r * ld_dst, 2.0f);
  Tensor gs = Up(src), gd = Up(dst);
  ASSERT_TRUE(
      Copy2D(src.data() + 3, ld_src, dst.data() + 2, ld_dst, r, cols, DType::kFloat32, Cpu()).ok());
  ASSERT_TRUE(
      Copy2D(P<float>(gs) + 3, ld_src, P<float>(gd) + 2, ld_dst, r, cols, DType::kFloat32, Gpu())
          .ok());
  EXPECT_EQ(Down<float>(gd), dst);
}

TEST(CudaAvailabilityTest, CreateFailsCleanlyWithoutDevice) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present: nothing to check here";
  auto r = CudaResources::Create(0);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  float x = 0;
  EXPECT_EQ(Add(&x, &x, &x, 1, KernelContext::Cuda(nullptr)).code(),
#ifdef PSZERO_HAVE_CUDA
            StatusCode::kInvalidArgument
#else
            StatusCode::kUnavailable
#endif
  );
}

}  // namespace
}  // namespace pszero::kernels
