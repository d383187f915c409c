// Activation recompute (--recompute, ModelContext::recompute): selective and full give
// bit for bit the losses and parameters of none, fp32 and bf16, T = 1 and T = 2 (ranks as
// threads); the activation peak falls none > selective > full, by exactly the bytes each
// option stops keeping; full re-runs a block only between the hooks' BeforeBackward and
// GradientsReady (parameters detached outside the hook windows, as ZeRO-3 does), with the
// hook sequence of none. --recompute-layers N (full for the first N blocks, none for the
// rest): the same bits for N = 0, 1, L - 1, L, and a peak N - 1 saved sets below none's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "tests/model/model_test_util.h"
#include "tests/worker/collective_test_util.h"

namespace pszero::model {
namespace {

using testing::RunResult;

constexpr Recompute kOptions[] = {Recompute::kNone, Recompute::kSelective, Recompute::kFull};

// gpt-tiny's shape (4 layers, d 256, 4 heads, seq 128) with 2 sequences per step instead
// of 8, to keep the test short; the recompute paths do not depend on the batch.
ModelConfig TinyGpt() {
  Result<ModelConfig> c = PresetConfig("gpt-tiny");
  EXPECT_TRUE(c.ok());
  c->batch = 2;
  return *c;
}

bool SameBytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Each TP rank's result of `steps` steps on T ranks (T = 1: in this thread).
// recompute_layers: --recompute-layers (-1: unset).
std::vector<RunResult> Train(const ModelConfig& c, int t, bool bf16, Recompute recompute, int steps,
                             int64_t recompute_layers = -1) {
  std::vector<RunResult> results(t);
  if (t == 1) {
    TensorParallel tp;
    const Status s =
        testing::TrainSteps(c, &tp, bf16, steps, 7, "", &results[0], recompute, recompute_layers);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return results;
  }
  testing::CommRanks ranks(t, collectives::CommunicatorOptions{});
  testing::CommRanks::ExpectAllOk(ranks.Run([&](int r) {
    TensorParallel tp(&ranks.comm(r));
    return testing::TrainSteps(c, &tp, bf16, steps, 7, "", &results[r], recompute,
                               recompute_layers);
  }));
  return results;
}

// Losses, step-1 gradients and final gathered parameters byte for byte those of `want`.
void ExpectSameRun(const std::vector<RunResult>& got, const std::vector<RunResult>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t r = 0; r < got.size(); ++r) {
    ASSERT_EQ(got[r].losses.size(), want[r].losses.size());
    EXPECT_TRUE(SameBytes(got[r].losses, want[r].losses)) << "rank " << r;
    EXPECT_TRUE(SameBytes(got[r].first_grads, want[r].first_grads)) << "rank " << r;
    EXPECT_TRUE(SameBytes(got[r].gathered_params, want[r].gathered_params)) << "rank " << r;
    EXPECT_EQ(Sha256Hex(got[r].gathered_params), Sha256Hex(want[r].gathered_params));
  }
}

// Per TP rank (n tokens, d wide, h = heads/T, hidden 4d/T, e = 4 or 2 bytes of a kept
// GEMM input): the probabilities, e*b*h*s^2, and everything a block keeps but its input,
// 4*(n*d + 4*n) (the attention's output, the residual between the attention and the MLP;
// the two LayerNorms' statistics) + e*(2*n*d + 3*n*d/T + n*d/T + 2*n*hidden/T).
int64_t ProbsBytes(const ModelConfig& c, int t, bool bf16) {
  return (bf16 ? 2 : 4) * c.batch * (c.heads / t) * c.seq * c.seq;
}
int64_t BlockSavedBytes(const ModelConfig& c, int t, bool bf16) {
  const int64_t n = c.batch * c.seq, d = c.d_model, hl = c.ffn_mult * d / t, dl = d / t;
  const int64_t e = bf16 ? 2 : 4;
  return 4 * (n * d + 4 * n) + e * (2 * n * d + 4 * n * dl + 2 * n * hl) + ProbsBytes(c, t, bf16);
}

class RecomputeTest : public ::testing::TestWithParam<std::tuple<int, bool>> {};

TEST_P(RecomputeTest, BitIdenticalToNoneAndPeakFalls) {
  const auto [t, bf16] = GetParam();
  const ModelConfig c = TinyGpt();
  std::vector<std::vector<RunResult>> runs;
  for (Recompute r : kOptions) runs.push_back(Train(c, t, bf16, r, 2));
  for (size_t o = 1; o < runs.size(); ++o) {
    SCOPED_TRACE(RecomputeName(kOptions[o]));
    for (int r = 0; r < t; ++r) {
      ASSERT_EQ(runs[o][r].losses.size(), 2u);
      EXPECT_TRUE(SameBytes(runs[o][r].losses, runs[0][r].losses)) << "rank " << r;
      EXPECT_TRUE(SameBytes(runs[o][r].first_grads, runs[0][r].first_grads)) << "rank " << r;
      EXPECT_TRUE(SameBytes(runs[o][r].gathered_params, runs[0][r].gathered_params))
          << "rank " << r;
      EXPECT_EQ(Sha256Hex(runs[o][r].gathered_params), Sha256Hex(runs[0][r].gathered_params));
    }
  }
  // The run is not trivial: the first update changed the second step's loss.
  EXPECT_NE(runs[0][0].losses[0], runs[0][0].losses[1]);

  const int64_t probs = ProbsBytes(c, t, bf16);
  const int64_t block = BlockSavedBytes(c, t, bf16);
  for (int r = 0; r < t; ++r) {
    const int64_t none = runs[0][r].activations_peak;
    const int64_t selective = runs[1][r].activations_peak;
    const int64_t full = runs[2][r].activations_peak;
    EXPECT_LT(full, selective);
    EXPECT_LT(selective, none);
    // Selective keeps one layer's probabilities (in the block scratch) instead of L; full
    // one block's saved set instead of L.
    EXPECT_EQ(none - selective, (c.layers - 1) * probs) << "rank " << r;
    EXPECT_EQ(none - full, (c.layers - 1) * block) << "rank " << r;
  }
}

// --recompute full --recompute-layers N: the first N blocks share one saved set (all but
// the last of them re-run in backward), the others keep their own. The same bits as none
// for every N; the peak is none's less N - 1 saved sets (N = 0 and 1: none's; N = L: the
// default full's).
TEST_P(RecomputeTest, RecomputeLayersBitIdenticalWithThePerLayerPeak) {
  const auto [t, bf16] = GetParam();
  const ModelConfig c = TinyGpt();
  const std::vector<RunResult> none = Train(c, t, bf16, Recompute::kNone, 2);
  const std::vector<RunResult> full = Train(c, t, bf16, Recompute::kFull, 2);
  const int64_t block = BlockSavedBytes(c, t, bf16);
  for (int64_t layers : {int64_t{0}, int64_t{1}, c.layers - 1, c.layers}) {
    SCOPED_TRACE("--recompute-layers " + std::to_string(layers));
    const std::vector<RunResult> run = Train(c, t, bf16, Recompute::kFull, 2, layers);
    ExpectSameRun(run, none);
    for (int r = 0; r < t; ++r) {
      EXPECT_EQ(none[r].activations_peak - run[r].activations_peak,
                std::max<int64_t>(layers - 1, 0) * block)
          << "rank " << r;
    }
    if (layers == c.layers) {
      for (int r = 0; r < t; ++r) EXPECT_EQ(run[r].activations_peak, full[r].activations_peak);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(TpAndPrecision, RecomputeTest,
                         ::testing::Combine(::testing::Values(1, 2), ::testing::Bool()),
                         [](const auto& info) {
                           return "T" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "Bf16" : "Fp32");
                         });

// A shape unlike the presets' (odd sequence, batch and head count, 2 heads per rank at
// T = 3): every option still gives none's bits.
TEST(RecomputeShapeTest, OddShapeAtThreeRanksIsBitIdentical) {
  ModelConfig c = TinyGpt();
  c.layers = 3;
  c.d_model = 48;
  c.heads = 6;
  c.seq = 7;
  c.batch = 3;
  c.vocab = 96;
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    std::vector<std::vector<RunResult>> runs;
    for (Recompute r : kOptions) runs.push_back(Train(c, 3, bf16, r, 3));
    for (size_t o = 1; o < runs.size(); ++o) {
      SCOPED_TRACE(RecomputeName(kOptions[o]));
      for (int r = 0; r < 3; ++r) {
        ASSERT_EQ(runs[o][r].losses.size(), 3u);
        EXPECT_TRUE(SameBytes(runs[o][r].losses, runs[0][r].losses)) << "rank " << r;
        EXPECT_TRUE(SameBytes(runs[o][r].first_grads, runs[0][r].first_grads)) << "rank " << r;
        EXPECT_TRUE(SameBytes(runs[o][r].gathered_params, runs[0][r].gathered_params))
            << "rank " << r;
      }
    }
    EXPECT_NE(runs[0][0].losses[0], runs[0][0].losses[2]);
  }
}

// The MLP model under full recompute: the same bits, less memory; with
// --recompute-layers 2 of its 4 blocks, the same bits, between the two.
TEST(RecomputeMlpTest, FullIsBitIdenticalAndSmaller) {
  ModelConfig c = testing::SmallMlp();
  c.layers = 4;
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    const RunResult none = Train(c, 1, bf16, Recompute::kNone, 3)[0];
    const RunResult full = Train(c, 1, bf16, Recompute::kFull, 3)[0];
    const RunResult partial = Train(c, 1, bf16, Recompute::kFull, 3, 2)[0];
    EXPECT_TRUE(SameBytes(full.losses, none.losses));
    EXPECT_TRUE(SameBytes(full.gathered_params, none.gathered_params));
    EXPECT_LT(full.activations_peak, none.activations_peak);
    EXPECT_TRUE(SameBytes(partial.losses, none.losses));
    EXPECT_TRUE(SameBytes(partial.gathered_params, none.gathered_params));
    EXPECT_LT(partial.activations_peak, none.activations_peak);
    EXPECT_GT(partial.activations_peak, full.activations_peak);
  }
}

// ZeRO-3's contract, played out with the hooks: a unit's parameters are attached only
// from its BeforeForward / BeforeBackward to its ParamsDone / GradientsReady, so a block
// recomputed anywhere else would read null parameters and fail. Records the sequence.
class DetachingHooks : public LayerHooks {
 public:
  explicit DetachingHooks(ParamBuffer* params) : params_(params) {
    for (const ParamUnit& u : params->units()) {
      float* p = params->params().defined() ? params->params().data<float>() + u.begin : nullptr;
      bf16_t* b = params->has_bf16() ? params->params_bf16().data<bf16_t>() + u.begin : nullptr;
      storage_.emplace_back(p, b);
    }
    for (size_t u = 0; u < storage_.size(); ++u) Detach(static_cast<int>(u));
  }
  ~DetachingHooks() override {
    for (size_t u = 0; u < storage_.size(); ++u) Attach(static_cast<int>(u));
  }
  Status BeforeForward(int unit) override { return Record('F', unit, true); }
  Status BeforeBackward(int unit) override { return Record('B', unit, true); }
  Status ParamsDone(int unit) override { return Record('D', unit, false); }
  Status GradientsReady(int unit) override { return Record('G', unit, false); }

  std::vector<std::pair<char, int>> events;

 private:
  Status Record(char what, int unit, bool attach) {
    events.emplace_back(what, unit);
    attach ? Attach(unit) : Detach(unit);
    return Status::Ok();
  }
  void Attach(int u) { params_->AttachUnitParams(u, storage_[u].first, storage_[u].second); }
  void Detach(int u) { params_->AttachUnitParams(u, nullptr, nullptr); }

  ParamBuffer* params_;
  std::vector<std::pair<float*, bf16_t*>> storage_;
};

// Every option, then full with --recompute-layers 2 (block 0 re-run, block 1 the shared
// set's last, block 2 keeping its own) and 1 (nothing re-run).
TEST(RecomputeHooksTest, RecomputesInsideTheBackwardWindowWithTheSameHookSequence) {
  ModelConfig c = testing::SmallGpt();
  c.layers = 3;
  const std::vector<std::pair<Recompute, int64_t>> runs = {{Recompute::kNone, -1},
                                                           {Recompute::kSelective, -1},
                                                           {Recompute::kFull, -1},
                                                           {Recompute::kFull, 2},
                                                           {Recompute::kFull, 1}};
  for (bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    std::vector<std::vector<std::pair<char, int>>> sequences;
    std::vector<std::vector<float>> grads;
    std::vector<float> loss(runs.size(), 0.0f);
    for (const auto& [r, layers] : runs) {
      TensorParallel tp;
      ModelContext ctx;
      ctx.tp = &tp;
      ctx.bf16 = bf16;
      ctx.recompute = r;
      ctx.recompute_layers = layers;
      auto m = Model::Create(c, ctx, 3);
      ASSERT_TRUE(m.ok()) << m.status().ToString();
      DataOptions dopt;
      auto data = DataSource::Create(c, dopt);
      ASSERT_TRUE(data.ok());
      Batch batch;
      ASSERT_TRUE((*data)->Next(0, &batch).ok());
      ASSERT_TRUE((*m)->params().ZeroGrads().ok());
      ParamBuffer& params = (*m)->params();
      {
        DetachingHooks hooks(&params);
        auto l = (*m)->Forward(batch, &hooks);
        ASSERT_TRUE(l.ok()) << l.status().ToString();
        loss[sequences.size()] = *l;
        const Status s = (*m)->Backward(&hooks);
        ASSERT_TRUE(s.ok()) << s.ToString();
        sequences.push_back(hooks.events);
      }
      const float* g = params.grads().data<float>();
      grads.emplace_back(g, g + params.numel());
    }
    ASSERT_EQ(sequences.size(), runs.size());
    for (size_t o = 1; o < sequences.size(); ++o) {
      SCOPED_TRACE(std::string(RecomputeName(runs[o].first)) + " --recompute-layers " +
                   std::to_string(runs[o].second));
      EXPECT_EQ(sequences[o], sequences[0]);
      EXPECT_EQ(std::memcmp(&loss[0], &loss[o], sizeof(float)), 0);
      EXPECT_TRUE(SameBytes(grads[o], grads[0]));
    }
  }
}

// Model::Create refuses --recompute-layers above the layers or without full, naming it.
TEST(RecomputeFlagTest, RecomputeLayersOutOfRangeOrWithoutFullIsRefused) {
  const ModelConfig c = testing::SmallGpt();
  for (const auto& [r, layers] :
       std::vector<std::pair<Recompute, int64_t>>{{Recompute::kFull, c.layers + 1},
                                                  {Recompute::kFull, -2},
                                                  {Recompute::kNone, 1},
                                                  {Recompute::kSelective, 0}}) {
    TensorParallel tp;
    ModelContext ctx;
    ctx.tp = &tp;
    ctx.recompute = r;
    ctx.recompute_layers = layers;
    const auto m = Model::Create(c, ctx, 3);
    ASSERT_FALSE(m.ok()) << RecomputeName(r) << " " << layers;
    EXPECT_EQ(m.status().message().rfind("--recompute-layers", 0), 0u) << m.status().ToString();
  }
  for (int64_t layers : {int64_t{0}, c.layers}) {
    TensorParallel tp;
    ModelContext ctx;
    ctx.tp = &tp;
    ctx.recompute = Recompute::kFull;
    ctx.recompute_layers = layers;
    EXPECT_TRUE(Model::Create(c, ctx, 3).ok()) << layers;
  }
}

TEST(RecomputeFlagTest, ParseNamesTheFlag) {
  EXPECT_EQ(*ParseRecompute("none"), Recompute::kNone);
  EXPECT_EQ(*ParseRecompute("selective"), Recompute::kSelective);
  EXPECT_EQ(*ParseRecompute("full"), Recompute::kFull);
  const Result<Recompute> bad = ParseRecompute("bogus");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message().rfind("--recompute", 0), 0u) << bad.status().ToString();
}

}  // namespace
}  // namespace pszero::model
