#include "kernels/cuda_resources.h"

#include <cstdint>
#include <string>

#ifdef PSZERO_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#endif

namespace pszero::kernels {

#ifdef PSZERO_HAVE_CUDA

bool CudaBuilt() { return true; }

int CudaDeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return count;
}

Result<std::unique_ptr<CudaResources>> CudaResources::Create(int device_ordinal, StreamKind kind) {
  if (device_ordinal < 0 || device_ordinal >= CudaDeviceCount()) {
    return Status::Unavailable("no CUDA device " + std::to_string(device_ordinal) + " (" +
                               std::to_string(CudaDeviceCount()) + " visible)");
  }
  std::unique_ptr<CudaResources> r(new CudaResources());
  r->device_ = device_ordinal;
  r->kind_ = kind;
  cudaError_t err = cudaSetDevice(device_ordinal);
  if (err != cudaSuccess)
    return Status::Unavailable(std::string("cudaSetDevice: ") + cudaGetErrorString(err));
  cudaStream_t stream = nullptr;
  err = kind == StreamKind::kNonBlocking ? cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)
                                         : cudaStreamCreate(&stream);
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string("cudaStreamCreate: ") + cudaGetErrorString(err));
  }
  r->stream_ = stream;
  cublasHandle_t handle = nullptr;
  if (cublasCreate(&handle) != CUBLAS_STATUS_SUCCESS) {
    return Status::Unavailable("cublasCreate failed");
  }
  r->cublas_ = handle;
  if (cublasSetStream(handle, stream) != CUBLAS_STATUS_SUCCESS) {
    return Status::Internal("cublasSetStream failed");
  }
  // Kernels take per-call scratch from the device's default pool (cudaMallocAsync). Keep
  // what they free in the pool instead of returning it to the driver at every
  // synchronization: the pool grows to the largest call's scratch and is then reused, so
  // steady-state steps allocate nothing new.
  cudaMemPool_t pool = nullptr;
  uint64_t keep_bytes = UINT64_MAX;
  err = cudaDeviceGetDefaultMemPool(&pool, device_ordinal);
  if (err == cudaSuccess) {
    err = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep_bytes);
  }
  if (err != cudaSuccess) {
    return Status::Unavailable(std::string("default memory pool: ") + cudaGetErrorString(err));
  }
  return r;
}

CudaResources::~CudaResources() {
  if (cublas_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
  if (stream_ != nullptr) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

Status CudaResources::Synchronize() {
  cudaError_t err = cudaStreamSynchronize(static_cast<cudaStream_t>(stream_));
  // The legacy default stream too: Tensor::ZeroFill's cudaMemset runs there. Not for a
  // non-blocking side stream, which would then wait for the compute stream after all.
  if (err == cudaSuccess && kind_ == StreamKind::kBlocking)
    err = cudaStreamSynchronize(cudaStreamLegacy);
  if (err != cudaSuccess) return Status::Internal(std::string("CUDA: ") + cudaGetErrorString(err));
  return Status::Ok();
}

Status CudaResources::BindThisThread() const {
  const cudaError_t err = cudaSetDevice(device_);
  if (err != cudaSuccess)
    return Status::Internal(std::string("cudaSetDevice: ") + cudaGetErrorString(err));
  return Status::Ok();
}

#else  // CPU build

bool CudaBuilt() { return false; }

int CudaDeviceCount() { return 0; }

Result<std::unique_ptr<CudaResources>> CudaResources::Create(int, StreamKind) {
  return Status::Unavailable("CUDA kernels need a CUDA build (built with PSZERO_CUDA=OFF)");
}

CudaResources::~CudaResources() = default;

Status CudaResources::Synchronize() { return Status::Ok(); }

Status CudaResources::BindThisThread() const { return Status::Ok(); }

#endif

}  // namespace pszero::kernels
