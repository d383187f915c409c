// The real pszero-launch, pszero-worker and pszero-server binaries: a whole local job,
// the output prefixes, --timeout, SIGTERM forwarding, and the flag contract (exit 2 and
// one line naming the flag).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

using std::chrono::milliseconds;

int CountLines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

// Environment variables a developer's shell might carry into the test.
const std::vector<std::string> kCleanEnv = {"PSZERO_TOKEN", "PSZERO_FAULT_INJECT",
                                            "PSZERO_MASTER_PORT", "PSZERO_MASTER_ADDR"};

ProcessResult RunClean(const std::vector<std::string>& argv,
                       const std::vector<std::string>& env = {}) {
  // RunProcess adds to the environment; clear the variables that would change behaviour.
  for (const auto& v : kCleanEnv) ::unsetenv(v.c_str());
  return RunProcess(argv, std::chrono::seconds(90), env);
}

void ExpectUsageError(const std::string& binary, const std::vector<std::string>& args,
                      const std::string& flag) {
  std::vector<std::string> argv = {BinaryPath(binary)};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = RunClean(argv);
  EXPECT_EQ(r.exit_code, 2) << binary << ": " << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(flag), std::string::npos) << "does not name " << flag << ": " << r.err;
}

TEST(LaunchTest, OneServerFourWorkersRunTheControlPlaneAndExitZero) {
  ProcessResult r = RunClean(
      {BinaryPath("pszero-launch"), "--servers", "1", "--workers", "4", "--timeout", "60"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("rendezvous service listening on 127.0.0.1:"), std::string::npos);
  for (const char* tag : {"[s0]", "[w0]", "[w1]", "[w2]", "[w3]"}) {
    SCOPED_TRACE(tag);
    for (const char* barrier : {"'joined'", "'published'", "'done'"}) {
      EXPECT_NE(r.err.find(std::string(tag) + " I"), std::string::npos);
      bool found = false;
      std::istringstream lines(r.err);
      for (std::string line; std::getline(lines, line);) {
        found = found || (line.rfind(tag, 0) == 0 &&
                          line.find(std::string("passed barrier ") + barrier) != std::string::npos);
      }
      EXPECT_TRUE(found) << barrier << "\n" << r.err;
    }
  }
  EXPECT_NE(r.err.find("looked up the blobs and greetings of all 5 processes"), std::string::npos);
  EXPECT_NE(r.err.find("all 5 processes exited with code 0"), std::string::npos) << r.err;
}

// A directory whose "pszero-worker" is a shell script, to give the launcher children
// that behave in ways the real worker never would.
class FakeWorkers {
 public:
  explicit FakeWorkers(const std::string& script) {
    dir_ = std::filesystem::temp_directory_path() /
           ("pszero-fake-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    const auto path = dir_ / "pszero-worker";
    std::ofstream(path) << "#!/bin/sh\n" << script << "\n";
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  }
  ~FakeWorkers() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir() const { return dir_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path dir_;
};

TEST(LaunchTest, TimeoutStopsTheJob) {
  FakeWorkers fake("echo started; exec sleep 120");
  ProcessResult r = RunClean(
      {BinaryPath("pszero-launch"), "--workers", "2", "--timeout", "1", "--bin-dir", fake.dir()});
  EXPECT_EQ(r.exit_code, 124) << r.err;
  EXPECT_NE(r.err.find("--timeout"), std::string::npos) << r.err;
  // Plain output lines of the children get their prefix.
  EXPECT_NE(r.out.find("[w0] started\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[w1] started\n"), std::string::npos) << r.out;
}

TEST(LaunchTest, FailingChildIsNamedWithItsExitCode) {
  FakeWorkers fake(
      "if [ \"$PSZERO_LOCAL_RANK\" = 1 ]; then echo bye >&2; exit 7; fi; exec sleep 120");
  ProcessResult r = RunClean({BinaryPath("pszero-launch"), "--workers", "3", "--grace-ms", "100",
                              "--timeout", "60", "--bin-dir", fake.dir()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("[w1] bye"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("job failed: worker 1 (pid "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 7"), std::string::npos) << r.err;
}

// Worker 1 dies before it joins; the others, real workers waiting for the job to be
// complete, hear of it from the launcher through the service and exit on their own.
TEST(LaunchTest, ChildDyingBeforeItJoinsFailsTheJobAndTheOthersExitOnTheirOwn) {
  FakeWorkers fake("if [ \"$PSZERO_LOCAL_RANK\" = 1 ]; then exit 9; fi; exec " +
                   BinaryPath("pszero-worker") + " \"$@\"");
  ProcessResult r = RunClean(
      {BinaryPath("pszero-launch"), "--workers", "3", "--timeout", "60", "--bin-dir", fake.dir()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("job failed: worker 1 (pid "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 9"), std::string::npos) << r.err;
  for (const char* tag : {"[w0] E", "[w2] E"}) {
    EXPECT_NE(r.err.find(std::string(tag)), std::string::npos) << tag << "\n" << r.err;
  }
  EXPECT_NE(r.err.find("worker 1 lost: exited with code 9"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("sending SIGTERM"), std::string::npos) << r.err;
}

TEST(LaunchTest, SigtermIsForwardedAndEveryChildReaped) {
  FakeWorkers fake("echo ready; exec sleep 120");
  auto launcher = ChildProcess::Spawn(
      {BinaryPath("pszero-launch"), "--workers", "2", "--timeout", "60", "--bin-dir", fake.dir()},
      {}, kCleanEnv);
  ASSERT_TRUE(launcher);
  // Wait until both children run (their output has come through), without sleeping on a
  // guess: the launcher's output file grows as lines arrive.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (launcher->Output().find("[w1] ready") == std::string::npos ||
         launcher->Output().find("[w0] ready") == std::string::npos) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << launcher->Output();
    ASSERT_FALSE(launcher->Wait(milliseconds(20))) << launcher->Output();
  }
  launcher->Signal(SIGTERM);
  ASSERT_TRUE(launcher->Wait(std::chrono::seconds(30)));
  ASSERT_TRUE(WIFEXITED(launcher->wait_status()));
  EXPECT_EQ(WEXITSTATUS(launcher->wait_status()), 128 + SIGTERM) << launcher->Output();
  EXPECT_NE(launcher->Output().find("forwarding"), std::string::npos);
}

TEST(LaunchTest, LauncherFlagErrors) {
  ExpectUsageError("pszero-launch", {"--bogus"}, "--bogus");
  ExpectUsageError("pszero-launch", {"--workers", "0"}, "--workers");
  ExpectUsageError("pszero-launch", {"--workers", "many"}, "--workers");
  ExpectUsageError("pszero-launch", {"--servers", "-1"}, "--servers");
  ExpectUsageError("pszero-launch", {"--master-port", "70000"}, "--master-port");
  ExpectUsageError("pszero-launch", {"--token-file", "/nonexistent/token"}, "--token-file");
  ExpectUsageError("pszero-launch", {"--heartbeat-ms", "500", "--heartbeat-timeout-ms", "400"},
                   "--heartbeat-timeout-ms");
  ExpectUsageError("pszero-launch", {"--sync", "gossip"}, "--sync");
}

TEST(LaunchTest, WorkerAndServerFlagErrors) {
  for (const char* binary : {"pszero-worker", "pszero-server"}) {
    SCOPED_TRACE(binary);
    ExpectUsageError(binary, {}, "--master-port");
    ExpectUsageError(binary, {"--master-port", "0"}, "--master-port");
    ExpectUsageError(binary, {"--master-port", "1234", "--heartbeat-ms", "0"}, "--heartbeat-ms");
    ExpectUsageError(binary, {"--master-port", "1234", "--rank", "-2"}, "--rank");
    ExpectUsageError(binary, {"--master-port", "1234", "--frobnicate"}, "--frobnicate");
  }
}

TEST(LaunchTest, HelpListsEveryFlag) {
  ProcessResult r = RunClean({BinaryPath("pszero-launch"), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag : {"--workers", "--servers", "--master-addr", "--master-port",
                           "--token-file", "--timeout", "--heartbeat-ms", "--heartbeat-timeout-ms",
                           "--join-timeout-ms", "--grace-ms", "--bin-dir"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  }
  r = RunClean({BinaryPath("pszero-worker"), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("PSZERO_MASTER_PORT"), std::string::npos) << r.out;
}

TEST(LaunchTest, BenchRendezvousJsonAndFlagErrors) {
  ProcessResult r = RunClean({BinaryPath("pszero-bench"), "rendezvous", "--clients", "2,5",
                              "--repeats", "2", "--barriers", "3", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["benchmark"], "rendezvous");
  ASSERT_EQ(doc["runs"].size(), 2u);
  EXPECT_EQ(doc["runs"][1]["clients"], 5);
  for (const char* what : {"join_ms", "barrier_ms"}) {
    const auto& m = doc["runs"][1][what];
    EXPECT_EQ(m["samples"].size(), 2u);
    EXPECT_GT(m["min"].get<double>(), 0.0);
    EXPECT_LE(m["min"].get<double>(), m["median"].get<double>());
    EXPECT_LE(m["median"].get<double>(), m["max"].get<double>());
  }
  ExpectUsageError("pszero-bench", {"rendezvous", "--clients", "0"}, "--clients");
  ExpectUsageError("pszero-bench", {"rendezvous", "--repeats", "x"}, "--repeats");
}

}  // namespace
}  // namespace pszero::testing
