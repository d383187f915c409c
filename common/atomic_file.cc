#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include "common/file_util.h"

namespace pszero {

namespace {

Status ErrnoStatus(const std::string& what, const std::filesystem::path& path) {
  return Status::IoError(what + " " + path.string() + ": " + std::strerror(errno));
}

}  // namespace

Result<AtomicFileWriter> AtomicFileWriter::Open(const std::filesystem::path& path) {
  if (path.empty() || !path.has_filename()) {
    return Status::InvalidArgument("not a file path: '" + path.string() + "'");
  }
  PSZERO_RETURN_IF_ERROR(CheckReplaceableFile(path));
  std::random_device rd;
  std::filesystem::path temp = path;
  temp += ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("cannot create", temp);
  return AtomicFileWriter(path, std::move(temp), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)), temp_path_(std::move(other.temp_path_)), fd_(other.fd_) {
  other.fd_ = -1;
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

Status AtomicFileWriter::Append(std::string_view data) {
  if (fd_ < 0) return Status::Internal("append to a committed AtomicFileWriter");
  while (!data.empty()) {
    const ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus("write to", temp_path_);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Status AtomicFileWriter::Commit() {
  if (fd_ < 0) return Status::Internal("AtomicFileWriter committed twice");
  const int fd = fd_;
  fd_ = -1;
  Status status;
  if (::fsync(fd) != 0) status = ErrnoStatus("fsync", temp_path_);
  if (::close(fd) != 0 && status.ok()) status = ErrnoStatus("close", temp_path_);
  // Again right before the rename: the target may have become a device or a FIFO since
  // Open (the rename would replace it, and a device node is not ours to replace).
  if (status.ok()) status = CheckReplaceableFile(path_);
  if (status.ok() && ::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    status = ErrnoStatus("rename onto", path_);
  }
  if (!status.ok()) {
    ::unlink(temp_path_.c_str());
    return status;
  }
  // Make the rename itself durable.
  std::filesystem::path dir = path_.parent_path();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd >= 0) {
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
  return Status::Ok();
}

Status WriteFileAtomic(const std::filesystem::path& path, std::string_view contents) {
  PSZERO_ASSIGN_OR_RETURN(AtomicFileWriter writer, AtomicFileWriter::Open(path));
  PSZERO_RETURN_IF_ERROR(writer.Append(contents));
  return writer.Commit();
}

Result<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus("cannot open", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return ErrnoStatus("cannot read", path);
  return ss.str();
}

}  // namespace pszero
