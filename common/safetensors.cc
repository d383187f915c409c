#include "common/safetensors.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
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

Result<SafetensorsFile> DecodeSafetensors(std::string_view bytes, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(what + ": not a valid safetensors file: " + why);
  };
  if (bytes.size() < 8) return bad("shorter than its 8-byte header length");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i)
    n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  if (n > bytes.size() - 8) {
    return bad("header of " + std::to_string(n) + " bytes but the file holds " +
               std::to_string(bytes.size()) + " (truncated?)");
  }
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n), nullptr, false);
  if (header.is_discarded() || !header.is_object()) return bad("header is not a JSON object");
  const std::string_view data = bytes.substr(8 + n);
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return bad("__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) return bad("metadata '" + k + "' is not a string");
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets")) {
      return bad("tensor '" + name + "' lacks dtype, shape or data_offsets");
    }
    if (entry["dtype"] != "F32") return bad("tensor '" + name + "' is not F32");
    SafeTensor t;
    t.name = name;
    uint64_t numel = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return bad("tensor '" + name + "': bad shape");
      t.shape.push_back(d.get<int64_t>());
      numel *= d.get<uint64_t>();
    }
    const auto& off = entry["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned()) {
      return bad("tensor '" + name + "': bad data_offsets");
    }
    const uint64_t b = off[0].get<uint64_t>();
    const uint64_t e = off[1].get<uint64_t>();
    if (b > e || e > data.size()) {
      return bad("tensor '" + name + "' lies past the end of the data (truncated?)");
    }
    if (e - b != numel * sizeof(float)) {
      return bad("tensor '" + name + "': " + std::to_string(e - b) + " bytes for " +
                 std::to_string(numel) + " F32 values");
    }
    t.data.resize(numel);
    if (numel > 0) std::memcpy(t.data.data(), data.data() + b, e - b);
    ranges.emplace_back(b, e);
    out.tensors.push_back(std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) return bad("tensors overlap");
  }
  // Tensors in file order.
  std::sort(out.tensors.begin(), out.tensors.end(), [&](const SafeTensor& a, const SafeTensor& b) {
    return header[a.name]["data_offsets"][0].get<uint64_t>() <
           header[b.name]["data_offsets"][0].get<uint64_t>();
  });
  return out;
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
