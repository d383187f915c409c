#include "common/file_kv_store.h"

#include <algorithm>
#include <cctype>
#include <system_error>
#include <thread>

#include "common/atomic_file.h"

namespace pszero {

Result<FileKeyValueStore> FileKeyValueStore::Create(const std::filesystem::path& directory) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return Status::IoError("cannot create " + directory.string() + ": " + ec.message());
  return FileKeyValueStore(directory);
}

std::filesystem::path FileKeyValueStore::PathOf(const std::string& key) const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string name = "kv_";
  for (unsigned char c : key) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.') {
      name.push_back(static_cast<char>(c));
    } else {
      name.push_back('%');
      name.push_back(kDigits[c >> 4]);
      name.push_back(kDigits[c & 15]);
    }
  }
  return directory_ / name;
}

Status FileKeyValueStore::Set(const std::string& key, std::string_view value) {
  return WriteFileAtomic(PathOf(key), value);
}

Result<std::string> FileKeyValueStore::Get(const std::string& key,
                                           std::chrono::milliseconds timeout) {
  const auto path = PathOf(key);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto interval = std::chrono::microseconds(100);
  while (true) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) return ReadFile(path);
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::DeadlineExceeded("key '" + key + "' not published in " + directory_.string() +
                                      " within " + std::to_string(timeout.count()) + " ms");
    }
    // Polling, not timing: the wait ends as soon as the file appears or the deadline passes.
    std::this_thread::sleep_for(interval);
    interval = std::min(interval * 2, std::chrono::microseconds(20000));
  }
}

}  // namespace pszero
