// The parameter server with ranks as threads: slice map balance, bsp bit-identical to a
// serial ascending-rank fp32 sum + AdamW, ssp never beyond its staleness with a slow
// worker, asp making progress past a slow worker, bad pushes rejected while serving.
#include <gtest/gtest.h>

#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <numeric>

#include "common/half.h"
#include "kernels/optimizer.h"
#include "tests/ps/ps_test_util.h"

namespace pszero::testing {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kTimeout{20000};

TEST(SliceMapTest, BalancedDeterministicAndCovering) {
  for (int64_t numel : {1, 7, 1000, 1 << 20, (1 << 22) + 13, 50'000'000}) {
    for (int64_t slice_bytes : {int64_t{64}, int64_t{4} << 20}) {
      for (int servers : {1, 2, 3, 4, 7}) {
        auto map = ps::SliceMap::Create(numel, slice_bytes, servers);
        ASSERT_TRUE(map.ok()) << map.status().ToString();
        auto again = ps::SliceMap::Create(numel, slice_bytes, servers);
        ASSERT_EQ(map->num_slices(), again->num_slices());
        int64_t next = 0;
        int64_t biggest = 0;
        for (const ps::Slice& s : map->slices()) {
          EXPECT_EQ(s.begin, next);
          EXPECT_GT(s.numel, 0);
          EXPECT_EQ(s.server, again->slice(s.index).server);
          next += s.numel;
          biggest = std::max(biggest, s.numel);
        }
        EXPECT_EQ(next, numel);
        // At most ~slice_bytes per slice, or numel/servers when that is larger.
        EXPECT_LE(biggest * 4,
                  std::max<int64_t>(slice_bytes, 4 * ((numel + servers - 1) / servers)) + 64);
        const double mean = static_cast<double>(numel) / servers;
        for (int s = 0; s < servers; ++s) {
          EXPECT_LE(std::abs(static_cast<double>(map->ServerNumel(s)) - mean),
                    static_cast<double>(biggest))
              << "numel " << numel << " servers " << servers << " server " << s;
          if (numel >= servers) {
            EXPECT_GT(map->ServerNumel(s), 0);
          }
        }
      }
    }
  }
  auto map = ps::SliceMap::Create(1000, 400, 2);
  ASSERT_TRUE(map.ok());
  EXPECT_EQ(map->SlicesInside(0, 1000), std::make_pair(0, map->num_slices()));
  EXPECT_EQ(map->SlicesInside(1, 2), std::make_pair(0, 0));
  EXPECT_EQ(map->SlicesTouching(1, 2), std::make_pair(0, 1));
  EXPECT_FALSE(ps::SliceMap::Create(0, 400, 2).ok());
}

// Gradient of worker w at step t: depends on the parameters, so that any difference in
// the parameters a worker pulled shows up in the final bits.
float Grad(int w, int t, int64_t i, float p) {
  const uint32_t h =
      static_cast<uint32_t>(i * 2654435761u) ^ static_cast<uint32_t>(w * 40503 + t * 9973);
  return 0.5f * p + static_cast<float>(static_cast<int32_t>(h % 2001) - 1000) * 1e-3f;
}

struct BspCase {
  int servers;
  int workers;
};

class BspTest : public ::testing::TestWithParam<BspCase> {};

TEST_P(BspTest, BitIdenticalToSerialAscendingSumAndAdamW) {
  const int S = GetParam().servers;
  const int D = GetParam().workers;
  const int64_t numel = 70'001;          // a ragged last slice
  const int64_t slice_bytes = 64 << 10;  // several slices per server, rendezvous-sized
  const int steps = 3;
  ps::PsServerOptions so;
  so.slice_bytes = slice_bytes;
  so.optimizer = ps::OptimizerKind::kAdamW;
  so.consistency = ps::Consistency::kBsp;

  std::vector<float> init(static_cast<size_t>(numel));
  for (int64_t i = 0; i < numel; ++i)
    init[static_cast<size_t>(i)] = std::sin(0.001f * static_cast<float>(i));

  // Reference: serial sum over workers in ascending order, in fp32, then AdamW.
  std::vector<float> ref = init, m(init.size(), 0.f), v(init.size(), 0.f), sum(init.size());
  for (int t = 0; t < steps; ++t) {
    for (int64_t i = 0; i < numel; ++i) {
      float acc = 0.0f;
      for (int w = 0; w < D; ++w) acc += Grad(w, t, i, ref[static_cast<size_t>(i)]);
      sum[static_cast<size_t>(i)] = acc;
    }
    kernels::AdamWParams hp;
    hp.step = t + 1;
    hp.grad_scale = 1.0f / static_cast<float>(D);
    ASSERT_TRUE(kernels::AdamW(hp, ref.data(), sum.data(), DType::kFloat32, m.data(), v.data(),
                               nullptr, numel, kernels::KernelContext::Host())
                    .ok());
  }

  std::vector<std::vector<float>> finals(static_cast<size_t>(D));
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    std::vector<float> params(static_cast<size_t>(numel), w == 0 ? 0.0f : -1.0f);
    if (w == 0) params = init;
    std::vector<float> grads(params.size());
    auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, slice_bytes), params, grads);
    if (!client.ok()) return client.status();
    PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
    for (int step = 0; step < steps; ++step) {
      // Backward produces buckets from the end of the buffer, in sizes unrelated to slices.
      int64_t end = numel;
      const int64_t bucket = 9'999 + 1'000 * w;
      while (end > 0) {
        const int64_t begin = std::max<int64_t>(0, end - bucket);
        for (int64_t i = begin; i < end; ++i) {
          grads[static_cast<size_t>(i)] = Grad(w, step, i, params[static_cast<size_t>(i)]);
        }
        PSZERO_RETURN_IF_ERROR((*client)->PushGradients(begin, end));
        end = begin;
      }
      PSZERO_RETURN_IF_ERROR((*client)->EndStep());
      // The next forward waits layer by layer for the prefetched parameters.
      for (int64_t layer = 0; layer < numel; layer += 7'000) {
        PSZERO_RETURN_IF_ERROR(
            (*client)->WaitParams(layer, std::min<int64_t>(layer + 7'000, numel), kTimeout));
      }
      PSZERO_RETURN_IF_ERROR((*client)->WaitAll(kTimeout));
    }
    finals[static_cast<size_t>(w)] = params;
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  for (int w = 0; w < D; ++w) {
    ASSERT_EQ(finals[static_cast<size_t>(w)].size(), ref.size()) << "worker " << w;
    EXPECT_EQ(std::memcmp(finals[static_cast<size_t>(w)].data(), ref.data(), ref.size() * 4), 0)
        << "worker " << w << " differs from the serial reference";
  }
  int64_t pushes = 0;
  for (const auto& s : run.servers) {
    pushes += s.pushes;
    EXPECT_EQ(s.rejected, 0) << s.last_error;
  }
  auto map = ps::SliceMap::Create(numel, slice_bytes, S);
  EXPECT_EQ(pushes, int64_t{steps} * D * map->num_slices());
}

INSTANTIATE_TEST_SUITE_P(ServersWorkers, BspTest,
                         ::testing::Values(BspCase{1, 2}, BspCase{1, 4}, BspCase{2, 2},
                                           BspCase{2, 4}),
                         [](const auto& info) {
                           return "S" + std::to_string(info.param.servers) + "D" +
                                  std::to_string(info.param.workers);
                         });

// Fast worker 0 pushes -1, slow worker 1 pushes -1000 per element per step; SGD with
// lr 1 and scale 1 makes every parameter n_fast + 1000 n_slow (exact in fp32), so each
// pull shows how many of each worker's updates it contains.
struct Progress {
  std::mutex mu;
  std::condition_variable cv;
  int fast_pushed = 0;
  int slow_pushed = 0;
  int fast_done = 0;
  void Set(int& field, int value) {
    {
      std::lock_guard<std::mutex> lock(mu);
      field = value;
    }
    cv.notify_all();
  }
  // Waits (bounded) until pred holds; false on timeout.
  template <typename Pred>
  bool WaitFor(Pred pred) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, kTimeout, pred);
  }
};

ps::PsServerOptions CountingServer(ps::Consistency c, int staleness) {
  ps::PsServerOptions so;
  so.slice_bytes = 256;
  so.consistency = c;
  so.staleness = staleness;
  so.optimizer = ps::OptimizerKind::kSgd;
  so.sgd.lr = 1.0f;
  so.sgd.momentum = 0.0f;
  so.grad_scale = 1.0f;
  return so;
}

// Steps of one worker: push `value` everywhere, end the step, wait for the pull, then
// `after_step`.
Status CountingSteps(ps::PsClient& client, std::vector<float>& params, std::vector<float>& grads,
                     float value, int steps, const std::function<Status(int)>& before_step,
                     const std::function<Status(int)>& after_step) {
  for (int step = 0; step < steps; ++step) {
    PSZERO_RETURN_IF_ERROR(before_step(step));
    std::fill(grads.begin(), grads.end(), value);
    PSZERO_RETURN_IF_ERROR(client.PushGradients(0, static_cast<int64_t>(grads.size())));
    PSZERO_RETURN_IF_ERROR(client.EndStep());
    PSZERO_RETURN_IF_ERROR(client.WaitAll(kTimeout));
    PSZERO_RETURN_IF_ERROR(after_step(step));
    (void)params;
  }
  return Status::Ok();
}

Status CheckCounts(const std::vector<float>& params, int64_t clock, int staleness, int* min_slow) {
  *min_slow = 1 << 30;
  for (size_t i = 0; i < params.size(); ++i) {
    const auto p = static_cast<int64_t>(params[i]);
    const int64_t slow = p / 1000;
    const int64_t fast = p % 1000;
    if (fast < clock) {
      return Status::Internal("element " + std::to_string(i) +
                              " misses the worker's own updates: " + std::to_string(fast) +
                              " < clock " + std::to_string(clock));
    }
    if (staleness >= 0 && slow < clock - staleness) {
      return Status::Internal("element " + std::to_string(i) + " at clock " +
                              std::to_string(clock) + " has only " + std::to_string(slow) +
                              " slow updates (staleness " + std::to_string(staleness) + ")");
    }
    *min_slow = std::min<int>(*min_slow, static_cast<int>(slow));
  }
  return Status::Ok();
}

TEST(SspTest, NeverReadsBeyondStalenessWithASlowWorker) {
  const int S = 2, D = 2, s = 2, steps = 10;
  const int64_t numel = 200;  // 4 slices of 256 bytes on 2 servers
  Progress progress;
  PsRun run = RunPsCluster(
      S, D, CountingServer(ps::Consistency::kSsp, s), [&](int w, Transport& t) -> Status {
        std::vector<float> params(numel, 0.0f), grads(numel);
        auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, 256), params, grads);
        if (!client.ok()) return client.status();
        PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
        auto none = [](int) { return Status::Ok(); };
        if (w == 0) {
          for (int step = 0; step < steps; ++step) {
            std::fill(grads.begin(), grads.end(), -1.0f);
            PSZERO_RETURN_IF_ERROR((*client)->PushGradients(0, numel));
            PSZERO_RETURN_IF_ERROR((*client)->EndStep());
            progress.Set(progress.fast_pushed, step + 1);
            PSZERO_RETURN_IF_ERROR((*client)->WaitAll(kTimeout));
            int min_slow = 0;
            PSZERO_RETURN_IF_ERROR(CheckCounts(params, (*client)->clock(), s, &min_slow));
          }
          return Status::Ok();
        }
        // The slow worker runs a step only once the fast one is as far ahead as ssp allows
        // (its next pull must be waiting for this worker).
        return CountingSteps(
            **client, params, grads, -1000.0f, steps,
            [&](int step) {
              if (!progress.WaitFor(
                      [&] { return progress.fast_pushed >= std::min(steps, step + s + 1); })) {
                return Status::DeadlineExceeded("fast worker stuck");
              }
              return Status::Ok();
            },
            none);
      });
  EXPECT_ALL_OK(run.workers);
  for (const auto& st : run.servers) {
    EXPECT_EQ(st.rejected, 0) << st.last_error;
    // The bound was reached (the slow worker really held the fast one back) and never passed.
    EXPECT_EQ(st.max_served_staleness, s);
  }
}

TEST(AspTest, FastWorkerFinishesWhileAWorkerFiveTimesSlowerLags) {
  const int S = 2, D = 2, steps = 10;
  const int64_t numel = 200;
  Progress progress;
  int slow_when_fast_done = -1;
  PsRun run = RunPsCluster(
      S, D, CountingServer(ps::Consistency::kAsp, 0), [&](int w, Transport& t) -> Status {
        std::vector<float> params(numel, 0.0f), grads(numel);
        auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, 256), params, grads);
        if (!client.ok()) return client.status();
        PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
        auto none = [](int) { return Status::Ok(); };
        if (w == 0) {
          PSZERO_RETURN_IF_ERROR(
              CountingSteps(**client, params, grads, -1.0f, steps, none, [&](int step) {
                progress.Set(progress.fast_pushed, step + 1);
                return Status::Ok();
              }));
          int min_slow = 0;
          PSZERO_RETURN_IF_ERROR(CheckCounts(params, steps, -1, &min_slow));
          {
            std::lock_guard<std::mutex> lock(progress.mu);
            slow_when_fast_done = progress.slow_pushed;
          }
          progress.Set(progress.fast_done, 1);
          // Once the slow worker is done too, everything of both is on the servers.
          if (!progress.WaitFor([&] { return progress.slow_pushed == steps / 5; })) {
            return Status::DeadlineExceeded("slow worker stuck");
          }
          for (int i = 0; i < (*client)->map().num_slices(); ++i)
            PSZERO_RETURN_IF_ERROR((*client)->PullSlice(i));
          PSZERO_RETURN_IF_ERROR((*client)->WaitAll(kTimeout));
          for (float p : params) {
            if (p != static_cast<float>(steps + 1000 * (steps / 5))) {
              return Status::Internal("final parameter " + std::to_string(p));
            }
          }
          return Status::Ok();
        }
        // One step per five of the fast worker's.
        return CountingSteps(
            **client, params, grads, -1000.0f, steps / 5,
            [&](int step) {
              if (!progress.WaitFor([&] { return progress.fast_pushed >= 5 * (step + 1); })) {
                return Status::DeadlineExceeded("fast worker stuck");
              }
              return Status::Ok();
            },
            [&](int step) {
              progress.Set(progress.slow_pushed, step + 1);
              return Status::Ok();
            });
      });
  EXPECT_ALL_OK(run.workers);
  // The fast worker finished all its steps while the slow one had done at most 2 of them.
  EXPECT_GE(slow_when_fast_done, 0);
  EXPECT_LE(slow_when_fast_done, steps / 5);
}

TEST(BadInputTest, BadPushesRejectedWhileServingOthers) {
  const int S = 1, D = 2;
  const int64_t numel = 100;
  ps::PsServerOptions so = CountingServer(ps::Consistency::kBsp, 0);
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    std::vector<float> params(numel, 0.0f), grads(numel);
    auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, 256), params, grads);
    if (!client.ok()) return client.status();
    PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
    if (w == 0) {
      std::vector<float> junk(1000, 1.0f);
      struct Bad {
        const char* what;
        std::function<void(ps::RequestHeader&)> edit;
        size_t bytes;
        const char* expect;
      };
      const Bad bads[] = {
          {"slice id", [](ps::RequestHeader& h) { h.slice = 99; }, 256, "slice 99"},
          {"size", [](ps::RequestHeader&) {}, 12, "push of 12 bytes"},
          {"dtype", [](ps::RequestHeader& h) { h.dtype = static_cast<uint8_t>(DType::kBFloat16); },
           256, "dtype bf16 does not match key space 0's fp32"},
          {"wire dtype",
           [](ps::RequestHeader& h) { h.dtype = static_cast<uint8_t>(DType::kInt32); }, 256,
           "a key space is fp32 or bf16"},
          {"worker", [](ps::RequestHeader& h) { h.worker = 7; }, 256, "worker 7"},
      };
      for (const Bad& bad : bads) {
        ps::RequestHeader h = (*client)->Header(0);
        bad.edit(h);
        Status st = (*client)->SendRawPush(0, h, junk.data(), bad.bytes, kTimeout);
        if (st.code() != StatusCode::kInvalidArgument ||
            st.message().find(bad.expect) == std::string::npos ||
            st.message().find("ps server 0") == std::string::npos) {
          return Status::Internal(std::string("bad ") + bad.what + " gave: " + st.ToString());
        }
      }
    }
    // Both workers still train: one bsp step sums -1 - 2 = -3, SGD lr 1 adds 3.
    std::fill(grads.begin(), grads.end(), -1.0f - static_cast<float>(w));
    PSZERO_RETURN_IF_ERROR((*client)->PushGradients(0, numel));
    PSZERO_RETURN_IF_ERROR((*client)->EndStep());
    PSZERO_RETURN_IF_ERROR((*client)->WaitAll(kTimeout));
    for (float p : params) {
      if (p != 3.0f) return Status::Internal("parameter " + std::to_string(p) + " after the step");
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  ASSERT_EQ(run.servers.size(), 1u);
  EXPECT_EQ(run.servers[0].rejected, 5);
}

// A bf16 key space (mixed precision): 2-byte pushes and pulls, the fp32 master on the
// server. D = 9 workers push random bf16 gradients; under bsp the server sums them in fp32
// in ascending worker order and rounds once (more workers than one kernels::Sum call takes,
// so through its fp32 sum), and with --optimizer none the master becomes that sum: every
// worker pulls the serial reference's bits. A push in fp32 to the bf16 key space is
// rejected to that client, and the job goes on.
TEST(Bf16KeySpaceTest, NineWorkersSumInFp32RoundOnceAndRejectAnFp32Push) {
  const int S = 2, D = 9;
  const int64_t numel = 1000;
  auto grad = [](int w, int64_t i) {
    // Spread over several binades, so that rounding partial sums would differ.
    const float x = std::sin(static_cast<float>(i * 31 + w * 7)) * std::ldexp(1.0f, (w + i) % 9);
    return bf16_t{FloatToBf16Bits(x)};
  };
  std::vector<uint16_t> want(static_cast<size_t>(numel));
  for (int64_t i = 0; i < numel; ++i) {
    float sum = Bf16BitsToFloat(grad(0, i).bits);
    for (int w = 1; w < D; ++w) sum += Bf16BitsToFloat(grad(w, i).bits);
    want[static_cast<size_t>(i)] = FloatToBf16Bits(sum);
  }
  ps::PsServerOptions so;
  so.slice_bytes = 256;
  so.optimizer = ps::OptimizerKind::kNone;
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    std::vector<bf16_t> params(numel), grads(numel);
    for (int64_t i = 0; i < numel; ++i) grads[static_cast<size_t>(i)] = grad(w, i);
    ps::PsClientOptions o = ClientOptions(w, D, S, so.slice_bytes);
    o.dtype = DType::kBFloat16;
    PSZERO_ASSIGN_OR_RETURN(auto client,
                            ps::PsClient::Create(&t, o, params.data(), grads.data(), numel));
    // A bf16 key space starts from fp32 values: none given is refused.
    if (w == 0 && (*client).Initialize(kTimeout).ok()) {
      return Status::Internal("initialized a bf16 key space without fp32 values");
    }
    const std::vector<float> initial(numel, 0.25f);
    PSZERO_RETURN_IF_ERROR(client->Initialize(kTimeout, initial));
    for (const bf16_t& p : params) {
      if (p.bits != FloatToBf16Bits(0.25f)) return Status::Internal("initial pull differs");
    }
    if (w == 0) {
      std::vector<float> fp32(static_cast<size_t>(client->map().slice(0).numel), 1.0f);
      ps::RequestHeader h = client->Header(0);
      h.dtype = static_cast<uint8_t>(DType::kFloat32);
      Status st = client->SendRawPush(0, h, fp32.data(), fp32.size() * 4, kTimeout);
      if (st.code() != StatusCode::kInvalidArgument ||
          st.message().find("dtype fp32 does not match key space 0's bf16") == std::string::npos) {
        return Status::Internal("fp32 push to a bf16 key space gave: " + st.ToString());
      }
    }
    PSZERO_RETURN_IF_ERROR(client->PushGradients(0, numel));
    PSZERO_RETURN_IF_ERROR(client->EndStep());
    PSZERO_RETURN_IF_ERROR(client->WaitAll(kTimeout));
    if (client->stats().push_bytes != numel * 2 || client->stats().pull_bytes != 2 * numel * 2) {
      return Status::Internal("bf16 payloads: pushed " +
                              std::to_string(client->stats().push_bytes) + ", pulled " +
                              std::to_string(client->stats().pull_bytes));
    }
    for (int64_t i = 0; i < numel; ++i) {
      if (params[static_cast<size_t>(i)].bits != want[static_cast<size_t>(i)]) {
        return Status::Internal("element " + std::to_string(i) + " differs from the serial sum");
      }
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  int64_t rejected = 0;
  for (const auto& s : run.servers) rejected += s.rejected;
  EXPECT_EQ(rejected, 1);
}

}  // namespace
}  // namespace pszero::testing
