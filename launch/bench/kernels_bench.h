// The kernel benchmark behind `pszero-bench kernels`: each memory-bound kernel of
// kernels/ on arrays of one size, as effective bandwidth (bytes the kernel must move /
// time) and as a fraction of STREAM triad measured in the same run on arrays of the same
// size; and the GEMM wrapper's GFLOP/s next to OpenBLAS's cblas_sgemm called directly.
//
// Bytes count what the kernel must read and write once (no write-allocate traffic), as
// STREAM counts triad. Each kernel runs one untimed round and `iters` timed rounds; best
// and median are reported, and ratios use the best of both sides (STREAM's convention).
// Triad (3 timed rounds) is re-measured right before each kernel, so that a ratio compares
// two measurements under the same machine load. GEMM calls alternate between the wrapper
// and cblas_sgemm (which goes first alternates too), at least 10 rounds each.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/stats.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::bench {

struct KernelBenchOptions {
  int64_t array_bytes = int64_t{64} << 20;  // per fp32 array (bf16 arrays: half)
  std::vector<int> threads = {1};
  int iters = 5;
  kernels::CpuIsa isa = kernels::CpuIsa::kAuto;
  std::vector<int64_t> gemm_sizes = {1024, 2048};  // square m = n = k
};

struct KernelBenchRow {
  std::string name;
  double bytes_per_element = 0;
  Summary seconds;
  double best_gbps = 0;
  double median_gbps = 0;
  double triad_best_gbps = 0;  // STREAM triad measured just before this kernel
  double ratio_to_triad = 0;   // best / triad_best_gbps
};

struct GemmBenchRow {
  int64_t size = 0;
  double wrapper_gflops = 0;   // best
  double openblas_gflops = 0;  // best
  double ratio = 0;            // wrapper / openblas
};

struct KernelBenchRun {
  int threads = 1;
  double triad_best_gbps = 0;  // first triad of the run, for the table's reference line
  double triad_median_gbps = 0;
  std::vector<KernelBenchRow> kernels;
  std::vector<GemmBenchRow> gemm;
};

struct KernelBenchResult {
  KernelBenchOptions options;
  int64_t elements = 0;  // per array
  std::vector<KernelBenchRun> runs;
};

Result<KernelBenchResult> RunKernelBench(const KernelBenchOptions& options);

// One memory-bound kernel call, as the benchmarks time it.
struct KernelCase {
  std::string name;
  double bytes_per_element = 0;  // bytes the kernel must move per element
  std::function<Status()> fn;
};

// The memory-bound kernels both benchmarks (host and CUDA) run: on 9 arrays of n fp32
// elements on ctx.device (arrays[0..3] are the optimizers' param, grad, m, v); `scalar`
// is a float on ctx.device for reductions. The arrays must outlive the cases.
std::vector<KernelCase> MemoryBoundKernelCases(const std::vector<void*>& arrays, int64_t n,
                                               const kernels::KernelContext& ctx, float* scalar);

nlohmann::json ToJson(const KernelBenchResult& result);

// The same memory-bound kernels on CUDA device 0, timed with CUDA events on the kernels'
// stream; the yardstick is a device-to-device cudaMemcpyAsync of one array (counted as
// read + write), measured right before each kernel. GEMM: the wrapper next to
// cublasGemmEx called directly, fp32 and bf16 inputs, interleaved call by call.
// options.threads and options.isa do not apply. kUnavailable without a CUDA device.
struct CudaGemmBenchRow {
  int64_t size = 0;
  std::string dtype;          // fp32 | bf16 (inputs; fp32 output and compute)
  double wrapper_tflops = 0;  // best
  double cublas_tflops = 0;   // best
  double ratio = 0;           // wrapper / cublas
};

struct CudaKernelBenchResult {
  KernelBenchOptions options;
  int64_t elements = 0;
  std::string device_name;
  double copy_best_gbps = 0;  // first copy of the run, for the table's reference line
  double copy_median_gbps = 0;
  std::vector<KernelBenchRow> kernels;  // triad_* fields hold the adjacent copy
  std::vector<CudaGemmBenchRow> gemm;
};

Result<CudaKernelBenchResult> RunCudaKernelBench(const KernelBenchOptions& options);

nlohmann::json ToJson(const CudaKernelBenchResult& result);

}  // namespace pszero::bench
