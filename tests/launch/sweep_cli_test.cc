// The real `pszero-bench sweep`: a tiny config (two collective sizes, the fewest the
// simulator fits a link to; one 2-worker training job; a simulator projection calibrated on
// them) leaves results.json and CSVs with positive figures; a bad config is exit 2 naming it
// before anything runs; a failing item is recorded and the sweep goes on, then exits 1 with
// a one-line summary; SIGINT stops the running item's whole process tree, keeps
// results.json and skips the rest.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

ProcessResult Sweep(std::vector<std::string> args,
                    std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  args.insert(args.begin(), {BinaryPath("pszero-bench"), "sweep"});
  return RunProcess(args, timeout);
}

std::string WriteConfig(const fs::path& dir, const std::string& text) {
  const fs::path path = dir / "sweep.json";
  std::ofstream(path) << text;
  return path.string();
}

std::string Slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The one results directory a sweep made under `out`.
fs::path OnlyResultsDir(const fs::path& out) {
  std::vector<fs::path> dirs;
  for (const auto& e : fs::directory_iterator(out)) dirs.push_back(e.path());
  EXPECT_EQ(dirs.size(), 1u);
  return dirs.empty() ? fs::path() : dirs.front();
}

// CSV lines split into cells (the sweep's cells here hold no quotes).
std::vector<std::vector<std::string>> Csv(const fs::path& path) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(Slurp(path));
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> cells;
    std::istringstream cs(line);
    for (std::string c; std::getline(cs, c, ',');) cells.push_back(c);
    rows.push_back(cells);
  }
  return rows;
}

// The values of column `name` in a CSV with a header row.
std::vector<std::string> Column(const std::vector<std::vector<std::string>>& csv,
                                const std::string& name) {
  std::vector<std::string> out;
  if (csv.empty()) return out;
  const auto it = std::find(csv[0].begin(), csv[0].end(), name);
  EXPECT_NE(it, csv[0].end()) << "no column " << name;
  if (it == csv[0].end()) return out;
  const size_t i = static_cast<size_t>(it - csv[0].begin());
  for (size_t r = 1; r < csv.size(); ++r) out.push_back(i < csv[r].size() ? csv[r][i] : "");
  return out;
}

TEST(SweepCliTest, TinyConfigWritesResultsAndCsvWithPositiveFigures) {
  Result<TempDir> tmp = TempDir::Create("sweep-cli");
  ASSERT_TRUE(tmp.ok());
  const std::string config = WriteConfig(tmp->path(), R"({"items": [
    {"kind": "collective", "op": "allreduce", "ranks": 2, "min_bytes": "16K",
     "max_bytes": "64K", "step_factor": 4, "iters": 3, "warmup": 1},
    {"kind": "train", "model": "gpt-tiny", "sync": "allreduce", "workers": 2, "steps": 2},
    {"kind": "simulate", "model": "gpt-tiny", "sync": "allreduce", "workers": 2,
     "project_to": 8, "calibrate": "sweep"}]})");
  const fs::path out = tmp->path() / "results";
  const ProcessResult r = Sweep({"--config", config, "--out-dir", out.string()});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  // The progress line of each item (not a terminal: one line each) and the summary.
  EXPECT_NE(r.out.find("[1/3] 00:0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[3/3] "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("ETA"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sweep: 3 of 3 items ok"), std::string::npos) << r.out;

  const fs::path dir = OnlyResultsDir(out);
  const json doc = json::parse(Slurp(dir / "results.json"));
  EXPECT_EQ(doc["schema"], "pszero.sweep/1");
  EXPECT_EQ(doc["summary"]["ok"], 3);
  EXPECT_EQ(doc["summary"]["failed"], 0);
  EXPECT_GT(doc["wall_s"].get<double>(), 0.0);
  ASSERT_EQ(doc["items"].size(), 3u);
  for (const json& item : doc["items"]) {
    EXPECT_EQ(item["status"], "ok") << item.dump();
    EXPECT_GT(item["wall_s"].get<double>(), 0.0);
    EXPECT_TRUE(fs::exists(dir / item["output"].get<std::string>())) << item["output"];
  }
  const json& coll = doc["items"][0]["result"];
  ASSERT_EQ(coll["rows"].size(), 2u);
  EXPECT_EQ(coll["rows"][0]["bytes"], 16384);
  EXPECT_EQ(coll["rows"][1]["bytes"], 65536);
  for (const json& row : coll["rows"]) {
    EXPECT_GT(row["busbw_gbps"].get<double>(), 0.0);
    EXPECT_GT(row["time_us"].get<double>(), 0.0);
  }
  const json& run = doc["items"][1]["result"]["runs"][0];
  EXPECT_EQ(run["sync"], "allreduce");
  EXPECT_EQ(run["workers"], 2);
  EXPECT_GT(run["median_step_s"].get<double>(), 0.0);
  EXPECT_GT(run["tokens_per_s"].get<double>(), 0.0);
  // Memory by category from the kept run report: allreduce holds params, grads and
  // optimizer in full, as its formula predicts.
  for (const char* cat : {"params", "grads", "optimizer"}) {
    EXPECT_GT(run["memory"]["peak"][cat].get<int64_t>(), 0) << cat;
    EXPECT_EQ(run["memory"]["peak"][cat], run["memory"]["predicted"][cat]) << cat;
  }
  EXPECT_TRUE(fs::exists(dir / run["source"].get<std::string>())) << run["source"];
  EXPECT_GT(run["bytes_per_step"]["sent"].get<int64_t>(), 0);
  // The simulator was calibrated on the collective and the run before it.
  const json& sim = doc["items"][2]["result"];
  EXPECT_TRUE(sim.contains("calibration")) << sim.dump();
  ASSERT_EQ(sim["projection"]["allreduce"].size(), 4u);  // 1, 2, 4, 8
  const std::vector<std::string>& argv = doc["items"][2]["argv"];
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--calibrate"), argv.end());

  const auto collectives = Csv(dir / "collectives.csv");
  ASSERT_EQ(collectives.size(), 3u);
  EXPECT_EQ(Column(collectives, "impl"), (std::vector<std::string>{"pszero", "pszero"}));
  EXPECT_EQ(Column(collectives, "bytes"), (std::vector<std::string>{"16384", "65536"}));
  for (const std::string& s : Column(collectives, "busbw_gbps")) EXPECT_GT(std::stod(s), 0.0);
  const auto train = Csv(dir / "train.csv");
  ASSERT_EQ(train.size(), 2u);
  EXPECT_EQ(Column(train, "sync")[0], "allreduce");
  for (const char* col : {"median_step_s", "tokens_per_s", "memory_peak_params",
                          "memory_peak_optimizer", "bytes_per_step_sent"}) {
    EXPECT_GT(std::stod(Column(train, col)[0]), 0.0) << col;
  }
  const auto simulate = Csv(dir / "simulate.csv");
  ASSERT_EQ(simulate.size(), 5u);
  for (const std::string& s : Column(simulate, "step_s")) EXPECT_GT(std::stod(s), 0.0);
  const auto index = Csv(dir / "items.csv");
  ASSERT_EQ(index.size(), 4u);
  for (const std::string& s : Column(index, "status")) EXPECT_EQ(s, "ok");
}

TEST(SweepCliTest, BadConfigExitsTwoNamingItBeforeRunningAnything) {
  Result<TempDir> tmp = TempDir::Create("sweep-cli");
  ASSERT_TRUE(tmp.ok());
  const fs::path out = tmp->path() / "results";
  struct Case {
    std::string config;
    std::string names;
  };
  const std::vector<Case> cases = {
      {R"({"items": [{"kind": "p2p"}, {"kind": "trian"}]})", "items[1].kind: unknown kind"},
      {R"({"items": [{"kind": "collective", "ranks": [2, 0]}]})", "--ranks"},
      {R"({"items": [{"kind": "train", "no_such_flag": 1}]})", "--no-such-flag"},
      {R"({"items": [{"kind": "ps", "json": true}]})", "items[0].json"},
      {R"({"items": )", "not JSON"},
      // Items the flag parser accepts but the subcommand refuses before it starts anything:
      // refused by the sweep up front (and by --dry-run), not by a crashing child.
      {R"({"items": [{"kind": "collective", "min_bytes": "64K", "max_bytes": "4K"}]})",
       "item 1 (collective min-bytes=64K max-bytes=4K): --min-bytes must be > 0 and <= "
       "--max-bytes"},
      {R"({"items": [{"kind": "p2p", "sizes": "-8"}]})",
       "item 1 (p2p sizes=-8): --sizes: bad size '-8'"},
      {R"({"items": [{"kind": "train", "model": "custom", "heads": 3, "d_model": 64}]})",
       "item 1 (train model=custom heads=3 d-model=64): --heads: 3 heads do not divide d-model "
       "64"},
      {R"({"items": [{"kind": "train", "sync": "frob"}]})",
       "item 1 (train sync=frob): --sync: unknown mode 'frob'"},
      {R"({"items": [{"kind": "train", "model": "gpt-tiny", "sync": "ps", "workers": 2}]})",
       "item 1 (train model=gpt-tiny sync=ps workers=2): --servers: --sync ps needs at least one "
       "server"},
      {R"({"items": [{"kind": "simulate", "params": "abc"}]})",
       "item 1 (simulate params=abc): --params: not a count like 7.5e9, 7.5B or 85M"},
      {R"({"timeout_s": 1e308, "items": [{"kind": "p2p"}]})",
       "timeout_s: must be a number of seconds in (0, 1e6]"},
  };
  for (const Case& c : cases) {
    const std::string config = WriteConfig(tmp->path(), c.config);
    const ProcessResult r = Sweep({"--config", config, "--out-dir", out.string()});
    EXPECT_EQ(r.exit_code, 2) << c.config << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find("--config: " + config), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.names), std::string::npos)
        << "does not name " << c.names << ": " << r.err;
    EXPECT_EQ(r.out, "");
  }
  EXPECT_FALSE(fs::exists(out)) << "a sweep with a bad config made its results directory";
  // --dry-run checks the items the same way.
  {
    const std::string config = WriteConfig(
        tmp->path(), R"({"items": [{"kind": "p2p"}, {"kind": "simulate", "params": "abc"}]})");
    const ProcessResult r = Sweep({"--config", config, "--dry-run"});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(r.err, "pszero-bench sweep: error: --config: " + config +
                         ": item 2 (simulate params=abc): --params: not a count like 7.5e9, "
                         "7.5B or 85M\n");
    EXPECT_EQ(r.out, "");
  }
  const std::vector<std::pair<std::vector<std::string>, std::string>> flag_cases = {
      {{"--preset", "slow"}, "--preset"},
      {{"--preset", "quick", "--timeout", "0"}, "--timeout"},
      {{"--preset", "quick", "--timeout", "nan"},
       "--timeout: Value nan is not a finite number in [1 - 1e+06]"},
      {{"--preset", "quick", "--emulate-hosts", "0"}, "--emulate-hosts"},
      {{"--out-dir", out.string()}, "--preset, --config"},
  };
  for (const auto& [args, names] : flag_cases) {
    const ProcessResult r = Sweep(args);
    EXPECT_EQ(r.exit_code, 2) << names << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_NE(r.err.find(names), std::string::npos) << r.err;
  }
}

TEST(SweepCliTest, FailingItemIsRecordedAndTheSweepGoesOn) {
  Result<TempDir> tmp = TempDir::Create("sweep-cli");
  ASSERT_TRUE(tmp.ok());
  // A train job past its --timeout passes every check and fails only when it runs.
  const std::string config = WriteConfig(tmp->path(), R"({"items": [
    {"kind": "train", "model": "gpt-tiny", "sync": "allreduce", "workers": 2, "steps": 100000,
     "timeout": 1},
    {"kind": "simulate", "model": "gpt-tiny", "workers": 4}]})");
  const fs::path out = tmp->path() / "results";
  const ProcessResult r = Sweep({"--config", config, "--out-dir", out.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_EQ(r.err.rfind("sweep: 1 of 2 items ok, 1 failed (item 1 train", 0), 0u) << r.err;
  EXPECT_NE(r.err.find("ran past --timeout of 1 s"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("[1/2] failed"), std::string::npos) << r.out;

  const json doc = json::parse(Slurp(OnlyResultsDir(out) / "results.json"));
  EXPECT_EQ(doc["summary"]["failed"], 1);
  const json& failed = doc["items"][0];
  EXPECT_EQ(failed["status"], "failed");
  EXPECT_NE(failed["error"].get<std::string>().find("pszero-bench train exit code 1"),
            std::string::npos)
      << failed["error"];
  EXPECT_NE(failed["error"].get<std::string>().find("ran past --timeout"), std::string::npos);
  EXPECT_EQ(doc["items"][1]["status"], "ok");
  EXPECT_GT(doc["items"][1]["result"]["modes"][0]["step_s"].get<double>(), 0.0);
  const auto index = Csv(OnlyResultsDir(out) / "items.csv");
  ASSERT_EQ(index.size(), 3u);
  EXPECT_EQ(Column(index, "status"), (std::vector<std::string>{"failed", "ok"}));
}

// An item whose child cannot run here (exit 77: --emulate-hosts without CAP_NET_ADMIN,
// here as nobody through setpriv) is recorded as skipped with the child's reason, and the
// sweep still succeeds.
TEST(SweepCliTest, ItemThatCannotRunHereIsSkippedWithTheReason) {
  if (::geteuid() != 0 || ::access("/usr/bin/setpriv", X_OK) != 0) {
    GTEST_SKIP() << "needs root and /usr/bin/setpriv to run the sweep as nobody";
  }
  Result<TempDir> tmp = TempDir::Create("sweep-cli");
  ASSERT_TRUE(tmp.ok());
  ASSERT_EQ(::chmod(tmp->path().c_str(), 0777), 0);
  const std::string config = WriteConfig(tmp->path(), R"({"items": [
    {"kind": "train", "model": "gpt-tiny", "sync": "allreduce", "workers": 2, "steps": 1},
    {"kind": "simulate", "model": "gpt-tiny", "workers": 4}]})");
  const fs::path out = tmp->path() / "results";
  const ProcessResult r =
      RunProcess({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all", "--bounding-set=-all", BinaryPath("pszero-bench"), "sweep",
                  "--config", config, "--out-dir", out.string(), "--emulate-hosts", "2"},
                 std::chrono::seconds(120));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("sweep: 1 of 2 items ok, 1 skipped (could not run here)"), std::string::npos)
      << r.out << r.err;
  const json doc = json::parse(Slurp(OnlyResultsDir(out) / "results.json"));
  EXPECT_EQ(doc["items"][0]["status"], "skipped");
  EXPECT_NE(doc["items"][0]["error"].get<std::string>().find("cannot emulate"), std::string::npos)
      << doc["items"][0]["error"];
  EXPECT_EQ(doc["items"][1]["status"], "ok");
}

// Processes whose command line mentions `text` (the test's temporary directory).
std::vector<std::string> ProcessesMentioning(const std::string& text) {
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string cmdline = Slurp(e.path() / "cmdline");
    if (cmdline.find(text) != std::string::npos) found.push_back(e.path().filename().string());
  }
  return found;
}

TEST(SweepCliTest, InterruptStopsTheItemKeepsResultsAndSkipsTheRest) {
  Result<TempDir> tmp = TempDir::Create("sweep-cli");
  ASSERT_TRUE(tmp.ok());
  const std::string config = WriteConfig(tmp->path(), R"({"items": [
    {"kind": "simulate", "model": "gpt-tiny", "workers": 2},
    {"kind": "train", "model": "gpt-tiny", "sync": "allreduce", "workers": 2, "steps": 5000},
    {"kind": "simulate", "model": "gpt-tiny", "workers": 4}]})");
  const fs::path out = tmp->path() / "results";
  auto sweep = ChildProcess::Spawn(
      {BinaryPath("pszero-bench"), "sweep", "--config", config, "--out-dir", out.string()});
  ASSERT_TRUE(sweep);
  // Interrupt once the train item's job runs: the sweep, the train bench, pszero-launch and
  // its two workers all name the test's directory on their command lines (no sleeping on a
  // guess: poll with the child's own wait as the tick).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ProcessesMentioning(tmp->path().string()).size() < 5) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << sweep->Output();
    ASSERT_FALSE(sweep->Wait(std::chrono::milliseconds(20))) << sweep->Output();
  }
  sweep->Signal(SIGINT);
  ASSERT_TRUE(sweep->Wait(std::chrono::seconds(30))) << sweep->Output();
  ASSERT_TRUE(WIFEXITED(sweep->wait_status())) << sweep->Output();
  EXPECT_EQ(WEXITSTATUS(sweep->wait_status()), 128 + SIGINT) << sweep->Output();
  EXPECT_NE(sweep->Output().find("interrupted by signal 2"), std::string::npos) << sweep->Output();
  const json doc = json::parse(Slurp(OnlyResultsDir(out) / "results.json"));
  EXPECT_FALSE(doc["finished"].is_null());
  EXPECT_EQ(doc["items"][0]["status"], "ok");
  EXPECT_EQ(doc["items"][1]["status"], "failed");
  EXPECT_EQ(doc["items"][2]["status"], "skipped");
  // The train bench, its launcher and workers are gone too: SIGINT went down the chain
  // (sweep -> bench -> launcher -> workers), or at worst RunChild's 10 s grace ran out.
  const auto gone_by = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (!ProcessesMentioning(tmp->path().string()).empty() &&
         std::chrono::steady_clock::now() < gone_by) {
    sweep->Wait(std::chrono::milliseconds(50));  // returns at once: used as the tick
  }
  EXPECT_EQ(ProcessesMentioning(tmp->path().string()), std::vector<std::string>{});
}

TEST(SweepCliTest, DryRunForwardsEmulationFlagsToTrainAndPs) {
  const ProcessResult r =
      Sweep({"--preset", "quick", "--dry-run", "--emulate-hosts", "4", "--link-gbit", "10"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  int train = 0, ps = 0, other = 0;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const bool forwarded = line.find("--emulate-hosts 4 --link-gbit 10") != std::string::npos;
    if (line.find("pszero-bench train ") != std::string::npos) {
      ++train;
      EXPECT_TRUE(forwarded) << line;
    } else if (line.find("pszero-bench ps ") != std::string::npos) {
      ++ps;
      EXPECT_TRUE(forwarded) << line;
    } else {
      ++other;
      EXPECT_FALSE(forwarded) << line;
    }
  }
  EXPECT_GT(train, 0);
  EXPECT_GT(ps, 0);
  EXPECT_GT(other, 0);
  // --print-config prints a config that --config takes back.
  const ProcessResult p = Sweep({"--preset", "quick", "--print-config"});
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(json::parse(p.out)["items"].size(), 7u);
}

}  // namespace
}  // namespace pszero::testing
