#include "worker/collectives/nccl_backend.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifdef PSZERO_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <unistd.h>

#include <set>
#include <thread>
#endif

namespace pszero::collectives {

void NcclBackend::UseOwnHostId(const std::string& name) {
  const char* base = std::getenv("NCCL_HOSTID");
  const std::string id = std::string(base != nullptr ? base : "pszero") + "-" + name;
  ::setenv("NCCL_HOSTID", id.c_str(), 1);
  ::setenv("NCCL_SOCKET_IFNAME", "lo", 0);
}

#ifndef PSZERO_HAVE_CUDA

struct NcclBackend::Impl {};

Result<std::unique_ptr<NcclBackend>> NcclBackend::Create(KeyValueStore*, const std::string&, int,
                                                         int, int, std::chrono::milliseconds) {
  return Status::InvalidArgument(
      "the NCCL backend needs a CUDA build (built with PSZERO_CUDA=OFF)");
}
Result<bool> NcclBackend::DistinctGpus(KeyValueStore*, const std::string&, int, int, int,
                                       std::chrono::milliseconds) {
  return Status::InvalidArgument(
      "the NCCL backend needs a CUDA build (built with PSZERO_CUDA=OFF)");
}
NcclBackend::NcclBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclBackend::~NcclBackend() = default;
void NcclBackend::set_health(std::function<Status()>) {}
Status NcclBackend::AllReduce(const Tensor&, ReduceOp, std::chrono::milliseconds) {
  return Status::Internal("no NCCL in this build");
}
Status NcclBackend::ReduceScatter(const Tensor&, const Tensor&, ReduceOp,
                                  std::chrono::milliseconds) {
  return Status::Internal("no NCCL in this build");
}
Status NcclBackend::AllGather(const Tensor&, const Tensor&, std::chrono::milliseconds) {
  return Status::Internal("no NCCL in this build");
}
Status NcclBackend::Broadcast(const Tensor&, int, std::chrono::milliseconds) {
  return Status::Internal("no NCCL in this build");
}
Status NcclBackend::AllToAllV(const Tensor&, std::span<const int64_t>, const Tensor&,
                              std::span<const int64_t>, std::chrono::milliseconds) {
  return Status::Internal("no NCCL in this build");
}

#else

namespace {

Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return Status::Ok();
  return Status::Internal(std::string(what) + ": " + cudaGetErrorString(err));
}

Status NcclStatus(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return Status::Ok();
  const bool remote = r == ncclRemoteError || r == ncclSystemError;
  std::string msg = std::string(what) + ": " + ncclGetErrorString(r);
  return remote ? Status::Unavailable(msg) : Status::Internal(msg);
}

Result<ncclDataType_t> NcclType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kBFloat16:
      return ncclBfloat16;
    case DType::kFloat16:
      return ncclFloat16;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kUInt8:
      return ncclUint8;
  }
  return Status::InvalidArgument("dtype without an NCCL type");
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
  }
  return ncclSum;
}

Status CheckDevice(const Tensor& t, const char* what) {
  if (t.device() != Device::kCuda || !t.is_contiguous()) {
    return Status::InvalidArgument(std::string(what) + " must be a contiguous device tensor");
  }
  return Status::Ok();
}

}  // namespace

struct NcclBackend::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int rank = 0;
  int size = 1;
  int device = 0;
  bool aborted = false;
  std::function<Status()> health;

  ~Impl() {
    if (comm != nullptr) ncclCommDestroy(comm);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Ends the communicator at once when an op cannot finish: ncclCommAbort stops its
  // kernels still spinning on the GPU, which would otherwise block every later cudaFree
  // (a device-wide synchronization) on this rank, e.g. a buffer pool released while the
  // error unwinds.
  Status Abort(Status why) {
    aborted = true;
    if (comm != nullptr) {
      ncclCommAbort(comm);
      comm = nullptr;
    }
    return why;
  }

  // Waits for the stream with a deadline, polling NCCL's asynchronous error; aborts the
  // communicator when the op cannot finish, so that no rank hangs in NCCL.
  Status Wait(const char* what, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      cudaError_t q = cudaStreamQuery(stream);
      if (q == cudaSuccess) return Status::Ok();
      if (q != cudaErrorNotReady) return CudaStatus(q, what);
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return Abort(NcclStatus(async, what));
      }
      if (health) {
        if (Status h = health(); !h.ok()) {
          return Abort(h.WithContext(std::string(what) + " on NCCL"));
        }
      }
      if (std::chrono::steady_clock::now() > deadline) {
        return Abort(Status::DeadlineExceeded(std::string(what) + " on NCCL (rank " +
                                              std::to_string(rank) + " of " + std::to_string(size) +
                                              ") did not finish within " +
                                              std::to_string(timeout.count()) + " ms"));
      }
      std::this_thread::yield();
    }
  }

  Status Ready() const {
    if (aborted)
      return Status::Unavailable("NCCL communicator was aborted after an earlier failure");
    return cudaSetDevice(device) == cudaSuccess ? Status::Ok()
                                                : Status::Internal("cudaSetDevice failed");
  }
};

NcclBackend::NcclBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclBackend::~NcclBackend() = default;

Result<bool> NcclBackend::DistinctGpus(KeyValueStore* store, const std::string& key, int rank,
                                       int size, int cuda_device,
                                       std::chrono::milliseconds timeout) {
  char bus[64] = {};
  PSZERO_RETURN_IF_ERROR(
      CudaStatus(cudaDeviceGetPCIBusId(bus, sizeof bus, cuda_device), "cudaDeviceGetPCIBusId"));
  // The host as NCCL's own duplicate-GPU check sees it: NCCL_HOSTID when set, otherwise
  // the host name.
  char host[256] = {};
  const char* host_id = std::getenv("NCCL_HOSTID");
  if (host_id != nullptr && host_id[0] != '\0') {
    std::snprintf(host, sizeof host, "%s", host_id);
  } else if (::gethostname(host, sizeof host - 1) != 0) {
    std::strcpy(host, "?");
  }
  const std::string prefix = "nccl-gpu/" + key + "/";
  PSZERO_RETURN_IF_ERROR(store->Set(prefix + std::to_string(rank), std::string(host) + "/" + bus));
  std::set<std::string> seen;
  for (int r = 0; r < size; ++r) {
    PSZERO_ASSIGN_OR_RETURN(std::string gpu, store->Get(prefix + std::to_string(r), timeout));
    seen.insert(gpu);
  }
  return static_cast<int>(seen.size()) == size;
}

Result<std::unique_ptr<NcclBackend>> NcclBackend::Create(KeyValueStore* store,
                                                         const std::string& key, int rank, int size,
                                                         int cuda_device,
                                                         std::chrono::milliseconds timeout) {
  auto impl = std::make_unique<Impl>();
  impl->rank = rank;
  impl->size = size;
  impl->device = cuda_device;
  PSZERO_RETURN_IF_ERROR(CudaStatus(cudaSetDevice(cuda_device), "cudaSetDevice"));
  ncclUniqueId id;
  const std::string id_key = "nccl-id/" + key;
  if (rank == 0) {
    PSZERO_RETURN_IF_ERROR(NcclStatus(ncclGetUniqueId(&id), "ncclGetUniqueId"));
    PSZERO_RETURN_IF_ERROR(
        store->Set(id_key, std::string_view(reinterpret_cast<const char*>(&id), sizeof id)));
  } else {
    PSZERO_ASSIGN_OR_RETURN(std::string blob, store->Get(id_key, timeout));
    if (blob.size() != sizeof id) return Status::Corruption("NCCL unique id of the wrong size");
    std::memcpy(&id, blob.data(), sizeof id);
  }
  PSZERO_RETURN_IF_ERROR(
      CudaStatus(cudaStreamCreateWithFlags(&impl->stream, cudaStreamNonBlocking), "stream"));
  PSZERO_RETURN_IF_ERROR(
      NcclStatus(ncclCommInitRank(&impl->comm, size, id, rank), "ncclCommInitRank"));
  return std::unique_ptr<NcclBackend>(new NcclBackend(std::move(impl)));
}

void NcclBackend::set_health(std::function<Status()> health) { impl_->health = std::move(health); }

Status NcclBackend::AllReduce(const Tensor& data, ReduceOp op, std::chrono::milliseconds timeout) {
  PSZERO_RETURN_IF_ERROR(CheckDevice(data, "allreduce data"));
  PSZERO_RETURN_IF_ERROR(impl_->Ready());
  PSZERO_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(data.dtype()));
  PSZERO_RETURN_IF_ERROR(
      NcclStatus(ncclAllReduce(data.data(), data.data(), static_cast<size_t>(data.numel()), type,
                               NcclOp(op), impl_->comm, impl_->stream),
                 "ncclAllReduce"));
  return impl_->Wait("allreduce", timeout);
}

Status NcclBackend::ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op,
                                  std::chrono::milliseconds timeout) {
  PSZERO_RETURN_IF_ERROR(CheckDevice(input, "reduce_scatter input"));
  PSZERO_RETURN_IF_ERROR(CheckDevice(output, "reduce_scatter output"));
  PSZERO_RETURN_IF_ERROR(impl_->Ready());
  PSZERO_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(input.dtype()));
  PSZERO_RETURN_IF_ERROR(
      NcclStatus(ncclReduceScatter(input.data(), output.data(), static_cast<size_t>(output.numel()),
                                   type, NcclOp(op), impl_->comm, impl_->stream),
                 "ncclReduceScatter"));
  return impl_->Wait("reduce_scatter", timeout);
}

Status NcclBackend::AllGather(const Tensor& input, const Tensor& output,
                              std::chrono::milliseconds timeout) {
  PSZERO_RETURN_IF_ERROR(CheckDevice(input, "allgather input"));
  PSZERO_RETURN_IF_ERROR(CheckDevice(output, "allgather output"));
  PSZERO_RETURN_IF_ERROR(impl_->Ready());
  PSZERO_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(input.dtype()));
  PSZERO_RETURN_IF_ERROR(
      NcclStatus(ncclAllGather(input.data(), output.data(), static_cast<size_t>(input.numel()),
                               type, impl_->comm, impl_->stream),
                 "ncclAllGather"));
  return impl_->Wait("allgather", timeout);
}

Status NcclBackend::Broadcast(const Tensor& data, int root, std::chrono::milliseconds timeout) {
  PSZERO_RETURN_IF_ERROR(CheckDevice(data, "broadcast data"));
  PSZERO_RETURN_IF_ERROR(impl_->Ready());
  PSZERO_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(data.dtype()));
  PSZERO_RETURN_IF_ERROR(
      NcclStatus(ncclBroadcast(data.data(), data.data(), static_cast<size_t>(data.numel()), type,
                               root, impl_->comm, impl_->stream),
                 "ncclBroadcast"));
  return impl_->Wait("broadcast", timeout);
}

Status NcclBackend::AllToAllV(const Tensor& input, std::span<const int64_t> send_counts,
                              const Tensor& output, std::span<const int64_t> recv_counts,
                              std::chrono::milliseconds timeout) {
  PSZERO_RETURN_IF_ERROR(CheckDevice(input, "alltoall input"));
  PSZERO_RETURN_IF_ERROR(CheckDevice(output, "alltoall output"));
  PSZERO_RETURN_IF_ERROR(impl_->Ready());
  PSZERO_ASSIGN_OR_RETURN(ncclDataType_t type, NcclType(input.dtype()));
  const size_t es = input.element_size();
  auto* in = static_cast<const char*>(input.data());
  auto* out = static_cast<char*>(output.data());
  PSZERO_RETURN_IF_ERROR(NcclStatus(ncclGroupStart(), "ncclGroupStart"));
  int64_t send_off = 0, recv_off = 0;
  for (int p = 0; p < impl_->size; ++p) {
    ncclSend(in + send_off * es, static_cast<size_t>(send_counts[p]), type, p, impl_->comm,
             impl_->stream);
    ncclRecv(out + recv_off * es, static_cast<size_t>(recv_counts[p]), type, p, impl_->comm,
             impl_->stream);
    send_off += send_counts[p];
    recv_off += recv_counts[p];
  }
  PSZERO_RETURN_IF_ERROR(NcclStatus(ncclGroupEnd(), "ncclGroupEnd"));
  return impl_->Wait("alltoall", timeout);
}

#endif  // PSZERO_HAVE_CUDA

}  // namespace pszero::collectives
