// FileKeyValueStore: a KeyValueStore in a directory shared by the processes of one host.
//
// Each key is one file (its name is the key with '/' and other unsafe bytes escaped),
// written atomically (common/atomic_file.h), so a reader sees a whole value or none. Get
// polls for the file with a short, growing interval until its deadline. Meant for
// single-host jobs that have no rendezvous service: multi-process tests and
// `pszero-bench p2p`, which swap UCX worker addresses through a temporary directory.
// Thread-safe (it holds no state beyond the directory path).
#pragma once

#include <filesystem>
#include <string>

#include "common/kv_store.h"

namespace pszero {

class FileKeyValueStore final : public KeyValueStore {
 public:
  // The directory must exist (Create makes it).
  explicit FileKeyValueStore(std::filesystem::path directory) : directory_(std::move(directory)) {}
  static Result<FileKeyValueStore> Create(const std::filesystem::path& directory);

  Status Set(const std::string& key, std::string_view value) override;
  Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;

  const std::filesystem::path& directory() const { return directory_; }

 private:
  std::filesystem::path PathOf(const std::string& key) const;
  std::filesystem::path directory_;
};

}  // namespace pszero
