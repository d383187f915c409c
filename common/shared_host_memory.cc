#include "common/shared_host_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace pszero {
namespace {

struct Region {
  int fd;
  uint64_t id;
  uint64_t inode;
  size_t bytes;
};

struct Registry {
  std::mutex mu;
  std::map<uintptr_t, Region> regions;  // by start address
  uint64_t next_id = 1;
};

Registry& registry() {
  static auto* r = new Registry();  // outlives every static tensor
  return *r;
}

// ResourceExhausted ("out of memory: ...") when `err` says the memory ran out.
Status OutOfMemory(int err, std::string message) {
  if (err == ENOMEM || err == ENOSPC || err == EFBIG) {
    return Status::ResourceExhausted(std::move(message));
  }
  return Status::Internal(std::move(message));
}

}  // namespace

Result<void*> AllocateSharedHost(size_t bytes) {
  if (bytes == 0) return Status::InvalidArgument("shared host allocation of 0 bytes");
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t mapped = (bytes + page - 1) / page * page;
  const int fd = static_cast<int>(syscall(SYS_memfd_create, "pszero-shared", MFD_CLOEXEC));
  if (fd < 0) return Status::Internal(std::string("memfd_create: ") + std::strerror(errno));
  if (ftruncate(fd, static_cast<off_t>(mapped)) != 0) {
    const int err = errno;
    close(fd);
    return OutOfMemory(err, "shared host allocation of " + std::to_string(bytes) +
                                " bytes: ftruncate: " + std::strerror(err));
  }
  struct stat st {};
  void* data = fstat(fd, &st) == 0
                   ? mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                   : MAP_FAILED;
  if (data == MAP_FAILED) {
    const int err = errno;
    close(fd);
    return OutOfMemory(err, "shared host allocation of " + std::to_string(bytes) +
                                " bytes: mmap: " + std::strerror(err));
  }
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.regions[reinterpret_cast<uintptr_t>(data)] =
      Region{fd, r.next_id++, static_cast<uint64_t>(st.st_ino), mapped};
  return data;
}

void FreeSharedHost(void* data) {
  if (data == nullptr) return;
  Region region{};
  {
    Registry& r = registry();
    std::lock_guard lock(r.mu);
    auto it = r.regions.find(reinterpret_cast<uintptr_t>(data));
    if (it == r.regions.end()) return;
    region = it->second;
    r.regions.erase(it);
  }
  munmap(data, region.bytes);
  close(region.fd);
}

std::optional<SharedHostRef> FindSharedHost(const void* data, size_t bytes) {
  const auto start = reinterpret_cast<uintptr_t>(data);
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.regions.upper_bound(start);
  if (it == r.regions.begin()) return std::nullopt;
  --it;
  const Region& region = it->second;
  if (start + bytes > it->first + region.bytes) return std::nullopt;
  return SharedHostRef{region.fd, region.id, region.inode, region.bytes, start - it->first};
}

}  // namespace pszero
