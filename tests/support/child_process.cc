#include "tests/support/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

extern char** environ;

namespace pszero::testing {

std::unique_ptr<ChildProcess> ChildProcess::Spawn(const std::vector<std::string>& argv,
                                                  const std::vector<std::string>& env,
                                                  const std::vector<std::string>& unset) {
  static std::atomic<int> counter{0};
  std::unique_ptr<ChildProcess> child(new ChildProcess());
  child->output_path_ =
      (std::filesystem::temp_directory_path() /
       ("pszero-child-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".log"))
          .string();
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    bool drop = false;
    for (const auto& u : unset) drop = drop || entry.rfind(u + "=", 0) == 0;
    if (!drop) env_storage.push_back(entry);
  }
  for (const auto& e : env) env_storage.push_back(e);
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, child->output_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  const int rc = posix_spawn(&child->pid_, args[0], &actions, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return nullptr;
  child->pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, child->pid_, 0));
  return child;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    int st = 0;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  std::error_code ec;
  std::filesystem::remove(output_path_, ec);
}

void ChildProcess::Signal(int sig) const {
  if (pid_ > 0 && !exited_) ::kill(pid_, sig);
}

bool ChildProcess::Wait(std::chrono::milliseconds timeout) {
  if (exited_) return true;
  if (pidfd_ >= 0) {
    pollfd p{pidfd_, POLLIN, 0};
    int n;
    while ((n = ::poll(&p, 1, static_cast<int>(timeout.count()))) < 0 && errno == EINTR) {
    }
    if (n == 0) return false;
  }
  // Without pidfd (old kernels) this blocks; the test's own timeout still bounds it.
  int st = 0;
  pid_t r;
  while ((r = ::waitpid(pid_, &st, 0)) < 0 && errno == EINTR) {
  }
  if (r != pid_) return false;
  exited_ = true;
  status_ = st;
  return true;
}

ProcessResult ChildProcess::Finish(std::chrono::milliseconds timeout) {
  ProcessResult result;
  if (!Wait(timeout)) {
    result.timed_out = true;
    Signal(SIGKILL);
    Wait(std::chrono::milliseconds(60000));
  }
  if (WIFEXITED(status_)) {
    result.exit_code = WEXITSTATUS(status_);
  } else if (WIFSIGNALED(status_)) {
    result.signaled = true;
    result.term_signal = WTERMSIG(status_);
  }
  result.out = Output();
  return result;
}

std::string ChildProcess::Output() const {
  std::ifstream in(output_path_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace pszero::testing
