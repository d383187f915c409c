#include "common/device_staging.h"

#include <algorithm>
#include <string>
#include <vector>

#ifdef PSZERO_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace pszero {

#ifdef PSZERO_HAVE_CUDA

namespace {

Status CudaError(const char* what, cudaError_t err) {
  return Status::Internal(std::string("CUDA ") + what + ": " + cudaGetErrorString(err));
}

// RAII owners of the CUDA handles staging needs.
class PinnedBuffer {
 public:
  static Result<std::unique_ptr<PinnedBuffer>> Allocate(size_t bytes) {
    void* data = nullptr;
    if (cudaError_t err = cudaMallocHost(&data, bytes); err != cudaSuccess) {
      return CudaError("cudaMallocHost", err);
    }
    return std::unique_ptr<PinnedBuffer>(new PinnedBuffer(data, bytes));
  }
  ~PinnedBuffer() { cudaFreeHost(data_); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  std::byte* data() const { return static_cast<std::byte*>(data_); }
  size_t bytes() const { return bytes_; }

 private:
  PinnedBuffer(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  void* data_;
  size_t bytes_;
};

class CudaStream {
 public:
  static Result<std::unique_ptr<CudaStream>> Create() {
    cudaStream_t stream = nullptr;
    if (cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
        err != cudaSuccess) {
      return CudaError("cudaStreamCreate", err);
    }
    return std::unique_ptr<CudaStream>(new CudaStream(stream));
  }
  ~CudaStream() { cudaStreamDestroy(stream_); }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  explicit CudaStream(cudaStream_t stream) : stream_(stream) {}
  cudaStream_t stream_;
};

class CudaEvent {
 public:
  static Result<std::unique_ptr<CudaEvent>> Create() {
    cudaEvent_t event = nullptr;
    if (cudaError_t err = cudaEventCreateWithFlags(&event, cudaEventDisableTiming);
        err != cudaSuccess) {
      return CudaError("cudaEventCreate", err);
    }
    return std::unique_ptr<CudaEvent>(new CudaEvent(event));
  }
  ~CudaEvent() { cudaEventDestroy(event_); }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  explicit CudaEvent(cudaEvent_t event) : event_(event) {}
  cudaEvent_t event_;
};

}  // namespace

struct DeviceStager::Impl {
  Transport* transport = nullptr;
  StagingOptions options;
  std::unique_ptr<CudaStream> stream;
  std::vector<std::unique_ptr<PinnedBuffer>> buffers;
  std::vector<std::shared_ptr<MemoryRegistration>> registrations;
  std::vector<std::unique_ptr<CudaEvent>> events;

  // Waits for a copy on the stream while keeping the transport progressing.
  Status WaitCopy(CudaEvent& event, std::chrono::steady_clock::time_point deadline) {
    while (true) {
      cudaError_t err = cudaEventQuery(event.get());
      if (err == cudaSuccess) return Status::Ok();
      if (err != cudaErrorNotReady) return CudaError("cudaEventQuery", err);
      PSZERO_RETURN_IF_ERROR(transport->Progress().status());
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::DeadlineExceeded("device copy for a staged transfer did not finish");
      }
    }
  }
};

Result<std::unique_ptr<DeviceStager>> DeviceStager::Create(Transport* transport,
                                                           const StagingOptions& options) {
  // Send copies chunk k into the buffer chunk k-1 is sent from only after that send ends,
  // and that needs two buffers.
  if (transport == nullptr || options.chunk_bytes == 0 || options.depth < 2) {
    return Status::InvalidArgument("DeviceStager needs a transport, chunk_bytes > 0, depth >= 2");
  }
  auto impl = std::make_unique<Impl>();
  impl->transport = transport;
  impl->options = options;
  PSZERO_ASSIGN_OR_RETURN(impl->stream, CudaStream::Create());
  for (int i = 0; i < options.depth; ++i) {
    PSZERO_ASSIGN_OR_RETURN(auto buffer, PinnedBuffer::Allocate(options.chunk_bytes));
    PSZERO_ASSIGN_OR_RETURN(auto reg, transport->RegisterMemory(buffer->data(), buffer->bytes()));
    PSZERO_ASSIGN_OR_RETURN(auto event, CudaEvent::Create());
    impl->buffers.push_back(std::move(buffer));
    impl->registrations.push_back(std::move(reg));
    impl->events.push_back(std::move(event));
  }
  return std::unique_ptr<DeviceStager>(new DeviceStager(std::move(impl)));
}

Status DeviceStager::Send(int peer, uint64_t tag, const void* device_data, size_t bytes,
                          std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const size_t chunks = NumChunks(bytes);
  const size_t depth = s.buffers.size();
  std::vector<Request> sends(depth);
  const auto* src = static_cast<const std::byte*>(device_data);
  auto remaining = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::max(
        deadline - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration::zero()));
  };
  auto chunk_size = [&](size_t k) {
    return std::min(s.options.chunk_bytes, bytes - k * s.options.chunk_bytes);
  };
  // Copy chunk k into its buffer (once the send that used the buffer is done), then send
  // chunk k-1, whose copy ran while chunk k-2 was on the wire.
  for (size_t k = 0; k <= chunks; ++k) {
    if (k < chunks) {
      const size_t b = k % depth;
      if (sends[b].valid()) PSZERO_RETURN_IF_ERROR(sends[b].Wait(remaining()));
      if (cudaError_t err = cudaMemcpyAsync(s.buffers[b]->data(), src + k * s.options.chunk_bytes,
                                            chunk_size(k), cudaMemcpyDeviceToHost, s.stream->get());
          err != cudaSuccess) {
        return CudaError("cudaMemcpyAsync D2H", err);
      }
      if (cudaError_t err = cudaEventRecord(s.events[b]->get(), s.stream->get());
          err != cudaSuccess) {
        return CudaError("cudaEventRecord", err);
      }
    }
    if (k > 0) {
      const size_t j = k - 1, b = j % depth;
      PSZERO_RETURN_IF_ERROR(s.WaitCopy(*s.events[b], deadline));
      PSZERO_ASSIGN_OR_RETURN(
          sends[b], s.transport->Send(peer, tag + j, s.buffers[b]->data(), chunk_size(j)));
    }
  }
  return s.transport->WaitAll(sends, remaining());
}

Status DeviceStager::Recv(int peer, uint64_t tag, void* device_data, size_t bytes,
                          std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const size_t chunks = NumChunks(bytes);
  const size_t depth = s.buffers.size();
  std::vector<Request> recvs(depth);
  auto* dst = static_cast<std::byte*>(device_data);
  auto remaining = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::max(
        deadline - std::chrono::steady_clock::now(), std::chrono::steady_clock::duration::zero()));
  };
  auto chunk_size = [&](size_t k) {
    return std::min(s.options.chunk_bytes, bytes - k * s.options.chunk_bytes);
  };
  for (size_t k = 0; k < std::min(chunks, depth); ++k) {
    PSZERO_ASSIGN_OR_RETURN(recvs[k],
                            s.transport->Recv(peer, tag + k, s.buffers[k]->data(), chunk_size(k)));
  }
  for (size_t k = 0; k < chunks; ++k) {
    const size_t b = k % depth;
    PSZERO_RETURN_IF_ERROR(recvs[b].Wait(remaining()));
    if (cudaError_t err = cudaMemcpyAsync(dst + k * s.options.chunk_bytes, s.buffers[b]->data(),
                                          chunk_size(k), cudaMemcpyHostToDevice, s.stream->get());
        err != cudaSuccess) {
      return CudaError("cudaMemcpyAsync H2D", err);
    }
    if (cudaError_t err = cudaEventRecord(s.events[b]->get(), s.stream->get());
        err != cudaSuccess) {
      return CudaError("cudaEventRecord", err);
    }
    if (k + depth < chunks) {
      // The buffer is free once its host→device copy is done; the other buffers' receives
      // keep arriving meanwhile.
      PSZERO_RETURN_IF_ERROR(s.WaitCopy(*s.events[b], deadline));
      PSZERO_ASSIGN_OR_RETURN(
          recvs[b],
          s.transport->Recv(peer, tag + k + depth, s.buffers[b]->data(), chunk_size(k + depth)));
    }
  }
  if (cudaError_t err = cudaStreamSynchronize(s.stream->get()); err != cudaSuccess) {
    return CudaError("cudaStreamSynchronize", err);
  }
  return Status::Ok();
}

#else  // !PSZERO_HAVE_CUDA

struct DeviceStager::Impl {
  StagingOptions options;
};

Result<std::unique_ptr<DeviceStager>> DeviceStager::Create(Transport* /*transport*/,
                                                           const StagingOptions& /*options*/) {
  return Status::InvalidArgument("device staging needs a CUDA build of pszero");
}

Status DeviceStager::Send(int, uint64_t, const void*, size_t, std::chrono::milliseconds) {
  return Status::InvalidArgument("device staging needs a CUDA build of pszero");
}

Status DeviceStager::Recv(int, uint64_t, void*, size_t, std::chrono::milliseconds) {
  return Status::InvalidArgument("device staging needs a CUDA build of pszero");
}

#endif  // PSZERO_HAVE_CUDA

DeviceStager::DeviceStager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceStager::~DeviceStager() = default;

size_t DeviceStager::NumChunks(size_t bytes) const {
  const size_t chunk = impl_->options.chunk_bytes;
  return bytes == 0 ? 0 : (bytes + chunk - 1) / chunk;
}

}  // namespace pszero
