#include "launch/bench/child_run.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <vector>

#include "common/file_util.h"

extern char** environ;

namespace pszero::bench {

namespace {

using Clock = std::chrono::steady_clock;

// SIGINT or SIGTERM that reached pszero-bench while a child ran: forwarded to the child's
// group (it has its own, so a terminal's Ctrl-C does not reach it directly), and reported
// in ChildRun::interrupted_by once the child is reaped.
volatile sig_atomic_t g_interrupt = 0;

void OnInterrupt(int sig) { g_interrupt = sig; }

// What an InterruptLatch noted: the first SIGINT or SIGTERM while it existed.
volatile sig_atomic_t g_latched = 0;

void OnLatchedInterrupt(int sig) {
  if (g_latched == 0) g_latched = sig;
}

int MillisLeft(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  return static_cast<int>(std::max<int64_t>(0, left.count()));
}

}  // namespace

InterruptLatch::InterruptLatch() {
  g_latched = 0;
  struct sigaction on = {};
  on.sa_handler = OnLatchedInterrupt;
  sigemptyset(&on.sa_mask);
  ::sigaction(SIGINT, &on, &old_int_);
  ::sigaction(SIGTERM, &on, &old_term_);
}

InterruptLatch::~InterruptLatch() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
}

int InterruptLatch::signal() const { return g_latched; }

std::string ChildRun::Describe() const {
  if (timed_out) return "timed out";
  if (signaled) return "signal " + std::to_string(term_signal);
  return "exit code " + std::to_string(exit_code);
}

Status CheckBinDir(const std::string& dir, bool flag_given, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    if (IsExecutableFile(std::filesystem::path(dir) / name)) continue;
    return Status::InvalidArgument(flag_given
                                       ? "--bin-dir " + dir + ": no executable " + name + " there"
                                       : "no executable " + name + " beside pszero-bench (in " +
                                             dir + "): pass --bin-dir");
  }
  return Status::Ok();
}

std::string LastLines(const std::string& text, int lines) {
  std::vector<std::string> all;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    all.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  std::string out;
  for (size_t i = all.size() > static_cast<size_t>(lines) ? all.size() - lines : 0; i < all.size();
       ++i) {
    if (!out.empty()) out.push_back('\n');
    out += all[i];
  }
  return out;
}

Result<ChildRun> RunChild(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& env) {
  if (argv.empty()) return Status::InvalidArgument("RunChild: empty argv");
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return Status::IoError(std::string("pipe: ") + strerror(errno));
  if (::pipe2(err, O_CLOEXEC) != 0) {
    const int saved = errno;
    ::close(out[0]);
    ::close(out[1]);
    return Status::IoError(std::string("pipe: ") + strerror(saved));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err[1], STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv(*e);
    const std::string_view name = kv.substr(0, kv.find('='));
    const bool replaced = std::any_of(env.begin(), env.end(), [&](const std::string& add) {
      return add.size() > name.size() && add.compare(0, name.size(), name) == 0 &&
             add[name.size()] == '=';
    });
    if (!replaced) envp.push_back(*e);
  }
  for (const std::string& kv : env) envp.push_back(const_cast<char*>(kv.c_str()));
  envp.push_back(nullptr);
  // The handlers go in before the child exists: a signal between its start and their
  // installation would end this process by default and leave the child (in a group of its
  // own, out of the sender's reach) running. Caught early, it is forwarded at once below.
  g_interrupt = 0;
  struct sigaction on_interrupt = {};
  on_interrupt.sa_handler = OnInterrupt;
  sigemptyset(&on_interrupt.sa_mask);
  struct sigaction old_int = {};
  struct sigaction old_term = {};
  ::sigaction(SIGINT, &on_interrupt, &old_int);
  ::sigaction(SIGTERM, &on_interrupt, &old_term);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(out[1]);
  ::close(err[1]);
  if (rc != 0) {
    ::sigaction(SIGINT, &old_int, nullptr);
    ::sigaction(SIGTERM, &old_term, nullptr);
    ::close(out[0]);
    ::close(err[0]);
    return Status::IoError("cannot start " + argv[0] + ": " + strerror(rc));
  }

  ChildRun run;
  int forwarded = 0;
  Clock::time_point deadline = Clock::now() + timeout;
  Clock::time_point kill_at = Clock::time_point::max();
  Clock::time_point give_up_at = Clock::time_point::max();  // a grandchild keeps a pipe
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  std::string* sinks[2] = {&run.out, &run.err};
  int open = 2;
  char buf[65536];
  while (open > 0) {
    if (g_interrupt != 0 && forwarded == 0) {
      forwarded = g_interrupt;
      ::kill(-pid, forwarded);  // pszero-launch forwards it to its workers and stops them
      // A child that does not stop within 10 s is stopped as at the deadline.
      deadline = std::min(deadline, Clock::now() + std::chrono::seconds(10));
    }
    if (!run.timed_out && Clock::now() >= deadline) {
      run.timed_out = true;
      ::kill(-pid, SIGTERM);  // its whole group: the program and what it started
      ::kill(-pid, SIGCONT);
      kill_at = Clock::now() + std::chrono::seconds(2);
    }
    if (run.timed_out && Clock::now() >= kill_at) {
      ::kill(-pid, SIGKILL);
      kill_at = Clock::time_point::max();
      give_up_at = Clock::now() + std::chrono::seconds(5);
    }
    if (Clock::now() >= give_up_at) break;
    const int wait_ms = !run.timed_out                        ? MillisLeft(deadline)
                        : kill_at != Clock::time_point::max() ? MillisLeft(kill_at)
                                                              : MillisLeft(give_up_at);
    const int n = ::poll(fds, 2, wait_ms);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;  // a signal or a timer: check them at the top
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      const ssize_t got = ::read(fds[i].fd, buf, sizeof(buf));
      if (got > 0) {
        sinks[i]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  for (const pollfd& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  run.interrupted_by = g_interrupt;
  if (run.interrupted_by != 0 && g_latched == 0) g_latched = run.interrupted_by;
  if (WIFSIGNALED(status)) {
    run.signaled = true;
    run.term_signal = WTERMSIG(status);
  } else if (WIFEXITED(status)) {
    run.exit_code = WEXITSTATUS(status);
  }
  return run;
}

}  // namespace pszero::bench
