// The real pszero-launch with its stdout on a pseudo-terminal and on a pipe: worker 0's
// step lines (here from a fake worker script) become one updating line on the terminal,
// finished with a newline before any other line; on a pipe they stay plain lines.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "tests/support/subprocess.h"

extern char** environ;

namespace pszero::testing {
namespace {

using Clock = std::chrono::steady_clock;

// A bin dir whose pszero-worker is a script: worker 0 prints three step lines with one
// other line between the first two, then the hash line; the others print nothing.
class FakeStepWorkers {
 public:
  FakeStepWorkers() {
    dir_ =
        std::filesystem::temp_directory_path() / ("pszero-progress-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    const auto path = dir_ / "pszero-worker";
    std::ofstream(path) << "#!/bin/sh\n"
                           "[ \"$PSZERO_LOCAL_RANK\" = 0 ] || exit 0\n"
                           "echo 'step 1/3 loss 5.500000 time_ms 1000.000 tokens_per_s 4096.0'\n"
                           "echo hello\n"
                           "echo 'step 2/3 loss 5.250000 time_ms 3000.000 tokens_per_s 1365.3'\n"
                           "echo 'step 3/3 loss 5.000000 time_ms 2000.000 tokens_per_s 2048.0'\n"
                           "echo 'final_params_sha256 00ff'\n";
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
  }
  ~FakeStepWorkers() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir() const { return dir_.string(); }

 private:
  std::filesystem::path dir_;
};

// Runs pszero-launch with stdout on a raw pseudo-terminal (stderr to /dev/null) and returns
// everything written to the terminal; the child is reaped by pid, killed past 60 s.
std::string RunOnTerminal(const std::vector<std::string>& args, int* exit_code) {
  int master = -1, slave = -1;
  if (::openpty(&master, &slave, nullptr, nullptr, nullptr) != 0) {
    ADD_FAILURE() << "openpty: " << std::strerror(errno);
    return "";
  }
  termios raw{};
  ::tcgetattr(slave, &raw);
  ::cfmakeraw(&raw);  // no "\n" -> "\r\n": the bytes arrive as the launcher wrote them
  ::tcsetattr(slave, TCSANOW, &raw);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, slave, STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addclose(&actions, master);
  std::vector<std::string> argv = {BinaryPath("pszero-launch")};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, cargv[0], &actions, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(slave);
  if (rc != 0) {
    ::close(master);
    ADD_FAILURE() << "posix_spawn: " << std::strerror(rc);
    return "";
  }
  std::string out;
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  char buf[4096];
  while (true) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      ADD_FAILURE() << "pszero-launch did not finish within 60 s; output so far:\n" << out;
      ::kill(pid, SIGKILL);
      break;
    }
    pollfd pfd{master, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) <= 0) continue;
    const ssize_t n = ::read(master, buf, sizeof(buf));
    if (n > 0) {
      out.append(buf, static_cast<size_t>(n));
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // EIO: every holder of the terminal's other end has closed it
    }
  }
  ::close(master);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST(ProgressPtyTest, TerminalGetsOneUpdatingLine) {
  ::unsetenv("PSZERO_FAULT_INJECT");
  FakeStepWorkers fake;
  int code = -1;
  const std::string out =
      RunOnTerminal({"--workers", "2", "--timeout", "60", "--bin-dir", fake.dir()}, &code);
  EXPECT_EQ(code, 0);
  EXPECT_EQ(out,
            "\r\033[Kstep 1/3  loss 5.5000  step 1000.0 ms  4096 tok/s  ETA 00:02\n"
            "[w0] hello\n"
            "\r\033[Kstep 2/3  loss 5.2500  step 3000.0 ms  1365 tok/s  ETA 00:02"
            "\r\033[Kstep 3/3  loss 5.0000  step 2000.0 ms  2048 tok/s  ETA 00:00\n"
            "[w0] final_params_sha256 00ff\n");
}

TEST(ProgressPtyTest, PipeGetsPlainLines) {
  ::unsetenv("PSZERO_FAULT_INJECT");
  FakeStepWorkers fake;
  const ProcessResult r = RunProcess(
      {BinaryPath("pszero-launch"), "--workers", "2", "--timeout", "60", "--bin-dir", fake.dir()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "[w0] step 1/3 loss 5.500000 time_ms 1000.000 tokens_per_s 4096.0 eta_s 2.0\n"
            "[w0] hello\n"
            "[w0] step 2/3 loss 5.250000 time_ms 3000.000 tokens_per_s 1365.3 eta_s 2.0\n"
            "[w0] step 3/3 loss 5.000000 time_ms 2000.000 tokens_per_s 2048.0 eta_s 0.0\n"
            "[w0] final_params_sha256 00ff\n");
}

}  // namespace
}  // namespace pszero::testing
