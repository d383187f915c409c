// `pszero-bench sweep`: the pure parts. A sweep is a list of items, each one run of another
// pszero-bench subcommand (collective, p2p, ps, train, simulate) as a child process; this
// file turns a config (a preset or a JSON file, docs/benchmarks.md) into items and child
// command lines, turns the children's JSON into CSV rows, and formats the progress line.
// The command that runs the children and writes bench-results/<timestamp>/ is
// sweep_command.cc. Plain functions and values; thread-safe.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace pszero::bench::sweep {

// The subcommands a sweep item may run.
const std::vector<std::string>& ItemKinds();

// One run of one subcommand: `flags` are (--name, value) pairs in order; an empty value is
// a flag without one (`--check`).
struct SweepItem {
  int index = 0;     // 1-based position in the sweep
  std::string kind;  // collective, p2p, ps, train, simulate
  std::string name;  // "train model=gpt-tiny sync=zero3 workers=4": for lines and errors
  std::vector<std::pair<std::string, std::string>> flags;
  nlohmann::ordered_json params;  // the item after list expansion, as the config gave it
  double timeout_s = 0;           // the whole child, deadline of RunChild
  // simulate with "calibrate": "sweep": calibrated on the run reports and collective JSON
  // this sweep wrote before it (no --calibrate of its own). Such an item also takes
  // --grad-accum, --recompute and --recompute-layers from the train items before it when
  // it does not give them and they all ran the same value (ParseConfig).
  bool calibrate_from_sweep = false;
};

// Flags the sweep forwards to every train and ps item (--emulate-hosts H --link-gbit G).
using ForwardedFlags = std::vector<std::pair<std::string, std::string>>;

// The items of a config document (schema in docs/benchmarks.md): {"timeout_s": T,
// "items": [{"kind": K, "timeout_s": T, "<flag>": value, ...}, ...]}. A value that is a list
// multiplies the item out (the first key listed outermost); true is a flag without value,
// false leaves it off; "min_bytes" and "min-bytes" both mean --min-bytes. InvalidArgument
// naming the item and key ("items[2].kind: unknown kind 'trian' (collective, p2p, ps,
// train, simulate)"). Flags the sweep sets itself (json, output, report-dir) are refused.
Result<std::vector<SweepItem>> ParseConfig(const nlohmann::ordered_json& config,
                                           double default_timeout_s);

// The built-in configs: "quick" (≤ 10 minutes on a 2-core machine) and "full".
Result<nlohmann::ordered_json> PresetConfig(const std::string& name);

// The child's arguments after `pszero-bench`: kind, the item's flags, then what the sweep
// adds: for train and ps the forwarded flags; `--json`; `--output FILE` (all but train,
// whose JSON is read from stdout) or `--report-dir DIR` (train). `calibration_files` go to
// a calibrate-from-sweep simulate item as `--calibrate F...`.
std::vector<std::string> ChildArgs(const SweepItem& item, const ForwardedFlags& forwarded,
                                   const std::string& output_file, const std::string& report_dir,
                                   const std::vector<std::string>& calibration_files);

// Memory of the rank whose model state peaked highest in a run report (pszero.run/1):
// {"rank": r, "peak": {category: bytes, ...}, "predicted": {"params": …, "grads": …,
// "optimizer": …}}; null when the report has no ranks with memory.
nlohmann::json RankMemory(const nlohmann::json& report);

// Whether a child's JSON is something `simulate --calibrate` reads: a run report
// (pszero.run/1) or a collective benchmark of allreduce, reduce_scatter or allgather.
bool UsableForCalibration(const nlohmann::json& doc);

// CSV ------------------------------------------------------------------------------------

// One CSV table: header and rows of already formatted cells.
struct CsvTable {
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
  std::string Render() const;  // RFC 4180: cells with , " or newline are quoted
};

// Per item kind, the table its results go to (collectives.csv, p2p.csv, ps.csv, train.csv,
// simulate.csv) with the rows of one item's result JSON appended. `item_name` becomes the
// first column. Unknown or malformed results add nothing.
void AppendCsvRows(const std::string& kind, const std::string& item_name,
                   const nlohmann::json& result, std::map<std::string, CsvTable>* tables);

// A number as a CSV cell: integers exactly, others with up to 9 significant digits.
std::string CsvNumber(const nlohmann::json& v);

// Progress ---------------------------------------------------------------------------------

// Seconds still to go: for each item not yet finished, the mean wall time of finished items
// of its kind, else of all finished items; negative (unknown) when none has finished.
double EstimateRemainingSeconds(const std::vector<SweepItem>& items,
                                const std::vector<double>& finished_wall_s);

// "[3/12] 00:41 elapsed, ETA 02:10  train model=gpt-tiny sync=zero3 workers=4"
std::string ProgressLine(int k, int n, double elapsed_s, double eta_s, const std::string& name);

}  // namespace pszero::bench::sweep
