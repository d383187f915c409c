// `pszero-bench train`, two ways:
//
// * Without --sync and --workers (or --workers == --tp): one replica of a model (--tp T
//   ranks as threads of this process, UCX transports over shared memory, exactly the
//   worker's code path from the model down) trained for --steps steps after one warm-up
//   step. Prints step time (median, min, max), tokens/s, achieved GFLOP/s (model/config.h:
//   6 * params * tokens plus attention) and its ratio to the GEMM rate measured in the same
//   run: every rank multiplies its own local MLP matrix ([tokens, d] x [d, ffn*d/T])
//   concurrently, as in training.
// * With --sync MODE[,MODE...|all] or --workers N > --tp: a real local job per mode, run by
//   pszero-launch (beside pszero-bench) with --report into a temporary directory; each
//   report becomes one row of run_report.h's table. --peer torch adds the same preset under
//   PyTorch (scripts/torch_peer.py: DDP, ZeroRedundancyOptimizer, FSDP) and the ratio
//   ours/torch of the median step time, per mode.
// * With --emulate-hosts H [--link-gbit G]: each of those jobs runs across H network
//   namespaces (emulated_cluster.h), one node launcher each, started by `pszero-launch
//   --hostfile` through an ssh stand-in; UCX over tcp only, every host link limited to G
//   Gbit/s each way by tc tbf. The emulation is recorded in the JSON and in each report.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "common/kv_store.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "common/ucx/ucx_transport.h"
#include "kernels/cuda_resources.h"
#include "kernels/gemm.h"
#include "launch/bench/child_run.h"
#include "launch/bench/command.h"
#include "launch/bench/emulated_cluster.h"
#include "launch/bench/run_report.h"
#include "launch/launcher.h"
#include "worker/collectives/communicator.h"
#include "worker/train/training_rank.h"

namespace pszero::bench {

namespace {

// ", --recompute-layers N" for the header when the flag is given, else "".
std::string RecomputeLayersNote(const train::TrainFlags& flags) {
  if (flags.recompute_layers < 0) return "";
  return ", --recompute-layers " + std::to_string(flags.recompute_layers);
}

struct TrainBenchFlags {
  train::TrainFlags train;
  bool json = false;
  // Launched jobs (the second way above).
  std::string sync_list;  // --sync as given: a mode, a comma list, or "all"
  bool sync_given = false;
  int workers = 0;  // 0: --tp (one replica)
  int servers = 0;
  std::string peer;  // "" or "torch"
  std::string python;
  std::string torch_script = PSZERO_TORCH_PEER_SCRIPT;
  std::string bin_dir;
  std::string report_dir;
  double timeout_s = 1800;
  // Emulated cluster (0: this machine as one host).
  int emulate_hosts = 0;
  double link_gbit = 0;  // 0: links not limited
};

constexpr const char* kTorchSkipped =
    "torch peer skipped: PyTorch not importable (apt install python3-torch)";

// Seconds of each timed step on rank 0 (all ranks step together). --device cuda: every
// rank (a thread) on CUDA device 0; its TP collectives are staged (one GPU: no NCCL).
Status RunRank(const model::ModelConfig& config, const train::TrainFlags& flags,
               collectives::Communicator* comm, std::vector<double>* step_seconds,
               double* gemm_seconds, std::vector<float>* losses) {
  MemoryTracker tracker;
  std::unique_ptr<kernels::CudaResources> cuda;
  if (flags.device == "cuda") {
    PSZERO_ASSIGN_OR_RETURN(cuda, kernels::CudaResources::Create(0));
  }
  PSZERO_ASSIGN_OR_RETURN(
      std::unique_ptr<train::TrainingRank> run,
      train::BuildTrainingRank(config, flags, comm, nullptr, &tracker, nullptr, cuda.get()));
  for (int64_t s = 0; s <= flags.steps; ++s) {
    PSZERO_ASSIGN_OR_RETURN(train::StepResult r, run->trainer->RunStep(s));
    if (s > 0) {
      step_seconds->push_back(r.seconds);
      losses->push_back(r.loss);
    }
  }
  // The GEMM yardstick: this rank's column-parallel MLP product, 3 repetitions, best.
  const int64_t n = config.tokens_per_step();
  const int64_t k = config.d_model;
  const int64_t cols = config.d_model * config.ffn_mult / run->tp->size();
  const Device device = run->kernels.device;
  PSZERO_ASSIGN_OR_RETURN(
      Tensor a, Tensor::Empty({n * k}, DType::kFloat32, MemoryCategory::kOther, nullptr, device));
  PSZERO_ASSIGN_OR_RETURN(Tensor b, Tensor::Empty({k * cols}, DType::kFloat32,
                                                  MemoryCategory::kOther, nullptr, device));
  PSZERO_ASSIGN_OR_RETURN(Tensor c, Tensor::Empty({n * cols}, DType::kFloat32,
                                                  MemoryCategory::kOther, nullptr, device));
  std::vector<float> ha(n * k, 0.5f), hb(k * cols, 0.25f);
  PSZERO_RETURN_IF_ERROR(a.CopyFrom(Tensor::Wrap(ha.data(), {n * k}, DType::kFloat32)));
  PSZERO_RETURN_IF_ERROR(b.CopyFrom(Tensor::Wrap(hb.data(), {k * cols}, DType::kFloat32)));
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    if (comm != nullptr) PSZERO_RETURN_IF_ERROR(comm->Barrier());
    const auto t0 = std::chrono::steady_clock::now();
    PSZERO_RETURN_IF_ERROR(kernels::Gemm(false, false, n, cols, k, 1.0f, a.data(), k, b.data(),
                                         cols, 0.0f, c.data<float>(), cols, DType::kFloat32,
                                         run->kernels));
    PSZERO_RETURN_IF_ERROR(kernels::Fence(run->kernels));
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  *gemm_seconds = best;
  return Status::Ok();
}

// The in-process run's checks of its flags, before anything starts.
Status CheckInProcessFlags(const TrainBenchFlags& f) {
  // As in every other subcommand: links are limited only between emulated hosts.
  if (f.link_gbit > 0 && f.emulate_hosts == 0) {
    return Status::InvalidArgument("--link-gbit: only with --emulate-hosts");
  }
  PSZERO_RETURN_IF_ERROR(train::ResolveModel(f.train).status());
  PSZERO_RETURN_IF_ERROR(train::CheckTrainFlags(f.train, f.train.tp));
  return train::CheckLocalTrainFlags(f.train, f.train.tp);
}

int RunTrainBench(const TrainBenchFlags& f) {
  const train::TrainFlags& flags = f.train;
  auto fail = [](const Status& s) {
    std::cerr << "pszero-bench train: " << s.ToString() << "\n";
    return 1;
  };
  if (Status valid = CheckInProcessFlags(f); !valid.ok()) {
    std::cerr << "pszero-bench train: error: " << valid.message() << "\n";
    return 2;
  }
  Result<model::ModelConfig> config = train::ResolveModel(flags);
  const int t = flags.tp;
  InMemoryKeyValueStore store;
  std::vector<std::unique_ptr<ucx::UcxTransport>> transports;
  std::vector<std::unique_ptr<collectives::Communicator>> comms;
  if (t > 1) {
    for (int r = 0; r < t; ++r) {
      ucx::UcxTransportOptions o;
      o.rank = r;
      o.world_size = t;
      o.key_prefix = "bench-train";
      auto tr = ucx::UcxTransport::Create(o, &store);
      if (!tr.ok()) return fail(tr.status());
      transports.push_back(std::move(tr).value());
    }
    for (int r = 0; r < t; ++r) {
      auto c = collectives::Communicator::World(transports[r].get());
      if (!c.ok()) return fail(c.status());
      comms.push_back(std::move(c).value());
    }
  }
  std::vector<std::vector<double>> steps(t);
  std::vector<std::vector<float>> losses(t);
  std::vector<double> gemm(t);
  std::vector<Status> statuses(t);
  std::vector<std::thread> threads;
  for (int r = 0; r < t; ++r) {
    threads.emplace_back([&, r] {
      statuses[r] = RunRank(*config, flags, t > 1 ? comms[r].get() : nullptr, &steps[r], &gemm[r],
                            &losses[r]);
    });
  }
  for (auto& th : threads) th.join();
  for (const Status& s : statuses) {
    if (!s.ok()) return fail(s);
  }
  // A step ends when its slowest rank ends: take the per-step maximum over ranks.
  std::vector<double> step(steps[0].size());
  for (size_t s = 0; s < step.size(); ++s) {
    for (int r = 0; r < t; ++r) step[s] = std::max(step[s], steps[r][s]);
  }
  std::vector<double> sorted = step;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  // A step is --grad-accum micro-batches of the model's batch.
  const double micro_batches = flags.grad_accum;
  const double flops = model::TrainFlopsPerStep(*config) * micro_batches;
  const double micro_tokens = static_cast<double>(config->tokens_per_step());
  const double tokens = micro_tokens * micro_batches;
  const double gemm_time = *std::max_element(gemm.begin(), gemm.end());
  const double gemm_flops =
      2.0 * micro_tokens * config->d_model * config->d_model * config->ffn_mult;
  const double gemm_gflops = gemm_flops / gemm_time * 1e-9;  // all T ranks together
  const double achieved = flops / median * 1e-9;
  nlohmann::json doc = {
      {"model", config->name},
      {"params", model::ParamCount(*config)},
      {"tp", t},
      {"steps", flags.steps},
      {"precision", flags.precision},
      {"device", flags.device},
      {"recompute", flags.recompute},
      {"recompute_layers", flags.recompute_layers},
      {"threads_per_rank", flags.threads},
      {"grad_accum", flags.grad_accum},
      {"tokens_per_step", config->tokens_per_step() * flags.grad_accum},
      {"flops_per_step", flops},
      {"step_seconds_median", median},
      {"step_seconds_min", sorted.front()},
      {"step_seconds_max", sorted.back()},
      {"tokens_per_second", tokens / median},
      {"achieved_gflops", achieved},
      {"gemm_gflops", gemm_gflops},
      {"ratio_to_gemm", achieved / gemm_gflops},
      {"final_loss", losses[0].back()},
  };
  if (f.json) {
    std::cout << doc.dump(2) << "\n";
    return 0;
  }
  std::printf(
      "# pszero-bench train: %s (%lld params), --tp %d, %lld timed steps after 1 warm-up, "
      "%s, --recompute %s%s, %d thread(s) per rank\n",
      config->name.c_str(), static_cast<long long>(model::ParamCount(*config)), t,
      static_cast<long long>(flags.steps), flags.precision.c_str(), flags.recompute.c_str(),
      RecomputeLayersNote(flags).c_str(), flags.threads);
  std::printf("# %10s %10s %10s %12s %14s %12s %8s %10s\n", "step ms", "min ms", "max ms",
              "tokens/s", "achieved GF/s", "gemm GF/s", "ratio", "loss");
  std::printf("  %10.2f %10.2f %10.2f %12.1f %14.2f %12.2f %8.3f %10.4f\n", median * 1e3,
              sorted.front() * 1e3, sorted.back() * 1e3, tokens / median, achieved, gemm_gflops,
              achieved / gemm_gflops, losses[0].back());
  return 0;
}

// One bad flag: the contract's one line and exit 2.
int UsageError(const std::string& message) {
  std::cerr << "pszero-bench train: error: " << message << "\n";
  return 2;
}

// The modes of --sync: "all" is every data-parallel mode (and ps when --servers > 0).
Result<std::vector<std::string>> ParseModes(const std::string& text, int servers) {
  static const std::vector<std::string> kModes = {"allreduce", "zero1", "zero2", "zero3", "ps"};
  std::vector<std::string> modes;
  std::istringstream items(text);
  for (std::string item; std::getline(items, item, ',');) {
    std::vector<std::string> add;
    if (item == "all") {
      add = {"allreduce", "zero1", "zero2", "zero3"};
      if (servers > 0) add.push_back("ps");
    } else if (std::find(kModes.begin(), kModes.end(), item) != kModes.end()) {
      add = {item};
    } else {
      return Status::InvalidArgument(
          "--sync: unknown mode '" + item +
          "' (allreduce, zero1, zero2, zero3, ps, all, or a comma list)");
    }
    for (const std::string& m : add) {
      if (std::find(modes.begin(), modes.end(), m) == modes.end()) modes.push_back(m);
    }
  }
  if (modes.empty()) return Status::InvalidArgument("--sync: no mode given");
  return modes;
}

// The first interpreter that imports torch: --python, else python3 from PATH, then
// /usr/bin/python3 (Debian's python3-torch lives there, not in a pyenv or venv).
std::string FindTorchPython(const std::string& forced) {
  std::vector<std::string> candidates;
  if (!forced.empty()) {
    candidates = {forced};
  } else {
    candidates = {"python3", "/usr/bin/python3"};
  }
  for (const std::string& py : candidates) {
    Result<ChildRun> r = RunChild({py, "-c", "import torch"}, std::chrono::seconds(120));
    if (r.ok() && r->ok()) return py;
  }
  return "";
}

// Adds "emulation" (EmulatedCluster::Describe, or null) to the run report at `path`.
Status RecordEmulation(const std::string& path, const nlohmann::json& emulation) {
  if (emulation.is_null()) return Status::Ok();
  std::ifstream in(path);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  if (doc.is_discarded()) return Status::Corruption(path + ": unreadable report");
  doc["emulation"] = emulation;
  return WriteJsonAtomic(path, doc);
}

struct ModeOutcome {
  std::string mode;
  std::optional<RunSummary> run;
  std::string error;  // when !run
  int exit_code = 0;  // of pszero-launch
};

// The launched runs' checks of their flags, before the first job starts.
Status CheckLaunchedFlags(const TrainBenchFlags& f) {
  const train::TrainFlags& flags = f.train;
  const int workers = f.workers > 0 ? f.workers : flags.tp;
  Result<std::vector<std::string>> modes =
      ParseModes(f.sync_given ? f.sync_list : flags.sync, f.servers);
  if (!modes.ok()) return modes.status();
  const bool has_ps = std::find(modes->begin(), modes->end(), "ps") != modes->end();
  if (has_ps && f.servers < 1)
    return Status::InvalidArgument("--servers: --sync ps needs at least one server");
  if (!has_ps && f.servers > 0) return Status::InvalidArgument("--servers: only with --sync ps");
  Result<model::ModelConfig> config = train::ResolveModel(flags);
  if (!config.ok()) return config.status();
  for (const std::string& mode : *modes) {
    train::TrainFlags m = flags;
    m.sync = mode;
    PSZERO_RETURN_IF_ERROR(train::CheckTrainFlags(m, workers));
    PSZERO_RETURN_IF_ERROR(train::CheckLocalTrainFlags(m, workers));
  }
  if (f.link_gbit > 0 && f.emulate_hosts == 0) {
    return Status::InvalidArgument("--link-gbit: only with --emulate-hosts");
  }
  if (f.emulate_hosts > 0 && f.peer == "torch") {
    return Status::InvalidArgument(
        "--peer: not with --emulate-hosts (the PyTorch peer runs on one host)");
  }
  if (f.peer == "torch") {
    if (flags.model != "mlp" && flags.model != "gpt-tiny" && flags.model != "gpt-small") {
      return Status::InvalidArgument(
          "--peer: torch has the presets mlp, gpt-tiny and gpt-small only");
    }
    if (flags.tp != 1)
      return Status::InvalidArgument("--peer: the PyTorch peer has no tensor parallelism");
    if (flags.grad_accum != 1) {
      return Status::InvalidArgument(
          "--peer: the PyTorch peer runs without gradient accumulation (--grad-accum 1)");
    }
    if (flags.precision != "fp32")
      return Status::InvalidArgument("--peer: the PyTorch peer runs fp32 only");
  }
  const std::string bin_dir = f.bin_dir.empty() ? ExecutableDir() : f.bin_dir;
  // The launcher it runs (which finds its own workers and servers).
  PSZERO_RETURN_IF_ERROR(CheckBinDir(bin_dir, !f.bin_dir.empty(), {"pszero-launch"}));
  return Status::Ok();
}

int RunLaunchedBench(const TrainBenchFlags& f) {
  train::TrainFlags flags = f.train;
  const int workers = f.workers > 0 ? f.workers : flags.tp;
  if (Status s = CheckLaunchedFlags(f); !s.ok()) return UsageError(s.message());
  Result<std::vector<std::string>> modes =
      ParseModes(f.sync_given ? f.sync_list : flags.sync, f.servers);
  if (!modes.ok()) return UsageError(modes.status().message());
  Result<model::ModelConfig> config = train::ResolveModel(flags);
  if (!config.ok()) return UsageError(config.status().message());
  const std::string bin_dir = f.bin_dir.empty() ? ExecutableDir() : f.bin_dir;
  const std::string launcher = (std::filesystem::path(bin_dir) / "pszero-launch").string();
  std::optional<TempDir> temp;
  std::filesystem::path report_dir = f.report_dir;
  if (report_dir.empty()) {
    Result<TempDir> t = TempDir::Create("pszero-bench-train");
    if (!t.ok()) {
      std::cerr << "pszero-bench train: " << t.status().ToString() << "\n";
      return 1;
    }
    temp.emplace(std::move(t).value());
    report_dir = temp->path();
  } else {
    std::error_code ec;
    std::filesystem::create_directories(report_dir, ec);
    if (ec) return UsageError("--report-dir: " + report_dir.string() + ": " + ec.message());
  }

  // The emulated cluster lives until every job ran; the latch keeps a Ctrl-C between jobs
  // from ending pszero-bench before the namespaces are deleted (declared first: it outlives
  // the cluster).
  std::optional<InterruptLatch> latch;
  std::unique_ptr<EmulatedCluster> cluster;
  std::optional<TempDir> cluster_dir;
  EmulatedCluster::HostfileLaunch hostfile_launch;
  nlohmann::json emulation = nullptr;
  auto fail = [](const Status& s) {
    std::cerr << "pszero-bench train: " << s.ToString() << "\n";
    return 1;
  };
  if (f.emulate_hosts > 0) {
    latch.emplace();
    EmulatedClusterOptions options;
    // Each host runs a node launcher with at least one worker: never more hosts than
    // workers (a sweep passes the same --emulate-hosts to jobs of every size).
    options.hosts = std::min(f.emulate_hosts, workers);
    options.link_gbit = f.link_gbit;
    Result<std::unique_ptr<EmulatedCluster>> c = EmulatedCluster::Create(options);
    if (latch->signal() != 0) return 128 + latch->signal();
    if (!c.ok()) {
      const std::string why = "cannot emulate " + std::to_string(options.hosts) +
                              " hosts here: " + c.status().message();
      std::cerr << "pszero-bench train: skipped: " << why << "\n";
      if (f.json) {
        std::cout << nlohmann::json({{"benchmark", "train"},
                                     {"emulate_hosts", f.emulate_hosts},
                                     {"link_gbit", f.link_gbit},
                                     {"skipped", why}})
                         .dump(2)
                  << "\n";
      }
      return kExitSkipped;
    }
    cluster = std::move(c).value();
    Result<TempDir> t = TempDir::Create("pszero-bench-emulated");
    if (!t.ok()) return fail(t.status());
    cluster_dir.emplace(std::move(t).value());
    std::vector<int> slots(static_cast<size_t>(options.hosts));
    for (int i = 0; i < options.hosts; ++i) {
      slots[i] = workers / options.hosts + (i < workers % options.hosts ? 1 : 0);
    }
    Result<EmulatedCluster::HostfileLaunch> h =
        cluster->WriteHostfileLaunch(cluster_dir->path(), slots);
    if (!h.ok()) return fail(h.status());
    hostfile_launch = *h;
    emulation = cluster->Describe();
  }

  if (!f.json) {
    std::printf(
        "# pszero-bench train: %s (%lld params), %d workers (--tp %d), %lld steps, %s, "
        "--recompute %s%s, --grad-accum %d, %d thread(s) per worker; one pszero-launch job per "
        "mode\n",
        config->name.c_str(), static_cast<long long>(model::ParamCount(*config)), workers, flags.tp,
        static_cast<long long>(flags.steps), flags.precision.c_str(), flags.recompute.c_str(),
        RecomputeLayersNote(flags).c_str(), flags.grad_accum, flags.threads);
    if (cluster && cluster->link_gbit() > 0) {
      std::printf(
          "# emulated cluster: %d hosts (network namespaces, one node launcher each), links %g "
          "Gbit/s each way (tc tbf, burst %lld B), UCX tcp on %s\n",
          cluster->hosts(), cluster->link_gbit(), static_cast<long long>(cluster->burst_bytes()),
          EmulatedCluster::kInterface);
    } else if (cluster) {
      std::printf(
          "# emulated cluster: %d hosts (network namespaces, one node launcher each), links not "
          "limited, UCX tcp on %s\n",
          cluster->hosts(), EmulatedCluster::kInterface);
    }
    std::fputs(RunTableHeader().c_str(), stdout);
    std::fflush(stdout);
  }
  char timeout_text[32];
  std::snprintf(timeout_text, sizeof(timeout_text), "%.17g", f.timeout_s);
  std::vector<ModeOutcome> outcomes;
  for (const std::string& mode : *modes) {
    ModeOutcome o;
    o.mode = mode;
    train::TrainFlags m = flags;
    m.sync = mode;
    m.report = (report_dir / (config->name + "-" + mode + ".json")).string();
    std::vector<std::string> argv = {launcher,
                                     "--workers",
                                     std::to_string(workers),
                                     "--servers",
                                     std::to_string(mode == "ps" ? f.servers : 0),
                                     "--timeout",
                                     timeout_text};
    std::vector<std::string> env;
    if (cluster) {
      // Node 0 runs the rendezvous service on its own address; the namespace is fresh, so
      // the port is free. --servers S spreads like the workers: S = H puts one per host.
      argv.insert(argv.end(), {"--hostfile", hostfile_launch.hostfile, "--master-addr",
                               cluster->Address(0), "--master-port", "29500"});
      env = EmulatedCluster::UcxEnvironment();
      env.push_back("PSZERO_SSH=" + hostfile_launch.ssh);
    }
    for (const std::string& a : train::TrainArgs(m)) argv.push_back(a);
    Result<ChildRun> r = RunChild(
        argv, std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000) + 30000), env);
    if (r.ok() && r->interrupted_by != 0) return 128 + r->interrupted_by;  // the user stopped it
    if (!r.ok()) {
      o.error = r.status().message();
      o.exit_code = 1;
    } else if (!r->ok()) {
      o.exit_code = r->exit_code == 2 ? 2 : 1;
      const std::string why = LastLines(r->err, 1);
      o.error = "pszero-launch " + r->Describe() + (why.empty() ? "" : ": " + why);
      std::cerr << "# pszero-launch --sync " << mode << " failed (" << r->Describe()
                << "); its last lines:\n"
                << LastLines(r->err, 20) << "\n";
    } else if (Result<RunSummary> run = ReadRunReport(m.report); !run.ok()) {
      o.exit_code = 1;
      o.error = "pszero-launch exited 0 but the report is unusable: " + run.status().message();
    } else if (Status s = RecordEmulation(m.report, emulation); !s.ok()) {
      o.exit_code = 1;
      o.error = s.message();
    } else {
      o.run = *run;
    }
    if (!f.json) {
      if (o.run) {
        std::fputs(RunTableRow(*o.run).c_str(), stdout);
      } else {
        std::printf("  %-9s failed: %s\n", mode.c_str(), o.error.c_str());
      }
      std::fflush(stdout);
    }
    outcomes.push_back(std::move(o));
    if (latch && latch->signal() != 0) return 128 + latch->signal();
  }

  // The PyTorch peer: the same preset, processes, batch per replica, steps and threads.
  nlohmann::json torch = nullptr;
  std::string torch_note;
  if (f.peer == "torch") {
    std::string torch_modes;
    for (const std::string& mode : *modes) {
      if (mode == "ps") continue;
      torch_modes += (torch_modes.empty() ? "" : ",") + mode;
    }
    const std::string python = FindTorchPython(f.python);
    if (python.empty()) {
      torch_note = kTorchSkipped;
    } else if (torch_modes.empty()) {
      torch_note = "torch peer skipped: PyTorch has no parameter-server mode";
    } else {
      Result<ChildRun> r =
          RunChild({python, f.torch_script, "--model", flags.model, "--modes", torch_modes,
                    "--workers", std::to_string(workers), "--steps", std::to_string(flags.steps),
                    "--threads", std::to_string(flags.threads), "--seed",
                    std::to_string(flags.seed), "--timeout", timeout_text},
                   std::chrono::milliseconds(static_cast<int64_t>(f.timeout_s * 1000) * 4 + 60000));
      if (r.ok() && r->interrupted_by != 0) return 128 + r->interrupted_by;
      nlohmann::json doc =
          nlohmann::json::parse(r.ok() ? LastLines(r->out, 1) : std::string(), nullptr, false);
      if (!r.ok()) {
        torch = {{"error", r.status().message()}};
      } else if (!r->ok() || doc.is_discarded() || !doc.contains("runs")) {
        torch = {{"error", "torch_peer.py " + r->Describe() + ": " + LastLines(r->err, 1)}};
      } else {
        torch = doc;
      }
    }
  }
  // ours / torch, per mode that both ran.
  auto torch_run = [&](const std::string& mode) -> const nlohmann::json* {
    if (!torch.is_object() || !torch.contains("runs")) return nullptr;
    for (const auto& t : torch["runs"]) {
      if (t.value("mode", "") == mode) return &t;
    }
    return nullptr;
  };
  auto ratio_of = [&](const ModeOutcome& o) -> nlohmann::json {
    const nlohmann::json* t = o.run ? torch_run(o.mode) : nullptr;
    if (t == nullptr || !(*t)["step_s_median"].is_number()) return nullptr;
    return o.run->median_step_s / (*t)["step_s_median"].get<double>();
  };

  int code = 0;
  for (const ModeOutcome& o : outcomes) {
    if (o.exit_code != 0 && code != 1) code = o.exit_code;
  }
  if (f.json) {
    nlohmann::json runs = nlohmann::json::array();
    for (const ModeOutcome& o : outcomes) {
      nlohmann::json entry = o.run ? ToJson(*o.run) : nlohmann::json{{"sync", o.mode}};
      entry["error"] = o.run ? nlohmann::json(nullptr) : nlohmann::json(o.error);
      entry["ours_over_torch_step_time"] = ratio_of(o);
      entry["emulate_hosts"] = f.emulate_hosts;
      entry["link_gbit"] = f.link_gbit;
      runs.push_back(entry);
    }
    nlohmann::json doc = {{"benchmark", "train"},
                          {"model", config->name},
                          {"params", model::ParamCount(*config)},
                          {"workers", workers},
                          {"servers", f.servers},
                          {"tp", flags.tp},
                          {"steps", flags.steps},
                          {"precision", flags.precision},
                          {"threads_per_worker", flags.threads},
                          {"recompute", flags.recompute},
                          {"recompute_layers", flags.recompute_layers},
                          {"grad_accum", flags.grad_accum},
                          {"emulate_hosts", f.emulate_hosts},
                          {"link_gbit", f.link_gbit},
                          {"emulation", emulation},
                          {"runs", runs},
                          {"torch", torch}};
    if (!torch_note.empty()) std::cerr << torch_note << "\n";
    std::cout << doc.dump(2) << "\n";
    return code;
  }
  if (!torch_note.empty()) std::printf("%s\n", torch_note.c_str());
  if (torch.is_object() && torch.contains("error")) {
    std::printf("torch peer failed: %s\n", torch["error"].get<std::string>().c_str());
  } else if (torch.is_object()) {
    std::printf(
        "# torch peer: torch %s (python %s), %s on CPU, %d processes x %d thread(s), batch %d per "
        "process, %lld steps; ours/torch = median step time ratio (< 1: pszero is faster)\n",
        torch.value("torch_version", "?").c_str(), torch.value("python", "?").c_str(),
        torch.value("backend", "?").c_str(), workers, flags.threads,
        torch.value("batch_per_rank", 0), static_cast<long long>(flags.steps));
    std::printf("# %-9s %-48s %9s %10s %12s %10s\n", "mode", "torch", "step ms", "tokens/s",
                "ours step ms", "ours/torch");
    for (const ModeOutcome& o : outcomes) {
      const nlohmann::json* t = torch_run(o.mode);
      if (t == nullptr) continue;
      const std::string impl = t->value("torch_impl", "");
      if (!(*t)["step_s_median"].is_number()) {
        std::printf("  %-9s %-48s error: %s\n", o.mode.c_str(), impl.c_str(),
                    t->value("error", std::string("no result")).c_str());
        continue;
      }
      const double step = (*t)["step_s_median"].get<double>();
      const nlohmann::json ratio = ratio_of(o);
      char ours[32] = "-", rel[32] = "-";
      if (o.run) std::snprintf(ours, sizeof(ours), "%.1f", o.run->median_step_s * 1e3);
      if (ratio.is_number()) std::snprintf(rel, sizeof(rel), "%.3f", ratio.get<double>());
      std::printf("  %-9s %-48s %9.1f %10.1f %12s %10s\n", o.mode.c_str(), impl.c_str(), step * 1e3,
                  (*t)["tokens_per_s"].get<double>(), ours, rel);
    }
  }
  return code;
}

}  // namespace

BenchCommand AddTrainCommand(CLI::App& root) {
  auto flags = std::make_shared<TrainBenchFlags>();
  CLI::App* app = root.add_subcommand(
      "train",
      "Step time, tokens/s and GFLOP/s of one replica (--tp T ranks as threads); with --sync or "
      "--workers: whole jobs by pszero-launch, one per mode, and their run reports");
  flags->train.model = "gpt-tiny";
  flags->train.steps = 5;
  train::AddTrainFlags(*app, flags->train);
  // --sync takes a list here, and the bench writes its own reports.
  app->remove_option(app->get_option("--sync"));
  app->remove_option(app->get_option("--report"));
  app->add_option("--sync", flags->sync_list,
                  "Run whole jobs with these modes: allreduce, zero1, zero2, zero3, ps, a comma "
                  "list, or all");
  app->add_option("--workers", flags->workers, "Workers per job (default: --tp, one replica)")
      ->check(CLI::Range(1, 4096));
  app->add_option("--servers", flags->servers, "Parameter servers of the --sync ps job")
      ->check(CLI::Range(0, 4096));
  app->add_option("--peer", flags->peer,
                  "Also train the same preset under this yardstick (torch: DDP, ZeRO-1, FSDP)")
      ->check(CLI::IsMember({"torch"}));
  app->add_option("--python", flags->python,
                  "Interpreter for --peer torch (default: python3, then /usr/bin/python3)");
  app->add_option("--torch-script", flags->torch_script,
                  "The PyTorch peer script (default: scripts/torch_peer.py of the source tree)")
      ->default_str("");  // not the build machine's path (docs/flags.md)
  app->add_option("--bin-dir", flags->bin_dir,
                  "Directory of pszero-launch (default: beside pszero-bench)")
      ->check(CLI::ExistingDirectory);
  app->add_option("--report-dir", flags->report_dir,
                  "Keep the jobs' run reports here (MODEL-MODE.json; default: a temporary dir)");
  app->add_option("--timeout", flags->timeout_s, "Seconds each job may run")
      ->check(pszero::FiniteRange(1.0, 1e6));
  AddEmulationFlags(app, &flags->emulate_hosts, &flags->link_gbit,
                    "Run each job across this many emulated hosts, one node launcher each");
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  // Launched (one pszero-launch job per mode) or in this process.
  auto launched = [flags, app] {
    flags->sync_given = app->count("--sync") > 0;
    return flags->sync_given || !flags->peer.empty() ||
           (flags->workers > 0 && flags->workers != flags->train.tp) || flags->servers > 0 ||
           flags->emulate_hosts > 0;
  };
  return {
      app,
      [flags, launched] { return launched() ? RunLaunchedBench(*flags) : RunTrainBench(*flags); },
      [flags, launched] {
        return launched() ? CheckLaunchedFlags(*flags) : CheckInProcessFlags(*flags);
      }};
}

}  // namespace pszero::bench
