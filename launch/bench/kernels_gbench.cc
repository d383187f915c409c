// kernels_gbench: Google Benchmark over the kernels of kernels/ at several sizes (from
// L1-resident to beyond the last-level cache), one thread, best ISA; bytes/s counts the
// bytes each kernel must move, as `pszero-bench kernels` does. Not run by ctest:
//   build/bin/kernels_gbench --benchmark_filter=AdamW
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <vector>

#include "kernels/cast.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/layernorm.h"
#include "kernels/loss.h"
#include "kernels/optimizer.h"
#include "kernels/reduce.h"
#include "kernels/softmax.h"

namespace pszero::kernels {
namespace {

const KernelContext kCtx = KernelContext::Host(1);

std::vector<float> Filled(int64_t n, float v) { return std::vector<float>(n, v); }

void Report(benchmark::State& state, double bytes_per_iter) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter) *
                          static_cast<int64_t>(state.iterations()));
}

void BM_AdamW(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto p = Filled(n, 1), g = Filled(n, 0.1f), m = Filled(n, 0), v = Filled(n, 0);
  AdamWParams hp;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        AdamW(hp, p.data(), g.data(), DType::kFloat32, m.data(), v.data(), nullptr, n, kCtx));
  }
  Report(state, 28.0 * n);
}

void BM_Sgd(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto p = Filled(n, 1), g = Filled(n, 0.1f), b = Filled(n, 0);
  SgdParams hp;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        Sgd(hp, p.data(), g.data(), DType::kFloat32, b.data(), nullptr, n, kCtx));
  }
  Report(state, 20.0 * n);
}

void BM_SumFp32(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int k = static_cast<int>(state.range(1));
  std::vector<std::vector<float>> in(k, Filled(n, 1));
  std::vector<const void*> ptrs;
  for (auto& x : in) ptrs.push_back(x.data());
  auto out = Filled(n, 0);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        Sum(ptrs, DType::kFloat32, out.data(), DType::kFloat32, n, false, kCtx));
  }
  Report(state, 4.0 * (k + 1) * n);
}

void BM_SumBf16(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int k = static_cast<int>(state.range(1));
  std::vector<std::vector<uint16_t>> in(k, std::vector<uint16_t>(n, 0x3f80));
  std::vector<const void*> ptrs;
  for (auto& x : in) ptrs.push_back(x.data());
  std::vector<uint16_t> out(n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        Sum(ptrs, DType::kBFloat16, out.data(), DType::kBFloat16, n, false, kCtx));
  }
  Report(state, 2.0 * (k + 1) * n);
}

void BM_SquaredNorm(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto x = Filled(n, 0.5f);
  float out = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(SquaredNorm(x.data(), DType::kFloat32, n, &out, kCtx));
  }
  Report(state, 4.0 * n);
}

void BM_CastToBf16(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto x = Filled(n, 0.3f);
  std::vector<uint16_t> out(n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        Cast(x.data(), DType::kFloat32, out.data(), DType::kBFloat16, n, kCtx));
  }
  Report(state, 6.0 * n);
}

void BM_CastToFp16(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto x = Filled(n, 0.3f);
  std::vector<uint16_t> out(n);
  for (auto _ : state) {
    benchmark::DoNotOptimize(Cast(x.data(), DType::kFloat32, out.data(), DType::kFloat16, n, kCtx));
  }
  Report(state, 6.0 * n);
}

void BM_Gelu(benchmark::State& state) {
  const int64_t n = state.range(0);
  auto x = Filled(n, 0.3f), y = Filled(n, 0);
  for (auto _ : state) benchmark::DoNotOptimize(GeluForward(x.data(), y.data(), n, kCtx));
  Report(state, 8.0 * n);
}

// Row ops at transformer shapes: [rows, cols].
void BM_LayerNorm(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1), n = rows * cols;
  auto x = Filled(n, 0.3f), y = Filled(n, 0), g = Filled(cols, 1), b = Filled(cols, 0);
  std::vector<float> mean(rows), rstd(rows);
  for (auto _ : state) {
    benchmark::DoNotOptimize(LayerNormForward(x.data(), cols, g.data(), b.data(), 1e-5f, y.data(),
                                              cols, mean.data(), rstd.data(), rows, cols, kCtx));
  }
  Report(state, 8.0 * n);
}

void BM_CausalSoftmax(benchmark::State& state) {
  const int64_t seq = state.range(0), rows = 12 * seq, n = rows * seq;
  auto x = Filled(n, 0.3f);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        SoftmaxForward(x.data(), x.data(), rows, seq, seq, 0.125f, true, kCtx));
  }
  Report(state, 8.0 * n);
}

void BM_CrossEntropy(benchmark::State& state) {
  const int64_t rows = state.range(0), vocab = state.range(1);
  auto x = Filled(rows * vocab, 0.3f);
  std::vector<int32_t> t(rows, 1);
  std::vector<float> lse(rows);
  float loss = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        CrossEntropyForward(x.data(), vocab, t.data(), rows, vocab, lse.data(), &loss, kCtx));
  }
  Report(state, 4.0 * rows * vocab);
}

void BM_GemmWrapper(benchmark::State& state) {
  const int64_t s = state.range(0);
  auto a = Filled(s * s, 0.5f), b = Filled(s * s, 0.25f), c = Filled(s * s, 0);
  for (auto _ : state) {
    benchmark::DoNotOptimize(Gemm(false, false, s, s, s, 1.0f, a.data(), s, b.data(), s, 0.0f,
                                  c.data(), s, DType::kFloat32, kCtx));
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * s * s * s * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

void BM_SgemmDirect(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto a = Filled(int64_t{n} * n, 0.5f), b = Filled(int64_t{n} * n, 0.25f),
       c = Filled(int64_t{n} * n, 0);
  openblas_set_num_threads(1);
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * n * n * n * state.iterations() / 1e9, benchmark::Counter::kIsRate);
}

// 4K elements (L1), 256K (L2), 4M (L3 / DRAM), 16M (64 MiB fp32 arrays).
#define PSZERO_STREAM_SIZES ->Arg(1 << 12)->Arg(1 << 18)->Arg(1 << 22)->Arg(1 << 24)

BENCHMARK(BM_AdamW) PSZERO_STREAM_SIZES;
BENCHMARK(BM_Sgd) PSZERO_STREAM_SIZES;
BENCHMARK(BM_SumFp32)->ArgsProduct({{1 << 12, 1 << 18, 1 << 22, 1 << 24}, {2, 4, 8}});
BENCHMARK(BM_SumBf16)->ArgsProduct({{1 << 12, 1 << 18, 1 << 22, 1 << 24}, {4}});
BENCHMARK(BM_SquaredNorm) PSZERO_STREAM_SIZES;
BENCHMARK(BM_CastToBf16) PSZERO_STREAM_SIZES;
BENCHMARK(BM_CastToFp16) PSZERO_STREAM_SIZES;
BENCHMARK(BM_Gelu) PSZERO_STREAM_SIZES;
BENCHMARK(BM_LayerNorm)->Args({16, 1024})->Args({2048, 768});
BENCHMARK(BM_CausalSoftmax)->Arg(128)->Arg(256);
BENCHMARK(BM_CrossEntropy)->Args({1024, 256})->Args({1024, 50257});
BENCHMARK(BM_GemmWrapper)->Arg(256)->Arg(1024);
BENCHMARK(BM_SgemmDirect)->Arg(256)->Arg(1024);

}  // namespace
}  // namespace pszero::kernels

BENCHMARK_MAIN();
