// PsSync (worker/train/ps_sync.h), the `--sync ps` strategy, with ranks as threads: S
// servers and D workers, each worker training a real model through the strategy's hooks.
//  * bsp is bit-identical to an independent serial reference (the D replicas' gradients
//    summed in ascending rank order in fp32, then AdamW with grad_scale 1/D), fp32 and
//    bf16, S = 1, 2, D = 2, 4; also staged through host mirrors (stage_through_host: the
//    path of device parameters, run on host ones), which are tracked as comm_buffers;
//  * the loss falls under bsp, ssp and asp, in place and staged;
//  * ssp never lets a worker read parameters beyond its staleness while one worker is
//    held back (instrumented: what each pull contained), and asp lets the fast worker
//    finish while the slow one lags;
//  * checkpoint hooks: state read after 2 steps, restored into fresh servers, continues
//    bit for bit;
//  * a worker configured unlike the servers is rejected with the server's reason, and
//    MakePsSync reads and checks the servers' published configuration.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <tuple>

#include "common/half.h"
#include "common/memory.h"
#include "kernels/optimizer.h"
#include "tests/model/model_test_util.h"
#include "tests/ps/ps_test_util.h"
#include "worker/model/data.h"
#include "worker/model/model.h"
#include "worker/train/ps_sync.h"

namespace pszero::testing {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kTimeout{30000};

model::ModelConfig TinyGpt() {
  model::ModelConfig c;
  c.name = "custom";
  c.kind = model::ModelKind::kGpt;
  c.layers = 2;
  c.d_model = 32;
  c.heads = 2;
  c.seq = 8;
  c.batch = 2;
  c.ffn_mult = 4;
  c.vocab = 64;
  return c;
}

// One replica: its model (T = 1) and data part.
struct Replica {
  MemoryTracker tracker;
  model::TensorParallel tp;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::DataSource> data;
  model::Batch batch;
};

// `bf16_only`: the ParamBuffer pszero-worker builds for ps in bf16 (SyncPlanFor: bf16
// parameters and gradients only); else fp32 copies beside the bf16 ones.
Result<std::unique_ptr<Replica>> MakeReplica(const model::ModelConfig& config, bool bf16,
                                             uint64_t seed, int dp_rank, int dp_size,
                                             bool bf16_only = false) {
  auto r = std::make_unique<Replica>();
  model::ModelContext ctx;
  ctx.tp = &r->tp;
  ctx.tracker = &r->tracker;
  ctx.bf16 = bf16;
  ctx.storage.fp32_copies = !bf16_only;
  PSZERO_ASSIGN_OR_RETURN(r->model, model::Model::Create(config, ctx, seed));
  model::DataOptions d;
  d.seed = seed;
  d.dp_rank = dp_rank;
  d.dp_size = dp_size;
  PSZERO_ASSIGN_OR_RETURN(r->data, model::DataSource::Create(config, d));
  return r;
}

// One training step through `hooks` (the strategy), as the training loop runs it.
Result<float> TrainStep(Replica& r, train::SyncStrategy* sync, int64_t step) {
  PSZERO_RETURN_IF_ERROR(r.data->Next(step, &r.batch));
  PSZERO_RETURN_IF_ERROR(r.model->params().ZeroGrads());
  PSZERO_ASSIGN_OR_RETURN(float loss, r.model->Forward(r.batch, sync));
  PSZERO_RETURN_IF_ERROR(r.model->Backward(sync));
  PSZERO_RETURN_IF_ERROR(sync->Step(step + 1));
  return loss;
}

std::vector<float> ParamsOf(model::Model& m) {
  const float* p = m.params().params().data<float>();
  return std::vector<float>(p, p + m.params().numel());
}

std::vector<uint16_t> Bf16Of(model::Model& m) {
  std::vector<uint16_t> out;
  if (!m.params().has_bf16()) return out;
  const bf16_t* b = m.params().params_bf16().data<bf16_t>();
  for (int64_t i = 0; i < m.params().numel(); ++i) out.push_back(b[i].bits);
  return out;
}

struct BspCase {
  int servers;
  int workers;
  bool bf16;
  bool overlap;
  bool staged = false;     // PsSyncOptions::stage_through_host
  bool bf16_only = false;  // bf16 parameters and gradients only: a bf16 key space
};

std::string CaseName(const BspCase& c) {
  return "S" + std::to_string(c.servers) + "D" + std::to_string(c.workers) +
         (c.bf16_only ? "Bf16Only"
          : c.bf16    ? "Bf16"
                      : "Fp32") +
         (c.overlap ? "Overlap" : "") + (c.staged ? "Staged" : "");
}

// The fp32 parameters of the run: the resident ones, or with bf16-only storage the
// servers' master (PsSync::LocalParams).
Result<std::vector<float>> MasterOf(model::Model& m, train::PsSync& sync) {
  if (m.params().bf16_only()) return sync.LocalParams(m.params());
  return ParamsOf(m);
}

class PsSyncBspTest : public ::testing::TestWithParam<BspCase> {};

TEST_P(PsSyncBspTest, BitIdenticalToSerialAscendingSumAndAdamW) {
  const BspCase c = GetParam();
  const int S = c.servers, D = c.workers, steps = 3;
  const uint64_t seed = 7;
  const model::ModelConfig config = TinyGpt();
  const int64_t slice_bytes = 4096;  // many slices, crossing unit boundaries

  // Reference: one model; each step, the D replicas' gradients in ascending rank order,
  // summed in fp32, then AdamW (grad_scale 1/D, 1-based step), as the deterministic
  // collective modes do.
  // bf16-only storage: the replicas' bf16 gradients summed in fp32, rounded to bf16 once,
  // and AdamW on an fp32 master that starts from the seed's values, writing its rounding
  // into the bf16 parameters (the data-parallel modes' mixed precision).
  auto ref = MakeReplica(config, c.bf16, seed, 0, 1, c.bf16_only);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  model::ParamBuffer& rp = (*ref)->model->params();
  const auto n = static_cast<size_t>(rp.numel());
  std::vector<float> master;
  std::vector<bf16_t> rounded_sum(n);
  if (c.bf16_only) {
    master.resize(n);
    rp.InitialValues(0, rp.numel(), master.data());
  }
  std::vector<std::unique_ptr<model::DataSource>> parts;
  for (int d = 0; d < D; ++d) {
    model::DataOptions o;
    o.seed = seed;
    o.dp_rank = d;
    o.dp_size = D;
    auto data = model::DataSource::Create(config, o);
    ASSERT_TRUE(data.ok());
    parts.push_back(std::move(data).value());
  }
  std::vector<float> sum(n), m(n, 0.0f), v(n, 0.0f);
  std::vector<std::vector<float>> ref_loss(static_cast<size_t>(D));
  for (int step = 0; step < steps; ++step) {
    for (int d = 0; d < D; ++d) {
      model::Batch batch;
      ASSERT_TRUE(parts[static_cast<size_t>(d)]->Next(step, &batch).ok());
      ASSERT_TRUE(rp.ZeroGrads().ok());
      auto loss = (*ref)->model->Forward(batch, nullptr);
      ASSERT_TRUE(loss.ok());
      ref_loss[static_cast<size_t>(d)].push_back(*loss);
      ASSERT_TRUE((*ref)->model->Backward(nullptr).ok());
      for (size_t i = 0; i < n; ++i) {
        const float g = c.bf16_only ? Bf16BitsToFloat(rp.grads_bf16().data<bf16_t>()[i].bits)
                                    : rp.grads().data<float>()[i];
        sum[i] = d == 0 ? g : sum[i] + g;
      }
    }
    kernels::AdamWParams hp;
    hp.step = step + 1;
    hp.grad_scale = 1.0f / static_cast<float>(D);
    bf16_t* b = rp.has_bf16() ? rp.params_bf16().data<bf16_t>() : nullptr;
    if (c.bf16_only) {
      for (size_t i = 0; i < n; ++i) rounded_sum[i].bits = FloatToBf16Bits(sum[i]);
      ASSERT_TRUE(kernels::AdamW(hp, master.data(), rounded_sum.data(), DType::kBFloat16, m.data(),
                                 v.data(), b, rp.numel(), kernels::KernelContext::Host())
                      .ok());
      continue;
    }
    ASSERT_TRUE(kernels::AdamW(hp, rp.params().data<float>(), sum.data(), DType::kFloat32, m.data(),
                               v.data(), b, rp.numel(), kernels::KernelContext::Host())
                    .ok());
  }
  const std::vector<float> want = c.bf16_only ? master : ParamsOf(*(*ref)->model);
  const std::vector<uint16_t> want_bf16 = Bf16Of(*(*ref)->model);

  ps::PsServerOptions so;
  so.slice_bytes = slice_bytes;
  so.consistency = ps::Consistency::kBsp;
  so.optimizer = ps::OptimizerKind::kAdamW;
  std::vector<std::vector<float>> finals(static_cast<size_t>(D));
  std::vector<std::vector<uint16_t>> finals_bf16(static_cast<size_t>(D));
  std::vector<std::vector<float>> losses(static_cast<size_t>(D));
  std::vector<int64_t> sent(static_cast<size_t>(D)), received(static_cast<size_t>(D));
  std::vector<int64_t> staging(static_cast<size_t>(D)), comm_buffers(static_cast<size_t>(D));
  std::vector<ps::ServerCounters> server_counters;
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    PSZERO_ASSIGN_OR_RETURN(auto r, MakeReplica(config, c.bf16, seed, w, D, c.bf16_only));
    train::PsSyncOptions o = SyncOptions(w, D, S);
    o.overlap_pulls_with_forward = c.overlap;
    o.stage_through_host = c.staged;
    o.tracker = &r->tracker;
    PSZERO_ASSIGN_OR_RETURN(auto sync,
                            train::PsSync::Create(&r->model->params(), &t, o, slice_bytes));
    staging[static_cast<size_t>(w)] = sync->staging_bytes();
    comm_buffers[static_cast<size_t>(w)] =
        r->tracker.Usage(MemoryCategory::kCommBuffers).live_bytes;
    for (int step = 0; step < steps; ++step) {
      PSZERO_ASSIGN_OR_RETURN(float loss, TrainStep(*r, sync.get(), step));
      losses[static_cast<size_t>(w)].push_back(loss);
    }
    PSZERO_RETURN_IF_ERROR(sync->Flush());
    finals_bf16[static_cast<size_t>(w)] = Bf16Of(*r->model);
    sent[static_cast<size_t>(w)] = sync->bytes_sent_last_step();
    received[static_cast<size_t>(w)] = sync->bytes_received_last_step();
    if (w == 0) {
      PSZERO_ASSIGN_OR_RETURN(server_counters, sync->ServerStats());
    }
    PSZERO_ASSIGN_OR_RETURN(finals[static_cast<size_t>(w)], MasterOf(*r->model, *sync));
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  const int64_t wire = c.bf16_only ? 2 : 4;  // bytes per element pushed and pulled
  for (int w = 0; w < D; ++w) {
    const auto i = static_cast<size_t>(w);
    ASSERT_EQ(finals[i].size(), n) << "worker " << w;
    EXPECT_EQ(std::memcmp(finals[i].data(), want.data(), n * 4), 0)
        << "worker " << w << " differs from the serial reference";
    EXPECT_EQ(finals_bf16[i], want_bf16) << "worker " << w << ": bf16 copy";
    EXPECT_EQ(losses[i], ref_loss[i]) << "worker " << w;
    // Every gradient pushed and every parameter pulled once per step (fp32 payloads, bf16
    // ones with bf16-only storage).
    EXPECT_EQ(sent[i], static_cast<int64_t>(n) * wire) << "worker " << w;
    if (!c.overlap) {
      EXPECT_EQ(received[i], static_cast<int64_t>(n) * wire) << "worker " << w;
    }
    // Staged: params and grads mirrored on the host, and tracked.
    EXPECT_EQ(staging[i], c.staged ? static_cast<int64_t>(n) * 2 * wire : 0) << "worker " << w;
    EXPECT_EQ(comm_buffers[i], staging[i]) << "worker " << w;
  }
  for (const auto& s : run.servers) EXPECT_EQ(s.rejected, 0) << s.last_error;
  // What the servers report over the data plane (for run reports): every worker's
  // gradients of every step arrived (bsp: all of them before worker 0's last pull), and
  // the memory is the fp32 params + AdamW m, v + one receive slot per worker (bf16 key
  // space: bf16 slots, and the master's bf16 rounding that pulls are answered with).
  ASSERT_EQ(server_counters.size(), static_cast<size_t>(S));
  int64_t pushed = 0, held = 0;
  for (const auto& sc : server_counters) {
    pushed += sc.push_bytes;
    held += sc.model_bytes;
  }
  EXPECT_EQ(pushed, int64_t{steps} * D * static_cast<int64_t>(n) * wire);
  EXPECT_EQ(held, static_cast<int64_t>(n) * (12 + (c.bf16_only ? 2 : 0) + wire * D));
}

INSTANTIATE_TEST_SUITE_P(
    ServersWorkers, PsSyncBspTest,
    ::testing::Values(
        BspCase{1, 2, false, false}, BspCase{2, 2, false, false}, BspCase{2, 4, false, false},
        BspCase{2, 2, true, false}, BspCase{2, 2, true, true}, BspCase{1, 2, false, false, true},
        BspCase{2, 2, false, false, true}, BspCase{2, 2, false, true, true},
        BspCase{2, 2, true, false, true}, BspCase{2, 2, true, true, true},
        BspCase{1, 2, true, false, false, true}, BspCase{2, 4, true, false, false, true},
        BspCase{2, 2, true, true, false, true}, BspCase{2, 2, true, false, true, true},
        BspCase{2, 2, true, true, true, true}),
    [](const auto& info) { return CaseName(info.param); });

class PsSyncLossTest : public ::testing::TestWithParam<std::tuple<ps::Consistency, bool>> {};

TEST_P(PsSyncLossTest, LossFallsWithTwoServersAndTwoWorkers) {
  const int S = 2, D = 2, steps = 12;
  const model::ModelConfig config = TinyMlp();
  const bool staged = std::get<1>(GetParam());
  ps::PsServerOptions so;
  so.slice_bytes = 8192;
  so.consistency = std::get<0>(GetParam());
  so.staleness = 1;
  so.optimizer = ps::OptimizerKind::kAdamW;
  so.adamw.lr = 1e-2f;
  std::vector<std::vector<float>> losses(static_cast<size_t>(D));
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    PSZERO_ASSIGN_OR_RETURN(auto r, MakeReplica(config, false, 3, w, D));
    train::PsSyncOptions o = SyncOptions(w, D, S);
    o.stage_through_host = staged;
    PSZERO_ASSIGN_OR_RETURN(auto sync,
                            train::PsSync::Create(&r->model->params(), &t, o, so.slice_bytes));
    for (int step = 0; step < steps; ++step) {
      PSZERO_ASSIGN_OR_RETURN(float loss, TrainStep(*r, sync.get(), step));
      losses[static_cast<size_t>(w)].push_back(loss);
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  for (int w = 0; w < D; ++w) {
    const auto& l = losses[static_cast<size_t>(w)];
    ASSERT_EQ(l.size(), static_cast<size_t>(steps));
    EXPECT_LT(l.back(), l.front()) << "worker " << w << " loss did not fall";
  }
}

INSTANTIATE_TEST_SUITE_P(Consistency, PsSyncLossTest,
                         ::testing::Combine(::testing::Values(ps::Consistency::kBsp,
                                                              ps::Consistency::kSsp,
                                                              ps::Consistency::kAsp),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(ConsistencyName(std::get<0>(info.param))) +
                                  (std::get<1>(info.param) ? "Staged" : "");
                         });

// ---- ssp / asp with a slow worker --------------------------------------------------------

// Two units of 100 parameters, zero-initialized, pushed as constant gradients.
struct CountingBuffer {
  MemoryTracker tracker;
  model::ParamBuffer params{0, 1};
  Status Build() {
    for (const char* unit : {"a", "b"}) {
      params.BeginUnit(unit);
      model::ParamSpec spec;
      spec.name = std::string(unit) + ".w";
      spec.full_shape = {100};
      spec.init = model::ParamInit::kZeros;
      PSZERO_RETURN_IF_ERROR(params.Add(spec).status());
    }
    PSZERO_RETURN_IF_ERROR(params.Allocate(&tracker, false));
    return params.Initialize(0);
  }
};

// A counting server: SGD, lr 1, no scaling, so a parameter is n_fast + 1000 n_slow when
// the fast worker pushes -1 and the slow one -1000 (exact in fp32).
ps::PsServerOptions CountingServer(ps::Consistency c, int staleness) {
  ps::PsServerOptions so;
  so.slice_bytes = 256;  // 4 slices over 2 servers; slices cross the unit boundary
  so.consistency = c;
  so.staleness = staleness;
  so.optimizer = ps::OptimizerKind::kSgd;
  so.sgd.lr = 1.0f;
  so.sgd.momentum = 0.0f;
  so.grad_scale = 1.0f;
  return so;
}

// Forward and backward as the hooks see them, with a constant gradient; `pushed` runs
// once every slice is pushed (before Step waits for the pulls).
Status CountingStep(CountingBuffer& b, train::PsSync& sync, int64_t step, float grad,
                    const std::function<void()>& pushed) {
  const int units = static_cast<int>(b.params.units().size());
  for (int u = 0; u < units; ++u) PSZERO_RETURN_IF_ERROR(sync.BeforeForward(u));
  PSZERO_RETURN_IF_ERROR(b.params.ZeroGrads());
  float* g = b.params.grads().data<float>();
  std::fill(g, g + b.params.numel(), grad);
  for (int u = units - 1; u >= 0; --u) PSZERO_RETURN_IF_ERROR(sync.GradientsReady(u));
  pushed();
  return sync.Step(step + 1);
}

struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  int fast_pushed = 0;
  int slow_pushed = 0;
  void Set(int& field, int value) {
    {
      std::lock_guard lock(mu);
      field = value;
    }
    cv.notify_all();
  }
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock lock(mu);
    return cv.wait_for(lock, kTimeout, pred);
  }
};

// Fewest slow updates in any parameter the worker holds, after checking that every
// parameter holds all of this worker's own `own` updates.
Result<int64_t> SlowUpdatesSeen(const model::ParamBuffer& p, int64_t own) {
  int64_t fewest = INT64_MAX;
  const float* x = p.params().data<float>();
  for (int64_t i = 0; i < p.numel(); ++i) {
    const auto v = static_cast<int64_t>(x[i]);
    if (v % 1000 < own) {
      return Status::Internal("parameter " + std::to_string(i) +
                              " misses the worker's own updates");
    }
    fewest = std::min(fewest, v / 1000);
  }
  return fewest;
}

// Checkpoint hooks: the state read after 2 of 4 steps (LocalParams, LocalMoments) and
// restored into fresh servers (Restore at resume_step 2) continues bit for bit, fp32 and
// bf16 copies, with and without overlapped pulls; Restore without the step is refused.
class PsSyncCheckpointTest : public ::testing::TestWithParam<BspCase> {};

TEST_P(PsSyncCheckpointTest, RestoredIntoFreshServersContinuesBitForBit) {
  const BspCase c = GetParam();
  const int S = c.servers, D = c.workers;
  const uint64_t seed = 11;
  const model::ModelConfig config = TinyGpt();
  const int64_t slice_bytes = 4096;
  ps::PsServerOptions so;
  so.slice_bytes = slice_bytes;
  struct Saved {
    std::vector<float> params;
    train::Moments moments;
    std::vector<float> final_params;
    std::vector<uint16_t> final_bf16;
  };
  std::vector<Saved> saved(static_cast<size_t>(D));
  PsRun a = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    PSZERO_ASSIGN_OR_RETURN(auto r, MakeReplica(config, c.bf16, seed, w, D, c.bf16_only));
    train::PsSyncOptions o = SyncOptions(w, D, S);
    o.overlap_pulls_with_forward = c.overlap;
    o.stage_through_host = c.staged;
    PSZERO_ASSIGN_OR_RETURN(auto sync,
                            train::PsSync::Create(&r->model->params(), &t, o, slice_bytes));
    Saved& mine = saved[static_cast<size_t>(w)];
    for (int step = 0; step < 4; ++step) {
      if (step == 2) {
        PSZERO_ASSIGN_OR_RETURN(mine.params, sync->LocalParams(r->model->params()));
        PSZERO_ASSIGN_OR_RETURN(mine.moments, sync->LocalMoments(r->model->params()));
      }
      PSZERO_RETURN_IF_ERROR(TrainStep(*r, sync.get(), step).status());
    }
    PSZERO_RETURN_IF_ERROR(sync->Flush());
    PSZERO_ASSIGN_OR_RETURN(mine.final_params, MasterOf(*r->model, *sync));
    mine.final_bf16 = Bf16Of(*r->model);
    return Status::Ok();
  });
  EXPECT_ALL_OK(a.workers);
  for (int w = 1; w < D; ++w) {
    EXPECT_EQ(saved[static_cast<size_t>(w)].moments.v, saved[0].moments.v) << "worker " << w;
  }

  std::vector<std::vector<float>> finals(static_cast<size_t>(D));
  std::vector<std::vector<uint16_t>> finals_bf16(static_cast<size_t>(D));
  PsRun b = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    PSZERO_ASSIGN_OR_RETURN(auto r, MakeReplica(config, c.bf16, seed, w, D, c.bf16_only));
    // The servers start from other parameters than the checkpoint's (bf16-only: from the
    // seed's, two steps behind it).
    if (!c.bf16_only) {
      float* p = r->model->params().params().data<float>();
      std::fill(p, p + r->model->params().numel(), 0.5f);
    }
    train::PsSyncOptions o = SyncOptions(w, D, S);
    o.overlap_pulls_with_forward = c.overlap;
    o.stage_through_host = c.staged;
    PSZERO_ASSIGN_OR_RETURN(auto sync,
                            train::PsSync::Create(&r->model->params(), &t, o, slice_bytes));
    const Saved& from = saved[static_cast<size_t>(w)];
    Status no_step = sync->Restore(from.params, from.moments);
    if (no_step.code() != StatusCode::kInvalidArgument ||
        no_step.message().find("--resume") == std::string::npos) {
      return Status::Internal("Restore without a step gave " + no_step.ToString());
    }
    PSZERO_RETURN_IF_ERROR(sync->RestoreAt(from.params, from.moments, 2));
    PSZERO_ASSIGN_OR_RETURN(std::vector<float> restored, MasterOf(*r->model, *sync));
    if (restored != from.params) return Status::Internal("restored params differ");
    for (int step = 2; step < 4; ++step) {
      PSZERO_RETURN_IF_ERROR(TrainStep(*r, sync.get(), step).status());
    }
    PSZERO_RETURN_IF_ERROR(sync->Flush());
    PSZERO_ASSIGN_OR_RETURN(finals[static_cast<size_t>(w)], MasterOf(*r->model, *sync));
    finals_bf16[static_cast<size_t>(w)] = Bf16Of(*r->model);
    return Status::Ok();
  });
  EXPECT_ALL_OK(b.workers);
  for (int w = 0; w < D; ++w) {
    const Saved& want = saved[static_cast<size_t>(w)];
    EXPECT_TRUE(finals[static_cast<size_t>(w)] == want.final_params) << "worker " << w;
    EXPECT_TRUE(finals_bf16[static_cast<size_t>(w)] == want.final_bf16) << "worker " << w;
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, PsSyncCheckpointTest,
                         ::testing::Values(BspCase{2, 2, false, false}, BspCase{1, 2, true, true},
                                           BspCase{2, 4, true, false},
                                           BspCase{2, 2, false, false, true},
                                           BspCase{1, 2, true, true, true},
                                           BspCase{2, 2, true, false, false, true},
                                           BspCase{1, 2, true, true, true, true}),
                         [](const auto& info) {
                           const BspCase& c = info.param;
                           return std::to_string(c.servers) + "servers" +
                                  std::to_string(c.workers) + "workers" +
                                  (c.bf16_only ? "Bf16Only"
                                   : c.bf16    ? "Bf16"
                                               : "Fp32") +
                                  (c.overlap ? "Overlap" : "") + (c.staged ? "Staged" : "");
                         });

TEST(PsSyncSspTest, NeverReadsBeyondStalenessWithASlowWorker) {
  const int S = 2, D = 2, s = 2, steps = 10;
  Gate gate;
  std::vector<int64_t> lag;  // fast worker: clock - slow updates in what it read
  PsRun run = RunPsCluster(
      S, D, CountingServer(ps::Consistency::kSsp, s), [&](int w, Transport& t) -> Status {
        CountingBuffer b;
        PSZERO_RETURN_IF_ERROR(b.Build());
        PSZERO_ASSIGN_OR_RETURN(auto sync,
                                train::PsSync::Create(&b.params, &t, SyncOptions(w, D, S), 256));
        for (int step = 0; step < steps; ++step) {
          if (w == 0) {
            PSZERO_RETURN_IF_ERROR(
                CountingStep(b, *sync, step, -1.0f, [&] { gate.Set(gate.fast_pushed, step + 1); }));
            PSZERO_ASSIGN_OR_RETURN(int64_t slow, SlowUpdatesSeen(b.params, sync->clock()));
            lag.push_back(sync->clock() - slow);
          } else {
            // The slow worker starts step k only once the fast one is as far ahead as ssp
            // allows, so the fast one's pulls have to wait for it.
            if (!gate.WaitFor([&] { return gate.fast_pushed >= std::min(steps, step + s + 1); })) {
              return Status::DeadlineExceeded("fast worker stuck");
            }
            PSZERO_RETURN_IF_ERROR(CountingStep(b, *sync, step, -1000.0f, [] {}));
          }
        }
        return Status::Ok();
      });
  EXPECT_ALL_OK(run.workers);
  ASSERT_EQ(lag.size(), static_cast<size_t>(steps));
  EXPECT_EQ(*std::max_element(lag.begin(), lag.end()), s)
      << "the fast worker must have been held at exactly the staleness bound";
  for (const auto& st : run.servers) {
    EXPECT_EQ(st.rejected, 0) << st.last_error;
    EXPECT_EQ(st.max_served_staleness, s);
  }
}

TEST(PsSyncAspTest, FastWorkerFinishesWhileAWorkerFiveTimesSlowerLags) {
  const int S = 2, D = 2, steps = 10;
  Gate gate;
  int slow_when_fast_done = -1;
  PsRun run = RunPsCluster(
      S, D, CountingServer(ps::Consistency::kAsp, 0), [&](int w, Transport& t) -> Status {
        CountingBuffer b;
        PSZERO_RETURN_IF_ERROR(b.Build());
        PSZERO_ASSIGN_OR_RETURN(auto sync,
                                train::PsSync::Create(&b.params, &t, SyncOptions(w, D, S), 256));
        if (w == 0) {
          for (int step = 0; step < steps; ++step) {
            PSZERO_RETURN_IF_ERROR(CountingStep(b, *sync, step, -1.0f, [] {}));
            // Read-your-writes: every pull holds all of this worker's own updates.
            PSZERO_RETURN_IF_ERROR(SlowUpdatesSeen(b.params, sync->clock()).status());
            gate.Set(gate.fast_pushed, step + 1);
          }
          std::lock_guard lock(gate.mu);
          slow_when_fast_done = gate.slow_pushed;
          return Status::Ok();
        }
        // One step per five of the fast worker's, never ahead of it.
        for (int step = 0; step < steps / 5; ++step) {
          if (!gate.WaitFor([&] { return gate.fast_pushed >= 5 * (step + 1); })) {
            return Status::DeadlineExceeded("fast worker stuck");
          }
          PSZERO_RETURN_IF_ERROR(CountingStep(b, *sync, step, -1000.0f, [] {}));
          gate.Set(gate.slow_pushed, step + 1);
        }
        return Status::Ok();
      });
  EXPECT_ALL_OK(run.workers);
  EXPECT_GE(slow_when_fast_done, 0);
  EXPECT_LE(slow_when_fast_done, steps / 5);
}

// ---- configuration ----------------------------------------------------------------------

TEST(PsSyncConfigTest, WorkerWithAnotherSliceSizeIsRejectedNamingTheServer) {
  PsRun run = RunPsCluster(
      1, 1, CountingServer(ps::Consistency::kBsp, 0), [&](int w, Transport& t) -> Status {
        CountingBuffer b;
        PSZERO_RETURN_IF_ERROR(b.Build());
        // The server cuts 256-byte slices; this worker 512-byte ones.
        auto sync = train::PsSync::Create(&b.params, &t, SyncOptions(w, 1, 1), 512);
        if (sync.ok()) return Status::Internal("accepted");
        const Status& st = sync.status();
        if (st.code() != StatusCode::kInvalidArgument ||
            st.message().find("ps server 0") == std::string::npos ||
            st.message().find("--ps-slice-mb") == std::string::npos) {
          return Status::Internal("unexpected: " + st.ToString());
        }
        return Status::Ok();
      });
  EXPECT_ALL_OK(run.workers);
  ASSERT_EQ(run.servers.size(), 1u);
  EXPECT_GE(run.servers[0].rejected, 1);
}

TEST(PsSyncConfigTest, ServerConfigRoundTripsAndRejectsGarbage) {
  ps::ServerConfig c;
  c.slice_bytes = 123456;
  c.consistency = ps::Consistency::kSsp;
  c.staleness = 3;
  c.optimizer = "sgd";
  auto back = ps::ParseServerConfig(ps::EncodeServerConfig(c));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->slice_bytes, 123456);
  EXPECT_EQ(back->consistency, ps::Consistency::kSsp);
  EXPECT_EQ(back->staleness, 3);
  EXPECT_EQ(back->optimizer, "sgd");
  EXPECT_EQ(back->grad_accum, 1);
  // Without gradient accumulation the text is what it always was.
  EXPECT_EQ(ps::EncodeServerConfig(c).find("grad_accum"), std::string::npos);
  c.grad_accum = 4;
  back = ps::ParseServerConfig(ps::EncodeServerConfig(c));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->grad_accum, 4);
  EXPECT_FALSE(ps::ParseServerConfig("consistency=bsp").ok());
  EXPECT_FALSE(ps::ParseServerConfig("slice_bytes=x").ok());
  EXPECT_FALSE(ps::ParseServerConfig("slice_bytes=4096 consistency=eventual").ok());
  EXPECT_FALSE(ps::ParseServerConfig("slice_bytes").ok());
}

TEST(PsSyncConfigTest, MakePsSyncChecksServersAndTheirSliceSizes) {
  CountingBuffer b;
  ASSERT_TRUE(b.Build().ok());
  InMemoryKeyValueStore store;
  train::PsSyncOptions o = SyncOptions(0, 1, 0);
  o.timeout = milliseconds(2000);
  auto none = train::MakePsSync(&b.params, o, &store);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.status().message().find("--servers"), std::string::npos);

  ps::ServerConfig c;
  c.slice_bytes = 4096;
  ASSERT_TRUE(store.Set(ps::ServerConfigKey(0), ps::EncodeServerConfig(c)).ok());
  c.slice_bytes = 8192;
  ASSERT_TRUE(store.Set(ps::ServerConfigKey(1), ps::EncodeServerConfig(c)).ok());
  o.num_servers = 2;
  auto differ = train::MakePsSync(&b.params, o, &store);
  ASSERT_FALSE(differ.ok());
  EXPECT_EQ(differ.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(differ.status().message().find("--ps-slice-mb"), std::string::npos)
      << differ.status().ToString();

  c.slice_bytes = 4096;
  ASSERT_TRUE(store.Set(ps::ServerConfigKey(1), ps::EncodeServerConfig(c)).ok());
  o.num_servers = 3;  // server 2 never published
  auto missing = train::MakePsSync(&b.params, o, &store);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("ps server 2"), std::string::npos)
      << missing.status().ToString();

  // Servers that average over another number of micro-batches than the workers sum.
  c.grad_accum = 2;
  ASSERT_TRUE(store.Set(ps::ServerConfigKey(0), ps::EncodeServerConfig(c)).ok());
  o.num_servers = 1;
  auto accum = train::MakePsSync(&b.params, o, &store);
  ASSERT_FALSE(accum.ok());
  EXPECT_EQ(accum.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(accum.status().message().find("--grad-accum"), std::string::npos)
      << accum.status().ToString();
}

}  // namespace
}  // namespace pszero::testing
