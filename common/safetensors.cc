#include "common/safetensors.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"

namespace pszero {

const SafeTensor* SafetensorsFile::Find(const std::string& name) const {
  for (const SafeTensor& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::string EncodeSafetensors(const SafetensorsFile& file) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!file.metadata.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : file.metadata) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const SafeTensor& t : file.tensors) {
    const uint64_t bytes = t.data.size() * sizeof(float);
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string json = header.dump();
  // Pad the header with spaces so the data starts 8-byte aligned.
  while ((8 + json.size()) % 8 != 0) json.push_back(' ');
  std::string out;
  out.reserve(8 + json.size() + offset);
  const uint64_t n = json.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += json;
  for (const SafeTensor& t : file.tensors) {
    out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * sizeof(float));
  }
  return out;
}

Status WriteSafetensors(const std::filesystem::path& path, const SafetensorsFile& file) {
  return WriteFileAtomic(path, EncodeSafetensors(file));
}

namespace {

// The header of a safetensors file whose data section holds `data_size` bytes: every
// check that does not need the tensors' bytes. `ranges` gets each tensor's [b, e).
struct DecodedHeader {
  SafetensorsHeader header;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // per tensor, in header order
};

Status NotSafetensors(const std::string& what, const std::string& why) {
  return Status::Corruption(what + ": not a valid safetensors file: " + why);
}

// The 8-byte header length `n` against a file of `file_size` bytes (0 when too short).
Status CheckHeaderLength(uint64_t n, uint64_t file_size, const std::string& what) {
  if (file_size < 8) return NotSafetensors(what, "shorter than its 8-byte header length");
  if (n > file_size - 8) {
    return NotSafetensors(what, "header of " + std::to_string(n) + " bytes but the file holds " +
                                    std::to_string(file_size) + " (truncated?)");
  }
  return Status::Ok();
}

Result<DecodedHeader> DecodeHeader(std::string_view json, uint64_t data_size,
                                   const std::string& what) {
  auto bad = [&](const std::string& why) { return NotSafetensors(what, why); };
  const nlohmann::json header = nlohmann::json::parse(json, nullptr, false);
  if (header.is_discarded() || !header.is_object()) return bad("header is not a JSON object");
  DecodedHeader out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return bad("__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return bad("metadata '" + k + "' is not a string");
        out.header.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    }
    if (entry.at("dtype") != "F32") return bad("tensor '" + name + "' is not F32");
    const nlohmann::json& shape = entry.at("shape");
    if (!shape.is_array()) return bad("tensor '" + name + "': bad shape " + shape.dump());
    SafeTensorInfo t;
    t.name = name;
    uint64_t numel = 1;
    for (const auto& d : shape) {
      // A dimension past 2^63 or a product past 2^64 cannot describe bytes in a file.
      if (!d.is_number_integer() ||
          (d.is_number_unsigned() ? d.get<uint64_t>() > uint64_t{INT64_MAX}
                                  : d.get<int64_t>() < 0) ||
          __builtin_mul_overflow(numel, d.get<uint64_t>(), &numel)) {
        return bad("tensor '" + name + "': bad shape " + shape.dump());
      }
      t.shape.push_back(d.get<int64_t>());
    }
    const auto& off = entry.at("data_offsets");
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return bad("tensor '" + name + "': bad data_offsets");
    }
    const uint64_t b = off[0].get<uint64_t>();
    const uint64_t e = off[1].get<uint64_t>();
    if (b > e || e > data_size) {
      return bad("tensor '" + name + "' lies past the end of the data (truncated?)");
    }
    uint64_t bytes = 0;
    if (__builtin_mul_overflow(numel, uint64_t{sizeof(float)}, &bytes) || e - b != bytes) {
      return bad("tensor '" + name + "': " + std::to_string(e - b) + " bytes for " +
                 std::to_string(numel) + " F32 values");
    }
    t.numel = static_cast<int64_t>(numel);
    out.ranges.emplace_back(b, e);
    out.header.tensors.push_back(std::move(t));
  }
  std::vector<size_t> order(out.ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return out.ranges[a] < out.ranges[b]; });
  for (size_t i = 1; i < order.size(); ++i) {
    if (out.ranges[order[i]].first < out.ranges[order[i - 1]].second) {
      return bad("tensors overlap");
    }
  }
  // Tensors in file order.
  DecodedHeader sorted;
  sorted.header.metadata = std::move(out.header.metadata);
  for (size_t i : order) {
    sorted.header.tensors.push_back(std::move(out.header.tensors[i]));
    sorted.ranges.push_back(out.ranges[i]);
  }
  return sorted;
}

uint64_t HeaderLength(std::string_view first8) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(first8[i])) << (8 * i);
  return n;
}

}  // namespace

const SafeTensorInfo* SafetensorsHeader::Find(const std::string& name) const {
  for (const SafeTensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

Result<SafetensorsFile> DecodeSafetensors(std::string_view bytes, const std::string& what) {
  const uint64_t n = bytes.size() < 8 ? 0 : HeaderLength(bytes);
  PSZERO_RETURN_IF_ERROR(CheckHeaderLength(n, bytes.size(), what));
  const std::string_view data = bytes.substr(8 + n);
  PSZERO_ASSIGN_OR_RETURN(DecodedHeader h, DecodeHeader(bytes.substr(8, n), data.size(), what));
  SafetensorsFile out;
  out.metadata = std::move(h.header.metadata);
  for (size_t i = 0; i < h.header.tensors.size(); ++i) {
    SafeTensorInfo& info = h.header.tensors[i];
    SafeTensor t;
    t.name = std::move(info.name);
    t.shape = std::move(info.shape);
    t.data.resize(static_cast<size_t>(info.numel));
    const auto [b, e] = h.ranges[i];
    if (e > b) std::memcpy(t.data.data(), data.data() + b, e - b);
    out.tensors.push_back(std::move(t));
  }
  return out;
}

Result<SafetensorsHeader> ReadSafetensorsHeader(const std::filesystem::path& path) {
  const std::string what = path.string();
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return Status::IoError(what + ": " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IoError(what + ": cannot open");
  char first8[8];
  if (size >= 8 && !in.read(first8, 8)) return Status::IoError(what + ": cannot read");
  const uint64_t n = size < 8 ? 0 : HeaderLength(std::string_view(first8, 8));
  PSZERO_RETURN_IF_ERROR(CheckHeaderLength(n, size, what));
  if (n > kMaxSafetensorsHeaderBytes) {
    return NotSafetensors(what, "header of " + std::to_string(n) + " bytes (at most " +
                                    std::to_string(kMaxSafetensorsHeaderBytes) + ")");
  }
  std::string json(n, '\0');
  if (n > 0 && !in.read(json.data(), static_cast<std::streamsize>(n))) {
    return Status::IoError(what + ": cannot read");
  }
  PSZERO_ASSIGN_OR_RETURN(DecodedHeader h, DecodeHeader(json, size - 8 - n, what));
  return std::move(h.header);
}

Result<SafetensorsFile> ReadSafetensors(const std::filesystem::path& path) {
  PSZERO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return DecodeSafetensors(bytes, path.string());
}

std::string BytesSha256(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr);
  std::string hex;
  char buf[3];
  for (unsigned int i = 0; i < len; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", digest[i]);
    hex += buf;
  }
  return hex;
}

Result<std::string> FileSha256(const std::filesystem::path& path) {
  PSZERO_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return BytesSha256(bytes);
}

}  // namespace pszero
