// The parameter server as a real process (tests/ps/ps_server_peer.cc): a worker trains
// against it (through PsClient, then through PsSync built by MakePsSync from the server's
// published configuration), then the server is killed by pid and the worker must stop
// with Unavailable naming it within 5 s.
#include <signal.h>

#include <gtest/gtest.h>

#include "common/temp_dir.h"
#include "tests/common/process_transport_fixture.h"
#include "tests/support/subprocess.h"
#include "worker/ps/ps_client.h"
#include "worker/train/ps_sync.h"

namespace pszero::testing {
namespace {

using std::chrono::milliseconds;

class PsProcessTest : public ProcessTransportTest {};

TEST_F(PsProcessTest, KilledServerIsNamedWithinFiveSeconds) {
  std::unique_ptr<ChildProcess> server = ChildProcess::Spawn(
      {BinaryPath("ps_server_peer"), "--store", dir_.string(), "--prefix", "job", "--rank", "1",
       "--world", "2", "--slice-bytes", "4096", "--max-seconds", "100"});
  ASSERT_TRUE(server != nullptr && server->pid() > 0);
  const int64_t numel = 10'000;
  std::vector<float> params(numel, 1.0f), grads(numel, -2.0f);
  ps::PsClientOptions o;
  o.server_ranks = {1};
  o.slice_bytes = 4096;
  auto client = ps::PsClient::Create(transport_.get(), o, params, grads);
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  ASSERT_TRUE((*client)->Initialize(milliseconds(60000)).ok());
  ASSERT_TRUE((*client)->PushGradients(0, numel).ok());
  ASSERT_TRUE((*client)->EndStep().ok());
  Status step = (*client)->WaitAll(milliseconds(30000));
  ASSERT_TRUE(step.ok()) << step.ToString();
  for (float p : params) ASSERT_EQ(p, 3.0f);  // 1 - 1 * (-2)

  server->Signal(SIGKILL);
  ASSERT_TRUE(server->Wait(milliseconds(10000)));
  const auto killed_at = std::chrono::steady_clock::now();
  Status s = (*client)->PushGradients(0, numel);
  if (s.ok()) s = (*client)->EndStep();
  if (s.ok()) s = (*client)->WaitAll(milliseconds(30000));
  const auto elapsed = std::chrono::steady_clock::now() - killed_at;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("ps server 0 (transport rank 1)"), std::string::npos) << s.ToString();
  EXPECT_LT(elapsed, std::chrono::seconds(5)) << s.ToString();
}

// MakePsSync as pszero-worker calls it: the server's configuration and UCX address from
// the store (prefix "pszero/ps", servers first), a step through the hooks, then the server
// killed mid-job.
TEST(PsSyncProcessTest, KilledServerStopsTheStepNamingItWithinFiveSeconds) {
  auto dir = TempDir::Create("pszero_ps_sync");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  auto store = FileKeyValueStore::Create(dir->path());
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  std::unique_ptr<ChildProcess> server = ChildProcess::Spawn(
      {BinaryPath("ps_server_peer"), "--store", dir->path().string(), "--prefix", "pszero/ps",
       "--rank", "0", "--world", "2", "--slice-bytes", "4096", "--max-seconds", "100"});
  ASSERT_TRUE(server != nullptr && server->pid() > 0);

  MemoryTracker tracker;
  model::ParamBuffer params(0, 1);
  for (const char* unit : {"a", "b", "c"}) {
    params.BeginUnit(unit);
    model::ParamSpec spec;
    spec.name = std::string(unit) + ".w";
    spec.full_shape = {3000};
    spec.init = model::ParamInit::kOnes;
    ASSERT_TRUE(params.Add(spec).ok());
  }
  ASSERT_TRUE(params.Allocate(&tracker, false).ok());
  ASSERT_TRUE(params.Initialize(0).ok());
  train::PsSyncOptions o;
  o.num_servers = 1;
  o.num_workers = 1;
  auto sync = train::MakePsSync(&params, o, &*store);
  ASSERT_TRUE(sync.ok()) << sync.status().ToString() << "\n" << server->Output();
  EXPECT_EQ((*sync)->slice_map().num_slices(), 9000 * 4 / 4096 + 1);

  auto step = [&](int64_t k) -> Status {
    const int units = static_cast<int>(params.units().size());
    for (int u = 0; u < units; ++u) PSZERO_RETURN_IF_ERROR((*sync)->BeforeForward(u));
    float* g = params.grads().data<float>();
    std::fill(g, g + params.numel(), -2.0f);
    for (int u = units - 1; u >= 0; --u) PSZERO_RETURN_IF_ERROR((*sync)->GradientsReady(u));
    return (*sync)->Step(k);
  };
  Status first = step(1);
  ASSERT_TRUE(first.ok()) << first.ToString();
  for (int64_t i = 0; i < params.numel(); ++i) {
    ASSERT_EQ(params.params().data<float>()[i], 3.0f);  // SGD lr 1: 1 - (-2)
  }
  EXPECT_EQ((*sync)->bytes_sent_last_step(), params.numel() * 4);
  EXPECT_EQ((*sync)->bytes_received_last_step(), params.numel() * 4);

  server->Signal(SIGKILL);
  ASSERT_TRUE(server->Wait(milliseconds(10000)));
  const auto killed_at = std::chrono::steady_clock::now();
  Status s = step(2);
  const auto elapsed = std::chrono::steady_clock::now() - killed_at;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("ps server 0 (transport rank 0)"), std::string::npos) << s.ToString();
  EXPECT_LT(elapsed, std::chrono::seconds(5)) << s.ToString();
}

// pszero-server's own flags follow the flag contract: exit 2 and one line naming the flag.
TEST(PsServerFlagsTest, BadValueExitsTwoNamingTheFlag) {
  for (const auto& [flag, value] :
       {std::pair{"--consistency", "eventual"}, std::pair{"--staleness", "-1"},
        std::pair{"--optimizer", "lamb"}, std::pair{"--ps-slice-mb", "0"}}) {
    ProcessResult r = RunProcess({BinaryPath("pszero-server"), "--master-port", "1", flag, value},
                                 std::chrono::seconds(30));
    EXPECT_EQ(r.exit_code, 2) << flag << ": " << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
  }
  ProcessResult help =
      RunProcess({BinaryPath("pszero-server"), "--help"}, std::chrono::seconds(30));
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--consistency", "--staleness", "--ps-slice-mb", "--optimizer"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
}

}  // namespace
}  // namespace pszero::testing
