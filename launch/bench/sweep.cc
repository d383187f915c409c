#include "launch/bench/sweep.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>

#include "launch/progress.h"

namespace pszero::bench::sweep {

namespace {

using nlohmann::json;
using nlohmann::ordered_json;

// The quick preset: every subcommand once over the modes and 1, 2, 4, 8 workers of gpt-tiny,
// sized to finish within 10 minutes on the 2-core VM (docs/benchmarks.md has its wall time).
constexpr const char* kQuick = R"({
  "timeout_s": 300,
  "items": [
    {"kind": "collective", "op": "allreduce", "ranks": [2, 4], "min_bytes": "1K",
     "max_bytes": "16M", "step_factor": 4, "iters": 10, "warmup": 3, "peer": "mpi"},
    {"kind": "collective", "op": ["reduce_scatter", "allgather"], "ranks": [2, 4],
     "min_bytes": "1K", "max_bytes": "16M", "step_factor": 4, "iters": 10, "warmup": 3},
    {"kind": "p2p", "sizes": "1K,64K,1M,4M", "no_perftest": true},
    {"kind": "ps", "servers": [1, 2], "workers": [2, 4], "bytes": "16M", "no_p2p": true},
    {"kind": "train", "model": "gpt-tiny", "sync": ["allreduce", "zero1", "zero2", "zero3"],
     "workers": [1, 2, 4, 8], "steps": 5},
    {"kind": "train", "model": "gpt-tiny", "sync": "ps", "servers": 1, "workers": [1, 2, 4, 8],
     "steps": 5},
    {"kind": "simulate", "model": "gpt-tiny", "sync": "all", "servers": 1, "workers": 8,
     "project_to": 1024, "calibrate": "sweep", "fit_host_cores": true}
  ]
})";

// The full preset: two models, up to 8 workers, ps with 1 and 2 servers, the collectives
// over 8 B – 64 MiB at 2, 4 and 8 ranks beside Open MPI, and ucx_perftest beside p2p.
constexpr const char* kFull = R"({
  "timeout_s": 1800,
  "items": [
    {"kind": "collective", "op": ["allreduce", "reduce_scatter", "allgather"],
     "ranks": [2, 4, 8], "min_bytes": "8", "max_bytes": "64M", "step_factor": 2,
     "peer": "mpi"},
    {"kind": "p2p", "sizes": "1:16M"},
    {"kind": "ps", "servers": [1, 2, 4], "workers": [2, 4, 8], "bytes": "64M"},
    {"kind": "train", "model": ["gpt-tiny", "mlp"],
     "sync": ["allreduce", "zero1", "zero2", "zero3"], "workers": [1, 2, 4, 8], "steps": 10},
    {"kind": "train", "model": ["gpt-tiny", "mlp"], "sync": "ps", "servers": [1, 2],
     "workers": [1, 2, 4, 8], "steps": 10},
    {"kind": "simulate", "model": ["gpt-tiny", "mlp", "gpt-small"], "sync": "all",
     "servers": 2, "workers": 8, "project_to": 1024, "calibrate": "sweep",
     "fit_host_cores": true}
  ]
})";

// Flags the sweep itself sets on every child.
const std::vector<std::string>& ReservedKeys() {
  static const std::vector<std::string> keys = {"json", "output", "report-dir"};
  return keys;
}

std::string FlagName(std::string key) {
  std::replace(key.begin(), key.end(), '_', '-');
  return key;
}

// A scalar config value as a command-line value; false means "leave the flag off".
Result<std::optional<std::string>> FlagValue(const ordered_json& v, const std::string& where) {
  if (v.is_boolean()) {
    if (v.get<bool>()) return std::optional<std::string>(std::string());
    return std::optional<std::string>();
  }
  if (v.is_string()) {
    if (v.get<std::string>().empty()) return Status::InvalidArgument(where + ": empty string");
    return std::optional<std::string>(v.get<std::string>());
  }
  if (v.is_number_integer()) return std::optional<std::string>(std::to_string(v.get<int64_t>()));
  if (v.is_number()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", v.get<double>());
    return std::optional<std::string>(std::string(buf));
  }
  return Status::InvalidArgument(where + ": must be a string, number, boolean or a list of them");
}

std::string NameValue(const ordered_json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// Multiplies out the list values of `item`, the first key outermost.
std::vector<ordered_json> Expand(const ordered_json& item) {
  std::vector<ordered_json> out = {ordered_json::object()};
  for (const auto& [key, value] : item.items()) {
    std::vector<ordered_json> next;
    for (const ordered_json& partial : out) {
      if (value.is_array()) {
        for (const ordered_json& v : value) {
          ordered_json p = partial;
          p[key] = v;
          next.push_back(std::move(p));
        }
      } else {
        ordered_json p = partial;
        p[key] = value;
        next.push_back(std::move(p));
      }
    }
    out = std::move(next);
  }
  return out;
}

// As --timeout: at most 1e6 s (a deadline in milliseconds must fit an int64).
constexpr double kMaxTimeoutS = 1e6;

Result<double> Timeout(const ordered_json& v, const std::string& where) {
  if (!v.is_number() || !(v.get<double>() > 0) || v.get<double>() > kMaxTimeoutS) {
    return Status::InvalidArgument(where + ": must be a number of seconds in (0, 1e6]");
  }
  return v.get<double>();
}

std::string Cell(const json& v) {
  if (v.is_null()) return "";
  if (v.is_number()) return CsvNumber(v);
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

// Field at a dotted path, or null.
json At(const json& doc, const std::string& path) {
  const json* at = &doc;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = std::min(path.find('.', start), path.size());
    const std::string key = path.substr(start, dot - start);
    if (!at->is_object() || !at->contains(key)) return nullptr;
    at = &(*at)[key];
    start = dot + 1;
  }
  return *at;
}

// Rows of `list` (an array of objects) with the fields `paths`, after `lead` cells.
void AddRows(CsvTable* table, const std::vector<std::string>& lead, const json& list,
             const std::vector<std::string>& paths) {
  if (!list.is_array()) return;
  for (const json& entry : list) {
    std::vector<std::string> row = lead;
    for (const std::string& p : paths) row.push_back(Cell(At(entry, p)));
    table->rows.push_back(std::move(row));
  }
}

void SetHeader(CsvTable* table, std::vector<std::string> lead,
               const std::vector<std::string>& paths) {
  if (!table->header.empty()) return;
  for (const std::string& p : paths) {
    std::string name = p;
    std::replace(name.begin(), name.end(), '.', '_');
    lead.push_back(name);
  }
  table->header = std::move(lead);
}

// The training flags a simulate item calibrated on the sweep's runs takes from them.
const std::vector<std::string>& InheritedTrainFlags() {
  static const std::vector<std::string> flags = {"--grad-accum", "--recompute",
                                                 "--recompute-layers"};
  return flags;
}

// A calibrate-from-sweep simulate item predicts the configuration the sweep's train items
// ran: each of InheritedTrainFlags it does not give itself, set to the same value on
// every train item before it, is passed on (a flag the train items leave at its default
// stays off; values that differ are left to the item to choose).
void InheritTrainFlags(const std::vector<SweepItem>& before, SweepItem* item) {
  auto value_of = [](const SweepItem& s, const std::string& flag) -> std::optional<std::string> {
    for (const auto& [f, v] : s.flags) {
      if (f == flag) return v;
    }
    return std::nullopt;
  };
  for (const std::string& flag : InheritedTrainFlags()) {
    if (value_of(*item, flag)) continue;
    std::set<std::optional<std::string>> values;
    for (const SweepItem& s : before) {
      if (s.kind == "train") values.insert(value_of(s, flag));
    }
    if (values.size() != 1 || !*values.begin()) continue;
    const std::string& v = **values.begin();
    item->flags.emplace_back(flag, v);
    item->name.append(" ").append(flag, 2, std::string::npos).append("=").append(v);
  }
}

}  // namespace

const std::vector<std::string>& ItemKinds() {
  static const std::vector<std::string> kinds = {"collective", "p2p", "ps", "train", "simulate"};
  return kinds;
}

Result<std::vector<SweepItem>> ParseConfig(const ordered_json& config, double default_timeout_s) {
  if (!config.is_object()) return Status::InvalidArgument("not a JSON object");
  for (const auto& [key, value] : config.items()) {
    if (key != "items" && key != "timeout_s" && key != "comment") {
      return Status::InvalidArgument(key + ": unknown key (items, timeout_s, comment)");
    }
  }
  double timeout_s = default_timeout_s;
  if (config.contains("timeout_s")) {
    PSZERO_ASSIGN_OR_RETURN(timeout_s, Timeout(config["timeout_s"], "timeout_s"));
  }
  if (!config.contains("items") || !config["items"].is_array() || config["items"].empty()) {
    return Status::InvalidArgument("items: missing, or not a non-empty list");
  }
  std::vector<SweepItem> items;
  const ordered_json& list = config["items"];
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string at = "items[" + std::to_string(i) + "]";
    const ordered_json& item = list[i];
    if (!item.is_object()) return Status::InvalidArgument(at + ": not an object");
    if (!item.contains("kind") || !item["kind"].is_string()) {
      return Status::InvalidArgument(at + ".kind: missing, or not a string");
    }
    const std::string kind = item["kind"].get<std::string>();
    const auto& kinds = ItemKinds();
    if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end()) {
      return Status::InvalidArgument(at + ".kind: unknown kind '" + kind +
                                     "' (collective, p2p, ps, train, simulate)");
    }
    for (const auto& [key, value] : item.items()) {
      const std::string where = at + "." + key;
      const std::string flag = FlagName(key);
      if (std::find(ReservedKeys().begin(), ReservedKeys().end(), flag) != ReservedKeys().end()) {
        return Status::InvalidArgument(where + ": set by the sweep itself");
      }
      if (value.is_array() && value.empty()) return Status::InvalidArgument(where + ": empty list");
      if (key == "kind" && value.is_array()) {
        return Status::InvalidArgument(where + ": one kind per item");
      }
      if (key == "calibrate" && (kind != "simulate" || !value.is_string())) {
        return Status::InvalidArgument(where + ": a file or \"sweep\", simulate items only");
      }
    }
    for (const ordered_json& one : Expand(item)) {
      SweepItem s;
      s.index = static_cast<int>(items.size()) + 1;
      s.kind = kind;
      s.name = kind;
      s.params = one;
      s.timeout_s = timeout_s;
      for (const auto& [key, value] : one.items()) {
        const std::string where = at + "." + key;
        if (key == "kind") continue;
        if (key == "timeout_s") {
          PSZERO_ASSIGN_OR_RETURN(s.timeout_s, Timeout(value, where));
          continue;
        }
        if (key == "calibrate" && value.get<std::string>() == "sweep") {
          s.calibrate_from_sweep = true;
          s.name += " calibrate=sweep";
          continue;
        }
        PSZERO_ASSIGN_OR_RETURN(std::optional<std::string> v, FlagValue(value, where));
        if (!v) continue;
        s.flags.emplace_back("--" + FlagName(key), *v);
        s.name += " " + FlagName(key) + (v->empty() ? "" : "=" + NameValue(value));
      }
      if (s.calibrate_from_sweep) InheritTrainFlags(items, &s);
      items.push_back(std::move(s));
    }
  }
  return items;
}

Result<ordered_json> PresetConfig(const std::string& name) {
  if (name == "quick") return ordered_json::parse(kQuick);
  if (name == "full") return ordered_json::parse(kFull);
  return Status::InvalidArgument("unknown preset '" + name + "' (quick, full)");
}

std::vector<std::string> ChildArgs(const SweepItem& item, const ForwardedFlags& forwarded,
                                   const std::string& output_file, const std::string& report_dir,
                                   const std::vector<std::string>& calibration_files) {
  std::vector<std::string> args = {item.kind};
  for (const auto& [flag, value] : item.flags) {
    args.push_back(flag);
    if (!value.empty()) args.push_back(value);
  }
  if (item.kind == "train" || item.kind == "ps") {
    for (const auto& [flag, value] : forwarded) {
      args.push_back(flag);
      args.push_back(value);
    }
  }
  if (item.calibrate_from_sweep && !calibration_files.empty()) {
    args.push_back("--calibrate");
    for (const std::string& f : calibration_files) args.push_back(f);
  }
  args.push_back("--json");
  if (item.kind == "train") {
    args.push_back("--report-dir");
    args.push_back(report_dir);
  } else {
    args.push_back("--output");
    args.push_back(output_file);
  }
  return args;
}

json RankMemory(const json& report) {
  const json ranks = At(report, "ranks");
  if (!ranks.is_array()) return nullptr;
  const json* largest = nullptr;
  int64_t largest_peak = -1;
  for (const json& rank : ranks) {
    const json peak = At(rank, "memory.model_state.measured_peak");
    if (peak.is_number_integer() && peak.get<int64_t>() > largest_peak) {
      largest_peak = peak.get<int64_t>();
      largest = &rank;
    }
  }
  if (largest == nullptr) return nullptr;
  json peaks = json::object();
  const json categories = At(*largest, "memory.categories");
  if (categories.is_object()) {
    for (const auto& [name, c] : categories.items()) peaks[name] = c.value("peak", json());
  }
  return {{"rank", largest->value("rank", json())},
          {"peak", peaks},
          {"predicted", At(*largest, "memory.model_state.predicted_by_category")}};
}

bool UsableForCalibration(const json& doc) {
  if (!doc.is_object()) return false;
  if (doc.value("schema", "") == "pszero.run/1") return true;
  if (doc.value("benchmark", "") != "collective") return false;
  const std::string op = doc.value("op", "");
  return op == "allreduce" || op == "reduce_scatter" || op == "allgather";
}

std::string CsvTable::Render() const {
  auto line = [](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < cells.size(); ++i) {
      if (i > 0) out.push_back(',');
      const std::string& c = cells[i];
      if (c.find_first_of(",\"\n\r") == std::string::npos) {
        out += c;
        continue;
      }
      out.push_back('"');
      for (char ch : c) {
        if (ch == '"') out.push_back('"');
        out.push_back(ch);
      }
      out.push_back('"');
    }
    out.push_back('\n');
    return out;
  };
  std::string out = line(header);
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string CsvNumber(const json& v) {
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (!v.is_number()) return "";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.9g", v.get<double>());
  return buf;
}

void AppendCsvRows(const std::string& kind, const std::string& item_name, const json& result,
                   std::map<std::string, CsvTable>* tables) {
  if (!result.is_object()) return;
  if (kind == "collective") {
    static const std::vector<std::string> paths = {"bytes",      "count",      "time_us",
                                                   "algbw_gbps", "busbw_gbps", "wrong"};
    CsvTable& t = (*tables)["collectives.csv"];
    SetHeader(&t, {"item", "impl", "op", "ranks", "dtype"}, paths);
    const std::string op = result.value("op", ""), dtype = result.value("dtype", "");
    const std::string ranks = Cell(result.value("ranks", json()));
    AddRows(&t, {item_name, "pszero", op, ranks, dtype}, At(result, "rows"), paths);
    AddRows(&t, {item_name, "openmpi", op, ranks, dtype}, At(result, "mpi_rows"), paths);
  } else if (kind == "p2p") {
    static const std::vector<std::string> paths = {
        "bytes", "latency_us", "bandwidth_gbps", "perftest_latency_us", "perftest_bandwidth_gbps"};
    CsvTable& t = (*tables)["p2p.csv"];
    SetHeader(&t, {"item", "lanes"}, paths);
    AddRows(&t, {item_name, result.value("lanes", "")}, At(result, "runs"), paths);
  } else if (kind == "ps") {
    static const std::vector<std::string> paths = {"servers",    "workers",        "bytes",
                                                   "optimizer",  "time_us",        "algbw_gbps",
                                                   "busbw_gbps", "aggregate_gbps", "p2p_gbps"};
    CsvTable& t = (*tables)["ps.csv"];
    SetHeader(&t, {"item"}, paths);
    AddRows(&t, {item_name}, json::array({result}), paths);
  } else if (kind == "train") {
    static const std::vector<std::string> paths = {"sync",
                                                   "model",
                                                   "workers",
                                                   "servers",
                                                   "tp",
                                                   "steps",
                                                   "median_step_s",
                                                   "tokens_per_s",
                                                   "final_loss",
                                                   "model_state_bytes.measured_peak",
                                                   "model_state_bytes.predicted",
                                                   "model_state_bytes.formula",
                                                   "memory.peak.params",
                                                   "memory.peak.grads",
                                                   "memory.peak.optimizer",
                                                   "memory.peak.gathered_params",
                                                   "memory.peak.grad_buckets",
                                                   "memory.predicted.params",
                                                   "memory.predicted.grads",
                                                   "memory.predicted.optimizer",
                                                   "bytes_per_step.sent",
                                                   "bytes_per_step.theory",
                                                   "error"};
    CsvTable& t = (*tables)["train.csv"];
    SetHeader(&t, {"item"}, paths);
    AddRows(&t, {item_name}, At(result, "runs"), paths);
  } else if (kind == "simulate") {
    static const std::vector<std::string> paths = {"mode",           "step_s",
                                                   "compute_s",      "comm_s",
                                                   "exposed_comm_s", "bytes_sent_per_rank",
                                                   "memory.total",   "memory.formula"};
    CsvTable& t = (*tables)["simulate.csv"];
    SetHeader(&t, {"item", "model", "workers"}, paths);
    const std::string model = Cell(At(result, "workload.name"));
    const json projection = At(result, "projection");
    if (projection.is_object()) {
      for (const auto& [mode, series] : projection.items()) {
        if (!series.is_array()) continue;
        for (const json& point : series) {
          AddRows(&t, {item_name, model, Cell(point.value("workers", json()))},
                  json::array({point}), paths);
        }
      }
    } else {
      AddRows(&t, {item_name, model, Cell(At(result, "options.workers"))}, At(result, "modes"),
              paths);
    }
  }
}

double EstimateRemainingSeconds(const std::vector<SweepItem>& items,
                                const std::vector<double>& finished_wall_s) {
  std::map<std::string, std::pair<double, int>> by_kind;
  double all = 0;
  const size_t done = std::min(finished_wall_s.size(), items.size());
  if (done == 0) return -1;
  for (size_t i = 0; i < done; ++i) {
    auto& [sum, count] = by_kind[items[i].kind];
    sum += finished_wall_s[i];
    ++count;
    all += finished_wall_s[i];
  }
  const double mean_all = all / static_cast<double>(done);
  double left = 0;
  for (size_t i = done; i < items.size(); ++i) {
    auto it = by_kind.find(items[i].kind);
    left += it != by_kind.end() ? it->second.first / it->second.second : mean_all;
  }
  return left;
}

std::string ProgressLine(int k, int n, double elapsed_s, double eta_s, const std::string& name) {
  char head[96];
  std::snprintf(head, sizeof(head), "[%d/%d] %s elapsed, ETA %s  ", k, n,
                FormatEta(elapsed_s).c_str(), FormatEta(eta_s).c_str());
  return head + name;
}

}  // namespace pszero::bench::sweep
