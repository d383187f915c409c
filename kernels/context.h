// KernelContext: where and how a kernel runs. Every kernel in kernels/ takes one.
//
// All kernels take raw pointers plus explicit sizes and leading dimensions (row-major,
// elements), and dispatch on `ctx.device`: kHost runs the CPU twin, kCuda the CUDA twin on
// `ctx.cuda`'s stream (asynchronously: call CudaResources::Synchronize() before reading
// results on the host). Every pointer a call receives must live on ctx.device, scalar
// outputs included. A CPU build answers kCuda with kUnavailable.
//
// On the host, `threads` partitions large arrays (or rows) into contiguous chunks, one
// per OpenMP thread; small problems run on the calling thread. `isa` picks the vector code
// path: kAuto takes the best one this CPU runs (AVX-512, AVX2+FMA+F16C, or scalar); tests
// and benchmarks force the others. A KernelContext is a plain value; the CudaResources it
// points to is owned by the caller and must outlive every call that uses it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"

namespace pszero::kernels {

enum class CpuIsa : uint8_t { kAuto, kScalar, kAvx2, kAvx512 };

// "auto", "scalar", "avx2", "avx512".
std::string_view CpuIsaName(CpuIsa isa);
// The best code path this CPU runs (never kAuto).
CpuIsa DetectCpuIsa();
// Whether this CPU runs `isa` (kAuto and kScalar: always).
bool CpuIsaAvailable(CpuIsa isa);
// Every concrete code path this CPU runs, scalar first.
std::vector<CpuIsa> AvailableCpuIsas();

class CudaResources;

struct KernelContext {
  Device device = Device::kHost;
  int threads = 1;                // host: threads that partition one call
  CpuIsa isa = CpuIsa::kAuto;     // host: vector code path
  CudaResources* cuda = nullptr;  // required when device == kCuda

  static KernelContext Host(int threads = 1, CpuIsa isa = CpuIsa::kAuto) {
    return {Device::kHost, threads, isa, nullptr};
  }
  static KernelContext Cuda(CudaResources* cuda) { return {Device::kCuda, 1, CpuIsa::kAuto, cuda}; }
};

// Checks the context itself: threads >= 1, an ISA this CPU runs, CUDA resources present
// (and CUDA built in) for kCuda.
Status CheckContext(const KernelContext& ctx);

// Waits until every kernel enqueued through `ctx` so far has run, so that another stream
// (an NCCL collective) or the host may read what they wrote. Nothing to wait for on the
// host, where kernels return done.
Status Fence(const KernelContext& ctx);

// Makes ctx's CUDA device current on the calling thread (nothing on the host).
Status BindThread(const KernelContext& ctx);

}  // namespace pszero::kernels
