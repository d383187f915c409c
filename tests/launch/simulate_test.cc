// The cost model of `pszero-bench simulate` (launch/bench/simulate.h): collective formulas,
// the ZeRO paper's memory table, overlap, bytes against the training code's own formula,
// the link fit, and the calibration on JSON recorded on this machine
// (tests/launch/simulate_fixtures/, README there says how it was made).
#include "launch/bench/simulate.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>

namespace pszero::bench::sim {
namespace {

// The target, met on the recorded fixtures (2-core VM at load average 11-14, three
// rounds; README.md beside them). Measured: fitted to all runs, allreduce 2/4/8 workers
// -3.9%, -4.0%, +3.1%, zero3 -6.5%, -6.2%, +13.8%; each worker count held out of the fit,
// -5.8%, -6.0%, +3.8% and -8.4%, -8.0%, +14.5%. The fixtures are fixed, so the margin
// (zero3 at 8 workers) does not move between runs of the test; a re-recording on another
// machine may need another look. Without the fitted core share (--host-cores 2 as the
// hardware says) the errors are -39..-52%: on the loaded VM the job got about one core.
constexpr double kCalibrationTolerance = 0.15;
constexpr double kHeldOutTolerance = 0.15;

TEST(SimulateTest, RingAndDirectCollectiveCosts) {
  const double s = 64 << 20;
  CollCost ar = CollectiveCost(CollOp::kAllReduce, 8, s, 32768);
  EXPECT_DOUBLE_EQ(ar.steps, 14);                  // 2(N-1) steps
  EXPECT_DOUBLE_EQ(ar.bytes_on_link, 14 * s / 8);  // of S/N bytes each
  CollCost rs = CollectiveCost(CollOp::kReduceScatter, 8, s, 32768);
  CollCost ag = CollectiveCost(CollOp::kAllGather, 8, s, 32768);
  EXPECT_DOUBLE_EQ(rs.steps, 7);
  EXPECT_DOUBLE_EQ(rs.bytes_on_link, 7 * s / 8);
  EXPECT_DOUBLE_EQ(ag.steps, rs.steps);
  EXPECT_DOUBLE_EQ(ag.bytes_on_link, rs.bytes_on_link);
  Link link{10e-6, 1e9};
  EXPECT_DOUBLE_EQ(ar.Seconds(link), 14 * (10e-6 + s / 8 / 1e9));
  // At or below the small-message size: one direct round.
  CollCost small = CollectiveCost(CollOp::kAllReduce, 4, 4096, 32768);
  EXPECT_DOUBLE_EQ(small.steps, 1);
  EXPECT_DOUBLE_EQ(small.bytes_on_link, 3 * 4096);
  EXPECT_DOUBLE_EQ(CollectiveCost(CollOp::kAllReduce, 1, s, 32768).Seconds(link), 0.0);
}

// ZeRO (Rajbhandari et al. 2020), Figure 1 / Table 1: Ψ = 7.5 B, N_d = 64, K = 12, mixed
// precision: 120 GB, 31.4 GB, 16.6 GB, 1.88 GB per GPU (GB = 1e9 bytes).
TEST(SimulateTest, ReproducesTheZeroPaperTable) {
  const Workload w = WorkloadForParams(7'500'000'000, 32, 2048, 1);
  EXPECT_EQ(w.psi, 7'500'000'000);
  SimOptions opt;
  opt.workers = 64;
  opt.bf16 = true;
  const std::vector<std::pair<std::string, std::string>> paper = {
      {"allreduce", "120"}, {"zero1", "31.4"}, {"zero2", "16.6"}, {"zero3", "1.88"}};
  const std::vector<double> exact = {120e9, 31.40625e9, 16.640625e9, 1.875e9};
  for (size_t i = 0; i < paper.size(); ++i) {
    Result<ModePrediction> p = Simulate(w, paper[i].first, opt);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    EXPECT_EQ(PaperGB(static_cast<double>(p->memory.total())), paper[i].second) << paper[i].first;
    EXPECT_DOUBLE_EQ(static_cast<double>(p->memory.total()), exact[i]) << paper[i].first;
  }
}

TEST(SimulateTest, BytesMatchTheTrainingCodesFormula) {
  Result<model::ModelConfig> c = model::PresetConfig("gpt-small");
  ASSERT_TRUE(c.ok());
  Result<Workload> w = WorkloadForModel(*c, 1);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->psi, model::ParamCount(*c));
  double flops = 0;
  for (const Unit& u : w->units) flops += u.flops;
  EXPECT_NEAR(flops, model::TrainFlopsPerStep(*c), 1e-6 * flops);
  SimOptions opt;
  opt.workers = 4;
  for (const char* mode : {"allreduce", "zero1", "zero2", "zero3"}) {
    Result<ModePrediction> p = Simulate(*w, mode, opt);
    ASSERT_TRUE(p.ok());
    EXPECT_NEAR(p->bytes_sent_per_rank, 4.0 * train::TheoryElementsPerStep(mode, w->psi, 4), 1.0)
        << mode;
    EXPECT_EQ(p->memory.total(), train::PredictModelState(mode, w->psi, 4, false).total());
  }
}

// --grad-accum K: K reduce-scatters + 1 all-gather for zero2, 3K for zero3, one exchange
// for allreduce and zero1, the training code's formula with micro_batches = K.
TEST(SimulateTest, GradAccumBytesMatchTheTrainingCodesFormula) {
  Result<model::ModelConfig> c = model::PresetConfig("gpt-small");
  ASSERT_TRUE(c.ok());
  Result<Workload> w = WorkloadForModel(*c, 1);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (bool bf16 : {false, true}) {
    SimOptions opt;
    opt.workers = 4;
    opt.bf16 = bf16;
    opt.grad_accum = 3;
    for (const char* mode : {"allreduce", "zero1", "zero2", "zero3", "ps"}) {
      Result<ModePrediction> p = Simulate(*w, mode, opt);
      ASSERT_TRUE(p.ok()) << p.status().ToString();
      const double theory =
          train::TrafficElementBytes(mode, bf16) * train::TheoryElementsPerStep(mode, w->psi, 4, 3);
      if (std::string(mode) == "ps") {  // the simulator counts the push: Ψ, as with K = 1
        EXPECT_DOUBLE_EQ(p->bytes_sent_per_rank, theory) << mode;
      } else {
        EXPECT_NEAR(p->bytes_sent_per_rank, theory, 1e-12 * theory) << mode << " bf16 " << bf16;
      }
      EXPECT_EQ(p->memory.total(), train::PredictModelState(mode, w->psi, 4, bf16).total());
    }
  }
}

// K micro-batches compute K times one micro-batch; the step is at least that, and with
// K = 1 (and recompute none) given explicitly nothing changes.
TEST(SimulateTest, StepTimeGrowsWithGradAccum) {
  Result<model::ModelConfig> c = model::PresetConfig("gpt-small");
  ASSERT_TRUE(c.ok());
  Result<Workload> w = WorkloadForModel(*c, 1);
  ASSERT_TRUE(w.ok());
  SimOptions opt;
  opt.workers = 8;
  opt.link = {5e-6, 2e9};  // slow enough that communication shows
  opt.flops_per_s = 20e12;
  for (const std::string& mode : AllModes()) {
    SCOPED_TRACE(mode);
    SimOptions one = opt;
    one.grad_accum = 1;
    one.recompute = model::Recompute::kNone;
    Result<ModePrediction> base = Simulate(*w, mode, SimOptions(opt));
    Result<ModePrediction> k1 = Simulate(*w, mode, one);
    ASSERT_TRUE(base.ok() && k1.ok());
    EXPECT_EQ(k1->step_s, base->step_s);
    EXPECT_EQ(k1->bytes_sent_per_rank, base->bytes_sent_per_rank);
    double previous = base->step_s;
    for (int k : {2, 3, 4}) {
      SimOptions o = opt;
      o.grad_accum = k;
      Result<ModePrediction> p = Simulate(*w, mode, o);
      ASSERT_TRUE(p.ok());
      EXPECT_NEAR(p->compute_s, k * base->compute_s, 1e-12 * p->compute_s);
      EXPECT_GE(p->step_s, k * base->compute_s * (1 - 1e-12));
      EXPECT_GT(p->step_s, previous);
      EXPECT_NEAR(p->exposed_comm_s, p->step_s - p->compute_s, 1e-12);
      if (mode == "allreduce" || mode == "zero1" || mode == "ps") {
        EXPECT_EQ(p->comm_s, base->comm_s);  // one exchange per step
      } else {
        EXPECT_GT(p->comm_s, base->comm_s);
      }
      previous = p->step_s;
    }
  }
  opt.grad_accum = 0;
  EXPECT_FALSE(Simulate(*w, "allreduce", opt).ok());
}

// --recompute full re-runs each block's forward but the last, less the MLP's output
// projection: for gpt-small (L = 12, d = 768, S = 256) the step's flops grow by the
// factor docs/benchmarks.md states; selective adds the scores GEMMs only.
TEST(SimulateTest, RecomputeRaisesComputeByTheDocumentedFactor) {
  Result<model::ModelConfig> c = model::PresetConfig("gpt-small");
  ASSERT_TRUE(c.ok());
  Result<Workload> w = WorkloadForModel(*c, 1);
  ASSERT_TRUE(w.ok());
  SimOptions opt;
  opt.workers = 1;
  Result<ModePrediction> none = Simulate(*w, "allreduce", opt);
  ASSERT_TRUE(none.ok());
  EXPECT_DOUBLE_EQ(StepFlops(*w, opt), w->flops_per_rank);
  // Independent of the unit split: per re-run block 2·tok·(12d² + 13d − 4d² − d) weight
  // flops + 4·B·S²·d attention, over (6·Ψ·tok + 12·L·B·S²·d) for the step.
  const double d = c->d_model, tok = c->tokens_per_step(), L = c->layers;
  const double bs2d = static_cast<double>(c->batch) * c->seq * c->seq * d;
  const double weight_flops = 6.0 * model::ParamCount(*c) * tok + 12.0 * L * bs2d;
  const double rerun = (L - 1) * (2.0 * tok * (8 * d * d + 12 * d) + 4.0 * bs2d);
  // The units' weights leave out the position table's 6·S·d·tok, hence the tolerance.
  opt.recompute = model::Recompute::kFull;
  Result<ModePrediction> full = Simulate(*w, "allreduce", opt);
  ASSERT_TRUE(full.ok());
  const double factor = full->compute_s / none->compute_s;
  EXPECT_NEAR(factor, 1.0 + rerun / weight_flops, 1e-3);
  EXPECT_NEAR(factor, 1.2087, 1e-4);  // docs/benchmarks.md
  EXPECT_NEAR(StepFlops(*w, opt) / w->flops_per_rank, factor, 1e-12);
  opt.recompute = model::Recompute::kSelective;
  Result<ModePrediction> selective = Simulate(*w, "allreduce", opt);
  ASSERT_TRUE(selective.ok());
  EXPECT_NEAR(selective->compute_s / none->compute_s, 1.0 + L * 2.0 * bs2d / weight_flops, 1e-4);
  // Memory (model states) does not depend on it.
  EXPECT_EQ(full->memory.total(), none->memory.total());
  // A bare parameter count knows no sequence: selective is free, full 2/9 of all but one
  // layer's flops.
  const Workload bare = WorkloadForParams(1'000'000'000, 10, 2048, 1);
  opt.recompute = model::Recompute::kSelective;
  EXPECT_DOUBLE_EQ(StepFlops(bare, opt), bare.flops_per_rank);
  opt.recompute = model::Recompute::kFull;
  EXPECT_NEAR(StepFlops(bare, opt), bare.flops_per_rank * (1.0 + 0.9 * 2.0 / 9.0),
              1e-9 * bare.flops_per_rank);
}

// --recompute full --recompute-layers N re-runs the first N blocks but the last of them
// (the model's Model::RecomputeBlock): N - 1 block forwards (less the MLP output
// projection), none for N = 0 and 1, the default full's for N = L.
TEST(SimulateTest, RecomputeLayersScaleTheRecomputeFlops) {
  Result<model::ModelConfig> c = model::PresetConfig("gpt-small");
  ASSERT_TRUE(c.ok());
  Result<Workload> w = WorkloadForModel(*c, 1);
  ASSERT_TRUE(w.ok());
  SimOptions opt;
  opt.workers = 1;
  opt.recompute = model::Recompute::kFull;
  const double all = StepFlops(*w, opt);
  const double none = w->flops_per_rank;
  const double per_block = (all - none) / (c->layers - 1);
  EXPECT_GT(per_block, 0);
  Result<ModePrediction> full = Simulate(*w, "allreduce", opt);
  ASSERT_TRUE(full.ok());
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{3}, int64_t{6}, int64_t{11}, c->layers}) {
    SCOPED_TRACE("--recompute-layers " + std::to_string(n));
    opt.recompute_layers = n;
    const double flops = StepFlops(*w, opt);
    EXPECT_NEAR(flops, none + std::max<int64_t>(n - 1, 0) * per_block, 1e-12 * all);
    Result<ModePrediction> p = Simulate(*w, "allreduce", opt);
    ASSERT_TRUE(p.ok());
    EXPECT_NEAR(p->compute_s / full->compute_s, flops / all, 1e-12);
  }
  // Without full it changes nothing.
  opt.recompute = model::Recompute::kNone;
  opt.recompute_layers = 6;
  EXPECT_DOUBLE_EQ(StepFlops(*w, opt), none);
  // The TP re-run all-reduce follows the same blocks: at T = 2 on a slow link the step
  // grows with N.
  Result<Workload> w2 = WorkloadForModel(*c, 2);
  ASSERT_TRUE(w2.ok());
  SimOptions tp;
  tp.workers = 2;
  tp.recompute = model::Recompute::kFull;
  tp.link = {5e-6, 1e9};
  double previous = 0;
  for (int64_t n : {int64_t{1}, int64_t{2}, int64_t{7}, c->layers}) {
    tp.recompute_layers = n;
    Result<ModePrediction> p = Simulate(*w2, "allreduce", tp);
    ASSERT_TRUE(p.ok());
    EXPECT_GT(p->compute_s, previous) << n;
    previous = p->compute_s;
  }
}

// A one-step gpt-tiny run report on one worker with these extra flags.
nlohmann::json OneStepReport(nlohmann::json flags, double step_s) {
  flags["sync"] = "allreduce";
  flags["model"] = "gpt-tiny";
  flags["workers"] = 1;
  return nlohmann::json{{"schema", "pszero.run/1"},
                        {"flags", flags},
                        {"steps", {{{"step", 1}, {"time_s", step_s}}}},
                        {"ranks", nlohmann::json::array()}};
}

// Calibrated on `run` alone, the compute rate is the flops of what it ran (`ran`) over its
// step time, so the model reproduces that step exactly.
void ExpectCalibratedOn(const RunSample& run, const SimOptions& ran, double step_s) {
  CalibrationData only;
  only.runs = {run};
  Result<Calibration> c = Calibrate(only, SimOptions{});
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Result<model::ModelConfig> tiny = model::PresetConfig("gpt-tiny");
  ASSERT_TRUE(tiny.ok());
  Result<Workload> w = WorkloadForModel(*tiny, 1);
  ASSERT_TRUE(w.ok());
  EXPECT_NEAR(c->flops_per_s, StepFlops(*w, ran) / step_s, 1e-9 * c->flops_per_s);
  Result<std::vector<CheckRow>> rows = CheckRuns(only, Apply(*c, SimOptions{}));
  ASSERT_TRUE(rows.ok());
  EXPECT_NEAR((*rows)[0].error, 0.0, 1e-9);
}

// A run report's own --grad-accum and --recompute: its flops are what it ran, and runs
// that differ only in them are different runs.
TEST(SimulateTest, CalibrationReadsTheRunsGradAccumAndRecompute) {
  auto report = [](int k, const char* recompute, double step_s) {
    nlohmann::json flags = nlohmann::json::object();
    if (k != 0) flags["grad_accum"] = k;  // 0: absent
    if (recompute != nullptr) flags["recompute"] = recompute;
    return OneStepReport(flags, step_s);
  };
  CalibrationData data;
  ASSERT_TRUE(AddCalibrationJson(report(2, "full", 0.5), "a.json", &data).ok());
  ASSERT_TRUE(AddCalibrationJson(report(0, nullptr, 0.2), "b.json", &data).ok());
  ASSERT_EQ(data.runs.size(), 2u);
  EXPECT_EQ(data.runs[0].grad_accum, 2);
  EXPECT_EQ(data.runs[0].recompute, model::Recompute::kFull);
  EXPECT_EQ(data.runs[1].grad_accum, 1);
  EXPECT_EQ(data.runs[1].recompute, model::Recompute::kNone);
  SimOptions ran;
  ran.grad_accum = 2;
  ran.recompute = model::Recompute::kFull;
  ExpectCalibratedOn(data.runs[0], ran, 0.5);
  EXPECT_FALSE(AddCalibrationJson(report(1, "bogus", 0.1), "c.json", &data).ok());
  EXPECT_FALSE(AddCalibrationJson(report(-1, "none", 0.1), "d.json", &data).ok());
}

// flags.recompute_layers (absent or -1: all blocks): the run's flops re-run N - 1 blocks,
// and runs differing only in it are different runs.
TEST(SimulateTest, CalibrationReadsTheRunsRecomputeLayers) {
  auto report = [](int64_t layers, double step_s) {
    nlohmann::json flags = {{"recompute", "full"}};
    if (layers != -2) flags["recompute_layers"] = layers;  // -2: absent
    return OneStepReport(flags, step_s);
  };
  CalibrationData data;
  ASSERT_TRUE(AddCalibrationJson(report(2, 0.4), "a.json", &data).ok());
  ASSERT_TRUE(AddCalibrationJson(report(-2, 0.5), "b.json", &data).ok());
  ASSERT_TRUE(AddCalibrationJson(report(-1, 0.6), "c.json", &data).ok());
  ASSERT_EQ(data.runs.size(), 2u);  // absent and -1 are the same run
  EXPECT_EQ(data.runs[0].recompute_layers, 2);
  EXPECT_EQ(data.runs[1].recompute_layers, -1);
  EXPECT_EQ(data.runs[1].round_s.size(), 2u);
  SimOptions ran;
  ran.recompute = model::Recompute::kFull;
  ran.recompute_layers = 2;
  ExpectCalibratedOn(data.runs[0], ran, 0.4);
  Result<model::ModelConfig> tiny = model::PresetConfig("gpt-tiny");
  ASSERT_TRUE(tiny.ok());
  Result<Workload> w = WorkloadForModel(*tiny, 1);
  ASSERT_TRUE(w.ok());
  SimOptions all = ran;
  all.recompute_layers = -1;
  EXPECT_LT(StepFlops(*w, ran), StepFlops(*w, all));
  EXPECT_FALSE(AddCalibrationJson(report(-3, 0.1), "d.json", &data).ok());
}

// Ψ per TP rank as the model itself lays it out: params_per_tp_rank of real run reports
// (pszero-launch --workers 2 --tp 2 --model gpt-tiny | mlp --report, 2026-11-26).
TEST(SimulateTest, PsiPerTpRankMatchesTheRunReport) {
  for (const auto& [name, psi] :
       std::vector<std::pair<std::string, int64_t>>{{"gpt-tiny", 1648640}, {"mlp", 16797696}}) {
    Result<model::ModelConfig> c = model::PresetConfig(name);
    ASSERT_TRUE(c.ok());
    Result<Workload> w = WorkloadForModel(*c, 2);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(w->psi, psi) << name;
    EXPECT_DOUBLE_EQ(w->flops_per_rank, model::TrainFlopsPerStep(*c) / 2) << name;
  }
}

TEST(SimulateTest, PsPerServerLinkCarriesEveryWorkersSlice) {
  // One unit, one bucket: push and pull of Ψ·4 bytes from each of D workers over S links.
  Workload w = WorkloadForParams(1'000'000, 1, 1, 1);
  SimOptions opt;
  opt.workers = 8;
  opt.servers = 2;
  opt.link = {0.0, 1e9};
  opt.flops_per_s = 1e30;
  Result<ModePrediction> p = Simulate(w, "ps", opt);
  ASSERT_TRUE(p.ok());
  EXPECT_NEAR(p->comm_s, 2.0 * 8 * 4e6 / 2 / 1e9, 1e-12);
}

TEST(SimulateTest, BucketsOverlapBackwardAndTheLastOneIsExposed) {
  Workload w = WorkloadForParams(400'000'000, 40, 2048, 1);  // 1.6 GB: 64 buckets of 25 MiB
  SimOptions opt;
  opt.workers = 16;
  opt.link = {5e-6, 12.5e9};
  opt.flops_per_s = 50e12;
  Result<ModePrediction> p = Simulate(w, "allreduce", opt);
  ASSERT_TRUE(p.ok());
  EXPECT_GE(p->step_s, std::max(p->compute_s, p->comm_s) - 1e-12);
  EXPECT_LT(p->step_s, p->compute_s + p->comm_s);
  EXPECT_GT(p->exposed_comm_s, 0.0);  // the last bucket waits for backward's end
  // With shared cores the same run cannot overlap: the times add.
  opt.host_cores = 2;
  Result<ModePrediction> serial = Simulate(w, "allreduce", opt);
  ASSERT_TRUE(serial.ok());
  EXPECT_NEAR(serial->step_s, serial->compute_s + serial->comm_s, 1e-9);
  // Nothing to communicate at one worker.
  opt.host_cores = 0;
  opt.workers = 1;
  Result<ModePrediction> one = Simulate(w, "zero2", opt);
  ASSERT_TRUE(one.ok());
  EXPECT_DOUBLE_EQ(one->step_s, one->compute_s);
  // Compute-bound (fast link): allreduce hides all but its last bucket; zero2's
  // all-gathers after the optimizer are a tail on top (same bytes, less hidden).
  opt.workers = 16;
  opt.link = {5e-6, 200e9};
  Result<ModePrediction> ar = Simulate(w, "allreduce", opt);
  Result<ModePrediction> z2 = Simulate(w, "zero2", opt);
  ASSERT_TRUE(ar.ok() && z2.ok());
  EXPECT_NEAR(ar->comm_s, z2->comm_s, 1e-3 * ar->comm_s);
  EXPECT_GT(z2->exposed_comm_s, ar->exposed_comm_s);
}

TEST(SimulateTest, Zero3PrefetchHidesGathersBehindCompute) {
  Workload w = WorkloadForParams(1'000'000'000, 20, 4096, 1);
  SimOptions opt;
  opt.workers = 8;
  opt.link = {5e-6, 100e9};  // fast link: only the first gather is exposed
  opt.flops_per_s = 100e12;
  Result<ModePrediction> p = Simulate(w, "zero3", opt);
  ASSERT_TRUE(p.ok());
  const double first_gather =
      CollectiveCost(CollOp::kAllGather, 8, w.units[0].params * 4.0, opt.small_bytes)
          .Seconds(opt.link);
  const double last_scatter =
      CollectiveCost(CollOp::kReduceScatter, 8, w.units[0].params * 4.0, opt.small_bytes)
          .Seconds(opt.link);
  EXPECT_NEAR(p->exposed_comm_s, first_gather + last_scatter, 1e-9);
}

// With K micro-batches the recorded order ends with each micro-batch (Zero3Sync::NextUse):
// the next micro-batch's first gather is issued by BeginMicroBatch once the last backward
// has ended, behind its reduce-scatter, so on a fast link every micro-batch exposes one
// gather and one reduce-scatter (not only the step's first and last).
TEST(SimulateTest, Zero3PrefetchRestartsEveryMicroBatch) {
  Workload w = WorkloadForParams(1'000'000'000, 20, 4096, 1);
  SimOptions opt;
  opt.workers = 8;
  opt.link = {5e-6, 100e9};
  opt.flops_per_s = 100e12;
  const double first_gather =
      CollectiveCost(CollOp::kAllGather, 8, w.units[0].params * 4.0, opt.small_bytes)
          .Seconds(opt.link);
  const double last_scatter =
      CollectiveCost(CollOp::kReduceScatter, 8, w.units[0].params * 4.0, opt.small_bytes)
          .Seconds(opt.link);
  for (int k : {1, 2, 3}) {
    opt.grad_accum = k;
    Result<ModePrediction> p = Simulate(w, "zero3", opt);
    ASSERT_TRUE(p.ok());
    EXPECT_NEAR(p->exposed_comm_s, k * (first_gather + last_scatter), 1e-9) << "K = " << k;
  }
}

TEST(SimulateTest, FitRecoversAlphaAndBandwidth) {
  const Link truth{20e-6, 3e9};
  std::vector<CollectiveSample> samples;
  for (CollOp op : {CollOp::kAllReduce, CollOp::kReduceScatter, CollOp::kAllGather}) {
    for (int n : {2, 4, 8}) {
      for (double bytes = 1024; bytes <= 64 << 20; bytes *= 4) {
        samples.push_back({op, n, bytes, CollectiveCost(op, n, bytes, 32768).Seconds(truth)});
      }
    }
  }
  Result<LinkFit> fit = FitLink(samples, 32768);
  ASSERT_TRUE(fit.ok());
  EXPECT_NEAR(fit->link.alpha_s, truth.alpha_s, 1e-6 * truth.alpha_s);
  EXPECT_NEAR(fit->link.bytes_per_s, truth.bytes_per_s, 1e-6 * truth.bytes_per_s);
  EXPECT_LT(fit->rms_rel_error, 1e-9);
}

TEST(SimulateTest, RejectsWhatItCannotModel) {
  Workload w = WorkloadForParams(1000, 1, 1, 2);
  SimOptions opt;
  opt.workers = 3;  // not a multiple of tp
  EXPECT_FALSE(Simulate(w, "allreduce", opt).ok());
  opt.workers = 4;
  EXPECT_FALSE(Simulate(w, "zero4", opt).ok());
  CalibrationData data;
  EXPECT_FALSE(AddCalibrationJson(nlohmann::json{{"rows", 1}}, "x.json", &data).ok());
}

CalibrationData LoadFixtures() {
  CalibrationData data;
  for (const auto& entry : std::filesystem::directory_iterator(PSZERO_SIM_FIXTURES)) {
    if (entry.path().extension() != ".json") continue;
    Status s = LoadCalibrationFile(entry.path().string(), &data);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return data;
}

// Calibrated on this machine's recorded JSON (link from `pszero-bench collective`, compute
// rate per mode from the single-worker runs, the effective core count C fitted to the
// multi-worker runs), the model reproduces the measured gpt-tiny step times.
TEST(SimulateTest, CalibratedOnRecordedRunsMatchesTwoFourAndEightRanks) {
  const CalibrationData data = LoadFixtures();
  ASSERT_EQ(data.runs.size(), 8u);  // {allreduce, zero3} x {1, 2, 4, 8}
  ASSERT_GT(data.collectives.size(), 50u);
  Result<Calibration> c = Calibrate(data, SimOptions{}, /*fit_host_cores=*/true);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  Result<std::vector<CheckRow>> rows = CheckRuns(data, Apply(*c, SimOptions{}));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  for (const CheckRow& r : *rows) {
    SCOPED_TRACE(r.run.sync + " x" + std::to_string(r.run.workers));
    if (r.run.workers == 1) {
      EXPECT_NEAR(r.error, 0.0, 1e-9);  // the compute rate was fitted to it
    } else {
      EXPECT_LE(std::abs(r.error), kCalibrationTolerance)
          << "measured " << r.run.step_s << " s, predicted " << r.predicted_s;
    }
  }
}

// The same, but each worker count is predicted by a calibration that never saw it (C
// fitted to the other two counts): a prediction, not a fit.
TEST(SimulateTest, CalibratedWithoutARankCountPredictsIt) {
  const CalibrationData all = LoadFixtures();
  for (int held_out : {2, 4, 8}) {
    CalibrationData fit = all, check;
    fit.runs.clear();
    for (const RunSample& r : all.runs) {
      (r.workers == held_out ? check.runs : fit.runs).push_back(r);
    }
    ASSERT_EQ(check.runs.size(), 2u);
    Result<Calibration> c = Calibrate(fit, SimOptions{}, /*fit_host_cores=*/true);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    Result<std::vector<CheckRow>> rows = CheckRuns(check, Apply(*c, SimOptions{}));
    ASSERT_TRUE(rows.ok());
    for (const CheckRow& r : *rows) {
      SCOPED_TRACE(r.run.sync + " x" + std::to_string(r.run.workers));
      std::printf("held out %d workers: C = %.3g, %s measured %.3f s, predicted %.3f s, %+.1f%%\n",
                  held_out, c->host_cores, r.run.sync.c_str(), r.run.step_s, r.predicted_s,
                  100 * r.error);
      EXPECT_LE(std::abs(r.error), kHeldOutTolerance)
          << "measured " << r.run.step_s << " s, predicted " << r.predicted_s;
    }
  }
}

}  // namespace
}  // namespace pszero::bench::sim
