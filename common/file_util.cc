#include "common/file_util.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pszero {

namespace {

// What a non-regular file is, for messages.
std::string KindOf(mode_t mode) {
  if (S_ISDIR(mode)) return "is a directory";
  if (S_ISFIFO(mode)) return "is not a regular file (a FIFO)";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "is not a regular file (a device)";
  if (S_ISSOCK(mode)) return "is not a regular file (a socket)";
  return "is not a regular file";
}

// Closes a descriptor when it goes out of scope.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

// A FIFO or pipe (`--token-file <(pass show x)`), opened O_NONBLOCK: read to the writer's
// end, each wait for data bounded. No writer at all (a named FIFO nobody opened) reads as
// nothing at once, which is refused rather than taken for an empty file.
Result<std::string> ReadFifo(int fd, const std::string& name, size_t max_bytes) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) {
      if (out.size() + static_cast<size_t>(n) > max_bytes) {
        return Status::InvalidArgument(name + ": more than the limit of " +
                                       std::to_string(max_bytes) + " bytes");
      }
      out.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      if (out.empty()) return Status::InvalidArgument(name + ": is a FIFO with no writer");
      return out;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Status::IoError(name + ": cannot read: " + std::strerror(errno));
    }
    pollfd p{fd, POLLIN, 0};
    const int ready = ::poll(&p, 1, kFifoWaitSeconds * 1000);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return Status::IoError(name + ": poll: " + std::strerror(errno));
    if (ready == 0) {
      return Status::InvalidArgument(name + ": a FIFO whose writer sent nothing for " +
                                     std::to_string(kFifoWaitSeconds) + " s");
    }
  }
}

}  // namespace

Result<std::string> ReadInputFile(const std::filesystem::path& path, size_t max_bytes) {
  const std::string name = path.string();
  if (name.empty()) return Status::InvalidArgument("empty file path");
  // O_NONBLOCK: opening a FIFO without a writer would otherwise wait for one.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return Status::NotFound(name + ": no such file");
    return Status::IoError(name + ": cannot open: " + std::strerror(err));
  }
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Status::IoError(name + ": " + std::strerror(errno));
  if (S_ISFIFO(st.st_mode)) return ReadFifo(fd, name, max_bytes);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(name + ": " + KindOf(st.st_mode));
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes) {
    return Status::InvalidArgument(name + ": " + std::to_string(size) +
                                   " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  // A regular file never blocks; clear O_NONBLOCK all the same.
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string out;
  out.resize(static_cast<size_t>(size));
  size_t have = 0;
  for (;;) {
    if (have == out.size()) {
      // The file may have grown since fstat: read on, up to the cap.
      if (out.size() >= max_bytes) {
        char probe;
        const ssize_t n = ::read(fd, &probe, 1);
        if (n > 0) {
          return Status::InvalidArgument(name + ": more than the limit of " +
                                         std::to_string(max_bytes) + " bytes");
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Status::IoError(name + ": cannot read: " + std::strerror(errno));
        break;
      }
      out.resize(std::min(max_bytes, std::max<size_t>(out.size() * 2, 4096)));
    }
    const ssize_t n = ::read(fd, out.data() + have, out.size() - have);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::IoError(name + ": cannot read: " + std::strerror(errno));
    }
    if (n == 0) break;
    have += static_cast<size_t>(n);
  }
  out.resize(have);
  return out;
}

Status CheckReplaceableFile(const std::filesystem::path& path) {
  struct stat st {};
  // stat follows a symlink: a link to /dev/null must not be replaced either (the rename
  // would replace the link, not the device, but the user meant the device).
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      // A dangling symlink is replaced like an absent file; anything else is absent.
      return Status::Ok();
    }
    return Status::IoError(path.string() + ": " + std::strerror(errno));
  }
  if (!S_ISREG(st.st_mode))
    return Status::InvalidArgument(path.string() + ": " + KindOf(st.st_mode));
  return Status::Ok();
}

Status CheckOutputFilePath(const std::filesystem::path& path) {
  if (path.empty() || !path.has_filename()) {
    return Status::InvalidArgument(
        std::string("'").append(path.string()).append("' is not a file path"));
  }
  std::filesystem::path dir = path.parent_path();
  if (dir.empty()) dir = ".";
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    return Status::InvalidArgument(path.string() + ": directory " + dir.string() + ": " +
                                   std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(path.string() + ": " + dir.string() + " is not a directory");
  }
  if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    return Status::InvalidArgument(path.string() + ": directory " + dir.string() +
                                   " is not writable: " + std::strerror(errno));
  }
  return CheckReplaceableFile(path);
}

bool IsExecutableFile(const std::filesystem::path& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

uint64_t PhysicalMemoryBytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES);
  const long page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
}

}  // namespace pszero
