// The seams the data-parallel sync modes build on: units tile the flat buffer in
// canonical order, the hooks fire in the documented order, and each unit's gradients are
// final when GradientsReady says so; the memory each buffer holds is tracked by category.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

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
    const float* g = params_->grads().data<float>();
    ready.emplace_back(g + u.begin, g + u.end);
    ready_unit.push_back(unit);
    return Status::Ok();
  }
  std::vector<std::pair<char, int>> events;
  std::vector<std::vector<float>> ready;  // the unit's gradients when declared ready
  std::vector<int> ready_unit;

 private:
  ParamBuffer* params_;
};

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

  DataOptions dopt;
  auto data = DataSource::Create(c, dopt);
  ASSERT_TRUE(data.ok());
  Batch batch;
  ASSERT_TRUE((*data)->Next(0, &batch).ok());
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

}  // namespace
}  // namespace pszero::model
