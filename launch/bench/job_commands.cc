// `pszero-bench checkpoint` and `pszero-bench soak`: whole pszero-launch jobs (beside
// pszero-bench, or --bin-dir) whose run reports (docs/report.md) carry what is measured.
//
//  checkpoint: per repeat, a 1-step job writing a checkpoint, then a job resuming it; write
//    GB/s = the bytes all workers wrote / the slowest worker's write time (gathering,
//    hashing and barriers included), load GB/s = the bytes all workers read (each reads the
//    whole checkpoint and checks every sha256) / the slowest worker's load time. Median and
//    range over --repeats.
//  soak: one long job; every worker's resident set size after its first step and at the
//    end, and the growth (issue 12's target: under 1% over 1,000 steps).
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/stats.h"
#include "common/temp_dir.h"
#include "launch/bench/child_run.h"
#include "launch/bench/command.h"
#include "launch/launcher.h"

namespace pszero::bench {

namespace {

namespace fs = std::filesystem;

struct JobFlags {
  std::string model = "gpt-tiny";
  int workers = 2;
  int tp = 1;
  std::string sync = "allreduce";
  int64_t steps = 1000;
  int repeats = 3;
  bool json = false;
  std::string bin_dir;
  double timeout_s = 1800;
};

// The tiny custom GPT the soak runs by default (thousands of steps in a minute).
const std::vector<std::string> kTinyModel = {"--model", "custom",  "--layers", "2",     "--d-model",
                                             "64",      "--heads", "4",        "--seq", "16",
                                             "--batch", "4",       "--vocab",  "64"};

Result<nlohmann::json> RunJob(const JobFlags& f, std::vector<std::string> extra,
                              const fs::path& report) {
  const std::string bin = f.bin_dir.empty() ? ExecutableDir() : f.bin_dir;
  std::vector<std::string> argv = {(fs::path(bin) / "pszero-launch").string(),
                                   "--workers",
                                   std::to_string(f.workers),
                                   "--tp",
                                   std::to_string(f.tp),
                                   "--sync",
                                   f.sync,
                                   "--report",
                                   report.string()};
  if (f.model == "tiny") {
    argv.insert(argv.end(), kTinyModel.begin(), kTinyModel.end());
  } else {
    argv.insert(argv.end(), {"--model", f.model});
  }
  argv.insert(argv.end(), extra.begin(), extra.end());
  PSZERO_ASSIGN_OR_RETURN(
      ChildRun run,
      RunChild(argv, std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1e3))));
  if (!run.ok() && !run.signaled && !run.timed_out && run.exit_code == 2) {
    // The launcher refused a flag (exit 2, one line): that line is the user's answer.
    return Status::InvalidArgument(LastLines(run.err, 1));
  }
  if (!run.ok()) {
    return Status::Internal("pszero-launch " + run.Describe() + ": " + LastLines(run.err, 1));
  }
  std::ifstream in(report);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  if (doc.is_discarded()) return Status::Corruption(report.string() + ": unreadable report");
  return doc;
}

// A usage error (exit 2, one line): pszero-launch's own line passed through as it is, or
// ours; anything else exits 1.
int Fail(const char* what, const Status& s) {
  if (s.code() == StatusCode::kInvalidArgument) {
    if (s.message().rfind("pszero-launch", 0) == 0) {
      std::cerr << s.message() << "\n";
    } else {
      std::cerr << "pszero-bench " << what << ": error: " << s.message() << "\n";
    }
    return 2;
  }
  std::cerr << "pszero-bench " << what << ": " << s.ToString() << "\n";
  return 1;
}

// The launcher a job runs (it finds its own workers), before the first job starts.
Status CheckJobBinaries(const JobFlags& f) {
  return CheckBinDir(f.bin_dir.empty() ? ExecutableDir() : f.bin_dir, !f.bin_dir.empty(),
                     {"pszero-launch"});
}

int RunCheckpointBench(const JobFlags& f) {
  if (Status s = CheckJobBinaries(f); !s.ok()) return Fail("checkpoint", s);
  std::vector<double> write_gbs, load_gbs, bytes;
  for (int rep = 0; rep < f.repeats; ++rep) {
    Result<TempDir> dir = TempDir::Create("pszero-bench-ckpt");
    if (!dir.ok()) return Fail("checkpoint", dir.status());
    const fs::path ck = dir->path() / "ck";
    Result<nlohmann::json> a =
        RunJob(f, {"--steps", "1", "--checkpoint-dir", ck.string()}, dir->path() / "write.json");
    if (!a.ok()) return Fail("checkpoint", a.status());
    Result<nlohmann::json> b =
        RunJob(f, {"--steps", "1", "--resume", ck.string()}, dir->path() / "load.json");
    if (!b.ok()) return Fail("checkpoint", b.status());
    double written = 0, write_s = 0, read = 0, load_s = 0;
    for (const nlohmann::json& r : (*a)["ranks"]) {
      written += r["checkpoint"]["bytes_written"].get<double>();
      write_s = std::max(write_s, r["checkpoint"]["write_seconds"].get<double>());
    }
    for (const nlohmann::json& r : (*b)["ranks"]) {
      read += r["checkpoint"]["bytes_read"].get<double>();
      load_s = std::max(load_s, r["checkpoint"]["load_seconds"].get<double>());
    }
    if (write_s <= 0 || load_s <= 0) {
      return Fail("checkpoint", Status::Internal("the reports hold no checkpoint timing"));
    }
    write_gbs.push_back(written / write_s * 1e-9);
    load_gbs.push_back(read / load_s * 1e-9);
    bytes.push_back(written);
  }
  const Summary w = Summarize(write_gbs), l = Summarize(load_gbs);
  if (f.json) {
    nlohmann::json doc = {{"model", f.model},
                          {"workers", f.workers},
                          {"tp", f.tp},
                          {"sync", f.sync},
                          {"repeats", f.repeats},
                          {"checkpoint_bytes", bytes.front()},
                          {"write_gbs", {{"median", w.median}, {"min", w.min}, {"max", w.max}}},
                          {"load_gbs", {{"median", l.median}, {"min", l.min}, {"max", l.max}}}};
    std::cout << doc.dump(2) << "\n";
  } else {
    std::printf("# pszero-bench checkpoint: %s, %d workers (tp %d), --sync %s, %d repeats\n",
                f.model.c_str(), f.workers, f.tp, f.sync.c_str(), f.repeats);
    std::printf("# checkpoint %.1f MiB; GB/s = 1e9 B/s, median (min-max)\n",
                bytes.front() / 1048576.0);
    std::printf("write  %8.3f GB/s  (%.3f-%.3f)\n", w.median, w.min, w.max);
    std::printf("load   %8.3f GB/s  (%.3f-%.3f)\n", l.median, l.min, l.max);
  }
  return 0;
}

int RunSoak(const JobFlags& f) {
  if (Status s = CheckJobBinaries(f); !s.ok()) return Fail("soak", s);
  Result<TempDir> dir = TempDir::Create("pszero-bench-soak");
  if (!dir.ok()) return Fail("soak", dir.status());
  Result<nlohmann::json> doc =
      RunJob(f, {"--steps", std::to_string(f.steps)}, dir->path() / "soak.json");
  if (!doc.ok()) return Fail("soak", doc.status());
  nlohmann::json ranks = nlohmann::json::array();
  double worst = -1e30;
  for (const nlohmann::json& r : (*doc)["ranks"]) {
    const double start = r["rss_bytes"]["after_first_step"].get<double>();
    const double end = r["rss_bytes"]["end"].get<double>();
    const double growth = start > 0 ? (end - start) / start * 100.0 : 0.0;
    worst = std::max(worst, growth);
    ranks.push_back({{"rank", r["rank"]},
                     {"rss_start_bytes", start},
                     {"rss_end_bytes", end},
                     {"growth_percent", growth}});
  }
  if (f.json) {
    std::cout << nlohmann::json({{"model", f.model},
                                 {"workers", f.workers},
                                 {"sync", f.sync},
                                 {"steps", f.steps},
                                 {"ranks", ranks},
                                 {"max_growth_percent", worst},
                                 {"median_step_s", (*doc)["summary"]["median_step_s"]}})
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf(
      "# pszero-bench soak: %s, %d workers, --sync %s, %lld steps; RSS after step 1 and at the "
      "end\n",
      f.model.c_str(), f.workers, f.sync.c_str(), static_cast<long long>(f.steps));
  std::printf("# rank   start MiB     end MiB   growth %%\n");
  for (const nlohmann::json& r : ranks) {
    std::printf("  %4d  %10.2f  %10.2f  %9.3f\n", r["rank"].get<int>(),
                r["rss_start_bytes"].get<double>() / 1048576.0,
                r["rss_end_bytes"].get<double>() / 1048576.0, r["growth_percent"].get<double>());
  }
  std::printf("max growth %.3f %% (target < 1 %%), median step %.2f ms\n", worst,
              (*doc)["summary"]["median_step_s"].get<double>() * 1e3);
  return 0;
}

void AddJobFlags(CLI::App* app, JobFlags& f) {
  app->add_option("--workers", f.workers, "Workers of the job")->check(CLI::Range(1, 4096));
  app->add_option("--tp", f.tp, "Tensor-parallel degree")->check(CLI::Range(1, 4096));
  app->add_option("--sync", f.sync, "Sync mode")
      ->check(CLI::IsMember({"allreduce", "zero1", "zero2", "zero3"}));
  app->add_flag("--json", f.json, "Print JSON");
  app->add_option("--bin-dir", f.bin_dir, "Directory of pszero-launch (default: beside this)")
      ->check(CLI::ExistingDirectory);
  app->add_option("--timeout", f.timeout_s, "Seconds one job may run")
      ->check(pszero::FiniteRange(1.0, 86400.0));
}

}  // namespace

BenchCommand AddCheckpointCommand(CLI::App& root) {
  auto f = std::make_shared<JobFlags>();
  CLI::App* app = root.add_subcommand(
      "checkpoint",
      "Checkpoint write and load GB/s of a real job (pszero-launch --checkpoint-dir, --resume)");
  app->add_option("--model", f->model, "mlp, gpt-tiny, gpt-small, or tiny (a small custom GPT)")
      ->check(CLI::IsMember({"mlp", "gpt-tiny", "gpt-small", "tiny"}));
  app->add_option("--repeats", f->repeats, "Write+load rounds")->check(CLI::Range(1, 100));
  AddJobFlags(app, *f);
  return {app, [f] { return RunCheckpointBench(*f); }};
}

BenchCommand AddSoakCommand(CLI::App& root) {
  auto f = std::make_shared<JobFlags>();
  f->model = "tiny";
  f->workers = 8;
  CLI::App* app = root.add_subcommand(
      "soak", "A long job; every worker's RSS after its first step and at the end");
  app->add_option("--model", f->model,
                  "tiny (default: a small custom GPT), mlp, gpt-tiny, gpt-small")
      ->check(CLI::IsMember({"mlp", "gpt-tiny", "gpt-small", "tiny"}));
  app->add_option("--steps", f->steps, "Steps")->check(CLI::Range(int64_t{2}, int64_t{1} << 30));
  AddJobFlags(app, *f);
  return {app, [f] { return RunSoak(*f); }};
}

}  // namespace pszero::bench
