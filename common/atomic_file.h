// Crash-safe file writes: data goes to a temporary file beside the target, is flushed to
// disk, and only then renamed over the target. A reader therefore sees either the old
// file or the complete new one, whatever happens to the writer in between (crash, kill,
// full disk). Used for reports, checkpoints and anything else pszero leaves on disk.
// An AtomicFileWriter is used by one thread; distinct writers are independent.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pszero {

class AtomicFileWriter {
 public:
  // Creates "<path>.tmp.<pid>.<random>" in the target's directory. InvalidArgument
  // "PATH: is not a regular file" when the target exists and is a device, FIFO, socket or
  // directory (or a symlink to one): only a regular file is ever replaced.
  static Result<AtomicFileWriter> Open(const std::filesystem::path& path);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) = delete;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  // Without Commit(), the temporary file is removed and the target is left as it was.
  ~AtomicFileWriter();

  Status Append(std::string_view data);
  // fsync, rename over the target, fsync the directory. The writer is spent afterwards.
  // Checks the target again before the rename (as Open does).
  Status Commit();

  const std::filesystem::path& temp_path() const { return temp_path_; }

 private:
  AtomicFileWriter(std::filesystem::path path, std::filesystem::path temp_path, int fd)
      : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}

  std::filesystem::path path_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
};

// Writes `contents` to `path` through an AtomicFileWriter.
Status WriteFileAtomic(const std::filesystem::path& path, std::string_view contents);

// Reads a whole file.
Result<std::string> ReadFile(const std::filesystem::path& path);

}  // namespace pszero
