// DeviceStager: moves device (CUDA) buffers over any Transport by staging them through
// pinned host buffers, in pipelined chunks.
//
// Debian's UCX 1.13 has no CUDA module, so device memory cannot be handed to UCX. When
// NCCL is not the path (e.g. a PS push from a GPU worker), Send copies chunk i+1 device→
// host (cudaMemcpyAsync on its own stream) while chunk i is on the wire; Recv keeps
// `depth` chunk receives posted and copies each landed chunk host→device while the next
// ones arrive. The pinned buffers are registered once with the transport's registration
// cache. Chunk k of a transfer travels under `tag + k` (consecutive segments of
// MakeTag), so a staged transfer of n chunks uses segments [segment, segment + n).
//
// The copies run on the stager's own stream, which waits for no other: a Send's device
// data must be final first (kernels::Fence on the stream that wrote it).
//
// Only CUDA builds (PSZERO_HAVE_CUDA) can stage; elsewhere Create fails with
// InvalidArgument. Used by the thread that uses the transport; not thread-safe.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/status.h"
#include "common/transport.h"

namespace pszero {

struct StagingOptions {
  size_t chunk_bytes = size_t{4} << 20;  // the bench shows UCX at full speed from 4 MiB
  int depth = 2;                         // pinned chunk buffers (send or receive), >= 2
};

class DeviceStager {
 public:
  // Allocates depth pinned buffers of chunk_bytes; `transport` must outlive the stager.
  static Result<std::unique_ptr<DeviceStager>> Create(Transport* transport,
                                                      const StagingOptions& options);
  ~DeviceStager();
  DeviceStager(const DeviceStager&) = delete;
  DeviceStager& operator=(const DeviceStager&) = delete;

  // Blocking staged transfers of `bytes` of device memory; every wait obeys `timeout`.
  Status Send(int peer, uint64_t tag, const void* device_data, size_t bytes,
              std::chrono::milliseconds timeout);
  Status Recv(int peer, uint64_t tag, void* device_data, size_t bytes,
              std::chrono::milliseconds timeout);

  // How many chunks a transfer of `bytes` uses (so callers can space their tags).
  size_t NumChunks(size_t bytes) const;

 private:
  struct Impl;
  explicit DeviceStager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pszero
