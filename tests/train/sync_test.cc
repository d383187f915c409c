// The data-parallel sync modes against each other, in one process: world = T x D ranks as
// threads, each with the worker's two UCX transports (tensor parallel, data parallel) over
// shared memory, built by the worker's own BuildTrainingRank.
//
//  * every mode against allreduce: within tolerance with the ring, bit for bit with
//    --deterministic, for D = 1, 2, 4 and for T = 2 x D = 2;
//  * model-state memory per rank within 5% of the ZeRO formula (fp32, and bf16 mixed
//    precision: 16Ψ, 4Ψ+12Ψ/D, 2Ψ+14Ψ/D, 16Ψ/D);
//  * bytes per step per rank within 1% of 2Ψ(D-1)/D (3Ψ(D-1)/D for zero3) elements;
//  * bf16: every mode bit for bit equal to allreduce with --deterministic;
//  * zero3 never holds more than two units' gathered parameters;
//  * gradient accumulation (--grad-accum K): K = 2 of batch b equals K = 1 of batch 2b
//    (single replica, allreduce, zero2); under --deterministic allreduce = zero1 and
//    zero2 = zero3 bit for bit, the two families within tolerance; bytes per step per rank
//    equal the theory with K (2Ψ(D-1)/D, zero2 (K+1)Ψ(D-1)/D, zero3 3KΨ(D-1)/D).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/kv_store.h"
#include "common/ucx/ucx_transport.h"
#include "tests/model/model_test_util.h"
#include "worker/model/full_params.h"
#include "worker/train/data_parallel.h"
#include "worker/train/training_rank.h"
#include "worker/train/zero3_sync.h"

namespace pszero::train {
namespace {

struct RankOutcome {
  Status status;
  std::vector<float> full;  // the replica's full parameters at the end (T = 1 layout)
  std::vector<float> losses;
  int64_t psi = 0;
  int64_t largest_unit_bytes = 0;
  SyncTraffic last_step;
  int64_t model_state_peak = 0;
  int64_t gathered_peak = 0;
  int gathered_units_peak = 0;
};

// The tests' small GPT (tests/model/model_test_util.h) with a third layer: more buckets.
model::ModelConfig TestGpt() {
  model::ModelConfig c = testing::SmallGpt();
  c.layers = 3;
  return c;
}

Status RunRank(const model::ModelConfig& config, const TrainFlags& flags, int rank,
               collectives::Communicator* tp_world, collectives::Communicator* dp_world,
               RankOutcome* out) {
  const int replica = rank / flags.tp;
  const int tp_rank = rank % flags.tp;
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<collectives::Communicator> tp,
                          tp_world->Split(replica, tp_rank));
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<collectives::Communicator> dp,
                          dp_world->Split(tp_rank, replica));
  MemoryTracker tracker;
  // "single": one replica without a data-parallel group (SingleReplicaSync).
  collectives::Communicator* group = flags.sync == "single" ? nullptr : dp.get();
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<TrainingRank> run,
                          BuildTrainingRank(config, flags, tp.get(), group, &tracker));
  model::ParamBuffer& params = run->model->params();
  for (const model::ParamView& v : params.views()) out->psi += v.numel;
  for (const model::ParamUnit& u : params.units()) {
    out->largest_unit_bytes = std::max<int64_t>(out->largest_unit_bytes, (u.end - u.begin) * 4);
  }
  for (int64_t s = 0; s < flags.steps; ++s) {
    PSZERO_ASSIGN_OR_RETURN(StepResult r, run->trainer->RunStep(s));
    PSZERO_ASSIGN_OR_RETURN(float loss, run->sync->AverageLoss(r.loss));
    out->losses.push_back(loss);
  }
  out->last_step = run->sync->last_step_traffic();
  out->model_state_peak = tracker.Usage(MemoryCategory::kParams).peak_bytes +
                          tracker.Usage(MemoryCategory::kGrads).peak_bytes +
                          tracker.Usage(MemoryCategory::kOptimizer).peak_bytes;
  out->gathered_peak = tracker.Usage(MemoryCategory::kGatheredParams).peak_bytes;
  if (auto* z3 = dynamic_cast<Zero3Sync*>(run->sync.get())) {
    out->gathered_units_peak = z3->peak_gathered_units();
  }
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> local, run->sync->LocalParams(params));
  PSZERO_ASSIGN_OR_RETURN(out->full, model::GatherFullParams(params, local.data(), *run->tp));
  return Status::Ok();
}

std::vector<RankOutcome> RunJob(const model::ModelConfig& config, const TrainFlags& flags, int dp) {
  const int world = flags.tp * dp;
  InMemoryKeyValueStore store;
  std::vector<std::unique_ptr<ucx::UcxTransport>> transports(2 * world);
  std::vector<std::unique_ptr<collectives::Communicator>> worlds(2 * world);
  std::vector<RankOutcome> out(world);
  // Every transport publishes its address before any communicator connects.
  for (int i = 0; i < 2 * world; ++i) {
    ucx::UcxTransportOptions o;
    o.rank = i % world;
    o.world_size = world;
    o.key_prefix = i < world ? "tp" : "dp";
    auto t = ucx::UcxTransport::Create(o, &store);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    if (!t.ok()) return out;
    transports[i] = std::move(t).value();
  }
  for (int i = 0; i < 2 * world; ++i) {
    collectives::CommunicatorOptions co;
    co.deterministic = flags.deterministic;
    auto c = collectives::Communicator::World(transports[i].get(), co);
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    if (!c.ok()) return out;
    worlds[i] = std::move(c).value();
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      out[r].status = RunRank(config, flags, r, worlds[r].get(), worlds[world + r].get(), &out[r]);
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_TRUE(out[r].status.ok()) << out[r].status.ToString();
  return out;
}

TrainFlags Flags(const std::string& sync, int tp, bool deterministic, double bucket_mb = 0.01,
                 const std::string& precision = "fp32") {
  TrainFlags f;
  f.precision = precision;
  f.model = "custom";
  f.sync = sync;
  f.tp = tp;
  f.steps = 3;
  f.seed = 11;
  f.deterministic = deterministic;
  f.bucket_mb = bucket_mb;  // default: several buckets even for the small model
  return f;
}

const char* const kModes[] = {"allreduce", "zero1", "zero2", "zero3"};

struct Shape {
  int tp;
  int dp;
};

class SyncModesTest : public ::testing::TestWithParam<Shape> {};

TEST_P(SyncModesTest, EveryModeMatchesAllReduce) {
  const Shape shape = GetParam();
  const model::ModelConfig config = TestGpt();
  for (bool deterministic : {false, true}) {
    const std::vector<RankOutcome> ref =
        RunJob(config, Flags("allreduce", shape.tp, deterministic), shape.dp);
    ASSERT_FALSE(ref[0].full.empty());
    // Every replica ends with the same parameters.
    for (const RankOutcome& r : ref) EXPECT_EQ(r.full, ref[0].full);
    for (const char* mode : kModes) {
      SCOPED_TRACE(std::string(mode) + (deterministic ? " deterministic" : " ring") +
                   " T=" + std::to_string(shape.tp) + " D=" + std::to_string(shape.dp));
      const std::vector<RankOutcome> got =
          RunJob(config, Flags(mode, shape.tp, deterministic), shape.dp);
      ASSERT_EQ(got.size(), ref.size());
      for (size_t r = 0; r < got.size(); ++r) {
        ASSERT_EQ(got[r].full.size(), ref[0].full.size());
        if (deterministic) {
          EXPECT_EQ(got[r].full, ref[0].full) << "rank " << r;
          EXPECT_EQ(got[r].losses, ref[0].losses) << "rank " << r;
        } else {
          double worst = 0.0;
          for (size_t i = 0; i < got[r].full.size(); ++i) {
            worst = std::max(worst, std::fabs(static_cast<double>(got[r].full[i]) -
                                              static_cast<double>(ref[0].full[i])));
          }
          EXPECT_LT(worst, 1e-5) << "rank " << r;
        }
      }
    }
  }
}

TEST_P(SyncModesTest, MemoryAndBytesMatchTheZeroFormulas) {
  const Shape shape = GetParam();
  const model::ModelConfig config = TestGpt();
  for (const char* precision : {"fp32", "bf16"}) {
    const bool bf16 = std::string(precision) == "bf16";
    for (const char* mode : kModes) {
      SCOPED_TRACE(std::string(mode) + " " + precision + " T=" + std::to_string(shape.tp) +
                   " D=" + std::to_string(shape.dp));
      // One bucket above the collectives' small-message size: the ring algorithms, whose
      // bytes are the paper's (a small all-reduce takes the direct, latency-optimal one).
      const std::vector<RankOutcome> got =
          RunJob(config, Flags(mode, shape.tp, false, /*bucket_mb=*/1.0, precision), shape.dp);
      for (const RankOutcome& r : got) {
        ASSERT_GT(r.psi, 0);
        const ModelStateBytes want = PredictModelState(mode, r.psi, shape.dp, bf16);
        const double ratio = static_cast<double>(r.model_state_peak) / want.total();
        EXPECT_NEAR(ratio, 1.0, 0.05) << want.formula;
        const double theory = TheoryElementsPerStep(mode, r.psi, shape.dp) *
                              static_cast<double>(TrafficElementBytes(mode, bf16));
        if (shape.dp == 1) {
          EXPECT_EQ(r.last_step.sent, 0);
        } else {
          EXPECT_NEAR(r.last_step.sent / theory, 1.0, 0.01);
          EXPECT_EQ(r.last_step.received, r.last_step.sent);
        }
        if (std::string(mode) == "zero3") {
          EXPECT_GE(r.gathered_units_peak, 1);
          EXPECT_LE(r.gathered_units_peak, 2);
          EXPECT_LE(r.gathered_peak, 2 * r.largest_unit_bytes / (bf16 ? 2 : 1));
        } else {
          EXPECT_EQ(r.gathered_peak, 0);
        }
      }
    }
  }
}

// bf16 mixed precision: bf16 gradients summed in ascending rank order in fp32 and rounded
// once, an element-wise optimizer on the fp32 master: every mode ends with allreduce's bits.
TEST_P(SyncModesTest, Bf16ModesMatchAllReduceBitForBit) {
  const Shape shape = GetParam();
  const model::ModelConfig config = TestGpt();
  const std::vector<RankOutcome> ref =
      RunJob(config, Flags("allreduce", shape.tp, true, 0.01, "bf16"), shape.dp);
  ASSERT_FALSE(ref[0].full.empty());
  for (const RankOutcome& r : ref) EXPECT_EQ(r.full, ref[0].full);
  // A different computation from fp32's (the model really reads bf16).
  const std::vector<RankOutcome> fp32 =
      RunJob(config, Flags("allreduce", shape.tp, true, 0.01), shape.dp);
  EXPECT_NE(fp32[0].full, ref[0].full);
  for (const char* mode : kModes) {
    SCOPED_TRACE(std::string(mode) + " bf16 T=" + std::to_string(shape.tp) +
                 " D=" + std::to_string(shape.dp));
    const std::vector<RankOutcome> got =
        RunJob(config, Flags(mode, shape.tp, true, 0.01, "bf16"), shape.dp);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t r = 0; r < got.size(); ++r) {
      EXPECT_EQ(got[r].full, ref[0].full) << "rank " << r;
      EXPECT_EQ(got[r].losses, ref[0].losses) << "rank " << r;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, SyncModesTest,
                         ::testing::Values(Shape{1, 1}, Shape{1, 2}, Shape{1, 4}, Shape{2, 2}),
                         [](const ::testing::TestParamInfo<Shape>& info) {
                           return "T" + std::to_string(info.param.tp) + "D" +
                                  std::to_string(info.param.dp);
                         });

TEST(SyncPlanTest, FormulasOfThePaper) {
  const int64_t psi = 1000 * 64;
  // fp32
  EXPECT_EQ(PredictModelState("allreduce", psi, 4, false).total(), 16 * psi);
  EXPECT_EQ(PredictModelState("zero1", psi, 4, false).total(), 8 * psi + 8 * psi / 4);
  EXPECT_EQ(PredictModelState("zero2", psi, 4, false).total(), 4 * psi + 12 * psi / 4);
  EXPECT_EQ(PredictModelState("zero3", psi, 4, false).total(), 16 * psi / 4);
  // bf16 mixed precision
  EXPECT_EQ(PredictModelState("allreduce", psi, 4, true).total(), 16 * psi);
  EXPECT_EQ(PredictModelState("zero1", psi, 4, true).total(), 4 * psi + 12 * psi / 4);
  EXPECT_EQ(PredictModelState("zero2", psi, 4, true).total(), 2 * psi + 14 * psi / 4);
  EXPECT_EQ(PredictModelState("zero3", psi, 4, true).total(), 16 * psi / 4);
  // ps: the worker's params and grads; the master and the optimizer are on the servers.
  EXPECT_EQ(PredictModelState("ps", psi, 4, false).total(), 8 * psi);
  EXPECT_EQ(PredictModelState("ps", psi, 4, true).total(), 4 * psi);
  EXPECT_EQ(PredictModelState("ps", psi, 4, true).formula, "4Ψ");
  EXPECT_EQ(TrafficElementBytes("ps", false), 4);
  EXPECT_EQ(TrafficElementBytes("ps", true), 2);
  EXPECT_FALSE(SyncPlanFor("ps", 2)->storage.fp32_copies);
  EXPECT_TRUE(SyncPlanFor("single", 1)->storage.fp32_copies);
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("zero1", psi, 4), 2.0 * psi * 3 / 4);
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("zero3", psi, 4), 3.0 * psi * 3 / 4);
  EXPECT_FALSE(SyncPlanFor("gossip", 2).ok());
  EXPECT_FALSE(SyncPlanFor("zero3", 2)->storage.params_resident);
  EXPECT_FALSE(SyncPlanFor("zero2", 2)->storage.grads_resident);
  EXPECT_TRUE(SyncPlanFor("zero2", 2)->storage.params_resident);
  EXPECT_EQ(SyncPlanFor("zero1", 4)->unit_align, 64);
}

// ||a - b|| / ||b|| below `relative` for every rank's parameters against `ref`'s rank 0,
// and max |a - b| below `absolute` (default 5% of one AdamW step: with lr 1e-3, an element
// whose gradient is near 0 moves by up to lr in a direction its rounding decides).
void ExpectClose(const std::vector<RankOutcome>& got, const std::vector<RankOutcome>& ref,
                 double relative, double absolute = 5e-5) {
  ASSERT_FALSE(ref.empty());
  ASSERT_FALSE(ref[0].full.empty());
  for (size_t r = 0; r < got.size(); ++r) {
    ASSERT_EQ(got[r].full.size(), ref[0].full.size()) << "rank " << r;
    EXPECT_LT(testing::RelativeError(got[r].full, ref[0].full), relative) << "rank " << r;
    double worst = 0.0;
    for (size_t i = 0; i < got[r].full.size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(got[r].full[i]) - ref[0].full[i]));
    }
    EXPECT_LT(worst, absolute) << "rank " << r;
  }
}

TrainFlags AccumFlags(const std::string& sync, int grad_accum, bool deterministic,
                      const std::string& precision = "fp32", double bucket_mb = 0.01) {
  TrainFlags f = Flags(sync, /*tp=*/1, deterministic, bucket_mb, precision);
  f.grad_accum = grad_accum;
  return f;
}

// The tests' GPT with `batch` sequences per micro-batch.
model::ModelConfig AccumGpt(int64_t batch) {
  model::ModelConfig c = TestGpt();
  c.batch = batch;
  return c;
}

// The small MLP with `batch` rows per micro-batch (its inputs and targets both follow
// the micro-batch's rows).
model::ModelConfig AccumMlp(int64_t batch) {
  model::ModelConfig c = testing::SmallMlp();
  c.batch = batch;
  return c;
}

// Two micro-batches of b sequences see the samples of one batch of 2b and average their
// gradients: the parameters agree to fp32 rounding (the sums run in another order).
TEST(GradAccumTest, TwoMicroBatchesEqualOneBatchOfTwiceTheSize) {
  const struct {
    const char* mode;
    int dp;
    bool mlp;
  } cases[] = {{"single", 1, false},
               {"allreduce", 2, false},
               {"zero2", 2, false},
               {"single", 1, true},
               {"zero3", 2, true}};
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.mode) + " D=" + std::to_string(c.dp) + (c.mlp ? " mlp" : " gpt"));
    const int64_t b = c.mlp ? 2 : 1;
    auto config = [&](int64_t batch) { return c.mlp ? AccumMlp(batch) : AccumGpt(batch); };
    const std::vector<RankOutcome> big = RunJob(config(2 * b), AccumFlags(c.mode, 1, false), c.dp);
    const std::vector<RankOutcome> accum = RunJob(config(b), AccumFlags(c.mode, 2, false), c.dp);
    ExpectClose(accum, big, 1e-5);
    for (size_t s = 0; s < big[0].losses.size(); ++s) {
      EXPECT_NEAR(accum[0].losses[s], big[0].losses[s], 1e-5 * std::fabs(big[0].losses[s]));
    }
    // Not the same as one micro-batch of b alone: the second one counts.
    const std::vector<RankOutcome> small = RunJob(config(b), AccumFlags(c.mode, 1, false), c.dp);
    EXPECT_GT(testing::RelativeError(small[0].full, big[0].full), 1e-4);
  }
}

// Under --deterministic: allreduce and zero1 reduce each rank's accumulated sum once
// (Σ_ranks Σ_micro), zero2 and zero3 add up reduced micro-batches (Σ_micro Σ_ranks). Each
// family agrees bit for bit; the two within fp32 rounding (bf16: within bf16 rounding).
TEST(GradAccumTest, DeterministicFamiliesAgreeBitForBit) {
  for (const char* precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const model::ModelConfig config = AccumGpt(1);
    const std::vector<RankOutcome> allreduce =
        RunJob(config, AccumFlags("allreduce", 2, true, precision), 2);
    const std::vector<RankOutcome> zero1 =
        RunJob(config, AccumFlags("zero1", 2, true, precision), 2);
    const std::vector<RankOutcome> zero2 =
        RunJob(config, AccumFlags("zero2", 2, true, precision), 2);
    const std::vector<RankOutcome> zero3 =
        RunJob(config, AccumFlags("zero3", 2, true, precision), 2);
    ASSERT_FALSE(allreduce[0].full.empty());
    for (size_t r = 0; r < 2; ++r) {
      EXPECT_EQ(zero1[r].full, allreduce[0].full) << "zero1 rank " << r;
      EXPECT_EQ(zero1[r].losses, allreduce[0].losses) << "zero1 rank " << r;
      EXPECT_EQ(zero3[r].full, zero2[0].full) << "zero3 rank " << r;
      EXPECT_EQ(zero3[r].losses, zero2[0].losses) << "zero3 rank " << r;
    }
    if (std::string(precision) == "bf16") {
      // bf16 gradients rounded in another order: the norm within 1e-3; an element near a
      // zero gradient may move the other way, by at most 2·lr per step (3 steps).
      ExpectClose(zero2, allreduce, 1e-3, 6e-3);
    } else {
      ExpectClose(zero2, allreduce, 1e-5);
    }
  }
}

TEST(GradAccumTest, BytesPerStepMatchTheTheoryWithMicroBatches) {
  const model::ModelConfig config = AccumGpt(1);
  const int k = 2;
  for (const char* mode : kModes) {
    SCOPED_TRACE(mode);
    // One bucket above the small-message size: the ring algorithms (see above).
    const std::vector<RankOutcome> got =
        RunJob(config, AccumFlags(mode, k, false, "fp32", /*bucket_mb=*/1.0), 2);
    for (const RankOutcome& r : got) {
      ASSERT_GT(r.psi, 0);
      const double theory = TheoryElementsPerStep(mode, r.psi, 2, k) * 4.0;
      EXPECT_NEAR(r.last_step.sent / theory, 1.0, 0.01);
      EXPECT_EQ(r.last_step.received, r.last_step.sent);
      // Accumulation adds no model state: the ZeRO formulas hold as they are.
      const ModelStateBytes want = PredictModelState(mode, r.psi, 2, false);
      EXPECT_NEAR(static_cast<double>(r.model_state_peak) / want.total(), 1.0, 0.05);
    }
  }
  const int64_t psi = 1000 * 64;
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("allreduce", psi, 4, 3), 2.0 * psi * 3 / 4);
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("zero1", psi, 4, 3), 2.0 * psi * 3 / 4);
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("zero2", psi, 4, 3), 4.0 * psi * 3 / 4);
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("zero3", psi, 4, 3), 9.0 * psi * 3 / 4);
  EXPECT_DOUBLE_EQ(TheoryElementsPerStep("ps", psi, 4, 3), 1.0 * psi);
}

}  // namespace
}  // namespace pszero::train
