// The servers' state messages (checkpoints of --sync ps) with ranks as threads:
//  * state read after k bsp steps gives exactly the serial reference's params, m and v
//    (ascending-rank fp32 sum + AdamW), from every worker;
//  * fresh servers given that state by a state write (clock k), with every worker resumed
//    at k, continue bit for bit like the uninterrupted run (AdamW's bias correction
//    continues at step k + 1), and the servers keep their parameters equal to the workers';
//  * bad state reads and writes are rejected to that client while the server serves on.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kernels/optimizer.h"
#include "tests/ps/ps_test_util.h"

namespace pszero::testing {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kTimeout{20000};

constexpr int64_t kNumel = 70'001;         // a ragged last slice
constexpr int64_t kSliceBytes = 64 << 10;  // several slices per server, rendezvous-sized

float Grad(int w, int t, int64_t i, float p) {
  const uint32_t h =
      static_cast<uint32_t>(i * 2654435761u) ^ static_cast<uint32_t>(w * 40503 + t * 9973);
  return 0.5f * p + static_cast<float>(static_cast<int32_t>(h % 2001) - 1000) * 1e-3f;
}

struct State {
  std::vector<float> p, m, v;
};

// Serial reference: `steps` bsp steps of D workers from `init`.
State Reference(const std::vector<float>& init, int D, int steps) {
  State s{init, std::vector<float>(init.size(), 0.f), std::vector<float>(init.size(), 0.f)};
  std::vector<float> sum(init.size());
  for (int t = 0; t < steps; ++t) {
    for (size_t i = 0; i < init.size(); ++i) {
      float acc = 0.0f;
      for (int w = 0; w < D; ++w) acc += Grad(w, t, static_cast<int64_t>(i), s.p[i]);
      sum[i] = acc;
    }
    kernels::AdamWParams hp;
    hp.step = t + 1;
    hp.grad_scale = 1.0f / static_cast<float>(D);
    EXPECT_TRUE(kernels::AdamW(hp, s.p.data(), sum.data(), DType::kFloat32, s.m.data(), s.v.data(),
                               nullptr, static_cast<int64_t>(init.size()),
                               kernels::KernelContext::Host())
                    .ok());
  }
  return s;
}

// Steps [first, last) of worker w: push the whole gradient, pull, wait.
Status Steps(ps::PsClient& client, int w, int first, int last, std::vector<float>& params,
             std::vector<float>& grads) {
  for (int t = first; t < last; ++t) {
    for (int64_t i = 0; i < kNumel; ++i) {
      grads[static_cast<size_t>(i)] = Grad(w, t, i, params[static_cast<size_t>(i)]);
    }
    PSZERO_RETURN_IF_ERROR(client.PushGradients(0, kNumel));
    PSZERO_RETURN_IF_ERROR(client.EndStep());
    PSZERO_RETURN_IF_ERROR(client.WaitAll(kTimeout));
  }
  return Status::Ok();
}

bool Same(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

class StateTest : public ::testing::TestWithParam<int> {};  // S

TEST_P(StateTest, ReadAfterTwoStepsThenWriteToFreshServersContinuesBitForBit) {
  const int S = GetParam();
  const int D = 2;
  ps::PsServerOptions so;
  so.slice_bytes = kSliceBytes;
  std::vector<float> init(static_cast<size_t>(kNumel));
  for (int64_t i = 0; i < kNumel; ++i) init[static_cast<size_t>(i)] = std::sin(0.001f * i);
  const State ref2 = Reference(init, D, 2);
  const State ref4 = Reference(init, D, 4);

  // Cluster A: 2 steps, every worker reads the state, 2 more steps.
  std::vector<State> read(static_cast<size_t>(D));
  std::vector<std::vector<float>> uninterrupted(static_cast<size_t>(D));
  PsRun a = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    std::vector<float> params = init, grads(init.size());
    auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, kSliceBytes), params, grads);
    if (!client.ok()) return client.status();
    PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
    PSZERO_RETURN_IF_ERROR(Steps(**client, w, 0, 2, params, grads));
    State& s = read[static_cast<size_t>(w)];
    s = {std::vector<float>(init.size()), std::vector<float>(init.size()),
         std::vector<float>(init.size())};
    PSZERO_RETURN_IF_ERROR((*client)->ReadState(s.p, s.m, s.v, kTimeout));
    if (!Same(s.p, params)) return Status::Internal("servers' params differ from the pulled ones");
    PSZERO_RETURN_IF_ERROR(Steps(**client, w, 2, 4, params, grads));
    uninterrupted[static_cast<size_t>(w)] = params;
    return Status::Ok();
  });
  EXPECT_ALL_OK(a.workers);
  for (int w = 0; w < D; ++w) {
    const State& s = read[static_cast<size_t>(w)];
    EXPECT_TRUE(Same(s.p, ref2.p)) << "worker " << w;
    EXPECT_TRUE(Same(s.m, ref2.m)) << "worker " << w;
    EXPECT_TRUE(Same(s.v, ref2.v)) << "worker " << w;
    EXPECT_TRUE(Same(uninterrupted[static_cast<size_t>(w)], ref4.p)) << "worker " << w;
  }

  // Cluster B: fresh servers initialized with other values, the state of step 2 written by
  // worker 0, every worker resumed at 2; steps 3 and 4 end where A ended.
  std::vector<std::vector<float>> resumed(static_cast<size_t>(D));
  PsRun b = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    std::vector<float> params(init.size(), 0.25f), grads(init.size());
    auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, kSliceBytes), params, grads);
    if (!client.ok()) return client.status();
    PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
    if (w == 0) PSZERO_RETURN_IF_ERROR((*client)->WriteState(ref2.p, ref2.m, ref2.v, 2, kTimeout));
    PSZERO_RETURN_IF_ERROR((*client)->ResumeAt(2, kTimeout));
    if (!Same(params, ref2.p)) return Status::Internal("resumed parameters differ");
    PSZERO_RETURN_IF_ERROR(Steps(**client, w, 2, 4, params, grads));
    resumed[static_cast<size_t>(w)] = params;
    return Status::Ok();
  });
  EXPECT_ALL_OK(b.workers);
  for (int w = 0; w < D; ++w) {
    EXPECT_TRUE(Same(resumed[static_cast<size_t>(w)], ref4.p)) << "worker " << w;
  }
  for (const auto& s : b.servers) EXPECT_EQ(s.rejected, 0) << s.last_error;
}

INSTANTIATE_TEST_SUITE_P(Servers, StateTest, ::testing::Values(1, 2),
                         [](const auto& info) { return std::to_string(info.param) + "servers"; });

TEST(StateBadInputTest, BadStateRequestsRejectedWhileServingOthers) {
  const int S = 1, D = 2;
  const int64_t numel = 100;
  ps::PsServerOptions so;
  so.slice_bytes = 256;
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    std::vector<float> params(numel, 0.0f), grads(numel);
    auto client = ps::PsClient::Create(&t, ClientOptions(w, D, S, 256), params, grads);
    if (!client.ok()) return client.status();
    PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
    if (w == 0) {
      std::vector<float> junk(1000, 1.0f);
      struct Bad {
        const char* what;
        uint16_t am;
        std::function<void(ps::RequestHeader&)> edit;
        size_t bytes;
        const char* expect;
      };
      const Bad bads[] = {
          {"write slice id", ps::kAmStateWrite, [](ps::RequestHeader& h) { h.slice = 99; }, 768,
           "slice 99"},
          {"write size", ps::kAmStateWrite, [](ps::RequestHeader&) {}, 256,
           "state write of 256 bytes"},
          {"write clock", ps::kAmStateWrite, [](ps::RequestHeader& h) { h.clock = -3; }, 768,
           "negative clock"},
          {"write dtype", ps::kAmStateWrite,
           [](ps::RequestHeader& h) { h.dtype = static_cast<uint8_t>(DType::kBFloat16); }, 768,
           "dtype"},
          {"read slice id", ps::kAmStateRead, [](ps::RequestHeader& h) { h.slice = 99; }, 0,
           "slice 99"},
          {"read worker", ps::kAmStateRead, [](ps::RequestHeader& h) { h.worker = 7; }, 0,
           "worker 7"},
      };
      for (const Bad& bad : bads) {
        ps::RequestHeader h = (*client)->Header(0);
        bad.edit(h);
        Status st = (*client)->SendRaw(0, bad.am, h, junk.data(), bad.bytes, kTimeout);
        if (st.code() != StatusCode::kInvalidArgument ||
            st.message().find(bad.expect) == std::string::npos ||
            st.message().find("ps server 0") == std::string::npos) {
          return Status::Internal(std::string("bad ") + bad.what + " gave: " + st.ToString());
        }
      }
    }
    // Both workers still train and read the state.
    std::fill(grads.begin(), grads.end(), 1.0f);
    PSZERO_RETURN_IF_ERROR((*client)->PushGradients(0, numel));
    PSZERO_RETURN_IF_ERROR((*client)->EndStep());
    PSZERO_RETURN_IF_ERROR((*client)->WaitAll(kTimeout));
    std::vector<float> p(numel), m(numel), v(numel);
    PSZERO_RETURN_IF_ERROR((*client)->ReadState(p, m, v, kTimeout));
    if (!Same(p, params) || m[0] == 0.0f || v[0] == 0.0f) {
      return Status::Internal("state after the step is not the trained one");
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  ASSERT_EQ(run.servers.size(), 1u);
  EXPECT_EQ(run.servers[0].rejected, 6);
}

TEST(StateBadInputTest, ServersWithoutAdamWRefuseStateNamingTheOptimizer) {
  ps::PsServerOptions so;
  so.slice_bytes = 256;
  so.optimizer = ps::OptimizerKind::kSgd;
  PsRun run = RunPsCluster(1, 1, so, [&](int, Transport& t) -> Status {
    std::vector<float> params(100, 0.0f), grads(100), m(100), v(100);
    auto client = ps::PsClient::Create(&t, ClientOptions(0, 1, 1, 256), params, grads);
    if (!client.ok()) return client.status();
    PSZERO_RETURN_IF_ERROR((*client)->Initialize(kTimeout));
    Status read = (*client)->ReadState(params, m, v, kTimeout);
    Status write = (*client)->WriteState(params, m, v, 1, kTimeout);
    for (const Status& st : {read, write}) {
      if (st.code() != StatusCode::kInvalidArgument ||
          st.message().find("--optimizer sgd") == std::string::npos) {
        return Status::Internal("sgd server answered: " + st.ToString());
      }
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
}

}  // namespace
}  // namespace pszero::testing
