// Faults through the real binaries: a worker killed with SIGKILL in a barrier fails the
// job, every survivor reports the lost peer by role and rank and exits on its own, and
// the launcher names the dead process and its signal; a worker with the wrong token (or
// none) is refused and exits with its own code.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/exit_codes.h"
#include "tests/launch/rendezvous_test_util.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

ProcessResult RunClean(const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  for (const char* v : {"PSZERO_TOKEN", "PSZERO_FAULT_INJECT", "PSZERO_MASTER_PORT"}) {
    ::unsetenv(v);
  }
  return RunProcess(argv, std::chrono::seconds(90), env);
}

TEST(LaunchFaultTest, KilledWorkerFailsTheJobAndEverySurvivorNamesIt) {
  ProcessResult r =
      RunClean({BinaryPath("pszero-launch"), "--servers", "1", "--workers", "4", "--timeout", "60"},
               {"PSZERO_FAULT_INJECT=sigkill:w2:published"});
  EXPECT_EQ(r.exit_code, kExitFailure) << r.err;
  EXPECT_FALSE(r.timed_out);
  EXPECT_NE(r.err.find("job failed: worker 2 (pid "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("was killed by signal 9 (SIGKILL)"), std::string::npos) << r.err;
  for (const char* tag : {"[s0]", "[w0]", "[w1]", "[w3]"}) {
    bool reported = false;
    std::istringstream lines(r.err);
    for (std::string line; std::getline(lines, line);) {
      reported = reported || (line.rfind(tag, 0) == 0 &&
                              line.find("stopping: worker 2 lost") != std::string::npos);
    }
    EXPECT_TRUE(reported) << tag << " did not report the lost worker:\n" << r.err;
  }
  // The survivors exited on their own with the peer-lost code, not by the launcher's hand.
  EXPECT_EQ(r.err.find("sending SIGTERM"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 3"), std::string::npos) << r.err;
}

// Worker 2 hangs (SIGSTOP) in a barrier: its heartbeats stop, the service declares it
// lost, the survivors exit on their own, and the launcher kills the hung process after
// the grace period and names it with the reason.
TEST(LaunchFaultTest, HungWorkerIsLostByHeartbeatAndKilled) {
  ProcessResult r =
      RunClean({BinaryPath("pszero-launch"), "--servers", "1", "--workers", "3", "--heartbeat-ms",
                "100", "--heartbeat-timeout-ms", "1000", "--grace-ms", "200", "--timeout", "60"},
               {"PSZERO_FAULT_INJECT=sigstop:w2:published"});
  EXPECT_EQ(r.exit_code, kExitFailure) << r.err;
  EXPECT_NE(r.err.find("job failed: worker 2 lost: no heartbeat"), std::string::npos) << r.err;
  for (const char* tag : {"[s0]", "[w0]", "[w1]"}) {
    bool reported = false;
    std::istringstream lines(r.err);
    for (std::string line; std::getline(lines, line);) {
      reported =
          reported || (line.rfind(tag, 0) == 0 &&
                       line.find("stopping: worker 2 lost: no heartbeat") != std::string::npos);
    }
    EXPECT_TRUE(reported) << tag << " did not report the hung worker:\n" << r.err;
  }
  EXPECT_NE(r.err.find("worker 2 (pid"), std::string::npos);
  EXPECT_NE(r.err.find("was killed by signal 15 (SIGTERM)"), std::string::npos) << r.err;
}

TEST(LaunchFaultTest, WorkerWithWrongOrNoTokenExitsWithTheAuthCode) {
  TestService ts(0, 1);
  for (const std::vector<std::string>& env :
       {std::vector<std::string>{"PSZERO_TOKEN=wrong"}, std::vector<std::string>{}}) {
    ProcessResult r = RunClean({BinaryPath("pszero-worker"), "--master-port",
                                std::to_string(ts.port()), "--join-timeout-ms", "30000"},
                               env);
    EXPECT_EQ(r.exit_code, kExitAuthFailed) << r.err;
    EXPECT_NE(r.err.find("authentication failed"), std::string::npos) << r.err;
  }
  ASSERT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.auth_failures == 2; }, kWait));
  EXPECT_EQ(ts.service().Snapshot().joined, 0);
}

TEST(LaunchFaultTest, TokenFileIsAccepted) {
  TestService ts(0, 1);
  const std::string path = ::testing::TempDir() + "/pszero-token-" + std::to_string(::getpid());
  std::ofstream(path) << ts.token << "\n";
  ProcessResult r = RunClean({BinaryPath("pszero-worker"), "--master-port",
                              std::to_string(ts.port()), "--token-file", path},
                             {"PSZERO_TOKEN=wrong"});  // the file wins over the environment
  std::remove(path.c_str());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("[w0]"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero::testing
