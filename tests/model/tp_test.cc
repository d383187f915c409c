// Tensor parallelism against the T = 1 run: T = 2 and T = 4 ranks as threads (UCX
// transports in one process) train the same small models from the same seed and data.
// Loss of every step, gradients of step 1 and parameters after 10 AdamW steps must equal
// T = 1 within relative 1e-5 (fp32; the norm of the difference over the norm of the whole
// canonical vector; only the order of the TP sums differs).
#include <gtest/gtest.h>

#include "tests/model/model_test_util.h"
#include "tests/worker/collective_test_util.h"

namespace pszero::model {
namespace {

using testing::RunResult;

constexpr int kSteps = 10;
constexpr double kTolerance = 1e-5;

RunResult TrainT1(const ModelConfig& config) {
  TensorParallel tp;
  RunResult r;
  const Status s = testing::TrainSteps(config, &tp, false, kSteps, 42, "", &r);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return r;
}

void ExpectTpMatches(const ModelConfig& config, int t) {
  const RunResult reference = TrainT1(config);
  ASSERT_EQ(reference.losses.size(), static_cast<size_t>(kSteps));
  testing::CommRanks ranks(t, collectives::CommunicatorOptions{});
  ASSERT_EQ(ranks.size(), t);
  std::vector<RunResult> results(t);
  auto statuses = ranks.Run([&](int r) {
    TensorParallel tp(&ranks.comm(r));
    return testing::TrainSteps(config, &tp, false, kSteps, 42, "", &results[r]);
  });
  testing::CommRanks::ExpectAllOk(statuses);
  // Assemble the shards (each rank wrote its own elements; replicated ones by all, equal).
  RunResult full = results[0];
  for (int r = 1; r < t; ++r) {
    for (size_t i = 0; i < full.final_params.size(); ++i) {
      if (results[r].final_params[i] != 0.0f) full.final_params[i] = results[r].final_params[i];
      if (results[r].first_grads[i] != 0.0f) full.first_grads[i] = results[r].first_grads[i];
    }
  }
  // GatherFullParams (the collective a report or checkpoint uses) assembles the same vector.
  for (int r = 0; r < t; ++r) EXPECT_EQ(results[r].gathered_params, full.final_params);
  for (int r = 0; r < t; ++r) {
    for (int s = 0; s < kSteps; ++s) {
      EXPECT_NEAR(results[r].losses[s], reference.losses[s],
                  kTolerance * std::fabs(reference.losses[s]))
          << "rank " << r << " step " << s;
    }
  }
  EXPECT_LT(testing::RelativeError(full.first_grads, reference.first_grads), kTolerance);
  EXPECT_LT(testing::RelativeError(full.final_params, reference.final_params), kTolerance);
  // The run is not trivial: parameters moved away from their initial values.
  RunResult zero_steps;
  TensorParallel one;
  ASSERT_TRUE(testing::TrainSteps(config, &one, false, 1, 42, "", &zero_steps).ok());
  EXPECT_GT(testing::RelativeError(zero_steps.final_params, reference.final_params), 1e-4);
}

TEST(TensorParallelTest, GptT2) { ExpectTpMatches(testing::SmallGpt(), 2); }
TEST(TensorParallelTest, GptT4) { ExpectTpMatches(testing::SmallGpt(), 4); }
TEST(TensorParallelTest, MlpT2) { ExpectTpMatches(testing::SmallMlp(), 2); }
TEST(TensorParallelTest, MlpT4) { ExpectTpMatches(testing::SmallMlp(), 4); }

// bf16 compute under TP: the bf16 copies of the shards are slices of T = 1's, but the
// row-parallel partial sums are rounded differently, and since session 6 qkv, the
// attention probabilities and GELU's input are stored in bf16 too, so a last-bit fp32
// difference can move a value by one bf16 step (2^-8). bf16 T = 2 therefore tracks bf16
// T = 1 within 2e-3 (relative), not 1e-5: measured 7e-8 in the -O3 build and 4.4e-4 in
// the -O1 sanitizer build, whose fp32 results differ in the last bits anyway (no FMA
// contraction there: the two builds' fp32 final_params_sha256 differ too).
TEST(TensorParallelTest, Bf16GptT2TracksT1) {
  const ModelConfig config = testing::SmallGpt();
  TensorParallel one;
  RunResult reference;
  ASSERT_TRUE(testing::TrainSteps(config, &one, true, kSteps, 42, "", &reference).ok());
  testing::CommRanks ranks(2, collectives::CommunicatorOptions{});
  std::vector<RunResult> results(2);
  testing::CommRanks::ExpectAllOk(ranks.Run([&](int r) {
    TensorParallel tp(&ranks.comm(r));
    return testing::TrainSteps(config, &tp, true, kSteps, 42, "", &results[r]);
  }));
  for (int s = 0; s < kSteps; ++s) {
    EXPECT_NEAR(results[0].losses[s], reference.losses[s], 3e-4 * reference.losses[s]) << s;
  }
  const double rel = testing::RelativeError(results[0].gathered_params, reference.final_params);
  RecordProperty("bf16_t2_params_relative_error", std::to_string(rel));
  EXPECT_LT(rel, 2e-3);
}

// Each TP shard is a slice of the T = 1 weights: the initial parameters assemble exactly.
TEST(TensorParallelTest, InitialShardsAreSlicesOfT1) {
  const ModelConfig config = testing::SmallGpt();
  TensorParallel one;
  ModelContext ctx1{kernels::KernelContext::Host(), &one, nullptr, false, 1, {}};
  auto m1 = Model::Create(config, ctx1, 7);
  ASSERT_TRUE(m1.ok());
  const float* p1 = (*m1)->params().params().data<float>();
  for (int t : {2, 4}) {
    int64_t total = 0;
    std::vector<float> full;
    // A T-rank buffer declared with the model's specs, initialized from the same seed.
    for (int r = 0; r < t; ++r) {
      ParamBuffer shard(r, t);
      for (const ParamView& v : (*m1)->params().views()) ASSERT_TRUE(shard.Add(v.spec).ok());
      ASSERT_TRUE(shard.Allocate(nullptr, false).ok());
      ASSERT_TRUE(shard.Initialize(7).ok());
      if (full.empty()) {
        testing::FullOffsets(shard, &total);
        full.assign(total, std::nanf(""));
      }
      testing::ScatterShard(shard, shard.params().data<float>(),
                            testing::FullOffsets(shard, &total), full);
    }
    ASSERT_EQ(static_cast<int64_t>(full.size()), (*m1)->params().numel());
    for (int64_t i = 0; i < total; ++i) ASSERT_EQ(full[i], p1[i]) << "T=" << t << " element " << i;
  }
}

}  // namespace
}  // namespace pszero::model
