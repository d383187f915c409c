// `pszero-bench kernels`: the kernel table (1 thread and all threads), or JSON with --json.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>

#include "common/report.h"
#include "launch/bench/command.h"
#include "launch/bench/kernels_bench.h"
#include "launch/bench/stream.h"

namespace pszero::bench {

namespace {

struct KernelsFlags {
  int threads = 1;
  int iters = 5;
  double array_mb = 64;
  std::string isa = "auto";
  std::string device = "host";
  std::vector<int64_t> gemm_sizes = {1024, 2048};
  bool json = false;
  std::string output;
};

int RunCudaKernelsCommand(const KernelsFlags& flags, const KernelBenchOptions& options) {
  Result<CudaKernelBenchResult> r = RunCudaKernelBench(options);
  if (!r.ok()) {
    std::cerr << "pszero-bench kernels: " << r.status().ToString() << "\n";
    return 1;
  }
  const nlohmann::json doc = ToJson(*r);
  if (flags.json) {
    std::cout << doc.dump(2) << "\n";
  } else {
    std::printf(
        "# pszero-bench kernels --device cuda: %s, fp32 arrays of %lld bytes, %d timed "
        "iterations (CUDA events)\n",
        r->device_name.c_str(), static_cast<long long>(r->options.array_bytes), r->options.iters);
    std::printf(
        "# copy = device-to-device cudaMemcpyAsync of one array (read + write), measured "
        "just before the kernel; vs copy = best / copy\n");
    std::printf("# %-24s  %6s  %10s  %11s  %10s  %8s\n", "kernel", "B/elem", "best GB/s",
                "median GB/s", "copy GB/s", "vs copy");
    std::printf("  %-24s  %6d  %10.1f  %11.1f  %10.1f  %8.2f\n", "cudaMemcpy d2d", 8,
                r->copy_best_gbps, r->copy_median_gbps, r->copy_best_gbps, 1.0);
    for (const auto& k : r->kernels) {
      std::printf("  %-24s  %6.0f  %10.1f  %11.1f  %10.1f  %8.2f\n", k.name.c_str(),
                  k.bytes_per_element, k.best_gbps, k.median_gbps, k.triad_best_gbps,
                  k.ratio_to_triad);
    }
    std::printf("# %-6s  %-12s  %16s  %15s  %6s\n", "dtype", "gemm m=n=k", "wrapper TFLOP/s",
                "cublas TFLOP/s", "ratio");
    for (const auto& g : r->gemm) {
      std::printf("  %-6s  %-12lld  %16.1f  %15.1f  %6.3f\n", g.dtype.c_str(),
                  static_cast<long long>(g.size), g.wrapper_tflops, g.cublas_tflops, g.ratio);
    }
  }
  if (!flags.output.empty()) {
    Status s = WriteJsonAtomic(flags.output, doc);
    if (!s.ok()) {
      std::cerr << "pszero-bench kernels: " << s.ToString() << "\n";
      return 1;
    }
  }
  return 0;
}

int RunKernelsCommand(const KernelsFlags& flags) {
  KernelBenchOptions options;
  options.array_bytes = static_cast<int64_t>(flags.array_mb * (1 << 20));
  options.threads = {1};
  if (flags.threads > 1) options.threads.push_back(flags.threads);
  options.iters = flags.iters;
  options.gemm_sizes = flags.gemm_sizes;
  for (kernels::CpuIsa isa : {kernels::CpuIsa::kAuto, kernels::CpuIsa::kScalar,
                              kernels::CpuIsa::kAvx2, kernels::CpuIsa::kAvx512}) {
    if (kernels::CpuIsaName(isa) == flags.isa) options.isa = isa;
  }
  if (flags.device == "cuda") return RunCudaKernelsCommand(flags, options);
  Result<KernelBenchResult> r = RunKernelBench(options);
  if (!r.ok()) {
    std::cerr << "pszero-bench kernels: " << r.status().ToString() << "\n";
    return 1;
  }
  const nlohmann::json doc = ToJson(*r);
  if (flags.json) {
    std::cout << doc.dump(2) << "\n";
  } else {
    std::printf(
        "# pszero-bench kernels: fp32 arrays of %lld bytes (%lld elements; bf16 arrays half "
        "that), last-level cache %lld bytes, ISA %s, %d timed iterations\n",
        static_cast<long long>(r->options.array_bytes), static_cast<long long>(r->elements),
        static_cast<long long>(LastLevelCacheBytes()), doc["isa"].get<std::string>().c_str(),
        r->options.iters);
    std::printf(
        "# GB/s = bytes the kernel must move / time; triad = best STREAM triad measured just "
        "before the kernel (same array size, same threads); vs triad = best / triad\n");
    std::printf("# %7s  %-24s  %6s  %10s  %11s  %10s  %8s\n", "threads", "kernel", "B/elem",
                "best GB/s", "median GB/s", "triad GB/s", "vs triad");
    for (const auto& run : r->runs) {
      std::printf("  %7d  %-24s  %6d  %10.2f  %11.2f  %10.2f  %8.2f\n", run.threads, "stream triad",
                  24, run.triad_best_gbps, run.triad_median_gbps, run.triad_best_gbps, 1.0);
      for (const auto& k : run.kernels) {
        std::printf("  %7d  %-24s  %6.0f  %10.2f  %11.2f  %10.2f  %8.2f\n", run.threads,
                    k.name.c_str(), k.bytes_per_element, k.best_gbps, k.median_gbps,
                    k.triad_best_gbps, k.ratio_to_triad);
      }
    }
    std::printf("# %7s  %-24s  %16s  %17s  %6s\n", "threads", "sgemm m=n=k", "wrapper GFLOP/s",
                "openblas GFLOP/s", "ratio");
    for (const auto& run : r->runs) {
      for (const auto& g : run.gemm) {
        std::printf("  %7d  %-24lld  %16.1f  %17.1f  %6.3f\n", run.threads,
                    static_cast<long long>(g.size), g.wrapper_gflops, g.openblas_gflops, g.ratio);
      }
    }
  }
  if (!flags.output.empty()) {
    Status s = WriteJsonAtomic(flags.output, doc);
    if (!s.ok()) {
      std::cerr << "pszero-bench kernels: " << s.ToString() << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

BenchCommand AddKernelsCommand(CLI::App& root) {
  auto flags = std::make_shared<KernelsFlags>();
  flags->threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CLI::App* app = root.add_subcommand(
      "kernels", "Kernel bandwidth vs STREAM triad (1 thread and all), GEMM vs OpenBLAS");
  app->add_option("--threads", flags->threads,
                  "All-threads count (1 thread is always measured; default: all cores)")
      ->default_str("")  // --help must not depend on the machine (docs/flags.md)
      ->check(CLI::Range(1, 4096));
  app->add_option("--iters", flags->iters, "Timed iterations per kernel")
      ->check(CLI::Range(1, 100000));
  app->add_option("--array-mb", flags->array_mb, "MiB per fp32 array")
      ->check(CLI::Range(0.001, 65536.0))
      ->check(FiniteNumber());
  app->add_option("--device", flags->device,
                  "host: CPU kernels vs STREAM triad; cuda: CUDA kernels on device 0 vs "
                  "device-to-device copy, GEMM vs cuBLAS")
      ->check(CLI::IsMember({"host", "cuda"}));
  app->add_option("--isa", flags->isa, "Host code path")
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "avx512"}));
  app->add_option("--gemm-sizes", flags->gemm_sizes, "Square sgemm sizes, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(int64_t{1}, int64_t{16384}));
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  app->add_option("--output", flags->output, "Also write the JSON to this file (atomically)");
  return {app, [flags] { return RunKernelsCommand(*flags); }};
}

}  // namespace pszero::bench
