// Hostfiles as DeepSpeed and MPI read them: one host per line, `host slots=N`, `#` starts a
// comment, blank lines are ignored. A host without `slots=` has one slot. Each host runs
// one node launcher; its slots are its workers (docs/cluster.md).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace pszero {

struct HostSlots {
  std::string host;
  int slots = 1;
};

// Parses hostfile text. `name` is what messages call the file. InvalidArgument
// "NAME:LINE: why" on the first bad line (unknown key, bad or missing slots, extra words,
// a host twice, a host starting with '-', which ssh would take for an option), or when
// there is no host at all.
Result<std::vector<HostSlots>> ParseHostfile(const std::string& text, const std::string& name);

// Reads and parses the file at `path`, which must be a regular file (common/file_util.h:
// never waits on a FIFO); its errors name the path.
Result<std::vector<HostSlots>> ReadHostfile(const std::string& path);

}  // namespace pszero
