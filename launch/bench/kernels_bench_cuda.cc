#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/report.h"
#include "common/tensor.h"
#include "kernels/cuda_resources.h"
#include "kernels/gemm.h"
#include "launch/bench/kernels_bench.h"

#ifdef PSZERO_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

namespace pszero::bench {

#ifdef PSZERO_HAVE_CUDA

namespace {

Status CudaCheck(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    return Status::Internal(std::string(what) + ": " + cudaGetErrorString(err));
  return Status::Ok();
}

// Two events bracketing work enqueued on one stream.
class EventTimer {
 public:
  explicit EventTimer(cudaStream_t stream) : stream_(stream) {
    cudaEventCreate(&start_);
    cudaEventCreate(&stop_);
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;

  // One untimed round, then `iters` timed ones; seconds per round.
  Result<Summary> Time(int iters, const std::function<Status()>& fn) {
    std::vector<double> samples;
    for (int i = 0; i <= iters; ++i) {
      PSZERO_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(start_, stream_), "cudaEventRecord"));
      PSZERO_RETURN_IF_ERROR(fn());
      PSZERO_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(stop_, stream_), "cudaEventRecord"));
      PSZERO_RETURN_IF_ERROR(CudaCheck(cudaEventSynchronize(stop_), "cudaEventSynchronize"));
      float ms = 0;
      PSZERO_RETURN_IF_ERROR(CudaCheck(cudaEventElapsedTime(&ms, start_, stop_), "elapsed"));
      if (i > 0) samples.push_back(ms / 1e3);
    }
    return Summarize(samples);
  }

 private:
  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
};

Result<std::shared_ptr<Storage>> DeviceZeros(int64_t bytes) {
  PSZERO_ASSIGN_OR_RETURN(auto s,
                          Storage::Allocate(bytes, Device::kCuda, MemoryCategory::kOther, nullptr));
  PSZERO_RETURN_IF_ERROR(CudaCheck(cudaMemset(s->data(), 0, static_cast<size_t>(bytes)), "memset"));
  return s;
}

}  // namespace

Result<CudaKernelBenchResult> RunCudaKernelBench(const KernelBenchOptions& options) {
  CudaKernelBenchResult result;
  result.options = options;
  if (options.iters < 1) return Status::InvalidArgument("--iters must be at least 1");
  PSZERO_ASSIGN_OR_RETURN(auto res, kernels::CudaResources::Create(0));
  cudaDeviceProp prop{};
  PSZERO_RETURN_IF_ERROR(CudaCheck(cudaGetDeviceProperties(&prop, res->device()), "properties"));
  result.device_name = prop.name;
  auto stream = static_cast<cudaStream_t>(res->stream());
  const int64_t n = options.array_bytes / static_cast<int64_t>(sizeof(float));
  result.elements = n;
  const int64_t bytes = n * static_cast<int64_t>(sizeof(float));

  std::vector<std::shared_ptr<Storage>> arrays;
  std::vector<void*> pointers;
  for (int i = 0; i < 9; ++i) {
    PSZERO_ASSIGN_OR_RETURN(auto a, DeviceZeros(bytes));
    pointers.push_back(a->data());
    arrays.push_back(std::move(a));
  }
  PSZERO_ASSIGN_OR_RETURN(auto scalar, DeviceZeros(sizeof(float)));
  EventTimer timer(stream);
  auto copy = [&]() -> Result<Summary> {
    return timer.Time(3, [&] {
      return CudaCheck(cudaMemcpyAsync(pointers[8], pointers[7], static_cast<size_t>(bytes),
                                       cudaMemcpyDeviceToDevice, stream),
                       "cudaMemcpyAsync");
    });
  };
  const double copy_bytes = 2.0 * static_cast<double>(bytes);
  PSZERO_ASSIGN_OR_RETURN(Summary first, copy());
  result.copy_best_gbps = copy_bytes / first.min / 1e9;
  result.copy_median_gbps = copy_bytes / first.median / 1e9;

  const kernels::KernelContext ctx = kernels::KernelContext::Cuda(res.get());
  for (const KernelCase& c :
       MemoryBoundKernelCases(pointers, n, ctx, static_cast<float*>(scalar->data()))) {
    PSZERO_ASSIGN_OR_RETURN(Summary adjacent, copy());
    PSZERO_ASSIGN_OR_RETURN(Summary t, timer.Time(options.iters, c.fn));
    KernelBenchRow row;
    row.name = c.name;
    row.bytes_per_element = c.bytes_per_element;
    row.seconds = t;
    const double moved = c.bytes_per_element * static_cast<double>(n);
    row.best_gbps = moved / t.min / 1e9;
    row.median_gbps = moved / t.median / 1e9;
    row.triad_best_gbps = copy_bytes / adjacent.min / 1e9;
    row.ratio_to_triad = row.best_gbps / row.triad_best_gbps;
    result.kernels.push_back(std::move(row));
  }
  arrays.clear();
  pointers.clear();

  auto handle = static_cast<cublasHandle_t>(res->cublas());
  for (int64_t s : options.gemm_sizes) {
    for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
      const int64_t in_bytes = s * s * static_cast<int64_t>(DTypeSize(dtype));
      PSZERO_ASSIGN_OR_RETURN(auto a, DeviceZeros(in_bytes));
      PSZERO_ASSIGN_OR_RETURN(auto b, DeviceZeros(in_bytes));
      PSZERO_ASSIGN_OR_RETURN(auto c, DeviceZeros(s * s * static_cast<int64_t>(sizeof(float))));
      const cudaDataType_t type = dtype == DType::kBFloat16 ? CUDA_R_16BF : CUDA_R_32F;
      const int dim = static_cast<int>(s);
      const float alpha = 1.0f, beta = 0.0f;
      auto wrapper = [&] {
        return kernels::Gemm(false, false, s, s, s, alpha, a->data(), s, b->data(), s, beta,
                             static_cast<float*>(c->data()), s, dtype, ctx);
      };
      auto direct = [&] {
        const cublasStatus_t st =
            cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, dim, dim, dim, &alpha, b->data(), type,
                         dim, a->data(), type, dim, &beta, c->data(), CUDA_R_32F, dim,
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        return st == CUBLAS_STATUS_SUCCESS ? Status::Ok() : Status::Internal("cublasGemmEx");
      };
      // Interleaved, one call each per round, so that both see the same clocks.
      std::vector<double> tw, td;
      for (int i = 0; i <= options.iters; ++i) {
        PSZERO_ASSIGN_OR_RETURN(Summary w, timer.Time(1, wrapper));
        PSZERO_ASSIGN_OR_RETURN(Summary d, timer.Time(1, direct));
        if (i > 0) {
          tw.push_back(w.min);
          td.push_back(d.min);
        }
      }
      const double flops = 2.0 * static_cast<double>(s) * s * s;
      CudaGemmBenchRow row;
      row.size = s;
      row.dtype = std::string(DTypeName(dtype));
      row.wrapper_tflops = flops / Summarize(tw).min / 1e12;
      row.cublas_tflops = flops / Summarize(td).min / 1e12;
      row.ratio = row.wrapper_tflops / row.cublas_tflops;
      result.gemm.push_back(row);
    }
  }
  PSZERO_RETURN_IF_ERROR(res->Synchronize());
  return result;
}

#else  // CPU build

Result<CudaKernelBenchResult> RunCudaKernelBench(const KernelBenchOptions&) {
  return Status::Unavailable("--device cuda needs a CUDA build (built with PSZERO_CUDA=OFF)");
}

#endif

nlohmann::json ToJson(const CudaKernelBenchResult& r) {
  nlohmann::json ks = nlohmann::json::array(), gs = nlohmann::json::array();
  for (const auto& k : r.kernels) {
    ks.push_back({{"name", k.name},
                  {"bytes_per_element", k.bytes_per_element},
                  {"best_gbps", k.best_gbps},
                  {"median_gbps", k.median_gbps},
                  {"copy_best_gbps", k.triad_best_gbps},
                  {"ratio_to_copy", k.ratio_to_triad},
                  {"seconds", pszero::ToJson(k.seconds)}});
  }
  for (const auto& g : r.gemm) {
    gs.push_back({{"m", g.size},
                  {"n", g.size},
                  {"k", g.size},
                  {"dtype", g.dtype},
                  {"wrapper_tflops", g.wrapper_tflops},
                  {"cublas_tflops", g.cublas_tflops},
                  {"ratio", g.ratio}});
  }
  return {{"benchmark", "kernels"},
          {"device", "cuda"},
          {"device_name", r.device_name},
          {"array_bytes", r.options.array_bytes},
          {"elements", r.elements},
          {"iters", r.options.iters},
          {"copy_best_gbps", r.copy_best_gbps},
          {"copy_median_gbps", r.copy_median_gbps},
          {"unit", "GB/s = 1e9 bytes per second; TFLOP/s = 1e12 flops per second"},
          {"kernels", ks},
          {"gemm", gs}};
}

}  // namespace pszero::bench
