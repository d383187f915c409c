#include "common/temp_dir.h"

#include <stdlib.h>

#include <cerrno>
#include <cstring>

namespace pszero {

Result<TempDir> TempDir::Create(const std::string& prefix) {
  std::error_code ec;
  const std::filesystem::path base = std::filesystem::temp_directory_path(ec);
  if (ec) return Status::IoError("no temporary directory: " + ec.message());
  std::string pattern = (base / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) {
    return Status::IoError("mkdtemp " + pattern + ": " + std::strerror(errno));
  }
  return TempDir(pattern);
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

}  // namespace pszero
