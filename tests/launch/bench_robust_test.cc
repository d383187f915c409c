// pszero-bench on bad input: every bad size, file or binary directory is one line and exit
// 2 before anything starts; a child that dies early ends the run at once (not after the
// 120 s store timeout) and leaves no temp dir; no child outlives a killed bench.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/temp_dir.h"
#include "kernels/cuda_resources.h"
#include "tests/support/subprocess.h"

extern char** environ;

namespace pszero {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;
namespace fs = std::filesystem;

int CountLines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

ProcessResult Bench(const std::vector<std::string>& args,
                    const std::vector<std::string>& env = {}) {
  std::vector<std::string> argv = {BinaryPath("pszero-bench")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, std::chrono::seconds(120), env);
}

std::string Joined(const std::vector<std::string>& args) {
  std::string s;
  for (const std::string& a : args) s += a + " ";
  return s;
}

// Exit 2 and exactly one line on stderr that starts with `line` (the rest of a line that
// names this machine's memory varies), nothing on stdout.
void ExpectUsageLine(const std::vector<std::string>& args, const std::string& line) {
  const ProcessResult r = Bench(args);
  EXPECT_FALSE(r.signaled) << Joined(args) << r.err;
  EXPECT_EQ(r.exit_code, 2) << Joined(args) << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << Joined(args) << r.err;
  EXPECT_EQ(r.err.rfind(line, 0), 0u) << Joined(args) << "\nwant: " << line << "\ngot:  " << r.err;
  EXPECT_EQ(r.out, "") << Joined(args);
}

TEST(BenchRobustTest, NegativeOverflowingAndHugeSizesAreUsageErrors) {
  ExpectUsageLine({"p2p", "--sizes", "-8"}, "pszero-bench: error: --sizes: bad size '-8'\n");
  ExpectUsageLine({"ps", "--bytes", "-4M"}, "pszero-bench: error: --bytes: bad size '-4M'\n");
  ExpectUsageLine({"p2p", "--sizes", "18446744073709551615K"},
                  "pszero-bench: error: --sizes: size '18446744073709551615K' is too large\n");
  ExpectUsageLine({"p2p", "--sizes", "99999999999999999999"},
                  "pszero-bench: error: --sizes: size '99999999999999999999' is too large\n");
  // More than any machine running these tests has.
  ExpectUsageLine({"ps", "--bytes", "1048576G"},
                  "pszero-bench: error: --bytes: size '1048576G' is more than this machine's "
                  "memory (");
  ExpectUsageLine({"p2p", "--sizes", "8,1048576G"},
                  "pszero-bench: error: --sizes: size '1048576G' is more than this machine's "
                  "memory (");
  ExpectUsageLine({"collective", "--min-bytes", "1048576G", "--max-bytes", "1048576G"},
                  "pszero-bench: error: --min-bytes: size '1048576G' is more than this "
                  "machine's memory (");
  // Each size fits, all ranks together do not: refused before any rank starts.
  ExpectUsageLine({"collective", "--ranks", "256", "--min-bytes", "8", "--max-bytes",
                   std::to_string(sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / 2)},
                  "pszero-bench collective: error: --max-bytes: needs ");
}

TEST(BenchRobustTest, FlagErrorsNameTheFlag) {
  ExpectUsageLine({"--bogus"},
                  "pszero-bench: error: --bogus: not a flag of pszero-bench itself (flags go "
                  "after the subcommand)\n");
  ExpectUsageLine({"simulate", "--params", "abc"},
                  "pszero-bench simulate: error: --params: not a count like 7.5e9, 7.5B or 85M\n");
  ExpectUsageLine({"train", "--link-gbit", "1"},
                  "pszero-bench train: error: --link-gbit: only with --emulate-hosts\n");
  // (NaN and inf for --array-mb: BenchCliTest.FifoInputsAndNanAreRefusedAtOnce.)
  ExpectUsageLine({"stream", "--threads", "1,,2"},
                  "pszero-bench: error: --threads: empty item in '1,,2'\n");
  ExpectUsageLine({"stream", "--threads", "1,2,"},
                  "pszero-bench: error: --threads: empty item in '1,2,'\n");
}

TEST(BenchRobustTest, NcclWithoutAGpuIsOneLineUpFront) {
  if (kernels::CudaDeviceCount() > 0) GTEST_SKIP() << "a CUDA device is present";
  if (!kernels::CudaBuilt()) {
    ExpectUsageLine({"collective", "--backend", "nccl", "--max-bytes", "1K"},
                    "pszero-bench collective: error: --backend nccl needs a CUDA build\n");
  } else {
    ExpectUsageLine({"collective", "--backend", "nccl", "--max-bytes", "1K"},
                    "pszero-bench collective: error: --backend nccl: no CUDA device\n");
  }
}

TEST(BenchRobustTest, MissingBinariesAndLauncherUsageErrorsAreExit2OneLine) {
  auto empty = TempDir::Create("pszero-bench-bindir");
  ASSERT_TRUE(empty.ok());
  const std::string dir = empty->path().string();
  ExpectUsageLine(
      {"train", "--bin-dir", dir, "--sync", "allreduce", "--steps", "2"},
      "pszero-bench train: error: --bin-dir " + dir + ": no executable pszero-launch there\n");
  ExpectUsageLine(
      {"checkpoint", "--bin-dir", dir},
      "pszero-bench checkpoint: error: --bin-dir " + dir + ": no executable pszero-launch there\n");
  ExpectUsageLine({"soak", "--bin-dir", dir}, "pszero-bench soak: error: --bin-dir " + dir +
                                                  ": no executable pszero-launch there\n");
  // The launcher's own one line, passed through with its exit code.
  const std::string launcher_line =
      "pszero-launch: error: --workers: 3 workers do not split into replicas of --tp 2 (world = "
      "T x D)\n";
  ExpectUsageLine({"checkpoint", "--workers", "3", "--tp", "2"}, launcher_line);
  ExpectUsageLine({"soak", "--workers", "3", "--tp", "2", "--steps", "2"}, launcher_line);
}

// A temp directory to run a bench in (TMPDIR), to see what it leaves behind.
class BenchTmpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("pszero-bench-tmp");
    ASSERT_TRUE(d.ok());
    tmp_ = std::make_unique<TempDir>(std::move(d).value());
  }
  std::vector<std::string> Left() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(tmp_->path())) {
      names.push_back(e.path().filename().string());
    }
    return names;
  }
  std::unique_ptr<TempDir> tmp_;
};

// The server child dies at its start: the parent, waiting for it in the store, fails at
// once naming it (it used to wait out the 120 s timeout), and removes its temp dir.
TEST_F(BenchTmpTest, PsChildDyingEarlyEndsTheRunAtOnce) {
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r =
      Bench({"ps", "--servers", "1", "--workers", "1", "--bytes", "4K", "--iters", "1", "--no-p2p"},
            {"PSZERO_FAULT_INJECT=sigkill:ps0:start", "TMPDIR=" + tmp_->path().string()});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("pszero-bench ps: error: server 0 (rank 0) was killed by signal 9 before "
                       "the run ended\n"),
            std::string::npos)
      << r.err;
  EXPECT_LT(seconds, 60) << "waited for the dead child";
  EXPECT_TRUE(Left().empty()) << Left().front();
}

std::vector<int> ChildrenOf(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<int> pids;
  for (int p; in >> p;) pids.push_back(p);
  return pids;
}

// Running, not a zombie or gone.
bool Alive(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  const size_t close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z' &&
         line[close + 2] != 'X';
}

// SIGKILL to the bench parent (it cannot clean up): its children die with it.
TEST_F(BenchTmpTest, ChildrenDieWithAKilledBench) {
  const std::string bench = BinaryPath("pszero-bench");
  const std::string tmpdir = "TMPDIR=" + tmp_->path().string();
  std::vector<std::string> args = {bench,     "ps", "--servers", "1",      "--workers", "2",
                                   "--bytes", "4K", "--iters",   "100000", "--no-p2p"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::string(*e).rfind("TMPDIR=", 0) != 0) env_strings.push_back(*e);
  }
  env_strings.push_back(tmpdir);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t parent = -1;
  ASSERT_EQ(posix_spawn(&parent, bench.c_str(), &actions, nullptr, argv.data(), envp.data()), 0);
  posix_spawn_file_actions_destroy(&actions);
  std::vector<int> children;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    children = ChildrenOf(parent);
    if (children.size() >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(parent, SIGKILL);
  int status = 0;
  ::waitpid(parent, &status, 0);
  ASSERT_EQ(children.size(), 2u) << "the bench did not start its children";
  const auto gone_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  bool any_alive = true;
  while (any_alive && std::chrono::steady_clock::now() < gone_by) {
    any_alive = false;
    for (int c : children) any_alive = any_alive || Alive(c);
    if (any_alive) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (int c : children) {
    EXPECT_FALSE(Alive(c)) << "child " << c << " outlived its killed parent";
    if (Alive(c)) ::kill(c, SIGKILL);  // by pid: never leave it running
  }
}

}  // namespace
}  // namespace pszero
