// Failures beyond one machine (node launchers as processes on 127.0.0.1): a worker killed
// on node 1 (before the job has joined, in the control-plane rounds, or mid-training) fails
// both nodes, each naming it, the first within 5 s; with --max-restarts both nodes restart
// from node 0's checkpoint and end bit-identical; a --hostfile launcher killed outright
// leaves no node launcher behind (each stops when its ssh stdin ends).
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "common/temp_dir.h"
#include "tests/launch/multinode_test_util.h"

namespace pszero::testing {
namespace {

constexpr char kToken[] = "pszero-multinode-fault-token-3a7e";

// Two node launchers of 2 workers each on a free port, with `args` after the common ones
// and `env` beside the token; their runs in node order.
std::vector<NodeRun> RunTwoNodes(const std::vector<std::string>& args,
                                 const std::vector<std::string>& env) {
  const std::string port = std::to_string(FreePort());
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> nodes;
  for (int r = 0; r < 2; ++r) {
    nodes.push_back({Cat({"--nnodes", "2", "--node-rank", std::to_string(r), "--master-port", port,
                          "--nproc-per-node", "2"},
                         args),
                     Cat({std::string("PSZERO_TOKEN=") + kToken}, env)});
  }
  return RunNodes(nodes);
}

// Both nodes failed because worker 3 (on node 1) died: node 1 names its pid, node 0 the
// lost worker.
void ExpectWorkerThreeFailedBothNodes(const std::vector<NodeRun>& runs) {
  EXPECT_EQ(runs[1].exit_code, 1) << runs[1].output;
  EXPECT_NE(LastLine(runs[1].output).find("job failed: worker 3 (pid "), std::string::npos)
      << runs[1].output;
  EXPECT_EQ(runs[0].exit_code, 1) << runs[0].output;
  EXPECT_NE(LastLine(runs[0].output).find("job failed: worker 3 lost"), std::string::npos)
      << runs[0].output;
}

// The control-plane life only (no --model): the failure travels through the service,
// independently of what the data plane does when a peer vanishes mid-transfer.
TEST(MultiNodeFaultTest, WorkerKilledOnNodeOneFailsBothNodes) {
  const std::vector<NodeRun> runs =
      RunTwoNodes({"--grace-ms", "3000"}, {"PSZERO_FAULT_INJECT=sigkill:w3:published"});
  ExpectWorkerThreeFailedBothNodes(runs);
  for (const char* survivor : {"[w0]", "[w1]"}) {
    EXPECT_TRUE(HasLine(runs[0].output, survivor, "stopping: worker 3 lost")) << runs[0].output;
  }
  EXPECT_TRUE(HasLine(runs[1].output, "[w2]", "stopping: worker 3 lost")) << runs[1].output;
}

// The time (glog's, seconds into the day) of the first line of `out` that starts with
// `prefix` and holds every one of `texts`; -1 when none does.
double FirstLineSeconds(const std::string& out, const std::string& prefix,
                        const std::vector<std::string>& texts) {
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    bool all = true;
    for (const std::string& t : texts) all = all && line.find(t) != std::string::npos;
    if (all) return GlogSeconds(line);
  }
  return -1.0;
}

// A worker of node 1 that dies before it has joined: node 1's launcher reports it to node
// 0's service, which fails the job at once instead of at the join deadline (60 s here).
TEST(MultiNodeFaultTest, WorkerDeadBeforeJoiningOnNodeOneFailsTheJobWithinFiveSeconds) {
  const std::vector<NodeRun> runs =
      RunTwoNodes({"--join-timeout-ms", "60000", "--grace-ms", "3000"},
                  {"PSZERO_FAULT_INJECT=sigkill:w3:join"});
  ExpectWorkerThreeFailedBothNodes(runs);
  const std::string last = LastLine(runs[0].output);
  EXPECT_NE(last.find("job failed: worker 3 lost: was killed by signal 9"), std::string::npos)
      << runs[0].output;
  EXPECT_NE(last.find(" on node 1 (pid "), std::string::npos) << runs[0].output;
  const double killed =
      FirstLineSeconds(runs[1].output, "[w3]", {"fault injection: sigkill at 'join'"});
  const double detected = FirstLineSeconds(runs[0].output, "[launch:n0]", {"worker 3 lost"});
  ASSERT_GE(killed, 0.0) << runs[1].output;
  ASSERT_GE(detected, 0.0) << runs[0].output;
  EXPECT_LE(detected - killed, 5.0) << runs[0].output;
}

// --max-restarts across two nodes: a worker of node 1 killed (SIGKILL) at a seeded step;
// both node launchers stop their workers and start them again from the newest checkpoint
// (node 0 picks it, its service tells node 1), once, and the final parameters equal the
// uninterrupted two-node run's bit for bit.
TEST(MultiNodeFaultTest, WorkerKilledOnNodeOneRestartsBothNodesFromTheCheckpoint) {
  auto dir = TempDir::Create("pszero-multinode-restart");
  ASSERT_TRUE(dir.ok());
  auto two_nodes = [&](const std::vector<std::string>& extra, const std::vector<std::string>& env) {
    return RunTwoNodes(Cat(TinyTraining("zero2", "6"), extra), env);
  };
  const std::vector<NodeRun> clean = two_nodes({}, {});
  ASSERT_EQ(clean[0].exit_code, 0) << clean[0].output;
  ASSERT_EQ(clean[1].exit_code, 0) << clean[1].output;
  const std::string want = PrintedSha(clean[0].output);
  ASSERT_EQ(want.size(), 64u) << clean[0].output;

  std::mt19937 rng(20261126);
  const int worker = 2 + static_cast<int>(rng() % 2);  // node 1 runs workers 2 and 3
  const int step = 2 + static_cast<int>(rng() % 5);    // 2..6
  SCOPED_TRACE("kill worker " + std::to_string(worker) + " at step " + std::to_string(step));
  const std::vector<NodeRun> runs = two_nodes(
      {"--checkpoint-dir", (dir->path() / "ck").string(), "--checkpoint-every", "2",
       "--max-restarts", "2"},
      {"PSZERO_FAULT_INJECT=sigkill:w" + std::to_string(worker) + ":step" + std::to_string(step),
       "PSZERO_FAULT_ONCE=" + (dir->path() / "fired").string()});
  ASSERT_EQ(runs[0].exit_code, 0) << runs[0].output;
  ASSERT_EQ(runs[1].exit_code, 0) << runs[1].output;
  EXPECT_EQ(PrintedSha(runs[0].output), want) << runs[0].output;
  EXPECT_TRUE(HasLine(runs[0].output, "[launch:n0]", "restart 1/2 from ")) << runs[0].output;
  EXPECT_TRUE(HasLine(runs[1].output, "[launch:n1]", "restart 1/2: rejoining")) << runs[1].output;
  for (const NodeRun& run : runs) EXPECT_EQ(run.output.find("restart 2/2"), std::string::npos);
  // Detection: node 1's launcher names the killed worker within 5 s of the kill.
  const std::string tag = "[w" + std::to_string(worker) + "]";
  const double killed = FirstLineSeconds(runs[1].output, tag, {"fault injection: sigkill"});
  const double detected =
      FirstLineSeconds(runs[1].output, "[launch:n1]",
                       {"worker " + std::to_string(worker) + " (pid ", "killed by signal 9"});
  ASSERT_GE(killed, 0.0) << runs[1].output;
  ASSERT_GE(detected, 0.0) << runs[1].output;
  EXPECT_LE(detected - killed, 5.0);
}

// The same during training: the data plane's peer-failure handling and the control
// plane's news both stop the survivors on both nodes.
TEST(MultiNodeFaultTest, WorkerKilledMidTrainingOnNodeOneFailsBothNodes) {
  const std::vector<NodeRun> runs =
      RunTwoNodes(Cat({"--grace-ms", "3000"}, TinyTraining("allreduce", "100000")),
                  {"PSZERO_FAULT_INJECT=sigkill:w3:step2"});
  ExpectWorkerThreeFailedBothNodes(runs);
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
