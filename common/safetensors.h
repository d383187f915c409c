// safetensors files (https://github.com/huggingface/safetensors, the format, not the
// library: Debian packages no C++ implementation): 8-byte little-endian header length N,
// N bytes of JSON {"name": {"dtype": "F32", "shape": [...], "data_offsets": [b, e]}, ...,
// "__metadata__": {"key": "value"}}, then the tensors' bytes back to back (offsets relative
// to the end of the header). Any safetensors reader loads what WriteSafetensors writes.
//
// Reading checks everything a truncated or corrupt file could get wrong (header length,
// JSON, dtypes, shapes against byte sizes, offsets inside the file, no overlap) and names
// the file in the error.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace pszero {

struct SafeTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;  // F32 only: what checkpoints hold
};

struct SafetensorsFile {
  std::vector<SafeTensor> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  const SafeTensor* Find(const std::string& name) const;
};

// What a file's header says about one tensor, without its bytes.
struct SafeTensorInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t numel = 0;
};

struct SafetensorsHeader {
  std::vector<SafeTensorInfo> tensors;  // in file order
  std::map<std::string, std::string> metadata;
  const SafeTensorInfo* Find(const std::string& name) const;
};

// Headers longer than this are refused when reading a header alone (safetensors itself
// caps them at 100 MB).
inline constexpr uint64_t kMaxSafetensorsHeaderBytes = 100u << 20;

// Serializes (tensors in the given order, 8-byte aligned data as the format recommends).
std::string EncodeSafetensors(const SafetensorsFile& file);
// Atomically (common/atomic_file.h).
Status WriteSafetensors(const std::filesystem::path& path, const SafetensorsFile& file);

// Corruption naming `what` when the bytes are not a valid F32 safetensors file.
Result<SafetensorsFile> DecodeSafetensors(std::string_view bytes, const std::string& what);
Result<SafetensorsFile> ReadSafetensors(const std::filesystem::path& path);
// Reads and checks the header only (everything DecodeSafetensors checks except the bytes
// themselves, against the file's size): what a launcher verifies before starting a job.
Result<SafetensorsHeader> ReadSafetensorsHeader(const std::filesystem::path& path);

// Lower-case hex SHA-256 of a file's bytes, and of a buffer.
Result<std::string> FileSha256(const std::filesystem::path& path);
std::string BytesSha256(std::string_view bytes);

}  // namespace pszero
