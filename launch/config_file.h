// `--config FILE` for pszero-launch: a JSON object whose keys are flag names without the
// leading dashes ("workers", "nproc-per-node" or "nproc_per_node") and whose values are
// the flags' values (strings or numbers; true for a flag without value, false to leave it
// off). JSON only: no TOML library is packaged for this build (docs/cluster.md).
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace pszero {

// Returns `args` (argv without argv[0]) with `--config FILE` (or `--config=FILE`)
// replaced by the file's flags, placed first and skipping every flag the command line
// gives itself, so that command-line flags win. Without --config, `args` unchanged.
// InvalidArgument "--config: FILE: why" when the file cannot be read or parsed, is not an
// object, or holds a value that is not a string, number or boolean.
Result<std::vector<std::string>> ExpandConfigFlags(const std::vector<std::string>& args);

}  // namespace pszero
