// The seams the data-parallel sync modes build on: units tile the flat buffer in
// canonical order, the hooks fire in the documented order, and each unit's gradients are
// final when GradientsReady says so; the memory each buffer holds is tracked by category;
// bf16-only storage holds 2 + 2 bytes per parameter and hands each unit's bf16 gradients
// over cast from its fp32 scratch before GradientsReady.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "common/half.h"
#include "tests/model/model_test_util.h"

namespace pszero::model {
namespace {

class RecordingHooks : public LayerHooks {
 public:
  explicit RecordingHooks(ParamBuffer* params) : params_(params) {}
  Status BeforeForward(int unit) override {
    events.emplace_back('F', unit);
    return Status::Ok();
  }
  Status BeforeBackward(int unit) override {
    events.emplace_back('B', unit);
    return Status::Ok();
  }
  Status ParamsDone(int unit) override {
    events.emplace_back('D', unit);
    return Status::Ok();
  }
  Status GradientsReady(int unit) override {
    events.emplace_back('G', unit);
    const ParamUnit& u = params_->units()[unit];
    if (params_->bf16_only()) {
      if (params_->unit_grads(unit) != nullptr) return Status::Internal("fp32 scratch attached");
      const bf16_t* g = params_->unit_grads_bf16(unit);
      std::vector<float> got;
      for (int64_t i = 0; i < u.end - u.begin; ++i) got.push_back(Bf16BitsToFloat(g[i].bits));
      ready.push_back(std::move(got));
    } else {
      const float* g = params_->grads().data<float>();
      ready.emplace_back(g + u.begin, g + u.end);
    }
    ready_unit.push_back(unit);
    return Status::Ok();
  }
  std::vector<std::pair<char, int>> events;
  std::vector<std::vector<float>> ready;  // the unit's gradients when declared ready
  std::vector<int> ready_unit;

 private:
  ParamBuffer* params_;
};

// The first batch of the default synthetic stream of `c`.
Batch FirstBatch(const ModelConfig& c) {
  DataOptions dopt;
  auto data = DataSource::Create(c, dopt);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  Batch batch;
  if (data.ok()) {
    EXPECT_TRUE((*data)->Next(0, &batch).ok());
  }
  return batch;
}

TEST(HooksTest, UnitsTileTheBufferAndHooksFireInOrderWithFinalGradients) {
  const ModelConfig c = testing::SmallGpt();  // 2 layers: units embed, h.0, h.1, ln_f
  TensorParallel tp;
  ModelContext ctx{kernels::KernelContext::Host(), &tp, nullptr, false, 1, {}};
  auto m = Model::Create(c, ctx, 3);
  ASSERT_TRUE(m.ok());
  ParamBuffer& params = (*m)->params();
  const auto& units = params.units();
  ASSERT_EQ(units.size(), 4u);
  EXPECT_EQ(units[0].name, "embed");
  EXPECT_EQ(units[3].name, "ln_f");
  int64_t at = 0;
  for (const ParamUnit& u : units) {
    EXPECT_EQ(u.begin, at) << u.name;
    at = u.end;
  }
  EXPECT_EQ(at, params.numel());
  EXPECT_EQ(params.views().front().spec.name, "wte.weight");
  EXPECT_EQ(params.views().back().spec.name, "ln_f.bias");

  const Batch batch = FirstBatch(c);
  RecordingHooks hooks(&params);
  ASSERT_TRUE(params.ZeroGrads().ok());
  ASSERT_TRUE((*m)->Forward(batch, &hooks).ok());
  ASSERT_TRUE((*m)->Backward(&hooks).ok());
  // Forward: embed, h.0, h.1, ln_f, then embed again for the tied head. Backward: the
  // head (embed's parameters), ln_f, h.1, h.0, and embed's gradients last.
  const std::vector<std::pair<char, int>> want = {{'F', 0}, {'D', 0}, {'F', 1}, {'D', 1}, {'F', 2},
                                                  {'D', 2}, {'F', 3}, {'D', 3}, {'F', 0}, {'D', 0},
                                                  {'B', 0}, {'D', 0}, {'B', 3}, {'G', 3}, {'B', 2},
                                                  {'G', 2}, {'B', 1}, {'G', 1}, {'G', 0}};
  EXPECT_EQ(hooks.events, want);
  // What each unit had when it was declared ready is what it has at the end of backward.
  for (size_t i = 0; i < hooks.ready.size(); ++i) {
    const ParamUnit& u = units[hooks.ready_unit[i]];
    const float* g = params.grads().data<float>();
    EXPECT_EQ(hooks.ready[i], std::vector<float>(g + u.begin, g + u.end)) << u.name;
  }
}

TEST(HooksTest, MemoryIsTrackedPerCategory) {
  for (bool bf16 : {false, true}) {
    const ModelConfig c = testing::SmallGpt();
    MemoryTracker tracker;
    TensorParallel tp;
    ModelContext ctx{kernels::KernelContext::Host(), &tp, &tracker, bf16, 1, {}};
    auto m = Model::Create(c, ctx, 3);
    ASSERT_TRUE(m.ok());
    const int64_t n = (*m)->params().numel();
    auto sync = train::SingleReplicaSync::Create(&(*m)->params(), train::OptimizerOptions{},
                                                 ctx.kernels, &tracker);
    ASSERT_TRUE(sync.ok());
    EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).live_bytes, n * (bf16 ? 6 : 4));
    EXPECT_EQ(tracker.Usage(MemoryCategory::kGrads).live_bytes, n * 4);
    EXPECT_EQ(tracker.Usage(MemoryCategory::kOptimizer).live_bytes, n * 8);
    EXPECT_EQ(tracker.Usage(MemoryCategory::kActivations).live_bytes, 0);
    DataOptions dopt;
    auto data = DataSource::Create(c, dopt);
    ASSERT_TRUE(data.ok());
    train::Trainer trainer(m->get(), data->get(), sync->get());
    ASSERT_TRUE(trainer.RunStep(0).ok());
    EXPECT_GT(tracker.Usage(MemoryCategory::kActivations).live_bytes, 0);
  }
}

// A layer adds to the activations only what its backward keeps and the residual stream:
// all blocks share one BlockScratch (ModelContext::block_scratch), so the fp32 branch
// outputs, activation gradients and bf16 forward's fp32 intermediates do not grow with
// the depth.
TEST(HooksTest, ActivationsPerLayerAreWhatBackwardKeeps) {
  for (bool bf16 : {false, true}) {
    auto activations = [&](int64_t layers) -> int64_t {
      ModelConfig c = testing::SmallGpt();
      c.layers = layers;
      MemoryTracker tracker;
      TensorParallel tp;
      ModelContext ctx{kernels::KernelContext::Host(), &tp, &tracker, bf16, 1, {}};
      auto m = Model::Create(c, ctx, 3);
      EXPECT_TRUE(m.ok());
      if (!m.ok()) return -1;
      DataOptions dopt;
      auto data = DataSource::Create(c, dopt);
      EXPECT_TRUE(data.ok());
      Batch batch;
      EXPECT_TRUE((*data)->Next(0, &batch).ok());
      EXPECT_TRUE((*m)->params().ZeroGrads().ok());
      EXPECT_TRUE((*m)->Forward(batch, nullptr).ok());
      EXPECT_TRUE((*m)->Backward(nullptr).ok());
      return tracker.Usage(MemoryCategory::kActivations).peak_bytes;
    };
    const ModelConfig c = testing::SmallGpt();
    const int64_t n = c.batch * c.seq, d = c.d_model, h = c.ffn_mult * d;
    const int64_t probs = c.batch * c.heads * c.seq * c.seq;
    const int64_t e = bf16 ? 2 : 4;  // the kept GEMM inputs, qkv, probabilities, GELU's input
    // Residual stream (xs, mids) and both LayerNorms' mean and 1/std in fp32; attention's
    // ln_1 output, qkv, probabilities and output; the MLP's ln_2 output, GELU's input and
    // output.
    const int64_t per_layer =
        4 * (2 * n * d + 4 * n) + e * ((n * d + 3 * n * d + probs + n * d) + (n * d + 2 * n * h));
    EXPECT_EQ(activations(3) - activations(2), per_layer) << (bf16 ? "bf16" : "fp32");
  }
}

TEST(HooksTest, Bf16OnlyStorageHoldsBf16ParamsAndGradsAndCastsEachUnitOnce) {
  const ModelConfig c = testing::SmallGpt();
  MemoryTracker tracker;
  TensorParallel tp;
  ParamStorage storage;
  storage.fp32_copies = false;
  ModelContext ctx{kernels::KernelContext::Host(), &tp, &tracker, true, 1, storage};
  auto m = Model::Create(c, ctx, 3);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  ParamBuffer& params = (*m)->params();
  const int64_t n = params.numel();
  EXPECT_TRUE(params.bf16_only());
  EXPECT_FALSE(params.params().defined());
  EXPECT_FALSE(params.grads().defined());
  EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).live_bytes, n * 2);
  EXPECT_EQ(tracker.Usage(MemoryCategory::kGrads).live_bytes, n * 2);
  // The bf16 parameters are the rounded initial values.
  std::vector<float> init(static_cast<size_t>(n));
  params.InitialValues(0, n, init.data());
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(params.params_bf16().data<bf16_t>()[i].bits, FloatToBf16Bits(init[i])) << i;
  }

  const Batch batch = FirstBatch(c);
  RecordingHooks hooks(&params);
  ASSERT_TRUE(params.ZeroGrads().ok());
  auto loss = (*m)->Forward(batch, &hooks);
  ASSERT_TRUE(loss.ok()) << loss.status().ToString();
  EXPECT_TRUE(std::isfinite(*loss));
  const Status s = (*m)->Backward(&hooks);
  ASSERT_TRUE(s.ok()) << s.ToString();
  // Every unit handed over once, in the documented order, with what it holds at the end.
  ASSERT_EQ(hooks.ready_unit.size(), params.units().size());
  const bf16_t* g = params.grads_bf16().data<bf16_t>();
  bool nonzero = false;
  for (size_t i = 0; i < hooks.ready.size(); ++i) {
    const ParamUnit& u = params.units()[hooks.ready_unit[i]];
    for (int64_t j = u.begin; j < u.end; ++j) {
      ASSERT_EQ(hooks.ready[i][j - u.begin], Bf16BitsToFloat(g[j].bits)) << u.name;
      nonzero = nonzero || g[j].bits != 0;
    }
  }
  EXPECT_TRUE(nonzero);
  // The fp32 scratch is an activation, not model state.
  EXPECT_EQ(tracker.Usage(MemoryCategory::kGrads).peak_bytes, n * 2);
  EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).peak_bytes, n * 2);
}

}  // namespace
}  // namespace pszero::model
