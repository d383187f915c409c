// `--config FILE` for pszero-launch: a JSON object whose keys are flag names without the
// leading dashes ("workers", "nproc-per-node" or "nproc_per_node") and whose values are
// the flags' values (strings or numbers; true or false for a flag without value, false
// leaving it off). JSON only: no TOML library is packaged for this build (docs/cluster.md).
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace pszero {

// Returns `args` (argv without argv[0]) with `--config FILE` (or `--config=FILE`)
// replaced by the file's flags, placed first and skipping every flag the command line
// gives itself, so that command-line flags win. Without --config, `args` unchanged.
// `app` holds the flags a key may name. InvalidArgument "--config FILE: why" when the
// file cannot be read (it must be a regular file) or parsed, is not an object, names a
// flag `app` does not know, or gives a flag a value of the wrong kind (a boolean to a
// flag that takes a value, a string or number to one that takes none, null, an array or
// an object); "--config: why" when --config is empty or given twice.
Result<std::vector<std::string>> ExpandConfigFlags(const std::vector<std::string>& args,
                                                   const CLI::App& app);

}  // namespace pszero
