// Writes all of `data` to `fd`, retrying on EINTR and partial writes. For a launcher's own
// output and a child's stdin: failing to write there is not worth dying for, so errors
// other than EINTR end the write silently.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <string_view>

namespace pszero {

inline void WriteAll(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace pszero
