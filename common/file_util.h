// Reading input files and checking output paths without trusting what the path names.
//
// A path given on a command line may name a FIFO (a read blocks until a writer comes), a
// device (/dev/zero never ends), a directory or a file far larger than memory. These
// helpers look at what the path is before reading it or before a write replaces it, and
// say what is wrong in one line. Pure functions of the file system; thread-safe.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

#include "common/status.h"

namespace pszero {

// Default cap of ReadRegularFile: text inputs (configs, hostfiles, tokens) are small.
inline constexpr size_t kMaxTextFileBytes = size_t{64} << 20;

// Reads the whole of `path`, which must be a regular file (or a symlink to one) of at
// most `max_bytes` bytes. Never blocks on a FIFO (opened O_NONBLOCK, then refused) and
// never reads a device. InvalidArgument "PATH: is a directory" / "PATH: is not a regular
// file" / "PATH: N bytes, more than the limit of M", NotFound when it does not exist,
// IoError when it cannot be opened or read.
Result<std::string> ReadRegularFile(const std::filesystem::path& path,
                                    size_t max_bytes = kMaxTextFileBytes);

// Whether a file may be written at `path` by an AtomicFileWriter, checked before the work
// that produces it: its directory exists (and is one), and `path` is either absent or a
// regular file (a symlink to one counts). InvalidArgument saying which, without the flag.
Status CheckOutputFilePath(const std::filesystem::path& path);

// Whether `path` may be replaced by a rename: absent, or a regular file (or a symlink to
// one). InvalidArgument "PATH: is not a regular file" for a device, FIFO, socket or
// directory, so that a report never replaces /dev/null.
Status CheckReplaceableFile(const std::filesystem::path& path);

}  // namespace pszero
