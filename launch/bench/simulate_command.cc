// `pszero-bench simulate`: the alpha-beta cost model of simulate.h as a command. Prints,
// per sync mode, predicted step time, communication (total and exposed), compute, the
// mode's bytes per step per rank and the ZeRO model-state memory per rank; with
// --calibrate it first fits the link and the compute rate to measured JSON and prints
// how well the fitted model predicts each recorded run; with --project-to N it repeats
// the prediction for 1, 2, 4 … N workers.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/atomic_file.h"
#include "common/flags.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "launch/bench/command.h"
#include "launch/bench/p2p.h"
#include "launch/bench/simulate.h"

namespace pszero::bench {

namespace {

struct SimulateFlags {
  std::string model;
  std::string params;
  int layers = 0;
  int64_t tokens = 0;
  int workers = 0;
  int tp = 1;
  int servers = 1;
  std::string sync = "all";
  double bandwidth_gbs = 0;  // 0: not given
  double latency_us = -1;
  double tflops = 0;
  std::vector<std::string> calibrate;
  double host_cores = 0;
  bool fit_host_cores = false;
  bool calibrate_live = false;
  int live_max_workers = 4;
  int live_rounds = 3;
  std::string live_dir;
  std::string precision = "fp32";
  double bucket_mb = 25.0;
  int grad_accum = 1;
  std::string recompute = "none";
  int64_t recompute_layers = -1;  // -1: all blocks (full)
  int small_kb = 32;
  int project_to = 0;
  bool json = false;
  std::string output;
};

int Fail(const Status& s) {
  std::cerr << "pszero-bench simulate: " << s.ToString() << "\n";
  return 1;
}

int Usage(const std::string& line) {
  std::cerr << "pszero-bench simulate: error: " << line << "\n";
  return kExitUsage;
}

// "7.5e9", "7.5B", "85M", "3285504".
bool ParseCount(const std::string& text, int64_t* out) {
  if (text.empty()) return false;
  double scale = 1;
  std::string num = text;
  switch (num.back()) {
    case 'K':
    case 'k':
      scale = 1e3;
      break;
    case 'M':
    case 'm':
      scale = 1e6;
      break;
    case 'B':
    case 'b':
    case 'G':
    case 'g':
      scale = 1e9;
      break;
    case 'T':
    case 't':
      scale = 1e12;
      break;
    default:
      break;
  }
  if (scale != 1) num.pop_back();
  try {
    size_t used = 0;
    const double v = std::stod(num, &used) * scale;
    if (used != num.size() || !(v >= 1) || v > 1e15) return false;
    *out = static_cast<int64_t>(std::llround(v));
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

nlohmann::json ModeJson(const sim::ModePrediction& p) {
  return {{"mode", p.mode},
          {"step_s", p.step_s},
          {"comm_s", p.comm_s},
          {"exposed_comm_s", p.exposed_comm_s},
          {"compute_s", p.compute_s},
          {"bytes_sent_per_rank", p.bytes_sent_per_rank},
          {"memory",
           {{"params", p.memory.params},
            {"grads", p.memory.grads},
            {"optimizer", p.memory.optimizer},
            {"total", p.memory.total()},
            {"formula", p.memory.formula},
            {"paper_gb", sim::PaperGB(static_cast<double>(p.memory.total()))}}}};
}

std::string Format(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

std::string Seconds(double s) {
  char buf[32];
  if (s >= 1.0) {
    std::snprintf(buf, sizeof(buf), "%.3f s", s);
  } else if (s >= 1e-3) {
    std::snprintf(buf, sizeof(buf), "%.3f ms", s * 1e3);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f us", s * 1e6);
  }
  return buf;
}

std::string Bytes(double b) {
  char buf[32];
  if (b >= 1e9) {
    std::snprintf(buf, sizeof(buf), "%.2f GB", b / 1e9);
  } else if (b >= 1e6) {
    std::snprintf(buf, sizeof(buf), "%.2f MB", b / 1e6);
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f kB", b / 1e3);
  }
  return buf;
}

void PrintModes(const std::vector<sim::ModePrediction>& modes) {
  std::printf("  %-10s %12s %12s %12s %12s %14s %12s  %s\n", "mode", "step", "comm", "exposed",
              "compute", "bytes/step", "mem/rank", "formula");
  for (const auto& p : modes) {
    std::printf(
        "  %-10s %12s %12s %12s %12s %14s %9s GB  %s\n", p.mode.c_str(), Seconds(p.step_s).c_str(),
        Seconds(p.comm_s).c_str(), Seconds(p.exposed_comm_s).c_str(), Seconds(p.compute_s).c_str(),
        Bytes(p.bytes_sent_per_rank).c_str(),
        sim::PaperGB(static_cast<double>(p.memory.total())).c_str(), p.memory.formula.c_str());
  }
}

// --calibrate-live: records here and now what --calibrate reads (docs/benchmarks.md):
// `rounds` rounds of gpt-tiny under allreduce and zero3 at 1, 2, 4 … max_workers workers
// (6 steps), and the
// three collectives at 2 … max_workers ranks, with the pszero-launch and pszero-bench
// beside this binary. Returns the files written into `dir`.
Result<std::vector<std::string>> RecordLive(int max_workers, int rounds,
                                            const std::filesystem::path& dir) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Status::IoError("cannot find /proc/self/exe: " + ec.message());
  const std::string bin = self.parent_path().string();
  std::vector<std::string> files;
  auto run = [&](std::vector<std::string> argv, const std::string& file) -> Status {
    std::fprintf(stderr, "simulate: recording %s\n", file.c_str());
    PSZERO_ASSIGN_OR_RETURN(BenchChild child, BenchChild::Spawn(argv, /*quiet=*/true));
    const int code = child.Wait(std::chrono::minutes(10));
    if (code != 0) {
      return Status::Internal(argv[0] + " exited with " + std::to_string(code) + " for " + file);
    }
    files.push_back(file);
    return Status::Ok();
  };
  // Rounds outermost and the modes alternating, so that every configuration sees the same
  // background load; the calibration keeps each one's best round.
  for (int round = 1; round <= rounds; ++round) {
    for (int n = 1; n <= max_workers; n *= 2) {
      for (const char* mode : {"allreduce", "zero3"}) {
        const std::string file = (dir / ("run_" + std::string(mode) + "_" + std::to_string(n) +
                                         "_r" + std::to_string(round) + ".json"))
                                     .string();
        PSZERO_RETURN_IF_ERROR(
            run({bin + "/pszero-launch", "--workers", std::to_string(n), "--sync", mode, "--model",
                 "gpt-tiny", "--steps", "6", "--report", file},
                file));
      }
    }
  }
  for (int n = 2; n <= max_workers; n *= 2) {
    for (const char* op : {"allreduce", "reduce_scatter", "allgather"}) {
      const std::string file =
          (dir / ("coll_" + std::string(op) + "_" + std::to_string(n) + ".json")).string();
      PSZERO_RETURN_IF_ERROR(
          run({bin + "/pszero-bench", "collective", "--op", op, "--ranks", std::to_string(n),
               "--min-bytes", "1K", "--max-bytes", "16M", "--step-factor", "4", "--iters", "10",
               "--warmup", "3", "--output", file},
              file));
    }
  }
  return files;
}

// What RunSimulate computes from its flags before it starts anything: InvalidArgument
// with the usage line when a flag is wrong.
struct Prepared {
  sim::Workload work;
  int max_workers = 0;
  int workers = 0;
  sim::SimOptions opt;
};

Result<Prepared> Prepare(const SimulateFlags& f) {
  auto usage = [](const std::string& line) { return Status::InvalidArgument(line); };
  Prepared p;
  // ---- the workload ----
  if (f.model.empty() == f.params.empty()) {
    return usage("--model: give exactly one of --model NAME and --params P");
  }
  if (!f.model.empty()) {
    if (f.layers || f.tokens) return usage("--layers: only with --params (a preset has its own)");
    Result<model::ModelConfig> c = model::PresetConfig(f.model);
    if (!c.ok()) return usage("--model: " + c.status().message());
    Result<sim::Workload> w = sim::WorkloadForModel(*c, f.tp);
    if (!w.ok()) return usage(w.status().message());
    p.work = *w;
  } else {
    int64_t n = 0;
    if (!ParseCount(f.params, &n)) return usage("--params: not a count like 7.5e9, 7.5B or 85M");
    p.work = sim::WorkloadForParams(n, f.layers > 0 ? f.layers : 32, f.tokens > 0 ? f.tokens : 2048,
                                    f.tp);
  }
  p.max_workers = f.project_to > 0 ? f.project_to : f.workers;
  if (f.workers == 0 && f.project_to == 0) return usage("--workers: required (or --project-to)");
  p.workers = f.workers > 0 ? f.workers : p.max_workers;
  if (p.workers % f.tp != 0) return usage("--workers: must be a multiple of --tp");
  if (f.project_to > 0 && f.project_to < f.tp) return usage("--project-to: must be >= --tp");

  p.opt.workers = p.workers;
  p.opt.servers = f.servers;
  p.opt.bf16 = f.precision == "bf16";
  p.opt.bucket_mb = f.bucket_mb;
  p.opt.small_bytes = f.small_kb * 1024.0;
  p.opt.host_cores = f.host_cores;
  p.opt.grad_accum = f.grad_accum;
  Result<model::Recompute> recompute = model::ParseRecompute(f.recompute);
  if (!recompute.ok()) return usage(recompute.status().message());
  p.opt.recompute = *recompute;
  Status layers_ok = model::CheckRecomputeLayers(f.recompute, f.recompute_layers, p.work.layers);
  if (!layers_ok.ok()) return usage(layers_ok.message());
  p.opt.recompute_layers = f.recompute_layers;

  if (f.fit_host_cores && f.calibrate.empty() && !f.calibrate_live) {
    return usage("--fit-host-cores: needs --calibrate with multi-worker run reports");
  }
  return p;
}

int RunSimulate(const SimulateFlags& f) {
  Result<Prepared> prepared = Prepare(f);
  if (!prepared.ok()) return Usage(prepared.status().message());
  sim::Workload work = prepared->work;
  const int workers = prepared->workers;
  sim::SimOptions opt = prepared->opt;
  std::vector<std::string> calibrate = f.calibrate;
  std::optional<TempDir> live_temp;
  if (f.calibrate_live) {
    std::filesystem::path dir = f.live_dir;
    if (dir.empty()) {
      Result<TempDir> t = TempDir::Create("pszero-simulate");
      if (!t.ok()) return Fail(t.status());
      live_temp.emplace(std::move(t).value());
      dir = live_temp->path();
    } else {
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);
      if (ec) return Usage("--live-dir: cannot create " + dir.string() + ": " + ec.message());
    }
    Result<std::vector<std::string>> files = RecordLive(f.live_max_workers, f.live_rounds, dir);
    if (!files.ok()) return Fail(files.status());
    calibrate.insert(calibrate.end(), files->begin(), files->end());
  }
  // ---- calibration (explicit flags override what it fits) ----
  nlohmann::json calibration;
  std::vector<sim::CheckRow> check;
  if (!calibrate.empty()) {
    sim::CalibrationData data;
    for (const std::string& path : calibrate) {
      Status s = sim::LoadCalibrationFile(path, &data);
      if (!s.ok()) return Usage("--calibrate: " + s.message());
    }
    // Live runs share this host's cores: fit the share unless --host-cores says it.
    const bool fit = f.fit_host_cores || (f.calibrate_live && f.host_cores == 0);
    Result<sim::Calibration> c = sim::Calibrate(data, opt, fit);
    if (!c.ok()) return Usage(c.status().message());
    // The fitted core share describes the host the runs were recorded on: the check below
    // uses it, the predictions use --host-cores (0: a device per worker).
    const sim::SimOptions host = sim::Apply(*c, opt);
    sim::Calibration target = *c;
    target.has_host_cores = false;
    opt = sim::Apply(target, opt);
    calibration = {{"files", calibrate},
                   {"collective_rows", data.collectives.size()},
                   {"runs", data.runs.size()}};
    if (c->has_link) {
      nlohmann::json by = nlohmann::json::object();
      for (const auto& [ranks, fit] : c->by_ranks) {
        by[std::to_string(ranks)] = {{"alpha_us", fit.link.alpha_s * 1e6},
                                     {"bandwidth_gbs", fit.link.bytes_per_s / 1e9},
                                     {"rows", fit.samples},
                                     {"rms_rel_error", fit.rms_rel_error}};
      }
      calibration["link"] = {{"alpha_us", c->global.link.alpha_s * 1e6},
                             {"bandwidth_gbs", c->global.link.bytes_per_s / 1e9},
                             {"rows", c->global.samples},
                             {"rms_rel_error", c->global.rms_rel_error},
                             {"by_ranks", by}};
    }
    if (c->has_host_cores) calibration["host_cores"] = c->host_cores;
    if (c->has_flops) {
      nlohmann::json by = nlohmann::json::object();
      for (const auto& [mode, rate] : c->flops_by_mode) by[mode] = rate / 1e12;
      calibration["compute"] = {
          {"tflops", c->flops_per_s / 1e12}, {"source", c->flops_source}, {"tflops_by_mode", by}};
    }
    Result<std::vector<sim::CheckRow>> rows = sim::CheckRuns(data, host);
    if (!rows.ok()) return Usage("--calibrate: " + rows.status().message());
    check = *rows;
    nlohmann::json cj = nlohmann::json::array();
    for (const auto& r : check) {
      cj.push_back({{"file", r.run.file},
                    {"sync", r.run.sync},
                    {"model", r.run.model},
                    {"workers", r.run.workers},
                    {"tp", r.run.tp},
                    {"grad_accum", r.run.grad_accum},
                    {"recompute", model::RecomputeName(r.run.recompute)},
                    {"recompute_layers", r.run.recompute_layers},
                    {"measured_s", r.run.step_s},
                    {"rounds_s", r.run.round_s},
                    {"predicted_s", r.predicted_s},
                    {"error", r.error}});
    }
    calibration["check"] = cj;
  }
  if (f.bandwidth_gbs > 0) {
    opt.link.bytes_per_s = f.bandwidth_gbs * 1e9;
    opt.link_by_ranks.clear();
  }
  if (f.latency_us >= 0) {
    opt.link.alpha_s = f.latency_us * 1e-6;
    opt.link_by_ranks.clear();
  }
  if (f.tflops > 0) {
    opt.flops_per_s = f.tflops * 1e12;
    opt.flops_by_mode.clear();
  }

  std::vector<std::string> modes;
  if (f.sync == "all") {
    modes = sim::AllModes();
  } else {
    modes = {f.sync};
  }
  auto predict_all = [&](int n, std::vector<sim::ModePrediction>* out) -> Status {
    sim::SimOptions o = opt;
    o.workers = n;
    for (const std::string& m : modes) {
      PSZERO_ASSIGN_OR_RETURN(sim::ModePrediction p, sim::Simulate(work, m, o));
      out->push_back(p);
    }
    return Status::Ok();
  };
  std::vector<sim::ModePrediction> at_n;
  if (Status s = predict_all(workers, &at_n); !s.ok()) return Usage(s.message());
  std::vector<std::pair<int, std::vector<sim::ModePrediction>>> projection;
  if (f.project_to > 0) {
    std::vector<int> counts;
    for (int n = 1; n < f.project_to; n *= 2) {
      if (n % f.tp == 0) counts.push_back(n);
    }
    counts.push_back(f.project_to);
    for (int n : counts) {
      std::vector<sim::ModePrediction> v;
      if (Status s = predict_all(n, &v); !s.ok()) return Usage(s.message());
      projection.emplace_back(n, std::move(v));
    }
  }

  nlohmann::json doc = {{"schema", "pszero.simulate/1"},
                        {"workload",
                         {{"name", work.name},
                          {"params", work.params},
                          {"psi", work.psi},
                          {"tp", work.tp},
                          {"units", work.units.size()},
                          {"tokens_per_replica", work.tokens_per_replica},
                          {"flops_per_rank", work.flops_per_rank},
                          {"flops_per_step_per_rank", sim::StepFlops(work, opt)}}},
                        {"options",
                         {{"workers", workers},
                          {"dp", workers / f.tp},
                          {"servers", f.servers},
                          {"precision", f.precision},
                          {"bucket_mb", f.bucket_mb},
                          {"grad_accum", f.grad_accum},
                          {"recompute", f.recompute},
                          {"recompute_layers", f.recompute_layers},
                          {"small_kb", f.small_kb},
                          {"alpha_us", opt.link.alpha_s * 1e6},
                          {"bandwidth_gbs", opt.link.bytes_per_s / 1e9},
                          {"tflops", opt.flops_per_s / 1e12},
                          {"host_cores", opt.host_cores}}},
                        {"modes", nlohmann::json::array()}};
  for (const auto& p : at_n) doc["modes"].push_back(ModeJson(p));
  if (!calibration.is_null()) doc["calibration"] = calibration;
  if (!projection.empty()) {
    nlohmann::json series = nlohmann::json::object();
    for (const std::string& m : modes) series[m] = nlohmann::json::array();
    for (const auto& [n, v] : projection) {
      for (const auto& p : v) {
        nlohmann::json j = ModeJson(p);
        j["workers"] = n;
        series[p.mode].push_back(j);
      }
    }
    doc["projection"] = series;
  }
  if (!f.output.empty()) {
    Status s = WriteJsonAtomic(f.output, doc);
    if (!s.ok()) {
      std::cerr << "pszero-bench simulate: " << s.ToString() << "\n";
      return 1;
    }
  }
  if (f.json) {
    std::cout << doc.dump(2) << "\n";
    return 0;
  }

  std::printf(
      "# pszero-bench simulate: %s, %lld params (Ψ = %lld per TP rank, %zu units), "
      "%d workers (T = %d, D = %d), %s, grad-accum K = %d, recompute %s%s\n",
      work.name.c_str(), static_cast<long long>(work.params), static_cast<long long>(work.psi),
      work.units.size(), workers, f.tp, workers / f.tp, f.precision.c_str(), f.grad_accum,
      f.recompute.c_str(),
      f.recompute_layers >= 0
          ? (" (--recompute-layers " + std::to_string(f.recompute_layers) + ")").c_str()
          : "");
  std::printf(
      "# link: alpha %.2f us, B %.4g GB/s%s; compute %.4g TFLOP/s per worker, "
      "%.4g GFLOP per step per rank%s\n",
      opt.link.alpha_s * 1e6, opt.link.bytes_per_s / 1e9,
      opt.link_by_ranks.empty() ? "" : " (calibrated per rank count where measured)",
      opt.flops_per_s / 1e12, sim::StepFlops(work, opt) / 1e9,
      opt.host_cores > 0 ? Format(", %.3g shared host cores", opt.host_cores).c_str() : "");
  if (!calibration.is_null()) {
    if (calibration.contains("link")) {
      const auto& l = calibration["link"];
      std::printf("# calibrated link (%d rows, rms error %.1f%%): alpha %.2f us, B %.4g GB/s\n",
                  l["rows"].get<int>(), 100 * l["rms_rel_error"].get<double>(),
                  l["alpha_us"].get<double>(), l["bandwidth_gbs"].get<double>());
      for (const auto& [ranks, v] : l["by_ranks"].items()) {
        std::printf("#   %s ranks (%d rows, rms %.1f%%): alpha %.2f us, B %.4g GB/s\n",
                    ranks.c_str(), v["rows"].get<int>(), 100 * v["rms_rel_error"].get<double>(),
                    v["alpha_us"].get<double>(), v["bandwidth_gbs"].get<double>());
      }
    }
    if (calibration.contains("compute")) {
      const auto& cc = calibration["compute"];
      std::printf("# calibrated compute: %.4g GFLOP/s per worker (%s)",
                  cc["tflops"].get<double>() * 1e3, cc["source"].get<std::string>().c_str());
      for (const auto& [mode, v] : cc["tflops_by_mode"].items()) {
        std::printf("; %s %.4g", mode.c_str(), v.get<double>() * 1e3);
      }
      std::printf("\n");
    }
    if (calibration.contains("host_cores")) {
      std::printf(
          "# fitted effective host cores: %.3g (the recording host; used for the check "
          "below, not for the predictions)\n",
          calibration["host_cores"].get<double>());
    }
    if (!check.empty()) {
      std::printf("# calibration check (measured: median of steps 2.., best round):\n");
      std::printf("  %-10s %-10s %7s %4s %-9s %12s %12s %8s\n", "sync", "model", "workers", "K",
                  "recompute", "measured", "predicted", "error");
      for (const auto& r : check) {
        std::printf("  %-10s %-10s %7d %4d %-9s %12s %12s %+7.1f%%\n", r.run.sync.c_str(),
                    r.run.model.c_str(), r.run.workers, r.run.grad_accum,
                    model::RecomputeName(r.run.recompute), Seconds(r.run.step_s).c_str(),
                    Seconds(r.predicted_s).c_str(), 100 * r.error);
      }
    }
  }
  PrintModes(at_n);
  if (!projection.empty()) {
    std::printf("# projection: predicted step time per mode\n  %8s", "workers");
    for (const std::string& m : modes) std::printf(" %12s", m.c_str());
    std::printf("\n");
    for (const auto& [n, v] : projection) {
      std::printf("  %8d", n);
      for (const auto& p : v) std::printf(" %12s", Seconds(p.step_s).c_str());
      std::printf("\n");
    }
    std::printf("# projection: model-state memory per rank (GB = 1e9 B)\n  %8s", "workers");
    for (const std::string& m : modes) std::printf(" %12s", m.c_str());
    std::printf("\n");
    for (const auto& [n, v] : projection) {
      std::printf("  %8d", n);
      for (const auto& p : v) std::printf(" %12s", sim::PaperGB(p.memory.total()).c_str());
      std::printf("\n");
    }
  }
  return 0;
}

}  // namespace

BenchCommand AddSimulateCommand(CLI::App& root) {
  auto f = std::make_shared<SimulateFlags>();
  CLI::App* app = root.add_subcommand(
      "simulate", "alpha-beta cost model: step time, communication and memory per sync mode");
  app->add_option("--model", f->model, "Preset model (mlp, gpt-tiny, gpt-small)");
  app->add_option("--params", f->params, "Instead of --model: a parameter count (7.5e9, 7.5B)");
  app->add_option("--layers", f->layers, "With --params: layers (units gathered by zero3; 32)")
      ->check(CLI::Range(1, 100000));
  app->add_option("--tokens", f->tokens, "With --params: tokens per replica per step (2048)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app->add_option("--workers", f->workers, "Workers (world = T x D)")
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--tp", f->tp, "Tensor-parallel degree")->check(CLI::Range(1, 1024));
  app->add_option("--servers", f->servers, "Parameter servers (--sync ps)")
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--sync", f->sync, "Mode, or all")
      ->check(CLI::IsMember({"all", "allreduce", "zero1", "zero2", "zero3", "ps"}));
  app->add_option("--bandwidth-gbs", f->bandwidth_gbs,
                  "Link bandwidth B, GB/s (1e9 B/s; default 12.5, or calibrated)")
      ->check(pszero::FiniteRange(1e-6, 1e6));
  app->add_option("--latency-us", f->latency_us, "Per-message latency alpha, us (default 5)")
      ->check(pszero::FiniteRange(0.0, 1e7));
  app->add_option("--tflops", f->tflops, "Compute rate per worker, TFLOP/s (default 100)")
      ->check(pszero::FiniteRange(1e-9, 1e6));
  app->add_option("--calibrate", f->calibrate,
                  "Measured JSON to fit alpha, B and the compute rate to: run reports "
                  "(pszero-launch --report) and/or pszero-bench collective --json output")
      ->check(CLI::ExistingFile);
  app->add_flag(
      "--calibrate-live", f->calibrate_live,
      "Record gpt-tiny runs (allreduce, zero3) and collectives here first, then calibrate");
  app->add_option("--live-max-workers", f->live_max_workers,
                  "--calibrate-live: largest worker count (1, 2, 4 … this)")
      ->check(CLI::Range(2, 64));
  app->add_option("--live-rounds", f->live_rounds,
                  "--calibrate-live: rounds of the runs (the best of them is kept)")
      ->check(CLI::Range(1, 100));
  app->add_option("--live-dir", f->live_dir,
                  "--calibrate-live: keep the recorded JSON here (default: a temporary directory)");
  app->add_flag("--fit-host-cores", f->fit_host_cores,
                "With --calibrate: fit the effective shared cores to the multi-worker runs");
  app->add_option("--host-cores", f->host_cores,
                  "Workers share this many cores (0: one device each); calibration on one host")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--precision", f->precision, "fp32, or bf16 (the paper's mixed precision)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app->add_option("--bucket-mb", f->bucket_mb, "Gradient bucket (allreduce, zero1, zero2, ps)")
      ->check(pszero::FiniteRange(1e-6, 1e6));
  app->add_option("--grad-accum", f->grad_accum,
                  "Micro-batches per optimizer step, as pszero-launch --grad-accum (1)")
      ->check(CLI::Range(1, 1 << 16));
  app->add_option("--recompute", f->recompute,
                  "Activation recompute, as pszero-launch --recompute: none, selective, full")
      ->check(CLI::IsMember({"none", "selective", "full"}));
  app->add_option("--recompute-layers", f->recompute_layers,
                  "With --recompute full: only the first N blocks, as pszero-launch "
                  "--recompute-layers (default: all)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  app->add_option("--small-kb", f->small_kb, "Direct algorithm at or below this many KiB")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--project-to", f->project_to, "Also predict for 1, 2, 4 ... N workers")
      ->check(CLI::Range(1, 1 << 20));
  app->add_flag("--json", f->json, "Print JSON instead of the table");
  app->add_option("--output", f->output, "Also write the JSON to this file (atomically)");
  return {app, [f] { return RunSimulate(*f); }, [f] { return Prepare(*f).status(); }};
}

}  // namespace pszero::bench
