// CudaResources: one CUDA stream and one cuBLAS handle bound to one device, owned (RAII).
//
// A worker creates one and points its KernelContext at it; kernels are enqueued on its
// stream in call order. Not thread-safe: one thread enqueues at a time. In a CPU build
// (PSZERO_CUDA=OFF) Create() returns kUnavailable and CudaDeviceCount() is 0. The handle
// types are kept opaque (void*) so that users of this header need no CUDA headers. Kernels
// take their temporary memory from the device's default stream-ordered pool, which
// Create() tells to keep freed memory (grow-only, released at process exit).
#pragma once

#include <memory>

#include "common/status.h"

namespace pszero::kernels {

// CUDA devices visible to this process; 0 in a CPU build or when the driver finds none.
int CudaDeviceCount();
// Whether this build has the CUDA kernels (PSZERO_CUDA found CUDA).
bool CudaBuilt();

class CudaResources {
 public:
  // kBlocking: the worker's compute stream (ordered with the legacy default stream, where
  // Tensor's cudaMemset/cudaMemcpy run). kNonBlocking: a side stream for another thread
  // (the sync strategies' collective thread) whose short kernels must not queue behind the
  // compute stream's work; it is not ordered with the legacy stream, so whoever enqueues
  // on it orders its inputs by waiting on the host first.
  enum class StreamKind { kBlocking, kNonBlocking };
  static Result<std::unique_ptr<CudaResources>> Create(int device_ordinal = 0,
                                                       StreamKind kind = StreamKind::kBlocking);
  ~CudaResources();
  CudaResources(const CudaResources&) = delete;
  CudaResources& operator=(const CudaResources&) = delete;

  int device() const { return device_; }
  void* stream() const { return stream_; }  // cudaStream_t
  void* cublas() const { return cublas_; }  // cublasHandle_t
  // Waits for everything enqueued so far on the stream and, for a kBlocking one, on the
  // legacy default stream (where cudaMemset/cudaMemcpy of Tensor go); reports the first
  // asynchronous error. A kNonBlocking stream waits for its own work only.
  Status Synchronize();
  // Makes this object's device the calling thread's current one (the CUDA runtime keeps
  // one per thread): call it first on any other thread that allocates or copies for it.
  Status BindThisThread() const;

 private:
  CudaResources() = default;
  int device_ = 0;
  StreamKind kind_ = StreamKind::kBlocking;
  void* stream_ = nullptr;
  void* cublas_ = nullptr;
};

}  // namespace pszero::kernels
