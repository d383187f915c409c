// pszero-launch beyond one machine, with the machines played by processes on 127.0.0.1:
// manual --nnodes/--node-rank, a fake Slurm allocation, --hostfile through a fake ssh
// ($PSZERO_SSH), --rendezvous-only with workers started torchrun- and mpirun-style, and
// the flag contract (a worker killed on node 1: multinode_fault_test.cc). Every training run
// must end with the same sha256 as the same job on one launcher.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "common/temp_dir.h"
#include "tests/launch/multinode_test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

using std::chrono::seconds;

constexpr char kToken[] = "pszero-multinode-test-token-6f1d";

int CountLines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

ProcessResult RunLaunch(const std::vector<std::string>& args,
                        const std::vector<std::string>& env = {}) {
  for (const std::string& v : kClusterVars) ::unsetenv(v.c_str());
  return RunProcess(Cat({BinaryPath("pszero-launch"), "--timeout", "120"}, args), seconds(150),
                    env);
}

// The one-launcher run every multi-node run is compared with (cached per job).
std::string OneHostSha(const std::vector<std::string>& job) {
  static std::map<std::vector<std::string>, std::string> cache;
  auto it = cache.find(job);
  if (it != cache.end()) return it->second;
  const ProcessResult r = RunLaunch(job);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string sha = PrintedSha(r.out);
  EXPECT_FALSE(sha.empty()) << r.out << r.err;
  return cache[job] = sha;
}

TEST(MultiNodeTest, TwoManualNodesTrainLikeOneLauncherInNodeMajorRankOrder) {
  // zero3 with T = 2: worker w is TP rank w % 2 of replica w / 2, so each node holds one
  // replica; ps: the one server runs on node 0.
  for (const auto& [mode, extra] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"zero3", {"--tp", "2"}}, {"ps", {"--servers", "1"}}}) {
    SCOPED_TRACE(mode);
    const std::vector<std::string> job = Cat(TinyTraining(mode), extra);
    const std::string want = OneHostSha(Cat({"--workers", "4"}, job));
    const std::string port = std::to_string(FreePort());
    std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> nodes;
    for (int r = 0; r < 2; ++r) {
      nodes.push_back({Cat({"--nnodes", "2", "--node-rank", std::to_string(r), "--master-addr",
                            "127.0.0.1", "--master-port", port, "--nproc-per-node", "2"},
                           job),
                       {std::string("PSZERO_TOKEN=") + kToken}});
    }
    const std::vector<NodeRun> runs = RunNodes(nodes);
    ASSERT_EQ(runs[0].exit_code, 0) << runs[0].output << "\n----\n" << runs[1].output;
    ASSERT_EQ(runs[1].exit_code, 0) << runs[1].output;
    EXPECT_EQ(PrintedSha(runs[0].output), want) << runs[0].output;
    EXPECT_TRUE(HasLine(runs[0].output, "[w1]", "joined as worker 1")) << runs[0].output;
    EXPECT_TRUE(HasLine(runs[1].output, "[w2]", "joined as worker 2")) << runs[1].output;
    EXPECT_TRUE(HasLine(runs[1].output, "[w3]", "joined as worker 3")) << runs[1].output;
    EXPECT_TRUE(HasLine(runs[1].output, "[launch:n1]", "node 1 of 2: 2 workers (from rank 2)"))
        << runs[1].output;
    if (mode == "ps") {
      EXPECT_TRUE(HasLine(runs[0].output, "[s0]", "joined as server 0")) << runs[0].output;
    }
  }
}

TEST(MultiNodeTest, FakeSlurmAllocationDerivesNodesAndMaster) {
  const std::vector<std::string> job = TinyTraining("allreduce");
  const std::string want = OneHostSha(Cat({"--workers", "4"}, job));
  // Below the ephemeral ports, where the Slurm port 20000 + job id % 20000 can be.
  const int port = FreePortIn(20000, 32000);
  ASSERT_GT(port, 0);
  std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>> nodes;
  for (int r = 0; r < 2; ++r) {
    nodes.push_back({Cat({"--nproc-per-node", "2"}, job),
                     {std::string("PSZERO_TOKEN=") + kToken,
                      "SLURM_JOB_ID=" + std::to_string(port - 20000 + 20000 * 7), "SLURM_NNODES=2",
                      "SLURM_NODELIST=127.0.0.[1-2]", "SLURM_PROCID=" + std::to_string(r)}});
  }
  const std::vector<NodeRun> runs = RunNodes(nodes);
  ASSERT_EQ(runs[0].exit_code, 0) << runs[0].output << "\n----\n" << runs[1].output;
  ASSERT_EQ(runs[1].exit_code, 0) << runs[1].output;
  EXPECT_EQ(PrintedSha(runs[0].output), want);
  EXPECT_TRUE(
      HasLine(runs[1].output, "[launch",
              "from the slurm environment: node 1 of 2, master 127.0.0.1:" + std::to_string(port)))
      << runs[1].output;
  EXPECT_TRUE(HasLine(runs[1].output, "[w3]", "joined as worker 3")) << runs[1].output;
}

// A directory with a fake ssh that records its arguments and runs the command here.
class FakeSsh {
 public:
  FakeSsh() : dir_(std::move(TempDir::Create("pszero-fake-ssh")).value()) {
    std::ofstream(script()) << "#!/bin/sh\n"
                               "echo \"$@\" >> '"
                            << log() << "'\n"
                            << "[ \"$1\" = -o ] && [ \"$2\" = BatchMode=yes ] || exit 97\n"
                               "shift 3\n"
                               // Like ssh: nothing of this environment reaches the host.
                               "exec env -i PATH=\"$PATH\" /bin/sh -c \"$1\"\n";
    std::filesystem::permissions(script(), std::filesystem::perms::owner_all);
  }
  std::string script() const { return (dir_.path() / "ssh").string(); }
  std::string log() const { return (dir_.path() / "ssh.log").string(); }
  std::string Write(const std::string& name, const std::string& text) const {
    const std::string path = (dir_.path() / name).string();
    std::ofstream(path) << text;
    return path;
  }
  std::string Log() const {
    std::ifstream in(log());
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  TempDir dir_;
};

TEST(MultiNodeTest, HostfileStartsOneNodeLauncherPerHostOverSsh) {
  const std::vector<std::string> job = TinyTraining("zero2");
  const std::string want = OneHostSha(Cat({"--workers", "4"}, job));
  FakeSsh ssh;
  const std::string hosts =
      ssh.Write("hosts", "# two machines\n\nalpha slots=2\nbeta slots=2  # the second\n");
  const ProcessResult r =
      RunLaunch(Cat({"--hostfile", hosts, "--master-addr", "127.0.0.1", "--master-port",
                     std::to_string(FreePort())},
                    job),
                {"PSZERO_SSH=" + ssh.script(), std::string("PSZERO_TOKEN=") + kToken});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(PrintedSha(r.out), want) << r.out;
  EXPECT_NE(r.err.find("all 2 node launchers exited with code 0"), std::string::npos) << r.err;
  EXPECT_TRUE(HasLine(r.err, "[launch:n1]", "node 1 of 2")) << r.err;
  const std::string log = ssh.Log();
  EXPECT_EQ(CountLines(log), 2) << log;
  EXPECT_NE(log.find("-o BatchMode=yes alpha "), std::string::npos) << log;
  EXPECT_NE(log.find("-o BatchMode=yes beta "), std::string::npos) << log;
  EXPECT_NE(log.find("--token-stdin"), std::string::npos) << log;
  // The token travels on stdin only, never on a command line.
  EXPECT_EQ(log.find(kToken), std::string::npos) << log;
}

// SIGCHLD reaches the launcher's signalfd only while every thread blocks it. OpenBLAS
// starts its thread pool from a library constructor, before main, and that thread takes
// the signal and drops it: the launcher must still see its nodes exit (it did not, and
// waited forever, once a change linked OpenBLAS into pszero-launch).
TEST(MultiNodeTest, HostfileJobEndsWhenALibraryThreadTakesSigchld) {
  const std::vector<std::string> job = TinyTraining("zero2");
  FakeSsh ssh;
  const std::string hosts = ssh.Write("hosts", "alpha slots=1\nbeta slots=1\n");
  const ProcessResult r =
      RunLaunch(Cat({"--hostfile", hosts, "--master-addr", "127.0.0.1", "--master-port",
                     std::to_string(FreePort())},
                    job),
                {"PSZERO_SSH=" + ssh.script(), std::string("PSZERO_TOKEN=") + kToken,
                 "LD_PRELOAD=libopenblas.so.0"});
  EXPECT_FALSE(r.timed_out);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("all 2 node launchers exited with code 0"), std::string::npos) << r.err;
}

TEST(MultiNodeTest, BadHostfileLineExitsTwoNamingFileAndLine) {
  FakeSsh ssh;
  const std::string hosts = ssh.Write("hosts", "alpha slots=2\n# fine\nbeta slots=two\n");
  const ProcessResult r =
      RunLaunch({"--hostfile", hosts, "--workers", "4"}, {"PSZERO_SSH=" + ssh.script()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--hostfile: " + hosts + ":3: bad slots 'two'"), std::string::npos) << r.err;
  EXPECT_TRUE(ssh.Log().empty());
}

TEST(MultiNodeTest, FailedSshNodeFailsTheJobNamingIt) {
  FakeSsh ssh;
  const std::string hosts = ssh.Write("hosts", "alpha slots=1\nbeta slots=1\n");
  // alpha cannot be reached; beta hangs until the launcher stops it.
  const std::string broken = ssh.Write("broken-ssh",
                                       "#!/bin/sh\n"
                                       "if [ \"$3\" = alpha ]; then echo \"no route to $3\" >&2; "
                                       "exit 255; fi\nexec sleep 60\n");
  std::filesystem::permissions(broken, std::filesystem::perms::owner_all);
  const ProcessResult r = RunLaunch(
      {"--hostfile", hosts, "--master-port", std::to_string(FreePort()), "--grace-ms", "500"},
      {"PSZERO_SSH=" + broken});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("[alpha] no route to alpha"), std::string::npos) << r.err;
  EXPECT_NE(LastLine(r.err).find("job failed: node 0 (alpha) exited with code 255"),
            std::string::npos)
      << r.err;
}

TEST(MultiNodeTest, RendezvousOnlyServesWorkersStartedTorchrunStyle) {
  const std::vector<std::string> job = TinyTraining("allreduce");
  const std::string want = OneHostSha(Cat({"--workers", "2"}, job));
  const std::string port = std::to_string(FreePort());
  const std::string token = std::string("PSZERO_TOKEN=") + kToken;
  auto service = ChildProcess::Spawn({BinaryPath("pszero-launch"), "--rendezvous-only", "--workers",
                                      "2", "--master-port", port, "--timeout", "120"},
                                     {token}, kClusterVars);
  ASSERT_NE(service, nullptr);
  // Started in reverse: the ranks come from RANK, not from the order of arrival.
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int rank : {1, 0}) {
    workers.push_back(ChildProcess::Spawn(
        Cat({BinaryPath("pszero-worker")}, job),
        {token, "RANK=" + std::to_string(rank), "WORLD_SIZE=2",
         "LOCAL_RANK=" + std::to_string(rank), "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port},
        kClusterVars));
    ASSERT_NE(workers.back(), nullptr);
  }
  const ProcessResult w1 = workers[0]->Finish(seconds(120));
  const ProcessResult w0 = workers[1]->Finish(seconds(120));
  const ProcessResult s = service->Finish(seconds(30));
  EXPECT_EQ(w0.exit_code, 0) << workers[1]->Output();
  EXPECT_EQ(w1.exit_code, 0) << workers[0]->Output();
  EXPECT_EQ(s.exit_code, 0) << service->Output();
  EXPECT_TRUE(HasLine(workers[0]->Output(), "[w1]", "joined as worker 1")) << workers[0]->Output();
  EXPECT_EQ(PrintedSha(workers[1]->Output()), want) << workers[1]->Output();
  EXPECT_NE(service->Output().find("all 2 processes left"), std::string::npos) << service->Output();
}

TEST(MultiNodeTest, OpenMpiVariablesGiveTheRank) {
  // What `mpirun -np 2 pszero-worker ...` hands each process.
  const std::string port = std::to_string(FreePort());
  const std::string token = std::string("PSZERO_TOKEN=") + kToken;
  auto service = ChildProcess::Spawn({BinaryPath("pszero-launch"), "--rendezvous-only", "--workers",
                                      "2", "--master-port", port, "--timeout", "60"},
                                     {token}, kClusterVars);
  ASSERT_NE(service, nullptr);
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int rank : {1, 0}) {
    workers.push_back(ChildProcess::Spawn(
        {BinaryPath("pszero-worker"), "--master-port", port},
        {token, "OMPI_COMM_WORLD_RANK=" + std::to_string(rank), "OMPI_COMM_WORLD_SIZE=2",
         "OMPI_COMM_WORLD_LOCAL_RANK=" + std::to_string(rank)},
        kClusterVars));
    ASSERT_NE(workers.back(), nullptr);
  }
  EXPECT_EQ(workers[0]->Finish(seconds(60)).exit_code, 0) << workers[0]->Output();
  EXPECT_EQ(workers[1]->Finish(seconds(60)).exit_code, 0) << workers[1]->Output();
  EXPECT_EQ(service->Finish(seconds(30)).exit_code, 0) << service->Output();
  EXPECT_TRUE(HasLine(workers[0]->Output(), "[w1]", "joined as worker 1")) << workers[0]->Output();
  EXPECT_TRUE(HasLine(workers[1]->Output(), "[w0]", "joined as worker 0")) << workers[1]->Output();
}

TEST(MultiNodeTest, MpirunStartsWorkersThatJoinARendezvousOnlyService) {
  if (::access(PSZERO_MPIRUN, X_OK) != 0) GTEST_SKIP() << "Open MPI not installed (openmpi-bin)";
  const std::vector<std::string> job = TinyTraining("allreduce");
  const std::string want = OneHostSha(Cat({"--workers", "2"}, job));
  const std::string port = std::to_string(FreePort());
  const std::string token = std::string("PSZERO_TOKEN=") + kToken;
  auto service = ChildProcess::Spawn({BinaryPath("pszero-launch"), "--rendezvous-only", "--workers",
                                      "2", "--master-port", port, "--timeout", "120"},
                                     {token}, kClusterVars);
  ASSERT_NE(service, nullptr);
  for (const std::string& v : kClusterVars) ::unsetenv(v.c_str());
  const ProcessResult r =
      RunProcess(Cat({PSZERO_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2", "-x",
                      "PSZERO_TOKEN", BinaryPath("pszero-worker"), "--master-addr", "127.0.0.1",
                      "--master-port", port},
                     job),
                 seconds(120), {token, "OMPI_MCA_plm_rsh_agent=false"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(PrintedSha(r.out), want) << r.out << r.err;
  EXPECT_TRUE(HasLine(r.err, "[w1]", "joined as worker 1")) << r.err;
  EXPECT_EQ(service->Finish(seconds(30)).exit_code, 0) << service->Output();
}

TEST(MultiNodeFlagsTest, BadMultiNodeFlagsExitTwoNamingTheFlag) {
  const std::string token = std::string("PSZERO_TOKEN=") + kToken;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--nnodes", "2", "--node-rank", "2"}, "--node-rank"},
      {{"--nnodes", "2", "--master-port", "0"}, "--master-port"},
      {{"--nnodes", "2", "--nproc-per-node", "1,2,3"}, "--nproc-per-node"},
      {{"--nnodes", "2", "--workers", "3", "--nproc-per-node", "2"}, "--workers"},
      {{"--nnodes", "2", "--rendezvous-only", "--max-restarts", "1"}, "--max-restarts"},
      {{"--hostfile", "/dev/null", "--nnodes", "2"}, "--nnodes"},
      {{"--hostfile", "/nonexistent/hosts"}, "--hostfile"},
      {{"--config", "/nonexistent/pszero.json"}, "--config"},
  };
  for (const auto& [args, flag] : cases) {
    SCOPED_TRACE(flag);
    const ProcessResult r = RunLaunch(args, {token});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
  }
  // Without a shared token a multi-node job cannot start.
  const ProcessResult r = RunLaunch({"--nnodes", "2"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--nnodes: every process of the job needs the same cluster token"),
            std::string::npos)
      << r.err;
  const ProcessResult slurm =
      RunLaunch({}, {"SLURM_JOB_ID=1", "SLURM_NNODES=2", "SLURM_NODELIST=a[1-", "SLURM_PROCID=0"});
  EXPECT_EQ(slurm.exit_code, 2) << slurm.err;
  EXPECT_NE(slurm.err.find("node list"), std::string::npos) << slurm.err;
}

TEST(MultiNodeFlagsTest, ConfigFileSetsFlagsAndTheCommandLineWins) {
  auto dir = TempDir::Create("pszero-config");
  ASSERT_TRUE(dir.ok());
  const std::string path = (dir->path() / "job.json").string();
  std::ofstream(path) << R"({"workers": 3, "servers": 1, "timeout": 60})";
  // workers=3 from the file is overridden by --workers 2: the job has 1 server, 2 workers.
  const ProcessResult r = RunLaunch({"--config", path, "--workers", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("all 3 processes exited with code 0"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero::testing
