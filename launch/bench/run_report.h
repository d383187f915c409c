// Run reports (`pszero.run/1`, docs/report.md) as pszero-bench reads them: the figures one
// table row shows, and that row. Used by `pszero-bench report-table` (any reports a user
// has) and by `pszero-bench train --sync` (the reports of the jobs it launched), so both
// print the same columns. Plain functions and values; thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "common/status.h"

namespace pszero::bench {

// One report, reduced to what the comparison table shows. "Per rank" figures are those of
// the rank where they are largest (the one that bounds memory, or traffic).
struct RunSummary {
  std::string source;  // the file it was read from, if any
  std::string sync;
  std::string model;
  int workers = 0;
  int servers = 0;
  int tp = 1;
  int64_t steps = 0;
  double median_step_s = 0;
  double tokens_per_s = 0;
  double final_loss = 0;
  // memory.model_state of the rank with the largest measured peak
  int64_t state_measured_bytes = 0;
  int64_t state_predicted_bytes = 0;
  std::string state_formula;
  // bytes_per_step of the rank that sent the most in the last step
  int64_t sent_bytes_per_step = 0;
  int64_t theory_bytes_per_step = 0;
  std::string sha256;
};

// The summary of a parsed report; InvalidArgument naming the first missing or mistyped
// field ("summary.median_step_s: missing") or a wrong schema.
Result<RunSummary> SummarizeRunReport(const nlohmann::json& report);

// Reads and summarizes the report at `path`; errors start with the path.
Result<RunSummary> ReadRunReport(const std::filesystem::path& path);

// The summary as JSON (every field above, plus the two ratios, null where undefined).
nlohmann::json ToJson(const RunSummary& run);

// The comparison table: a header of two comment lines, then one line per run. Ratios are
// measured / predicted and sent / theory; "-" where the denominator is 0.
std::string RunTableHeader();
std::string RunTableRow(const RunSummary& run);

// "allreduce", or "ps/2" for a ps run with 2 servers: the mode column.
std::string ModeLabel(const RunSummary& run);

}  // namespace pszero::bench
