// TempDir: a fresh private directory under the system's temporary directory, removed with
// everything in it when the object goes away. Benchmarks that start their own ranks swap
// addresses through a FileKeyValueStore in one. Move-only; not thread-safe.
#pragma once

#include <filesystem>
#include <string>

#include "common/status.h"

namespace pszero {

class TempDir {
 public:
  // Creates "<tmp>/<prefix>-XXXXXX" (mkdtemp).
  static Result<TempDir> Create(const std::string& prefix);

  TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) { other.path_.clear(); }
  TempDir& operator=(TempDir&&) = delete;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();

  const std::filesystem::path& path() const { return path_; }

 private:
  explicit TempDir(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

}  // namespace pszero
