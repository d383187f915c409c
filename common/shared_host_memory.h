// Host memory the other processes of this host can map: the zero-copy buffers of the
// intra-host collectives (docs/collectives.md, "Single-copy buffers").
//
// An allocation is a memfd of its own, mapped MAP_SHARED and listed in a process-wide
// registry. A peer process that is told (fd, id, offset) opens /proc/<pid>/fd/<fd> while
// the owner holds it and maps it read-only, so a collective reads the peers' buffers in
// place instead of staging them through a window: NCCL's registered buffers
// (ncclMemAlloc + ncclCommRegister) on a host. Tensor::EmptyShared allocates one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

#include "common/status.h"

namespace pszero {

// Where a byte range lies in a shared allocation.
struct SharedHostRef {
  int fd = -1;         // the allocation's memfd in this process
  uint64_t id = 0;     // unique per allocation in this process (fds are reused)
  uint64_t inode = 0;  // the memfd's inode: a peer checks it opened this very file
  size_t region_bytes = 0;
  size_t offset = 0;  // of the range's first byte
};

// Allocates `bytes` (> 0) of shared host memory, 64-byte aligned.
Result<void*> AllocateSharedHost(size_t bytes);
// Frees what AllocateSharedHost returned (nullptr is a no-op).
void FreeSharedHost(void* data);
// The shared allocation holding all of [data, data + bytes), if any.
std::optional<SharedHostRef> FindSharedHost(const void* data, size_t bytes);

}  // namespace pszero
