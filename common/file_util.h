// Reading input files and checking output paths without trusting what the path names.
//
// A path given on a command line may name a FIFO (a read blocks until a writer comes), a
// device (/dev/zero never ends), a directory or a file far larger than memory. These
// helpers look at what the path is before reading it or before a write replaces it, and
// say what is wrong in one line. Pure functions of the file system; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "common/status.h"

namespace pszero {

// Default cap of ReadInputFile: text inputs (configs, hostfiles, tokens) are small.
inline constexpr size_t kMaxTextFileBytes = size_t{64} << 20;

// Time a FIFO's writer may stay silent before ReadInputFile gives up on it.
inline constexpr int kFifoWaitSeconds = 60;

// Reads the whole of `path`, at most `max_bytes` bytes: a regular file (or a symlink to
// one), or a FIFO / pipe read to its writer's end (process substitution, `<(cmd)`). Never
// waits for a FIFO's writer to come (one without a writer is refused at once), at most
// kFifoWaitSeconds for a silent one, and never reads a device. InvalidArgument "PATH: is
// a directory" / "PATH: is not a regular file (a device)" / "PATH: is a FIFO with no
// writer" / "PATH: N bytes, more than the limit of M", NotFound when it does not exist,
// IoError when it cannot be opened or read.
Result<std::string> ReadInputFile(const std::filesystem::path& path,
                                  size_t max_bytes = kMaxTextFileBytes);

// Whether a file may be written at `path` by an AtomicFileWriter, checked before the work
// that produces it: its directory exists (and is one), and `path` is either absent or a
// regular file (a symlink to one counts). InvalidArgument saying which, without the flag.
Status CheckOutputFilePath(const std::filesystem::path& path);

// Whether `path` may be replaced by a rename: absent, or a regular file (or a symlink to
// one). InvalidArgument "PATH: is not a regular file" for a device, FIFO, socket or
// directory, so that a report never replaces /dev/null.
Status CheckReplaceableFile(const std::filesystem::path& path);

// Whether `path` is a regular file (or a symlink to one) this process may execute.
bool IsExecutableFile(const std::filesystem::path& path);

// This machine's physical memory in bytes (sysconf); UINT64_MAX when it cannot be told.
uint64_t PhysicalMemoryBytes();

}  // namespace pszero
