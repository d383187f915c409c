// GEMM wrappers against a double triple loop: every transpose combination, leading
// dimensions wider than the matrices, alpha/beta, strided batches, fp32 and bf16 inputs.
#include "kernels/gemm.h"

#include <gtest/gtest.h>

#include "common/half.h"
#include "tests/kernels/kernel_test_util.h"

namespace pszero::kernels {
namespace {

using testing::RandomFloats;

struct Case {
  int64_t m, n, k, batch;
};

void RunGemm(DType dtype, int threads) {
  const float alpha = 0.75f, beta = -0.5f;
  for (Case cs : {Case{1, 1, 1, 1}, Case{7, 5, 3, 1}, Case{33, 17, 65, 3}, Case{4, 0, 3, 1},
                  Case{3, 4, 0, 2}, Case{64, 96, 128, 2}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE(std::to_string(cs.m) + "x" + std::to_string(cs.n) + "x" +
                     std::to_string(cs.k) + " ta=" + std::to_string(ta) +
                     " tb=" + std::to_string(tb));
        const int64_t a_rows = ta ? cs.k : cs.m, a_cols = ta ? cs.m : cs.k;
        const int64_t b_rows = tb ? cs.n : cs.k, b_cols = tb ? cs.k : cs.n;
        const int64_t lda = a_cols + 2, ldb = b_cols + 1, ldc = cs.n + 3;
        const int64_t sa = a_rows * lda + 5, sb = b_rows * ldb + 1, sc = cs.m * ldc + 2;
        std::vector<float> a = RandomFloats(sa * cs.batch, 1), b = RandomFloats(sb * cs.batch, 2);
        std::vector<uint16_t> ab = testing::ToBf16(a), bb = testing::ToBf16(b);
        if (dtype == DType::kBFloat16) {  // the reference multiplies what the kernel reads
          for (size_t i = 0; i < a.size(); ++i) a[i] = Bf16BitsToFloat(ab[i]);
          for (size_t i = 0; i < b.size(); ++i) b[i] = Bf16BitsToFloat(bb[i]);
        }
        const std::vector<float> c0 = RandomFloats(sc * cs.batch, 3);
        std::vector<float> c = c0;
        const void* ap = dtype == DType::kBFloat16 ? static_cast<const void*>(ab.data()) : a.data();
        const void* bp = dtype == DType::kBFloat16 ? static_cast<const void*>(bb.data()) : b.data();
        ASSERT_TRUE(GemmStridedBatched(ta, tb, cs.m, cs.n, cs.k, alpha, ap, lda, bp, ldb, beta,
                                       c.data(), ldc, {cs.batch, sa, sb, sc}, dtype,
                                       KernelContext::Host(threads))
                        .ok());
        for (int64_t p = 0; p < cs.batch; ++p) {
          for (int64_t i = 0; i < cs.m; ++i) {
            for (int64_t j = 0; j < cs.n; ++j) {
              double acc = 0;
              for (int64_t l = 0; l < cs.k; ++l) {
                const double av = ta ? a[p * sa + l * lda + i] : a[p * sa + i * lda + l];
                const double bv = tb ? b[p * sb + j * ldb + l] : b[p * sb + l * ldb + j];
                acc += av * bv;
              }
              const int64_t e = p * sc + i * ldc + j;
              const double want = alpha * acc + beta * c0[e];
              // fp32 accumulation of k products of magnitude <= 1.
              ASSERT_NEAR(c[e], want, 1e-6 * (cs.k + 2)) << p << "," << i << "," << j;
            }
          }
          // Padding between rows and matrices is untouched.
          for (int64_t i = 0; i < cs.m; ++i) {
            for (int64_t j = cs.n; j < ldc; ++j)
              ASSERT_EQ(c[p * sc + i * ldc + j], c0[p * sc + i * ldc + j]);
          }
        }
      }
    }
  }
}

TEST(GemmTest, Fp32OneThread) { RunGemm(DType::kFloat32, 1); }
TEST(GemmTest, Fp32TwoThreads) { RunGemm(DType::kFloat32, 2); }
TEST(GemmTest, Bf16Inputs) { RunGemm(DType::kBFloat16, 1); }

TEST(GemmTest, PlainGemmEqualsBatchOfOne) {
  const std::vector<float> a = RandomFloats(6 * 4, 1), b = RandomFloats(4 * 5, 2);
  std::vector<float> c1(30), c2(30);
  ASSERT_TRUE(Gemm(false, false, 6, 5, 4, 1.0f, a.data(), 4, b.data(), 5, 0.0f, c1.data(), 5,
                   DType::kFloat32, KernelContext::Host())
                  .ok());
  ASSERT_TRUE(GemmStridedBatched(false, false, 6, 5, 4, 1.0f, a.data(), 4, b.data(), 5, 0.0f,
                                 c2.data(), 5, {1, 0, 0, 0}, DType::kFloat32, KernelContext::Host())
                  .ok());
  EXPECT_EQ(c1, c2);
}

TEST(GemmTest, RejectsBadLeadingDimension) {
  float x[16] = {};
  EXPECT_EQ(Gemm(false, false, 2, 2, 4, 1.0f, x, 3, x, 2, 0.0f, x, 2, DType::kFloat32,
                 KernelContext::Host())
                .code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(Gemm(false, false, 2, 2, 2, 1.0f, x, 2, x, 2, 0.0f, x, 2, DType::kFloat16,
                 KernelContext::Host())
                .code(),
            StatusCode::kInvalidArgument);
}

TEST(ContextTest, IsaNamesAndAvailability) {
  EXPECT_EQ(CpuIsaName(CpuIsa::kAvx512), "avx512");
  EXPECT_TRUE(CpuIsaAvailable(CpuIsa::kScalar));
  EXPECT_NE(DetectCpuIsa(), CpuIsa::kAuto);
  EXPECT_TRUE(CpuIsaAvailable(DetectCpuIsa()));
  EXPECT_EQ(AvailableCpuIsas().front(), CpuIsa::kScalar);
  std::printf("this CPU runs: ");
  for (CpuIsa isa : AvailableCpuIsas()) std::printf("%s ", std::string(CpuIsaName(isa)).c_str());
  std::printf("\n");
}

}  // namespace
}  // namespace pszero::kernels
