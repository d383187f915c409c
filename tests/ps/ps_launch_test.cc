// pszero-launch with parameter servers: the ps flags against --servers and --sync (exit 2
// naming the flag), a whole ps job whose servers exit 0 once the workers have trained,
// and a server killed mid-job named by the launcher's last line.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/job_output.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

using std::chrono::seconds;

// A model small enough to train in a second per step on a loaded machine.
std::vector<std::string> TinyTraining(int steps) {
  return {
      "--model", "custom", "--layers", "1", "--d-model", "32", "--heads", "2",
      "--seq",   "8",      "--batch",  "2", "--vocab",   "64", "--steps", std::to_string(steps)};
}

ProcessResult Launch(std::vector<std::string> args, const std::vector<std::string>& env = {}) {
  args.insert(args.begin(), BinaryPath("pszero-launch"));
  return RunProcess(args, seconds(240), env);
}

void ExpectUsageError(const std::vector<std::string>& args, const std::string& flag) {
  ProcessResult r = Launch(args);
  std::string line;
  for (const auto& a : args) line += a + " ";
  EXPECT_EQ(r.exit_code, 2) << line << "\n" << r.err;
  EXPECT_NE(r.err.find(flag), std::string::npos) << line << "\n" << r.err;
}

std::vector<std::string> Cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(PsLaunchFlagsTest, ServersAndSyncMustAgree) {
  // --sync ps without servers.
  ExpectUsageError(Cat({"--workers", "1", "--sync", "ps"}, TinyTraining(1)), "--servers");
  ExpectUsageError({"--workers", "1", "--sync", "ps"}, "--servers");
  // Servers with a mode that does not use them.
  ExpectUsageError(Cat({"--servers", "1", "--workers", "1"}, TinyTraining(1)), "--servers");
  ExpectUsageError(
      Cat({"--servers", "2", "--workers", "1", "--sync", "allreduce"}, TinyTraining(1)),
      "--servers");
  ExpectUsageError({"--servers", "1", "--workers", "1", "--sync", "zero2"}, "--servers");
}

TEST(PsLaunchFlagsTest, ConsistencyFlagsAreCheckedAndListed) {
  ExpectUsageError({"--workers", "1", "--consistency", "ssp"}, "--consistency");
  ExpectUsageError(
      {"--servers", "1", "--workers", "1", "--sync", "ps", "--consistency", "eventual"},
      "--consistency");
  ExpectUsageError({"--servers", "1", "--workers", "1", "--sync", "ps", "--staleness", "2"},
                   "--staleness");
  ExpectUsageError({"--servers", "1", "--workers", "1", "--sync", "ps", "--consistency", "ssp",
                    "--staleness", "-1"},
                   "--staleness");
  ExpectUsageError({"--servers", "1", "--workers", "1", "--sync", "ps", "--ps-slice-mb", "0"},
                   "--ps-slice-mb");
  ProcessResult help = Launch({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag : {"--consistency", "--staleness", "--ps-slice-mb"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
}

// The servers serve until the workers have trained, then all exit 0; the servers got the
// consistency flags on their command line.
TEST(PsLaunchTest, ServersExitZeroOnceTheWorkersHaveTrained) {
  ProcessResult r =
      Launch(Cat({"--servers", "2", "--workers", "1", "--sync", "ps", "--consistency", "ssp",
                  "--staleness", "1", "--ps-slice-mb", "0.01", "--timeout", "200"},
                 TinyTraining(3)));
  const std::string all = r.out + r.err;
  ASSERT_FALSE(r.timed_out) << all;
  EXPECT_EQ(r.exit_code, 0) << all;
  EXPECT_NE(all.find("ps server 0 of 2: ssp staleness 1"), std::string::npos) << all;
  EXPECT_NE(all.find("ps server 1 of 2: ssp staleness 1"), std::string::npos) << all;
  EXPECT_NE(all.find("all 3 processes exited with code 0"), std::string::npos) << all;
  EXPECT_NE(all.find("step 3/3"), std::string::npos) << all;
}

// ps + bsp trains the same bits as the collective modes, whatever the servers' number and
// slice size (two TP ranks: two key spaces).
TEST(PsLaunchTest, BspFinalParamsMatchAllreduceForAnyServerCount) {
  // D = 2 (T = 2) and D = 4 (T = 1) replicas; S = 1 and 2 servers.
  for (const char* tp : {"2", "1"}) {
    const std::vector<std::string> common =
        Cat({"--workers", "4", "--tp", tp, "--deterministic", "--timeout", "200"}, TinyTraining(3));
    ProcessResult allreduce = Launch(Cat({"--sync", "allreduce"}, common));
    ASSERT_EQ(allreduce.exit_code, 0) << allreduce.out << allreduce.err;
    const std::string want = PrintedSha(allreduce.out);
    ASSERT_EQ(want.size(), 64u) << allreduce.out;
    for (const std::vector<std::string>& servers :
         {std::vector<std::string>{"--servers", "1"},
          std::vector<std::string>{"--servers", "2", "--ps-slice-mb", "0.01"}}) {
      ProcessResult ps = Launch(Cat(Cat(servers, {"--sync", "ps"}), common));
      ASSERT_EQ(ps.exit_code, 0) << ps.out << ps.err;
      EXPECT_EQ(PrintedSha(ps.out), want) << "T=" << tp << ", " << servers[1] << " servers\n"
                                          << ps.out;
    }
  }
}

// Servers started for the control-plane rounds only (no --model) still end with the job.
TEST(PsLaunchTest, ServersExitZeroAfterTheRounds) {
  ProcessResult r = Launch({"--servers", "2", "--workers", "2", "--timeout", "200"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

// Server 1 kills itself as it starts serving (entering barrier "train-done"): the job fails and the
// launcher's last line names the server, not the workers that stopped because of it.
TEST(PsLaunchFaultTest, KilledServerIsNamedByTheLauncher) {
  ProcessResult r = Launch(Cat({"--servers", "2", "--workers", "2", "--tp", "2", "--sync", "ps",
                                "--timeout", "200", "--grace-ms", "5000"},
                               TinyTraining(200)),
                           {"PSZERO_FAULT_INJECT=sigkill:s1:train-done"});
  const std::string all = r.out + r.err;
  ASSERT_FALSE(r.timed_out) << all;
  EXPECT_EQ(r.exit_code, 1) << all;
  const size_t last = r.err.rfind("job failed: ");
  ASSERT_NE(last, std::string::npos) << all;
  EXPECT_NE(r.err.find("server 1 (pid", last), std::string::npos) << r.err.substr(last);
  EXPECT_NE(r.err.find("SIGKILL", last), std::string::npos) << r.err.substr(last);
  // The survivors stop cleanly (a server closes its transport before freeing the slots a
  // push may still be landing in).
  EXPECT_EQ(all.find("SIGSEGV"), std::string::npos) << all;
  EXPECT_EQ(all.find("Caught signal"), std::string::npos) << all;
}

}  // namespace
}  // namespace pszero::testing
