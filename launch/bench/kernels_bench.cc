#include "launch/bench/kernels_bench.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <functional>
#include <memory>

#include "common/report.h"
#include "common/tensor.h"
#include "kernels/cast.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/optimizer.h"
#include "kernels/reduce.h"
#include "launch/bench/stream.h"

namespace pszero::bench {

namespace {

// One aligned, untracked host array, first-touched by `threads` threads.
class HostArray {
 public:
  static Result<HostArray> Make(int64_t bytes, int threads, float value) {
    PSZERO_ASSIGN_OR_RETURN(
        auto storage, Storage::Allocate(bytes, Device::kHost, MemoryCategory::kOther, nullptr));
    HostArray a;
    a.storage_ = std::move(storage);
    auto* p = static_cast<float*>(a.storage_->data());
    const int64_t n = bytes / static_cast<int64_t>(sizeof(float));
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] = value + static_cast<float>(i % 1024) * 1e-4f;
    return a;
  }
  float* f32() const { return static_cast<float*>(storage_->data()); }
  void* data() const { return storage_->data(); }

 private:
  std::shared_ptr<Storage> storage_;
};

struct Timing {
  Summary seconds;
  Status status;
};

Timing TimeIt(int iters, const std::function<Status()>& fn) {
  Timing t;
  std::vector<double> samples;
  for (int i = 0; i <= iters; ++i) {
    Stopwatch sw;
    t.status = fn();
    const double s = sw.ElapsedSeconds();
    if (!t.status.ok()) return t;
    if (i > 0) samples.push_back(s);
  }
  t.seconds = Summarize(samples);
  return t;
}

Result<std::vector<GemmBenchRow>> RunGemm(const KernelBenchOptions& o, int threads) {
  std::vector<GemmBenchRow> rows;
  const kernels::KernelContext ctx = kernels::KernelContext::Host(threads, o.isa);
  for (int64_t s : o.gemm_sizes) {
    const int64_t bytes = s * s * static_cast<int64_t>(sizeof(float));
    PSZERO_ASSIGN_OR_RETURN(HostArray a, HostArray::Make(bytes, threads, 0.5f));
    PSZERO_ASSIGN_OR_RETURN(HostArray b, HostArray::Make(bytes, threads, 0.25f));
    PSZERO_ASSIGN_OR_RETURN(HostArray c, HostArray::Make(bytes, threads, 0.0f));
    const int n = static_cast<int>(s);
    // Interleave the two, alternating which goes first, so that both see the same machine
    // noise; at least 10 rounds each, the best counts.
    auto run_wrapper = [&]() -> Result<double> {
      Stopwatch sw;
      PSZERO_RETURN_IF_ERROR(kernels::Gemm(false, false, s, s, s, 1.0f, a.f32(), s, b.f32(), s,
                                           0.0f, c.f32(), s, DType::kFloat32, ctx));
      return sw.ElapsedSeconds();
    };
    auto run_direct = [&] {
      Stopwatch sw;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.f32(), n, b.f32(), n,
                  0.0f, c.f32(), n);
      return sw.ElapsedSeconds();
    };
    std::vector<double> wrapper, direct;
    openblas_set_num_threads(threads);  // as a direct caller would, once
    const int rounds = std::max(o.iters, 10);
    for (int i = 0; i <= rounds; ++i) {
      double tw = 0, td = 0;
      if (i % 2 == 0) {
        PSZERO_ASSIGN_OR_RETURN(tw, run_wrapper());
        td = run_direct();
      } else {
        td = run_direct();
        PSZERO_ASSIGN_OR_RETURN(tw, run_wrapper());
      }
      if (i > 0) {
        wrapper.push_back(tw);
        direct.push_back(td);
      }
    }
    const double flops = 2.0 * static_cast<double>(s) * s * s;
    GemmBenchRow row;
    row.size = s;
    row.wrapper_gflops = flops / Summarize(wrapper).min / 1e9;
    row.openblas_gflops = flops / Summarize(direct).min / 1e9;
    row.ratio = row.wrapper_gflops / row.openblas_gflops;
    rows.push_back(row);
  }
  return rows;
}

Result<KernelBenchRun> RunOne(const KernelBenchOptions& o, int64_t n, int threads) {
  KernelBenchRun run;
  run.threads = threads;
  StreamOptions so;
  so.array_bytes = o.array_bytes;
  so.threads = threads;
  so.iters = 3;
  // Triad is measured right before each kernel (the machine is shared and its load
  // drifts), and once more up front for the table's reference line.
  auto triad = [&]() -> Result<const StreamKernelResult> {
    PSZERO_ASSIGN_OR_RETURN(StreamResult stream, RunStream(so));
    if (!stream.valid) return Status::Internal("STREAM validation failed");
    return *stream.Find("triad");
  };
  PSZERO_ASSIGN_OR_RETURN(const StreamKernelResult first, triad());
  run.triad_best_gbps = first.best_gbps;
  run.triad_median_gbps = first.median_gbps;

  const int64_t bytes = n * static_cast<int64_t>(sizeof(float));
  std::vector<HostArray> arr;
  for (int i = 0; i < 9; ++i) {
    PSZERO_ASSIGN_OR_RETURN(HostArray a, HostArray::Make(bytes, threads, 0.01f * (i + 1)));
    arr.push_back(std::move(a));
  }
  const kernels::KernelContext ctx = kernels::KernelContext::Host(threads, o.isa);
  float scalar = 0;
  std::vector<void*> pointers;
  for (const HostArray& a : arr) pointers.push_back(a.data());
  const std::vector<KernelCase> cases = MemoryBoundKernelCases(pointers, n, ctx, &scalar);
  for (const KernelCase& c : cases) {
    PSZERO_ASSIGN_OR_RETURN(const StreamKernelResult adjacent, triad());
    Timing t = TimeIt(o.iters, c.fn);
    if (!t.status.ok()) return t.status.WithContext(c.name);
    KernelBenchRow row;
    row.name = c.name;
    row.bytes_per_element = c.bytes_per_element;
    row.seconds = t.seconds;
    const double moved = c.bytes_per_element * static_cast<double>(n);
    row.best_gbps = moved / t.seconds.min / 1e9;
    row.median_gbps = moved / t.seconds.median / 1e9;
    row.triad_best_gbps = adjacent.best_gbps;
    row.ratio_to_triad = row.best_gbps / adjacent.best_gbps;
    run.kernels.push_back(std::move(row));
  }
  arr.clear();
  PSZERO_ASSIGN_OR_RETURN(run.gemm, RunGemm(o, threads));
  return run;
}

}  // namespace

std::vector<KernelCase> MemoryBoundKernelCases(const std::vector<void*>& arrays, int64_t n,
                                               const kernels::KernelContext& ctx, float* scalar) {
  auto F = [](void* p) { return static_cast<float*>(p); };
  auto ptrs = [arrays](int k) {
    std::vector<const void*> p;
    for (int j = 0; j < k; ++j) p.push_back(arrays[1 + j]);
    return p;
  };
  const std::vector<const void*> in2 = ptrs(2), in4 = ptrs(4), in8 = ptrs(8);
  kernels::AdamWParams adam;
  kernels::SgdParams sgd;
  sgd.nesterov = true;
  // arrays[0..3]: p, g, m, v for the optimizers; arrays[4] takes the bf16 copy.
  return {
      {"adamw fp32", 28,
       [=] {
         return kernels::AdamW(adam, F(arrays[0]), F(arrays[1]), DType::kFloat32, F(arrays[2]),
                               F(arrays[3]), nullptr, n, ctx);
       }},
      {"adamw fp32 + bf16 copy", 30,
       [=] {
         return kernels::AdamW(adam, F(arrays[0]), F(arrays[1]), DType::kFloat32, F(arrays[2]),
                               F(arrays[3]), static_cast<bf16_t*>(arrays[4]), n, ctx);
       }},
      {"adamw bf16 grad", 26,
       [=] {
         return kernels::AdamW(adam, F(arrays[0]), arrays[5], DType::kBFloat16, F(arrays[2]),
                               F(arrays[3]), nullptr, n, ctx);
       }},
      {"sgd nesterov", 20,
       [=] {
         return kernels::Sgd(sgd, F(arrays[0]), F(arrays[1]), DType::kFloat32, F(arrays[2]),
                             nullptr, n, ctx);
       }},
      {"sum k=2 fp32", 12,
       [=] {
         return kernels::Sum(in2, DType::kFloat32, arrays[0], DType::kFloat32, n, false, ctx);
       }},
      {"sum k=4 fp32", 20,
       [=] {
         return kernels::Sum(in4, DType::kFloat32, arrays[0], DType::kFloat32, n, false, ctx);
       }},
      {"sum k=8 fp32", 36,
       [=] {
         return kernels::Sum(in8, DType::kFloat32, arrays[0], DType::kFloat32, n, false, ctx);
       }},
      {"accumulate fp32", 12,
       [=] {
         return kernels::Accumulate(arrays[1], DType::kFloat32, arrays[0], DType::kFloat32, n, ctx);
       }},
      {"sum k=4 bf16->bf16", 10,
       [=] {
         return kernels::Sum(in4, DType::kBFloat16, arrays[0], DType::kBFloat16, n, false, ctx);
       }},
      {"squared norm fp32", 4,
       [=] { return kernels::SquaredNorm(arrays[1], DType::kFloat32, n, scalar, ctx); }},
      {"cast fp32->bf16", 6,
       [=] {
         return kernels::Cast(arrays[1], DType::kFloat32, arrays[0], DType::kBFloat16, n, ctx);
       }},
      {"cast bf16->fp32", 6,
       [=] {
         return kernels::Cast(arrays[1], DType::kBFloat16, arrays[0], DType::kFloat32, n, ctx);
       }},
      {"cast fp32->fp16", 6,
       [=] {
         return kernels::Cast(arrays[1], DType::kFloat32, arrays[0], DType::kFloat16, n, ctx);
       }},
      {"residual add", 12,
       [=] { return kernels::Add(F(arrays[1]), F(arrays[2]), F(arrays[0]), n, ctx); }},
      {"gelu forward", 8, [=] { return kernels::GeluForward(F(arrays[1]), F(arrays[0]), n, ctx); }},
  };
}

Result<KernelBenchResult> RunKernelBench(const KernelBenchOptions& options) {
  KernelBenchResult result;
  result.options = options;
  if (options.iters < 1) return Status::InvalidArgument("--iters must be at least 1");
  if (options.array_bytes < 64) return Status::InvalidArgument("--array-mb too small");
  if (!kernels::CpuIsaAvailable(options.isa)) {
    return Status::InvalidArgument("this CPU does not run the " +
                                   std::string(kernels::CpuIsaName(options.isa)) + " code path");
  }
  result.elements = options.array_bytes / static_cast<int64_t>(sizeof(float));
  result.options.array_bytes = result.elements * static_cast<int64_t>(sizeof(float));
  for (int threads : options.threads) {
    PSZERO_ASSIGN_OR_RETURN(KernelBenchRun run, RunOne(result.options, result.elements, threads));
    result.runs.push_back(std::move(run));
  }
  return result;
}

nlohmann::json ToJson(const KernelBenchResult& r) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& run : r.runs) {
    nlohmann::json ks = nlohmann::json::array(), gs = nlohmann::json::array();
    for (const auto& k : run.kernels) {
      ks.push_back({{"name", k.name},
                    {"bytes_per_element", k.bytes_per_element},
                    {"best_gbps", k.best_gbps},
                    {"median_gbps", k.median_gbps},
                    {"triad_best_gbps", k.triad_best_gbps},
                    {"ratio_to_triad", k.ratio_to_triad},
                    {"seconds", pszero::ToJson(k.seconds)}});
    }
    for (const auto& g : run.gemm) {
      gs.push_back({{"m", g.size},
                    {"n", g.size},
                    {"k", g.size},
                    {"wrapper_gflops", g.wrapper_gflops},
                    {"openblas_gflops", g.openblas_gflops},
                    {"ratio", g.ratio}});
    }
    runs.push_back({{"threads", run.threads},
                    {"triad_best_gbps", run.triad_best_gbps},
                    {"triad_median_gbps", run.triad_median_gbps},
                    {"kernels", ks},
                    {"gemm", gs}});
  }
  const kernels::CpuIsa isa =
      r.options.isa == kernels::CpuIsa::kAuto ? kernels::DetectCpuIsa() : r.options.isa;
  return {{"benchmark", "kernels"},
          {"isa", std::string(kernels::CpuIsaName(isa))},
          {"array_bytes", r.options.array_bytes},
          {"elements", r.elements},
          {"iters", r.options.iters},
          {"llc_bytes", LastLevelCacheBytes()},
          {"unit", "GB/s = 1e9 bytes per second; GFLOP/s = 1e9 flops per second"},
          {"runs", runs}};
}

}  // namespace pszero::bench
