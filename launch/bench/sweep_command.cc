// `pszero-bench sweep --preset quick|full | --config FILE`: runs every item of a sweep as a
// child `pszero-bench <kind> ... --json` (RunChild: own process group, deadline, reaped by
// pid), one after the other, and collects their JSON under <out-dir>/<UTC timestamp>/:
//   results.json        schema pszero.sweep/1: the config, every item (argv, status, error,
//                       wall time, the child's JSON), host and timing
//   collectives.csv p2p.csv ps.csv train.csv simulate.csv items.csv
//   raw/NNN-kind.json   each child's JSON as it wrote it; reports/NNN-train/ its run reports
// Every item's flags are checked against the subcommand's own parser before anything runs
// (a bad one: exit 2, one line naming the item and flag). An item that fails is recorded
// with its error and the sweep goes on; the exit code is then 1, after a one-line summary.
// results.json is rewritten (atomically) after every item, so an interrupted sweep leaves
// what it measured.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "common/atomic_file.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/report.h"
#include "launch/bench/child_run.h"
#include "launch/bench/command.h"
#include "launch/bench/emulated_cluster.h"
#include "launch/bench/sweep.h"
#include "launch/progress.h"

namespace pszero::bench {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

struct SweepFlags {
  std::string preset;
  std::string config;
  std::string out_dir = "bench-results";
  double timeout_s = 900;
  int emulate_hosts = 0;
  double link_gbit = 0;
  bool print_config = false;
  bool dry_run = false;
};

int Usage(const std::string& message) {
  std::cerr << "pszero-bench sweep: error: " << message << "\n";
  return kExitUsage;
}

// Parses the item's command line with the subcommand's own flags (a fresh app; nothing
// runs), so that a typo in a config stops the sweep before its first item rather than
// failing item 17 after nine minutes. The forwarded flags are left out: the child decides.
Status CheckItemFlags(const sweep::SweepItem& item) {
  auto root = MakeApp("pszero-bench", "");
  BenchCommand (*add)(CLI::App&) = item.kind == "collective" ? AddCollectiveCommand
                                   : item.kind == "p2p"      ? AddP2pCommand
                                   : item.kind == "ps"       ? AddPsCommand
                                   : item.kind == "train"    ? AddTrainCommand
                                                             : AddSimulateCommand;
  // The command owns the flags its options write into: it must outlive the parse.
  const BenchCommand command = add(*root);
  std::vector<std::string> args = {"pszero-bench"};
  // A simulate item calibrated on this sweep's results gets them as --calibrate files,
  // which do not exist yet: a stand-in (the checks do not read them).
  std::vector<std::string> calibration;
  if (item.calibrate_from_sweep) calibration.push_back("/dev/null");
  for (const std::string& a : sweep::ChildArgs(item, {}, "/dev/null", "/dev/null", calibration)) {
    args.push_back(a);
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  try {
    root->parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    return Status::InvalidArgument(what);
  }
  // What the subcommand checks after parsing, before it starts anything (a collective's
  // --min-bytes above --max-bytes, a model whose heads do not divide d_model).
  return command.check ? command.check() : Status::Ok();
}

// The current UTC time in a strftime format.
std::string UtcNow(const char* format) {
  const std::time_t now = std::time(nullptr);
  std::tm tm = {};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), format, &tm);
  return buf;
}

constexpr const char* kIsoFormat = "%Y-%m-%dT%H:%M:%SZ";

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one + " " + five + " " + fifteen;
}

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

std::string ItemId(const sweep::SweepItem& item) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%03d-%s", item.index, item.kind.c_str());
  return buf;
}

// The outcome of one item, as results.json records it.
struct Outcome {
  std::string status = "pending";  // ok, failed, skipped (after an interrupt, or exit 77)
  std::string error;
  double wall_s = 0;
  std::vector<std::string> argv;
  std::string stderr_tail;
  json result;  // the child's JSON, null when there is none
};

json ItemJson(const sweep::SweepItem& item, const Outcome& o) {
  return {{"index", item.index},
          {"kind", item.kind},
          {"name", item.name},
          {"params", item.params},
          {"argv", o.argv},
          {"status", o.status},
          {"error", o.error.empty() ? json(nullptr) : json(o.error)},
          {"wall_s", o.wall_s},
          {"output", o.result.is_null() ? json(nullptr) : json("raw/" + ItemId(item) + ".json")},
          {"stderr_tail", o.stderr_tail},
          {"result", o.result}};
}

// A train child's JSON with each run's memory by category from its run report, and the
// report's path relative to the results directory. The report paths go to `calibration`.
void AddTrainMemory(const fs::path& dir, json* result, std::vector<std::string>* calibration) {
  if (!result->contains("runs") || !(*result)["runs"].is_array()) return;
  for (json& run : (*result)["runs"]) {
    const std::string source = run.value("source", "");
    if (source.empty()) continue;
    Result<std::string> text = ReadFile(source);
    if (!text.ok()) continue;
    const json report = json::parse(*text, nullptr, false);
    if (report.is_discarded()) continue;
    run["memory"] = sweep::RankMemory(report);
    if (run.value("error", json()).is_null()) calibration->push_back(source);
    run["source"] = fs::relative(source, dir).string();
  }
}

// Runs one item; fills `o`. Returns the signal that interrupted it, or 0.
int RunItem(const std::string& self, const fs::path& dir, const sweep::SweepItem& item,
            const sweep::ForwardedFlags& forwarded, std::vector<std::string>* calibration,
            Outcome* o) {
  const std::string id = ItemId(item);
  const fs::path output = dir / "raw" / (id + ".json");
  const fs::path reports = dir / "reports" / id;
  if (item.calibrate_from_sweep && calibration->empty()) {
    o->status = "failed";
    o->error = "calibrate=sweep: no run reports or collectives measured before this item";
    return 0;
  }
  o->argv = {self};
  for (const std::string& a :
       sweep::ChildArgs(item, forwarded, output.string(), reports.string(), *calibration)) {
    o->argv.push_back(a);
  }
  const auto start = Clock::now();
  Result<ChildRun> run =
      RunChild(o->argv, std::chrono::milliseconds(static_cast<int64_t>(item.timeout_s * 1000)));
  o->wall_s = Seconds(start);
  if (!run.ok()) {
    o->status = "failed";
    o->error = run.status().message();
    return 0;
  }
  o->stderr_tail = LastLines(run->err, 20);
  if (!run->signaled && !run->timed_out && run->exit_code == kExitSkipped) {
    // The child could not run here (e.g. --emulate-hosts without namespaces) and said why.
    o->status = "skipped";
    o->error = LastLines(run->err, 1);
    return run->interrupted_by;
  }
  if (item.kind == "train") {
    // train prints its JSON on stdout (and exits non-zero when one of its jobs failed,
    // keeping the others' rows); the sweep keeps it as raw/ID.json.
    json doc = json::parse(run->out, nullptr, false);
    if (doc.is_object()) {
      AddTrainMemory(dir, &doc, calibration);
      o->result = doc;
      if (Status s = WriteJsonAtomic(output, doc); !s.ok()) o->error = s.ToString();
    } else if (run->ok()) {
      o->error = "exited 0 but printed no JSON";
    }
  } else if (run->ok()) {
    Result<std::string> text = ReadFile(output);
    json doc = text.ok() ? json::parse(*text, nullptr, false) : json();
    if (doc.is_object()) {
      o->result = doc;
      if (item.kind == "collective" && sweep::UsableForCalibration(doc)) {
        calibration->push_back(output.string());
      }
    } else {
      o->error = "exited 0 but wrote no JSON to " + output.string();
    }
  }
  if (!run->ok()) {
    const std::string why = LastLines(run->err, 1);
    o->error =
        "pszero-bench " + item.kind + " " + run->Describe() + (why.empty() ? "" : ": " + why);
  }
  o->status = o->error.empty() ? "ok" : "failed";
  return run->interrupted_by;
}

Status WriteResults(const fs::path& dir, const json& head,
                    const std::vector<sweep::SweepItem>& items,
                    const std::vector<Outcome>& outcomes, double wall_s, bool final) {
  json doc = head;
  doc["finished"] = final ? json(UtcNow(kIsoFormat)) : json(nullptr);
  doc["wall_s"] = wall_s;
  doc["load_average_end"] = LoadAverage();
  json list = json::array();
  int ok = 0, failed = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    list.push_back(ItemJson(items[i], outcomes[i]));
    ok += outcomes[i].status == "ok";
    failed += outcomes[i].status == "failed";
  }
  doc["summary"] = {{"items", items.size()}, {"ok", ok}, {"failed", failed}};
  doc["items"] = list;
  PSZERO_RETURN_IF_ERROR(WriteJsonAtomic(dir / "results.json", doc));
  if (!final) return Status::Ok();
  std::map<std::string, sweep::CsvTable> tables;
  sweep::CsvTable& index = tables["items.csv"];
  index.header = {"index", "kind", "name", "status", "wall_s", "error"};
  for (size_t i = 0; i < items.size(); ++i) {
    index.rows.push_back({std::to_string(items[i].index), items[i].kind, items[i].name,
                          outcomes[i].status, sweep::CsvNumber(outcomes[i].wall_s),
                          outcomes[i].error});
    sweep::AppendCsvRows(items[i].kind, items[i].name, outcomes[i].result, &tables);
  }
  for (const auto& [name, table] : tables) {
    PSZERO_RETURN_IF_ERROR(WriteFileAtomic(dir / name, table.Render()));
  }
  return Status::Ok();
}

// <out-dir>/<stamp>, or <stamp>-2, -3 … when a sweep started in the same second.
Result<fs::path> MakeResultsDir(const std::string& out_dir) {
  const std::string stamp = UtcNow("%Y%m%dT%H%M%SZ");
  for (int n = 1; n < 100; ++n) {
    fs::path dir = fs::path(out_dir) / (n == 1 ? stamp : stamp + "-" + std::to_string(n));
    std::error_code ec;
    fs::create_directories(dir.parent_path(), ec);
    if (ec) return Status::IoError(out_dir + ": " + ec.message());
    if (fs::create_directory(dir, ec)) {
      fs::create_directory(dir / "raw", ec);
      if (!ec) fs::create_directory(dir / "reports", ec);
      if (ec) return Status::IoError(dir.string() + ": " + ec.message());
      return fs::absolute(dir);
    }
    if (ec) return Status::IoError(dir.string() + ": " + ec.message());
  }
  return Status::IoError(out_dir + ": cannot make a results directory");
}

int RunSweep(const SweepFlags& f) {
  if (f.preset.empty() == f.config.empty()) {
    return Usage("--preset, --config: give exactly one of them");
  }
  const std::string source = f.preset.empty() ? "--config: " + f.config : "--preset: " + f.preset;
  ordered_json config;
  if (!f.preset.empty()) {
    Result<ordered_json> c = sweep::PresetConfig(f.preset);
    if (!c.ok()) return Usage("--preset: " + c.status().message());
    config = *c;
  } else {
    Result<std::string> text = ReadInputFile(f.config);
    if (!text.ok()) return Usage("--config: " + text.status().message());
    config = ordered_json::parse(*text, nullptr, false);
    if (config.is_discarded()) return Usage(source + ": not JSON");
  }
  if (f.print_config) {
    std::cout << config.dump(2) << "\n";
    return 0;
  }
  Result<std::vector<sweep::SweepItem>> parsed = sweep::ParseConfig(config, f.timeout_s);
  if (!parsed.ok()) return Usage(source + ": " + parsed.status().message());
  const std::vector<sweep::SweepItem>& items = *parsed;
  for (const sweep::SweepItem& item : items) {
    if (Status s = CheckItemFlags(item); !s.ok()) {
      return Usage(source + ": item " + std::to_string(item.index) + " (" + item.name +
                   "): " + s.message());
    }
  }
  sweep::ForwardedFlags forwarded;
  if (f.emulate_hosts > 0)
    forwarded.emplace_back("--emulate-hosts", std::to_string(f.emulate_hosts));
  if (f.link_gbit > 0) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", f.link_gbit);
    forwarded.emplace_back("--link-gbit", buf);
  }
  std::error_code ec;
  const std::string self = fs::read_symlink("/proc/self/exe", ec).string();
  if (ec) {
    std::cerr << "pszero-bench sweep: cannot find /proc/self/exe: " << ec.message() << "\n";
    return 1;
  }
  if (f.dry_run) {
    for (const sweep::SweepItem& item : items) {
      std::string line =
          "[" + std::to_string(item.index) + "/" + std::to_string(items.size()) + "] pszero-bench";
      for (const std::string& a : sweep::ChildArgs(item, forwarded, "raw/" + ItemId(item) + ".json",
                                                   "reports/" + ItemId(item), {})) {
        line += " " + a;
      }
      std::cout << line << "\n";
    }
    return 0;
  }
  Result<fs::path> made = MakeResultsDir(f.out_dir);
  if (!made.ok()) return Usage("--out-dir: " + made.status().message());
  const fs::path dir = *made;

  json head = {{"schema", "pszero.sweep/1"},
               {"preset", f.preset.empty() ? json(nullptr) : json(f.preset)},
               {"config_file", f.config.empty() ? json(nullptr) : json(f.config)},
               {"config", config},
               {"emulate_hosts", f.emulate_hosts > 0 ? json(f.emulate_hosts) : json(nullptr)},
               {"link_gbit", f.link_gbit > 0 ? json(f.link_gbit) : json(nullptr)},
               {"version", VersionString()},
               {"host_cores", static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))},
               {"load_average_start", LoadAverage()},
               {"started", UtcNow(kIsoFormat)}};
  const bool terminal = ::isatty(STDOUT_FILENO) == 1;
  std::printf("# pszero-bench sweep: %zu items, results in %s\n", items.size(), dir.c_str());
  std::fflush(stdout);
  const auto start = Clock::now();
  std::vector<Outcome> outcomes(items.size());
  std::vector<double> finished_wall_s;
  std::vector<std::string> calibration;
  int interrupted = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    const sweep::SweepItem& item = items[i];
    const int n = static_cast<int>(items.size());
    const std::string progress =
        sweep::ProgressLine(item.index, n, Seconds(start),
                            sweep::EstimateRemainingSeconds(items, finished_wall_s), item.name);
    if (terminal) {
      std::printf("\r\033[K%s", progress.c_str());
    } else {
      std::printf("%s\n", progress.c_str());
    }
    std::fflush(stdout);
    Outcome& o = outcomes[i];
    if (interrupted == 0) {
      interrupted = RunItem(self, dir, item, forwarded, &calibration, &o);
    }
    if (interrupted != 0 && o.status == "pending") {
      o.status = "skipped";
      o.error = "not run: interrupted by signal " + std::to_string(interrupted);
    }
    finished_wall_s.push_back(o.wall_s);
    char done[64];
    std::snprintf(done, sizeof(done), "[%d/%d] %s %.1f s  ", item.index, n,
                  o.status == "ok" ? "ok" : o.status.c_str(), o.wall_s);
    std::printf("%s%s%s%s\n", terminal ? "\r\033[K" : "", done, item.name.c_str(),
                o.error.empty() ? "" : (": " + o.error).c_str());
    std::fflush(stdout);
    if (Status s = WriteResults(dir, head, items, outcomes, Seconds(start), false); !s.ok()) {
      std::cerr << "pszero-bench sweep: " << s.ToString() << "\n";
      return 1;
    }
    if (interrupted != 0) break;
  }
  for (Outcome& o : outcomes) {
    if (o.status == "pending") {
      o.status = "skipped";
      o.error = "not run: interrupted by signal " + std::to_string(interrupted);
    }
  }
  const double wall = Seconds(start);
  if (Status s = WriteResults(dir, head, items, outcomes, wall, true); !s.ok()) {
    std::cerr << "pszero-bench sweep: " << s.ToString() << "\n";
    return 1;
  }
  int ok = 0, failed = 0, skipped = 0;
  std::string first_failure;
  for (size_t i = 0; i < items.size(); ++i) {
    if (outcomes[i].status == "ok") {
      ++ok;
    } else if (outcomes[i].status == "skipped" && interrupted == 0) {
      ++skipped;
    } else if (outcomes[i].status == "failed") {
      if (failed++ == 0) {
        first_failure = "item " + std::to_string(items[i].index) + " " + items[i].name + ": " +
                        outcomes[i].error;
      }
    }
  }
  std::ostringstream summary;
  summary << "sweep: " << ok << " of " << items.size() << " items ok";
  if (failed > 0) {
    summary << ", " << failed << " failed (" << first_failure << (failed > 1 ? "; …" : "") << ")";
  }
  if (skipped > 0) summary << ", " << skipped << " skipped (could not run here)";
  if (interrupted != 0) summary << ", interrupted by signal " << interrupted;
  summary << " in " << FormatEta(wall) << "; results in " << dir.string();
  if (failed == 0 && interrupted == 0) {
    std::cout << summary.str() << "\n";
    return 0;
  }
  std::cerr << summary.str() << "\n";
  return interrupted != 0 ? 128 + interrupted : 1;
}

}  // namespace

BenchCommand AddSweepCommand(CLI::App& root) {
  auto f = std::make_shared<SweepFlags>();
  CLI::App* app = root.add_subcommand(
      "sweep",
      "Runs collective, p2p, ps, train and simulate over modes x workers x models (a preset or "
      "a JSON config), one child per item; JSON and CSV under <out-dir>/<UTC timestamp>/");
  app->add_option("--preset", f->preset,
                  "Built-in sweep: quick (under 10 minutes on 2 cores) or full")
      ->check(CLI::IsMember({"quick", "full"}));
  app->add_option("--config", f->config, "JSON file listing the items (docs/benchmarks.md)")
      ->check(CLI::ExistingFile);
  app->add_option("--out-dir", f->out_dir, "Results go to a new <UTC timestamp> directory here");
  app->add_option("--timeout", f->timeout_s,
                  "Seconds one item may run, unless the config's timeout_s says otherwise")
      ->check(pszero::FiniteRange(1.0, 1e6));
  app->add_option("--emulate-hosts", f->emulate_hosts,
                  "Passed on to every train and ps item (emulated cluster of H hosts)")
      ->check(CLI::Range(1, 1024));
  app->add_option("--link-gbit", f->link_gbit,
                  "Passed on to every train and ps item (each emulated host's link, Gbit/s)")
      ->check(pszero::FiniteRange(1e-6, 1e6));
  app->add_flag("--print-config", f->print_config,
                "Print the preset's (or the file's) config as JSON and exit: a start for your own");
  app->add_flag("--dry-run", f->dry_run, "Check the config, print every item's command, run none");
  return {app, [f] { return RunSweep(*f); }};
}

}  // namespace pszero::bench
