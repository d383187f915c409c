#include "launch/multinode.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <glog/logging.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>

#include "common/exit_codes.h"
#include "launch/hang_report.h"
#include "launch/spawn_attributes.h"
#include "launch/write_all.h"

extern char** environ;

namespace pszero {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

int NodeLayout::TotalWorkers() const { return std::accumulate(workers.begin(), workers.end(), 0); }
int NodeLayout::TotalServers() const { return std::accumulate(servers.begin(), servers.end(), 0); }
int NodeLayout::WorkerOffset(int node) const {
  return std::accumulate(workers.begin(), workers.begin() + node, 0);
}
int NodeLayout::ServerOffset(int node) const {
  return std::accumulate(servers.begin(), servers.begin() + node, 0);
}

std::vector<int> SplitEvenly(int total, int nnodes) {
  std::vector<int> out(static_cast<size_t>(nnodes), total / nnodes);
  for (int n = 0; n < total % nnodes; ++n) ++out[static_cast<size_t>(n)];
  return out;
}

Result<std::vector<int>> ParsePerNode(const std::string& text, int nnodes,
                                      const std::string& flag) {
  std::vector<int> counts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    const std::string part = text.substr(start, comma - start);
    size_t used = 0;
    int n = -1;
    try {
      n = std::stoi(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size() || n < 0 || n > 4096) {
      return Status::InvalidArgument(flag + ": '" + part + "' is not a count 0..4096");
    }
    counts.push_back(n);
    start = comma + 1;
  }
  if (counts.size() == 1) return std::vector<int>(static_cast<size_t>(nnodes), counts[0]);
  if (static_cast<int>(counts.size()) != nnodes) {
    return Status::InvalidArgument(flag + ": " + std::to_string(counts.size()) + " counts for " +
                                   std::to_string(nnodes) + " nodes");
  }
  return counts;
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out.push_back(c);
    }
  }
  out.push_back('\'');
  return out;
}

bool IsIpLiteral(const std::string& address) {
  unsigned char buf[sizeof(struct in6_addr)];
  return ::inet_pton(AF_INET, address.c_str(), buf) == 1 ||
         ::inet_pton(AF_INET6, address.c_str(), buf) == 1;
}

namespace {

constexpr milliseconds kTermToKill{2000};
constexpr int kReapPollMs = 50;  // exited nodes looked for, when no output is left (Poll)

std::string DescribeWait(int st) {
  if (WIFEXITED(st)) return "exited with code " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) return "was killed by signal " + std::to_string(WTERMSIG(st));
  return "ended with wait status " + std::to_string(st);
}

// Blocks `signals` in this thread (and so in threads started later) and returns a
// signalfd for them; -1 on failure.
int BlockedSignalFd(std::initializer_list<int> signals, sigset_t* set) {
  sigemptyset(set);
  for (int s : signals) sigaddset(set, s);
  if (::pthread_sigmask(SIG_BLOCK, set, nullptr) != 0) return -1;
  return ::signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
}

// One node launcher started through ssh.
struct NodeProcess {
  int node = 0;
  std::string host;
  pid_t pid = -1;
  int stdin_fd = -1;             // the token was written here; closed to stop the node
  int out_fd = -1, err_fd = -1;  // -1 once at end of file
  std::string out_partial, err_partial;
  bool exited = false;
  int wait_status = 0;
  bool signalled = false;  // stopped by this launcher
};

class SshJob {
 public:
  explicit SshJob(const SshJobOptions& options) : options_(options) {}

  ~SshJob() {
    for (NodeProcess& n : nodes_) {
      CloseFd(n.stdin_fd);
      CloseFd(n.out_fd);
      CloseFd(n.err_fd);
      if (n.pid > 0 && !n.exited) {
        ::kill(n.pid, SIGKILL);
        int st = 0;
        while (::waitpid(n.pid, &st, 0) < 0 && errno == EINTR) {
        }
      }
    }
    if (signal_fd_ >= 0) ::close(signal_fd_);
    ::pthread_sigmask(SIG_UNBLOCK, &blocked_, nullptr);
  }

  int Run() {
    signal_fd_ = BlockedSignalFd({SIGCHLD, SIGINT, SIGTERM, SIGUSR1}, &blocked_);
    if (signal_fd_ < 0) {
      LOG(ERROR) << "cannot watch signals: " << std::strerror(errno);
      return kExitLaunchError;
    }
    ::signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < options_.hosts.size(); ++i) {
      if (Status s = Start(static_cast<int>(i)); !s.ok()) {
        LOG(ERROR) << s.ToString();
        return kExitLaunchError;  // the destructor kills and reaps what was started
      }
    }
    LOG(INFO) << "started " << nodes_.size() << " node launchers over "
              << options_.ssh_command.front();
    while (!Done()) Poll();
    return Finish();
  }

 private:
  static void CloseFd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  Status Start(int node) {
    NodeProcess n;
    n.node = node;
    n.host = options_.hosts[static_cast<size_t>(node)].host;
    // ssh would read such a host as an option (the hostfile parser refuses it already;
    // SshJobOptions may come from elsewhere).
    if (n.host.empty() || n.host[0] == '-') {
      return Status::InvalidArgument("host '" + n.host + "' is not a host name");
    }
    std::string remote = "cd " + ShellQuote(options_.workdir) + " && exec";
    if (!options_.forward_env.empty()) {
      remote += " env";
      for (const std::string& kv : options_.forward_env) remote += " " + ShellQuote(kv);
    }
    remote += " " + ShellQuote(options_.launch_program);
    for (const std::string& a : options_.node_args) remote += " " + ShellQuote(a);
    remote += " --node-rank " + std::to_string(node) + " --token-stdin";

    std::vector<std::string> argv = options_.ssh_command;
    argv.push_back(n.host);
    argv.push_back(remote);

    int in[2], out[2], err[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 ||
        ::pipe2(err, O_CLOEXEC) != 0) {
      return Status::IoError(std::string("pipe: ") + std::strerror(errno));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    const ChildSpawnAttributes attr;
    std::vector<char*> cargv;
    for (std::string& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    // posix_spawnp: the ssh program may be a name on $PATH.
    const int rc = ::posix_spawnp(&n.pid, cargv[0], &actions, attr.get(), cargv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    ::close(err[1]);
    n.stdin_fd = in[1];
    n.out_fd = out[0];
    n.err_fd = err[0];
    if (rc != 0) {
      n.pid = -1;
      CloseFd(n.stdin_fd);
      CloseFd(n.out_fd);
      CloseFd(n.err_fd);
      return Status::IoError("cannot start " + argv.front() + ": " + std::strerror(rc));
    }
    // The token: one line on stdin, which then stays open while the node runs.
    WriteAll(n.stdin_fd, options_.token + "\n");
    VLOG(1) << "node " << node << " (" << n.host << "): pid " << n.pid;
    nodes_.push_back(std::move(n));
    return Status::Ok();
  }

  bool Done() const {
    for (const NodeProcess& n : nodes_) {
      if (!n.exited || n.out_fd >= 0 || n.err_fd >= 0) return false;
    }
    return true;
  }

  void Poll() {
    std::vector<pollfd> fds;
    fds.push_back({signal_fd_, POLLIN, 0});
    for (const NodeProcess& n : nodes_) {
      if (n.out_fd >= 0) fds.push_back({n.out_fd, POLLIN, 0});
      if (n.err_fd >= 0) fds.push_back({n.err_fd, POLLIN, 0});
    }
    int wait_ms = -1;
    if (deadline_) {
      wait_ms = static_cast<int>(std::max<int64_t>(
          0, std::chrono::duration_cast<milliseconds>(*deadline_ - Clock::now()).count() + 1));
    }
    // SIGCHLD reaches the signalfd only while every thread blocks it; a thread a library
    // started before main (OpenBLAS's pool, from its constructor) takes it and drops it.
    // With no node output left to wait for, exited nodes are also looked for every 50 ms.
    if (fds.size() == 1) wait_ms = wait_ms < 0 ? kReapPollMs : std::min(wait_ms, kReapPollMs);
    const int r = ::poll(fds.data(), fds.size(), wait_ms);
    if (r < 0 && errno != EINTR) {
      LOG(ERROR) << "poll: " << std::strerror(errno);
      Escalate();
    }
    if (r > 0) {
      for (const pollfd& p : fds) {
        if (p.revents == 0) continue;
        if (p.fd == signal_fd_) {
          OnSignals();
          continue;
        }
        for (NodeProcess& n : nodes_) {
          if (p.fd == n.out_fd) ReadOutput(n, n.out_fd, n.out_partial, STDOUT_FILENO);
          if (p.fd == n.err_fd) ReadOutput(n, n.err_fd, n.err_partial, STDERR_FILENO);
        }
      }
    }
    Reap();  // cheap (WNOHANG), and what a lost SIGCHLD would have done
    if (deadline_ && Clock::now() >= *deadline_) Escalate();
  }

  // A node launcher's lines mostly carry a tag already ("[w3]", "[launch:n1]"); ssh's own
  // messages get the host's.
  void Emit(const NodeProcess& n, std::string_view line, int target) {
    std::string text;
    if (line.empty() || line.front() != '[') text = "[" + n.host + "] ";
    text.append(line);
    text.push_back('\n');
    WriteAll(target, text);
  }

  void ReadOutput(NodeProcess& n, int& fd, std::string& partial, int target) {
    char buf[4096];
    const ssize_t got = ::read(fd, buf, sizeof(buf));
    if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
    if (got <= 0) {
      if (!partial.empty()) Emit(n, partial, target);
      partial.clear();
      CloseFd(fd);
      return;
    }
    partial.append(buf, static_cast<size_t>(got));
    size_t start = 0;
    for (size_t nl; (nl = partial.find('\n', start)) != std::string::npos; start = nl + 1) {
      Emit(n, std::string_view(partial).substr(start, nl - start), target);
    }
    partial.erase(0, start);
  }

  void OnSignals() {
    signalfd_siginfo info;
    while (::read(signal_fd_, &info, sizeof(info)) == sizeof(info)) {
      const int sig = static_cast<int>(info.ssi_signo);
      if (sig == SIGCHLD) {
        Reap();
      } else if (sig == SIGUSR1) {
        // ssh passes no signal on; node 0's launcher owns the workers' reports.
        LOG(WARNING) << "SIGUSR1 is not forwarded over ssh: send it to the pszero-launch of "
                        "every node (node 0's names where the workers wait)";
      } else {
        if (interrupted_ == 0) interrupted_ = sig;
        LOG(WARNING) << "received signal " << sig << "; stopping every node";
        StopAll(sig);
        SetDeadline(options_.grace);
        stage_ = Stage::kTerm;
      }
    }
  }

  void Reap() {
    for (NodeProcess& n : nodes_) {
      if (n.exited) continue;
      int st = 0;
      if (::waitpid(n.pid, &st, WNOHANG) != n.pid) continue;
      n.exited = true;
      n.wait_status = st;
      CloseFd(n.stdin_fd);
      const bool ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
      if (ok) {
        VLOG(1) << "node " << n.node << " (" << n.host << ") exited with code 0";
        continue;
      }
      LOG(ERROR) << "node " << n.node << " (" << n.host << ") " << DescribeWait(st);
      if (!first_failure_ && !n.signalled) first_failure_ = n.node;
      // The other nodes hear of it through the service and stop on their own; those
      // that do not (a node that never joined) are stopped after --grace-ms.
      if (stage_ == Stage::kRunning) {
        stage_ = Stage::kGrace;
        SetDeadline(options_.grace);
      }
    }
  }

  void SetDeadline(milliseconds after) { deadline_ = Clock::now() + after; }

  // Grace over: close stdins and SIGTERM; later SIGKILL.
  void Escalate() {
    if (stage_ == Stage::kKill) {
      deadline_.reset();
      return;
    }
    if (stage_ == Stage::kGrace || stage_ == Stage::kRunning) {
      StopAll(SIGTERM);
      stage_ = Stage::kTerm;
      SetDeadline(kTermToKill);
      return;
    }
    for (NodeProcess& n : nodes_) {
      if (!n.exited) {
        LOG(WARNING) << "node " << n.node << " (" << n.host << ") did not stop; SIGKILL";
        ::kill(n.pid, SIGKILL);
      }
    }
    stage_ = Stage::kKill;
    deadline_.reset();
  }

  void StopAll(int sig) {
    for (NodeProcess& n : nodes_) {
      if (n.exited) continue;
      n.signalled = true;
      CloseFd(n.stdin_fd);  // the remote launcher stops when its stdin ends
      ::kill(n.pid, sig);
    }
  }

  int Finish() {
    if (interrupted_ != 0) {
      LOG(ERROR) << "job interrupted by signal " << interrupted_;
      return 128 + interrupted_;
    }
    const NodeProcess* cause = nullptr;
    for (const NodeProcess& n : nodes_) {
      if (WIFEXITED(n.wait_status) && WEXITSTATUS(n.wait_status) == kExitTimeout) {
        LOG(ERROR) << "job failed: node " << n.node << " (" << n.host << ") ran past --timeout";
        return kExitTimeout;
      }
    }
    if (first_failure_) cause = &nodes_[static_cast<size_t>(*first_failure_)];
    for (const NodeProcess& n : nodes_) {
      if (cause == nullptr && !(WIFEXITED(n.wait_status) && WEXITSTATUS(n.wait_status) == 0)) {
        cause = &n;
      }
    }
    if (cause != nullptr) {
      LOG(ERROR) << "job failed: node " << cause->node << " (" << cause->host << ") "
                 << DescribeWait(cause->wait_status);
      return kExitFailure;
    }
    LOG(INFO) << "all " << nodes_.size() << " node launchers exited with code 0";
    return kExitOk;
  }

  enum class Stage { kRunning, kGrace, kTerm, kKill };

  const SshJobOptions& options_;
  std::vector<NodeProcess> nodes_;
  sigset_t blocked_{};
  int signal_fd_ = -1;
  int interrupted_ = 0;
  std::optional<int> first_failure_;
  std::optional<Clock::time_point> deadline_;
  Stage stage_ = Stage::kRunning;
};

}  // namespace

int RunSshJob(const SshJobOptions& options) {
  SshJob job(options);
  return job.Run();
}

int RunRendezvousOnly(const RendezvousServiceOptions& options, milliseconds timeout) {
  sigset_t set;
  const int sfd = BlockedSignalFd({SIGINT, SIGTERM, SIGUSR1}, &set);
  if (sfd < 0) {
    LOG(ERROR) << "cannot watch signals: " << std::strerror(errno);
    return kExitLaunchError;
  }
  RendezvousServiceOptions so = options;
  so.on_peer_lost = [](const PeerLost& news) { LOG(WARNING) << news.ToString(); };
  // The workers are another tool's children: they report a collective past its deadline,
  // or SIGUSR1 that mpirun forwarded to them, here; one line names who waits where.
  std::mutex hang_mu;
  HangReport hang(options.num_workers, /*open_on_signal_report=*/true);
  std::optional<Clock::time_point> round_began;
  so.on_set = [&](const std::string& key, const std::string& value) {
    std::lock_guard lock(hang_mu);
    if (hang.OnKeySet(key, value)) round_began = Clock::now();
  };
  // Prints the open round's line once every worker answered, or when `force`d (the job
  // ends), or 5 s after the round began.
  auto print_hang = [&](bool force) {
    std::lock_guard lock(hang_mu);
    if (!hang.open()) return;
    if (force || hang.complete() || Clock::now() - *round_began >= milliseconds(5000)) {
      LOG(ERROR) << hang.TakeLine();
    }
  };
  Result<std::unique_ptr<RendezvousServiceThread>> service = RendezvousServiceThread::Start(so);
  if (!service.ok()) {
    LOG(ERROR) << "cannot start the rendezvous service: " << service.status().ToString();
    ::close(sfd);
    return kExitLaunchError;
  }
  const int world = options.num_servers + options.num_workers;
  LOG(INFO) << "rendezvous service listening on " << options.address << ":" << (*service)->port()
            << " for " << options.num_servers << " servers and " << options.num_workers
            << " workers";
  const auto start = Clock::now();
  int code = -1;
  while (code < 0) {
    // Wakes up for a signal within the slice; the service's state is checked each time.
    pollfd p{sfd, POLLIN, 0};
    const RendezvousSnapshot snap = (*service)->service().Snapshot();
    const bool ending = !snap.lost.empty() || snap.left >= world ||
                        (timeout.count() > 0 && Clock::now() - start >= timeout);
    print_hang(ending);
    if (!snap.lost.empty()) {
      LOG(ERROR) << "job failed: " << snap.lost.front().ToString();
      code = kExitFailure;
    } else if (snap.left >= world) {
      std::lock_guard lock(hang_mu);
      if (hang.saw_timeout()) {
        // The workers said goodbye, but after a collective ran past its deadline.
        LOG(ERROR) << "job failed: a collective ran past --collective-timeout-s";
        code = kExitFailure;
      } else {
        LOG(INFO) << "all " << world << " processes left";
        code = kExitOk;
      }
    } else if (timeout.count() > 0 && Clock::now() - start >= timeout) {
      LOG(ERROR) << "job failed: it ran past --timeout";
      code = kExitTimeout;
    } else if (::poll(&p, 1, 50) > 0) {
      signalfd_siginfo info{};
      if (::read(sfd, &info, sizeof(info)) == sizeof(info) && info.ssi_signo == SIGUSR1) {
        LOG(WARNING) << "SIGUSR1: the workers are another tool's processes; signal them "
                        "(mpirun forwards SIGUSR1 to its ranks) and this service names where "
                        "they wait";
      } else if (info.ssi_signo != 0) {
        LOG(ERROR) << "interrupted by signal " << info.ssi_signo;
        code = 128 + static_cast<int>(info.ssi_signo);
      }
    }
  }
  service->reset();  // joins the service's thread: no more on_set calls
  print_hang(true);  // a round a signal interrupted
  ::close(sfd);
  ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  return code;
}

Result<std::string> ReadTokenFromStdin() {
  std::string token;
  char c = 0;
  while (true) {
    const ssize_t n = ::read(STDIN_FILENO, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::InvalidArgument("--token-stdin: stdin ended before the token");
    if (c == '\n') break;
    token.push_back(c);
    if (token.size() > 4096) return Status::InvalidArgument("--token-stdin: token too long");
  }
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return Status::InvalidArgument("--token-stdin: empty token");
  return token;
}

void StopWhenStdinCloses() {
  std::thread([] {
    char buf[256];
    while (true) {
      const ssize_t n = ::read(STDIN_FILENO, buf, sizeof(buf));
      if (n > 0 || (n < 0 && errno == EINTR)) continue;
      break;
    }
    LOG(WARNING) << "stdin closed (the launcher that started this node went away): stopping";
    ::kill(::getpid(), SIGTERM);
  }).detach();
}

}  // namespace pszero
