// `pszero-bench train`: one replica of a model (--tp T ranks as threads of this process,
// UCX transports over shared memory, exactly the worker's code path from the model down)
// trained for --steps steps after one warm-up step. Prints step time (median, min, max),
// tokens/s, achieved GFLOP/s (model/config.h: 6 * params * tokens plus attention) and its
// ratio to the GEMM rate measured in the same run: every rank multiplies its own local
// MLP matrix ([tokens, d] x [d, ffn*d/T]) concurrently, as in training.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <thread>
#include <vector>

#include "common/kv_store.h"
#include "common/report.h"
#include "common/ucx/ucx_transport.h"
#include "kernels/gemm.h"
#include "launch/bench/command.h"
#include "worker/collectives/communicator.h"
#include "worker/train/training_rank.h"

namespace pszero::bench {

namespace {

struct TrainBenchFlags {
  train::TrainFlags train;
  bool json = false;
};

// Seconds of each timed step on rank 0 (all ranks step together).
Status RunRank(const model::ModelConfig& config, const train::TrainFlags& flags,
               collectives::Communicator* comm, std::vector<double>* step_seconds,
               double* gemm_seconds, std::vector<float>* losses) {
  MemoryTracker tracker;
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<train::TrainingRank> run,
                          train::BuildTrainingRank(config, flags, comm, nullptr, &tracker));
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
  std::vector<float> a(n * k, 0.5f), b(k * cols, 0.25f), c(n * cols);
  double best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    if (comm != nullptr) PSZERO_RETURN_IF_ERROR(comm->Barrier());
    const auto t0 = std::chrono::steady_clock::now();
    PSZERO_RETURN_IF_ERROR(kernels::Gemm(false, false, n, cols, k, 1.0f, a.data(), k, b.data(),
                                         cols, 0.0f, c.data(), cols, DType::kFloat32,
                                         run->kernels));
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  *gemm_seconds = best;
  return Status::Ok();
}

int RunTrainBench(const TrainBenchFlags& f) {
  const train::TrainFlags& flags = f.train;
  auto fail = [](const Status& s) {
    std::cerr << "pszero-bench train: " << s.ToString() << "\n";
    return 1;
  };
  Result<model::ModelConfig> config = train::ResolveModel(flags);
  Status valid = config.ok() ? train::CheckTrainFlags(flags, flags.tp) : config.status();
  if (!valid.ok()) {
    std::cerr << "pszero-bench train: error: " << valid.message() << "\n";
    return 2;
  }
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
  const double flops = model::TrainFlopsPerStep(*config);
  const double tokens = static_cast<double>(config->tokens_per_step());
  const double gemm_time = *std::max_element(gemm.begin(), gemm.end());
  const double gemm_flops = 2.0 * tokens * config->d_model * config->d_model * config->ffn_mult;
  const double gemm_gflops = gemm_flops / gemm_time * 1e-9;  // all T ranks together
  const double achieved = flops / median * 1e-9;
  nlohmann::json doc = {
      {"model", config->name},
      {"params", model::ParamCount(*config)},
      {"tp", t},
      {"steps", flags.steps},
      {"precision", flags.precision},
      {"threads_per_rank", flags.threads},
      {"tokens_per_step", config->tokens_per_step()},
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
      "%s, %d thread(s) per rank\n",
      config->name.c_str(), static_cast<long long>(model::ParamCount(*config)), t,
      static_cast<long long>(flags.steps), flags.precision.c_str(), flags.threads);
  std::printf("# %10s %10s %10s %12s %14s %12s %8s %10s\n", "step ms", "min ms", "max ms",
              "tokens/s", "achieved GF/s", "gemm GF/s", "ratio", "loss");
  std::printf("  %10.2f %10.2f %10.2f %12.1f %14.2f %12.2f %8.3f %10.4f\n", median * 1e3,
              sorted.front() * 1e3, sorted.back() * 1e3, tokens / median, achieved, gemm_gflops,
              achieved / gemm_gflops, losses[0].back());
  return 0;
}

}  // namespace

BenchCommand AddTrainCommand(CLI::App& root) {
  auto flags = std::make_shared<TrainBenchFlags>();
  CLI::App* app = root.add_subcommand(
      "train", "Step time, tokens/s and GFLOP/s of one replica (--tp T ranks as threads)");
  flags->train.model = "gpt-tiny";
  flags->train.steps = 5;
  train::AddTrainFlags(*app, flags->train);
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  return {app, [flags] { return RunTrainBench(*flags); }};
}

}  // namespace pszero::bench
