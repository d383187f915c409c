// JSON reports (nlohmann-json): the helpers every report writer shares, and the atomic
// write that keeps an existing report intact if the writer dies half-way.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/memory.h"
#include "common/stats.h"
#include "common/status.h"

namespace pszero {

// Serializes `doc` (pretty, 2-space indent) and writes it atomically.
Status WriteJsonAtomic(const std::filesystem::path& path, const nlohmann::json& doc);

// {"count", "min", "max", "mean", "median", "p10", "p90"}.
nlohmann::json ToJson(const Summary& summary);

// {"host": {"params": {"live_bytes", "peak_bytes"}, ..., "total": {...}}, "cuda": ...};
// the cuda entry only when anything was allocated there.
nlohmann::json ToJson(const MemoryTracker& tracker);

}  // namespace pszero
