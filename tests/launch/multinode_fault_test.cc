// Failures beyond one machine (node launchers as processes on 127.0.0.1): a worker killed
// on node 1 (in the control-plane rounds, or mid-training) fails both nodes, each naming it; a
// --hostfile launcher killed outright leaves no node launcher behind (each stops when its ssh stdin
// ends).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/temp_dir.h"

#include "tests/launch/multinode_test_util.h"

namespace pszero::testing {
namespace {

constexpr char kToken[] = "pszero-multinode-fault-token-3a7e";

// The control-plane life only (no --model): the failure travels through the service,
// independently of what the data plane does when a peer vanishes mid-transfer.
TEST(MultiNodeFaultTest, WorkerKilledOnNodeOneFailsBothNodes) {
  const std::string port = std::to_string(FreePort());
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> nodes;
  for (int r = 0; r < 2; ++r) {
    nodes.push_back(
        {{"--nnodes", "2", "--node-rank", std::to_string(r), "--master-port", port,
          "--nproc-per-node", "2", "--grace-ms", "3000"},
         {std::string("PSZERO_TOKEN=") + kToken, "PSZERO_FAULT_INJECT=sigkill:w3:published"}});
  }
  const std::vector<NodeRun> runs = RunNodes(nodes);
  EXPECT_EQ(runs[1].exit_code, 1) << runs[1].output;
  EXPECT_NE(LastLine(runs[1].output).find("job failed: worker 3 (pid "), std::string::npos)
      << runs[1].output;
  EXPECT_EQ(runs[0].exit_code, 1) << runs[0].output;
  EXPECT_NE(LastLine(runs[0].output).find("job failed: worker 3 lost"), std::string::npos)
      << runs[0].output;
  for (const char* survivor : {"[w0]", "[w1]"}) {
    EXPECT_TRUE(HasLine(runs[0].output, survivor, "stopping: worker 3 lost")) << runs[0].output;
  }
  EXPECT_TRUE(HasLine(runs[1].output, "[w2]", "stopping: worker 3 lost")) << runs[1].output;
}

// The same during training: the data plane's peer-failure handling and the control
// plane's news both stop the survivors on both nodes.
TEST(MultiNodeFaultTest, WorkerKilledMidTrainingOnNodeOneFailsBothNodes) {
  const std::string port = std::to_string(FreePort());
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> nodes;
  for (int r = 0; r < 2; ++r) {
    nodes.push_back(
        {Cat({"--nnodes", "2", "--node-rank", std::to_string(r), "--master-port", port,
              "--nproc-per-node", "2", "--grace-ms", "3000"},
             TinyTraining("allreduce", "100000")),
         {std::string("PSZERO_TOKEN=") + kToken, "PSZERO_FAULT_INJECT=sigkill:w3:step2"}});
  }
  const std::vector<NodeRun> runs = RunNodes(nodes);
  EXPECT_EQ(runs[1].exit_code, 1) << runs[1].output;
  EXPECT_NE(LastLine(runs[1].output).find("job failed: worker 3 (pid "), std::string::npos)
      << runs[1].output;
  EXPECT_EQ(runs[0].exit_code, 1) << runs[0].output;
  EXPECT_NE(LastLine(runs[0].output).find("job failed: worker 3 lost"), std::string::npos)
      << runs[0].output;
}

// Waits until process `pid` (not necessarily a child) has ended; false after `timeout`.
bool WaitGone(pid_t pid, std::chrono::milliseconds timeout) {
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  const bool gone = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
  ::close(fd);
  return gone;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(MultiNodeFaultTest, KilledHostfileLauncherLeavesNoNodeLauncherBehind) {
  auto dir = TempDir::Create("pszero-ssh-kill");
  ASSERT_TRUE(dir.ok());
  const auto script = dir->path() / "ssh";
  const auto pids = dir->path() / "pids";
  // Records the pid that becomes the node launcher (sh execs it), then runs the command.
  std::ofstream(script) << "#!/bin/sh\necho $$ >> '" << pids.string()
                        << "'\nshift 3\nexec env -i PATH=\"$PATH\" /bin/sh -c \"$1\"\n";
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  const auto hosts = dir->path() / "hosts";
  std::ofstream(hosts) << "alpha slots=1\nbeta slots=1\n";

  auto driver = ChildProcess::Spawn(
      Cat({BinaryPath("pszero-launch"), "--hostfile", hosts.string(), "--master-addr", "127.0.0.1",
           "--master-port", std::to_string(FreePort()), "--timeout", "120"},
          TinyTraining("allreduce", "100000")),
      {"PSZERO_SSH=" + script.string()}, kClusterVars);
  ASSERT_NE(driver, nullptr);
  // Until both nodes train (worker 0 prints its steps), or the deadline.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (driver->Output().find("[w0] step 2/") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline &&
         !driver->Wait(std::chrono::milliseconds(50))) {
  }
  ASSERT_NE(driver->Output().find("[w0] step 2/"), std::string::npos) << driver->Output();
  std::vector<pid_t> node_pids;
  std::istringstream lines(ReadFile(pids));
  for (pid_t pid; lines >> pid;) node_pids.push_back(pid);
  ASSERT_EQ(node_pids.size(), 2u);

  driver->Signal(SIGKILL);
  driver->Finish(std::chrono::seconds(10));
  for (pid_t pid : node_pids) {
    EXPECT_TRUE(WaitGone(pid, std::chrono::seconds(30))) << "node launcher " << pid;
    if (!WaitGone(pid, std::chrono::milliseconds(0))) ::kill(pid, SIGKILL);  // never leak
  }
}

}  // namespace
}  // namespace pszero::testing
