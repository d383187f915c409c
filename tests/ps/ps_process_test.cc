// The parameter server as a real process (tests/ps/ps_server_peer.cc): a worker trains
// against it, then the server is killed by pid and the worker must stop with Unavailable
// naming it within 5 s.
#include <signal.h>

#include <gtest/gtest.h>

#include "tests/common/process_transport_fixture.h"
#include "tests/support/subprocess.h"
#include "worker/ps/ps_client.h"

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
