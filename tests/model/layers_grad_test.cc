// Every layer's backward against central finite differences of L = sum(out * R), with R
// fixed random and L accumulated in double. The layers compute in fp32, so the step is
// h = 1e-2 (1e-3 for whole models) and the tolerance 2% of the largest gradient plus 1e-3 (fp32
// rounding of the forward is ~1e-7 relative; the truncation error of the central difference ~h^2).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "tests/model/model_test_util.h"
#include "worker/model/layers.h"

namespace pszero::model {
namespace {

using Vec = std::vector<float>;

struct Probe {
  ParamBuffer* params;
  Vec* x;  // input (may be null: no dx check)
  std::function<Status(Vec& out)> forward;
  std::function<Status(const Vec& dout, Vec& dx)> backward;
};

// A block's input and its output gradient: 2n standard normal draws from `seed`, x first.
std::pair<Vec, Vec> NormalPair(int64_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd;
  Vec x(n), dout(n);
  for (float& v : x) v = nd(rng);
  for (float& v : dout) v = nd(rng);
  return {x, dout};
}

double Dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// Checks up to `samples` coordinates of every parameter view and of x.
void CheckGradients(Probe& p, int samples = 12, float h = 1e-2f) {
  Vec out;
  ASSERT_TRUE(p.forward(out).ok());
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  Vec r(out.size());
  for (float& v : r) v = nd(rng);
  ASSERT_TRUE(p.params->ZeroGrads().ok());
  ASSERT_TRUE(p.forward(out).ok());
  Vec dx;
  ASSERT_TRUE(p.backward(r, dx).ok());
  const Vec grads(p.params->grads().data<float>(),
                  p.params->grads().data<float>() + p.params->numel());
  auto fd = [&](float* at) {
    const float saved = *at;
    Vec o;
    *at = saved + h;
    EXPECT_TRUE(p.forward(o).ok());
    const double plus = Dot(o, r);
    *at = saved - h;
    EXPECT_TRUE(p.forward(o).ok());
    const double minus = Dot(o, r);
    *at = saved;
    return (plus - minus) / (2.0 * h);
  };
  auto check = [&](const std::string& what, float* base, const float* analytic, int64_t n) {
    float max_abs = 0;
    for (int64_t i = 0; i < n; ++i) max_abs = std::max(max_abs, std::fabs(analytic[i]));
    const double tol = 0.02 * max_abs + 1e-3;
    const int64_t stride = std::max<int64_t>(1, n / samples);
    for (int64_t i = 0; i < n; i += stride) {
      const double numeric = fd(base + i);
      EXPECT_NEAR(analytic[i], numeric, tol) << what << "[" << i << "]";
    }
  };
  for (size_t v = 0; v < p.params->views().size(); ++v) {
    const ParamView& view = p.params->views()[v];
    check(view.spec.name, p.params->param(static_cast<int>(v)), grads.data() + view.offset,
          view.numel);
  }
  if (p.x != nullptr) check("x", p.x->data(), dx.data(), static_cast<int64_t>(dx.size()));
}

class LayerGradTest : public ::testing::Test {
 protected:
  void Finish(float scale) {
    ASSERT_TRUE(params_.Allocate(nullptr, false).ok());
    ASSERT_TRUE(params_.Initialize(11).ok());
    // Larger weights than the 0.02 of training, so that every path carries signal.
    float* w = params_.params().data<float>();
    for (int64_t i = 0; i < params_.numel(); ++i) w[i] = w[i] * scale + 0.05f * (i % 3);
    std::mt19937 rng(3);
    std::normal_distribution<float> nd;
    for (float& v : x_) v = nd(rng);
  }

  TensorParallel tp_;
  ModelContext ctx_{kernels::KernelContext::Host(), &tp_, nullptr, false, 1, {}};
  ParamBuffer params_{0, 1};
  Vec x_;
};

TEST_F(LayerGradTest, Linear) {
  Linear lin;
  const int64_t n = 3, in = 5, out = 7;
  ASSERT_TRUE(lin.Declare(params_, "lin", in, out, Parallel::kNone).ok());
  x_.resize(n * in);
  Finish(20.0f);
  Probe p{&params_, &x_,
          [&](Vec& o) {
            o.resize(n * out);
            return lin.Forward(ctx_, params_, x_.data(), n, o.data());
          },
          [&](const Vec& d, Vec& dx) {
            dx.resize(n * in);
            return lin.Backward(ctx_, params_, d.data(), n, dx.data());
          }};
  CheckGradients(p);
}

TEST_F(LayerGradTest, LayerNorm) {
  LayerNorm ln;
  const int64_t n = 4, d = 6;
  ASSERT_TRUE(ln.Declare(params_, "ln", d).ok());
  x_.resize(n * d);
  Finish(20.0f);
  Probe p{&params_, &x_,
          [&](Vec& o) {
            o.resize(n * d);
            return ln.Forward(ctx_, params_, x_.data(), n, o.data());
          },
          [&](const Vec& dy, Vec& dx) {
            dx.resize(n * d);
            return ln.Backward(ctx_, params_, dy.data(), n, dx.data());
          }};
  CheckGradients(p);
}

TEST_F(LayerGradTest, AttentionBlock) {
  AttentionBlock block;
  const int64_t batch = 2, seq = 4, d = 8;
  ASSERT_TRUE(block.Declare(params_, "h", d, 2, 0.02f).ok());
  x_.resize(batch * seq * d);
  Finish(15.0f);
  Probe p{&params_, &x_,
          [&](Vec& o) {
            o.resize(batch * seq * d);
            return block.Forward(ctx_, params_, x_.data(), batch, seq, o.data());
          },
          [&](const Vec& dy, Vec& dx) {
            dx.resize(batch * seq * d);
            return block.Backward(ctx_, params_, dy.data(), dx.data());
          }};
  CheckGradients(p);
}

TEST_F(LayerGradTest, MlpBlock) {
  MlpBlock block;
  const int64_t n = 3, d = 8;
  ASSERT_TRUE(block.Declare(params_, "h", d, 4 * d, 0.02f).ok());
  x_.resize(n * d);
  Finish(15.0f);
  Probe p{&params_, &x_,
          [&](Vec& o) {
            o.resize(n * d);
            return block.Forward(ctx_, params_, x_.data(), n, o.data());
          },
          [&](const Vec& dy, Vec& dx) {
            dx.resize(n * d);
            return block.Backward(ctx_, params_, dy.data(), dx.data());
          }};
  CheckGradients(p);
}

// Mixed precision keeps the activations saved for backward in bf16 only: the GEMM inputs
// (LayerNorm, attention and GELU outputs), qkv, the attention probabilities and GELU's input.
// After forward and backward a bf16 pair of blocks holds exactly the fp32 pair's activation
// bytes minus 2 bytes per element of those, plus the shared bf16 gradient scratch (no fp32
// copies, no extra bf16 copies), and its output and input gradient follow the fp32 blocks'
// within bf16 rounding.
TEST(Bf16LayersTest, BlocksKeepTheirSavedActivationsInBf16Only) {
  const int64_t batch = 2, seq = 5, n = batch * seq, d = 16, heads = 2, h = 4 * d;
  const int64_t probs = batch * heads * seq * seq;
  const auto [x, dout] = NormalPair(n * d, 5);
  struct Run {
    int64_t activation_bytes = 0;
    int64_t scratch_numel = 0;
    Vec out, dx;
  };
  auto run = [&](bool bf16) {
    Run r;
    TensorParallel tp;
    MemoryTracker tracker;
    Tensor scratch;
    ModelContext ctx{kernels::KernelContext::Host(), &tp, &tracker, bf16, 1, {}, &scratch};
    ParamBuffer params(0, 1);
    AttentionBlock attn;
    MlpBlock mlp;
    EXPECT_TRUE(attn.Declare(params, "a", d, heads, 0.02f).ok());
    EXPECT_TRUE(mlp.Declare(params, "m", d, h, 0.02f).ok());
    EXPECT_TRUE(params.Allocate(nullptr, bf16).ok());
    EXPECT_TRUE(params.Initialize(13).ok());
    float* w = params.params().data<float>();
    for (int64_t i = 0; i < params.numel(); ++i) w[i] = w[i] * 15.0f + 0.05f * (i % 3);
    EXPECT_TRUE(params.RefreshBf16().ok());
    EXPECT_TRUE(params.ZeroGrads().ok());
    Vec mid(n * d), dmid(n * d);
    r.out.resize(n * d);
    r.dx.resize(n * d);
    EXPECT_TRUE(attn.Forward(ctx, params, x.data(), batch, seq, mid.data()).ok());
    EXPECT_TRUE(mlp.Forward(ctx, params, mid.data(), n, r.out.data()).ok());
    EXPECT_TRUE(mlp.Backward(ctx, params, dout.data(), dmid.data()).ok());
    EXPECT_TRUE(attn.Backward(ctx, params, dmid.data(), r.dx.data()).ok());
    r.activation_bytes = tracker.Usage(MemoryCategory::kActivations).live_bytes;
    r.scratch_numel = scratch.defined() ? scratch.numel() : 0;
    return r;
  };
  const Run fp32 = run(false), bf16 = run(true);
  EXPECT_EQ(fp32.scratch_numel, 0);
  // The largest bf16 gradient operand: fc's dy [n, h] (qkv's is [n, 3d], the attention's
  // dout [n, d] and scores' gradient [batch, heads, seq, seq]).
  EXPECT_EQ(bf16.scratch_numel, std::max({n * h, n * 3 * d, n * d, probs}));
  // MLP: LayerNorm output [n, d], GELU's input and output [n, h]. Attention: LayerNorm
  // output [n, d], qkv [n, 3d], probabilities, attention output [n, d].
  const int64_t bf16_only = (n * d + 2 * n * h) + (n * d + 3 * n * d + probs + n * d);
  EXPECT_EQ(fp32.activation_bytes - bf16.activation_bytes, 2 * bf16_only - 2 * bf16.scratch_numel);
  auto expect_close = [](const Vec& got, const Vec& want, const char* what) {
    float max_abs = 0;
    for (float v : want) max_abs = std::max(max_abs, std::fabs(v));
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 3e-2 * max_abs) << what << "[" << i << "]";
    }
  };
  expect_close(bf16.out, fp32.out, "out");
  expect_close(bf16.dx, fp32.dx, "dx");
  EXPECT_NE(bf16.out, fp32.out);  // really computed in bf16
}

// Blocks run one at a time, so a model shares one BlockScratch among all of them
// (ModelContext::block_scratch). Three attention + MLP pairs (different weights), forward
// through all, backward in reverse: with the shared scratch the output, the input gradient
// and every parameter gradient are bit for bit those of per-block buffers, in fp32 and bf16
// (nothing is read from the scratch across blocks), and the activations shrink by exactly
// all per-block buffers but one set, each sized for the largest block.
TEST(BlockScratchTest, SharedAcrossBlocksGivesThePerBlockResults) {
  const int64_t layers = 3, batch = 2, seq = 5, n = batch * seq, d = 16, heads = 2, h = 4 * d;
  const int64_t probs = batch * heads * seq * seq;
  const auto [x, dout] = NormalPair(n * d, 17);
  struct Run {
    int64_t activation_bytes = 0;
    Vec out, dx, grads;
    std::vector<int64_t> scratch_numel;  // branch, dln, dattn, dprobs, dwide
  };
  auto run = [&](bool bf16, bool shared) {
    Run r;
    TensorParallel tp;
    MemoryTracker tracker;
    Tensor grad_scratch;
    BlockScratch scratch;
    ModelContext ctx{kernels::KernelContext::Host(), &tp, &tracker, bf16, 1, {}, &grad_scratch};
    if (shared) ctx.block_scratch = &scratch;
    ParamBuffer params(0, 1);
    std::vector<AttentionBlock> attn(layers);
    std::vector<MlpBlock> mlp(layers);
    for (int64_t l = 0; l < layers; ++l) {
      EXPECT_TRUE(attn[l].Declare(params, "a" + std::to_string(l), d, heads, 0.02f).ok());
      EXPECT_TRUE(mlp[l].Declare(params, "m" + std::to_string(l), d, h, 0.02f).ok());
    }
    EXPECT_TRUE(params.Allocate(nullptr, bf16).ok());
    EXPECT_TRUE(params.Initialize(13).ok());
    float* w = params.params().data<float>();
    for (int64_t i = 0; i < params.numel(); ++i) w[i] = w[i] * 15.0f + 0.05f * (i % 3);
    EXPECT_TRUE(params.RefreshBf16().ok());
    EXPECT_TRUE(params.ZeroGrads().ok());
    // xs[l]: input of pair l; mids[l]: between its attention and its MLP.
    std::vector<Vec> xs(layers + 1, Vec(n * d)), mids(layers, Vec(n * d));
    xs[0] = x;
    for (int64_t l = 0; l < layers; ++l) {
      EXPECT_TRUE(attn[l].Forward(ctx, params, xs[l].data(), batch, seq, mids[l].data()).ok());
      EXPECT_TRUE(mlp[l].Forward(ctx, params, mids[l].data(), n, xs[l + 1].data()).ok());
    }
    Vec g = dout, gmid(n * d), gin(n * d);
    for (int64_t l = layers - 1; l >= 0; --l) {
      EXPECT_TRUE(mlp[l].Backward(ctx, params, g.data(), gmid.data()).ok());
      EXPECT_TRUE(attn[l].Backward(ctx, params, gmid.data(), gin.data()).ok());
      g = gin;
    }
    r.out = xs[layers];
    r.dx = g;
    r.grads.assign(params.grads().data<float>(), params.grads().data<float>() + params.numel());
    r.activation_bytes = tracker.Usage(MemoryCategory::kActivations).live_bytes;
    for (const Tensor* t :
         {&scratch.branch, &scratch.dln, &scratch.dattn, &scratch.dprobs, &scratch.dwide}) {
      r.scratch_numel.push_back(t->defined() ? t->numel() : 0);
    }
    return r;
  };
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    const Run own = run(bf16, false), shared = run(bf16, true);
    EXPECT_EQ(shared.out, own.out);
    EXPECT_EQ(shared.dx, own.dx);
    EXPECT_EQ(shared.grads, own.grads);
    // One set, each buffer grown to the largest block's need: dwide is MLP's [n, h]
    // (attention's dqkv is [n, 3d]).
    EXPECT_EQ(shared.scratch_numel, (std::vector<int64_t>{n * d, n * d, n * d, probs, n * h}));
    EXPECT_EQ(own.scratch_numel, (std::vector<int64_t>{0, 0, 0, 0, 0}));
    // Per block: attention branch, dln, dattn [n, d], dprobs, dqkv [n, 3d]; MLP branch,
    // dln [n, d], dhidden [n, h].
    const int64_t per_pair = (3 * n * d + probs + 3 * n * d) + (2 * n * d + n * h);
    const int64_t one_set = 3 * n * d + probs + n * h;
    EXPECT_EQ(own.activation_bytes - shared.activation_bytes, 4 * (layers * per_pair - one_set));
  }
}

// Whole models: L = loss itself (R = [1]): embedding, tied head, cross-entropy, MSE.
void CheckModel(const ModelConfig& config) {
  TensorParallel tp;
  ModelContext ctx{kernels::KernelContext::Host(), &tp, nullptr, false, 1, {}};
  auto m = Model::Create(config, ctx, 5);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  Model& model = **m;
  float* w = model.params().params().data<float>();
  for (int64_t i = 0; i < model.params().numel(); ++i) w[i] *= 10.0f;
  DataOptions dopt;
  dopt.seed = 9;
  auto data = DataSource::Create(config, dopt);
  ASSERT_TRUE(data.ok());
  Batch batch;
  ASSERT_TRUE((*data)->Next(0, &batch).ok());
  Probe p{&model.params(), nullptr,
          [&](Vec& o) -> Status {
            PSZERO_ASSIGN_OR_RETURN(float loss, model.Forward(batch, nullptr));
            o.assign(1, loss);
            return Status::Ok();
          },
          [&](const Vec&, Vec&) { return model.Backward(nullptr); }};
  // R is random here; scale the analytic side by it: L = loss * r0.
  Vec out;
  ASSERT_TRUE(p.forward(out).ok());
  ASSERT_TRUE(std::isfinite(out[0]));
  // With one output, CheckGradients multiplies the loss by r0; do the same to the grads.
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  const float r0 = nd(rng);
  Probe scaled{&model.params(), nullptr, p.forward, [&](const Vec&, Vec& dx) -> Status {
                 PSZERO_RETURN_IF_ERROR(model.Backward(nullptr));
                 float* g = model.params().grads().data<float>();
                 for (int64_t i = 0; i < model.params().numel(); ++i) g[i] *= r0;
                 dx.clear();
                 return Status::Ok();
               }};
  // The scaled-up GPT is sharply nonlinear (LayerNorm of small sums): a smaller step.
  CheckGradients(scaled, 6, 1e-3f);
}

TEST(ModelGradTest, Gpt) {
  model::ModelConfig c = testing::SmallGpt();
  c.d_model = 16;
  c.heads = 2;
  c.seq = 4;
  c.layers = 1;
  c.vocab = 16;
  CheckModel(c);
}

// Three layers: every block's backward runs through the model's shared BlockScratch.
TEST(ModelGradTest, GptThreeLayers) {
  model::ModelConfig c = testing::SmallGpt();
  c.d_model = 16;
  c.heads = 2;
  c.seq = 4;
  c.layers = 3;
  c.vocab = 16;
  CheckModel(c);
}

TEST(ModelGradTest, Mlp) {
  model::ModelConfig c = testing::SmallMlp();
  c.d_model = 8;
  CheckModel(c);
}

}  // namespace
}  // namespace pszero::model
