#include "launch/launcher.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/exit_codes.h"
#include "common/rendezvous_client.h"
#include "launch/hang_report.h"
#include "launch/progress.h"
#include "launch/rendezvous_service.h"
#include "launch/spawn_attributes.h"
#include "launch/write_all.h"

extern char** environ;

namespace pszero {

namespace asio = boost::asio;
using std::chrono::milliseconds;

std::string LaunchPlan::Encode() const {
  return "generation=" + std::to_string(generation) + "\nresume=" + resume + "\n";
}

Result<LaunchPlan> LaunchPlan::Decode(std::string_view text) {
  LaunchPlan plan;
  bool have_generation = false, have_resume = false;
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    if (line.rfind("generation=", 0) == 0) {
      const std::string value(line.substr(11));
      char* end = nullptr;
      const long g = std::strtol(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0' || g < 0 || g > 1000000) {
        return Status::Corruption("launch plan: bad generation '" + value + "'");
      }
      plan.generation = static_cast<int>(g);
      have_generation = true;
    } else if (line.rfind("resume=", 0) == 0) {
      plan.resume = std::string(line.substr(7));
      have_resume = true;
    } else if (!line.empty()) {
      return Status::Corruption("launch plan: unexpected line '" + std::string(line) + "'");
    }
  }
  if (!have_generation || !have_resume) return Status::Corruption("launch plan: incomplete");
  return plan;
}

std::string ExecutableDir() {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  return exe.parent_path().string();
}

namespace {

// How long stopped children get between SIGTERM and SIGKILL.
constexpr milliseconds kTermToKill{2000};
// After forwarding SIGUSR1: how long the workers may take to report their latest op.
constexpr milliseconds kSignalReportWait{5000};

std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

// One stream (stdout or stderr) of a child, copied line by line with the child's prefix.
struct OutputPipe {
  OutputPipe(asio::io_context& io, int fd, int target) : stream(io, fd), target_fd(target) {}
  asio::posix::stream_descriptor stream;
  int target_fd;
  std::array<char, 4096> buffer{};
  std::string partial;
  bool open = true;
};

struct Child {
  Role role = Role::kWorker;
  int rank = 0;
  std::string tag;  // "w3"
  pid_t pid = -1;
  std::vector<std::unique_ptr<OutputPipe>> pipes;
  bool exited = false;
  int wait_status = 0;
  bool signalled_by_launcher = false;
  bool after_news = false;  // failed after the service had reported a lost process

  std::string Name() const { return PeerName(role, rank) + " (pid " + std::to_string(pid) + ")"; }
  bool Failed() const {
    return exited && !(WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  }
  std::string DescribeExit() const {
    if (WIFEXITED(wait_status))
      return "exited with code " + std::to_string(WEXITSTATUS(wait_status));
    if (WIFSIGNALED(wait_status)) {
      const int sig = WTERMSIG(wait_status);
      return "was killed by signal " + std::to_string(sig) + " (" + SignalName(sig) + ")";
    }
    return "ended with wait status " + std::to_string(wait_status);
  }
  // A child that stopped because another was lost, or that the launcher itself stopped.
  bool IsConsequence() const {
    return signalled_by_launcher || after_news ||
           (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == kExitPeerLost);
  }
};

class LocalJob {
 public:
  explicit LocalJob(const LaunchOptions& options)
      : options_(options),
        worker_args_(options.worker_args),
        signals_(io_),
        timeout_timer_(io_),
        grace_timer_(io_),
        kill_timer_(io_),
        linger_timer_(io_),
        hang_timer_(io_),
        hang_(options.world_workers >= 0 ? options.world_workers : options.num_workers),
        progress_("w0", ::isatty(STDOUT_FILENO) == 1),
        stderr_terminal_(::isatty(STDERR_FILENO) == 1) {}

  ~LocalJob() {
    // Error paths: never leave a child behind.
    for (Child& c : children_) {
      if (c.pid > 0 && !c.exited) {
        ::kill(c.pid, SIGKILL);
        int st = 0;
        while (::waitpid(c.pid, &st, 0) < 0 && errno == EINTR) {
        }
      }
    }
  }

  int Run() {
    if (options_.join_as_node_launcher) {
      if (Status s = JoinAsNodeLauncher(); !s.ok()) {
        LOG(ERROR) << "cannot join the job as the node launcher of node " << options_.node_rank
                   << ": " << s.ToString();
        return s.code() == StatusCode::kDeadlineExceeded ? kExitDeadline : kExitLaunchError;
      }
    }
    boost::system::error_code ec;
    signals_.add(SIGINT, ec);
    signals_.add(SIGTERM, ec);
    signals_.add(SIGCHLD, ec);
    signals_.add(SIGUSR1, ec);
    if (ec) {
      LOG(ERROR) << "cannot install signal handlers: " << ec.message();
      return kExitLaunchError;
    }
    ::signal(SIGPIPE, SIG_IGN);

    if (options_.host_service) {
      RendezvousServiceOptions so;
      so.address = options_.bind_addr.empty() ? options_.master_addr : options_.bind_addr;
      so.port = options_.master_port;
      so.num_servers = WorldServers();
      so.num_workers = WorldWorkers();
      so.token = options_.token;
      so.heartbeat_timeout = options_.heartbeat_timeout;
      so.on_peer_lost = [this](const PeerLost& news) { OnPeerLost(news); };
      so.on_set = [this](const std::string& key, const std::string& value) {
        OnKeySet(key, value);
      };
      so.launch_plan = LaunchPlan{options_.generation, options_.resume}.Encode();
      Result<std::unique_ptr<RendezvousService>> service = RendezvousService::Start(io_, so);
      if (!service.ok()) {
        LOG(ERROR) << "cannot start the rendezvous service: " << service.status().ToString();
        return kExitLaunchError;
      }
      service_ = std::move(service).value();
      port_ = service_->port();
      LOG(INFO) << "rendezvous service listening on " << so.address << ":" << port_;
    } else {
      port_ = options_.master_port;
    }
    children_.reserve(static_cast<size_t>(options_.num_servers + options_.num_workers));

    for (int r = 0; r < options_.num_servers; ++r) {
      if (Status s = Spawn(Role::kServer, r); !s.ok()) return SpawnFailed(s);
    }
    for (int r = 0; r < options_.num_workers; ++r) {
      if (Status s = Spawn(Role::kWorker, r); !s.ok()) return SpawnFailed(s);
    }
    LOG(INFO) << "started " << options_.num_servers << " servers and " << options_.num_workers
              << " workers";
    WaitSignal();
    Reap();  // a child may have exited before the handler was armed
    if (options_.timeout.count() > 0) {
      timeout_timer_.expires_after(options_.timeout);
      timeout_timer_.async_wait([this](const boost::system::error_code& e) {
        if (!e) OnTimeout();
      });
    }
    io_.run();
    return Finish();
  }

 private:
  int WorldWorkers() const {
    return options_.world_workers >= 0 ? options_.world_workers : options_.num_workers;
  }
  int WorldServers() const {
    return options_.world_servers >= 0 ? options_.world_servers : options_.num_servers;
  }

  // Joins node 0's service as Role::kLauncher and reads its LaunchPlan, retrying while
  // that service is still the previous generation's (it refuses joins once failed, or
  // publishes an older generation) until --join-timeout-ms.
  Status JoinAsNodeLauncher() {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + options_.join_timeout;
    RendezvousOptions ro;
    ro.master_addr = options_.master_addr;
    ro.master_port = options_.master_port;
    ro.token = options_.token;
    ro.role = Role::kLauncher;
    ro.node_rank = options_.node_rank;
    ro.heartbeat_interval = options_.heartbeat_interval;
    Status last = Status::DeadlineExceeded("no answer");
    for (;;) {
      const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) {
        return Status::DeadlineExceeded("no rendezvous service of generation " +
                                        std::to_string(options_.generation) + " within " +
                                        std::to_string(options_.join_timeout.count()) +
                                        " ms (last: " + last.ToString() + ")");
      }
      Result<std::unique_ptr<RendezvousClient>> client = RendezvousClient::Join(ro, left);
      if (!client.ok()) {
        const StatusCode code = client.status().code();
        // Refused by the previous generation's service (failed, or this node's earlier
        // connection still open): try again. Anything else (token, deadline) is final.
        if (code != StatusCode::kUnavailable && code != StatusCode::kInvalidArgument) {
          return client.status();
        }
        last = client.status();
      } else {
        Result<std::string> text =
            (*client)->Get(kLaunchPlanKey, std::min(left, milliseconds(10000)));
        if (text.ok()) {
          PSZERO_ASSIGN_OR_RETURN(LaunchPlan plan, LaunchPlan::Decode(*text));
          if (plan.generation > options_.generation) {
            return Status::Internal("node 0 serves generation " + std::to_string(plan.generation) +
                                    ", this node is at " + std::to_string(options_.generation));
          }
          if (plan.generation == options_.generation) {
            if (!plan.resume.empty()) {
              worker_args_.push_back("--resume");
              worker_args_.push_back(plan.resume);
            }
            node_client_ = std::move(client).value();
            LOG(INFO) << "joined node 0's rendezvous service (generation " << plan.generation
                      << (plan.resume.empty() ? "" : ", resuming from " + plan.resume) << ")";
            break;
          }
          last = Status::Unavailable("node 0 still serves generation " +
                                     std::to_string(plan.generation));
        } else {
          last = text.status();
        }
      }
      std::this_thread::sleep_for(milliseconds(100));
    }
    // Losses elsewhere reach this node's loop at once (its children learn of them too).
    node_client_->SetPeerLostCallback([this](const PeerLost& news) {
      asio::post(io_, [this, news] {
        if (!done_) OnPeerLost(news);
      });
    });
    return Status::Ok();
  }

  // `local_rank` among this node's processes of `role`; the service gives the global
  // rank in node-major order, which the offsets predict (docs/launch.md, Ranks).
  Status Spawn(Role role, int local_rank) {
    const int rank = local_rank + (role == Role::kServer ? options_.server_rank_offset
                                                         : options_.worker_rank_offset);
    Child child;
    child.role = role;
    child.rank = rank;
    child.tag = PeerTag(role, rank);
    const std::string program = (std::filesystem::path(options_.bin_dir) /
                                 (role == Role::kServer ? "pszero-server" : "pszero-worker"))
                                    .string();

    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      if (std::strncmp(*e, "PSZERO_", 7) != 0) env.emplace_back(*e);
    }
    auto set = [&](const std::string& k, const std::string& v) { env.push_back(k + "=" + v); };
    set("PSZERO_MASTER_ADDR", options_.master_addr);
    set("PSZERO_MASTER_PORT", std::to_string(port_));
    set("PSZERO_TOKEN", options_.token);
    set("PSZERO_NODE_RANK", std::to_string(options_.node_rank));
    set("PSZERO_LOCAL_RANK", std::to_string(local_rank));
    set("PSZERO_RANK", "-1");  // assigned; wins over RANK or OMPI_* inherited (docs/cluster.md)
    set("PSZERO_NUM_SERVERS", std::to_string(WorldServers()));
    set("PSZERO_NUM_WORKERS", std::to_string(WorldWorkers()));
    set("PSZERO_HEARTBEAT_MS", std::to_string(options_.heartbeat_interval.count()));
    set("PSZERO_JOIN_TIMEOUT_MS", std::to_string(options_.join_timeout.count()));
    set("PSZERO_LOG_TAG", child.tag);  // its log prefix until it knows its rank
    for (const char* name : kPassedThroughVariables) {
      if (const char* value = std::getenv(name)) set(name, value);
    }
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);

    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0)
      return Status::IoError(std::string("pipe: ") + std::strerror(errno));
    if (::pipe2(err, O_CLOEXEC) != 0) {
      const int saved = errno;
      ::close(out[0]);
      ::close(out[1]);
      return Status::IoError(std::string("pipe: ") + std::strerror(saved));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, err[1], 2);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    const ChildSpawnAttributes attr;

    std::vector<char*> argv = {const_cast<char*>(program.c_str())};
    for (const std::string& a : role == Role::kWorker ? worker_args_ : options_.server_args) {
      argv.push_back(const_cast<char*>(a.c_str()));
    }
    argv.push_back(nullptr);
    const int rc =
        posix_spawn(&child.pid, program.c_str(), &actions, attr.get(), argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(err[1]);
    if (rc != 0) {
      ::close(out[0]);
      ::close(err[0]);
      return Status::IoError("cannot start " + program + ": " + std::strerror(rc));
    }
    child.pipes.push_back(std::make_unique<OutputPipe>(io_, out[0], STDOUT_FILENO));
    child.pipes.push_back(std::make_unique<OutputPipe>(io_, err[0], STDERR_FILENO));
    children_.push_back(std::move(child));
    const size_t index = children_.size() - 1;
    for (size_t p = 0; p < children_[index].pipes.size(); ++p) ReadPipe(index, p);
    VLOG(1) << "started " << children_[index].Name();
    return Status::Ok();
  }

  int SpawnFailed(const Status& status) {
    LOG(ERROR) << status.ToString();
    return kExitLaunchError;  // the destructor kills and reaps what was started
  }

  void ReadPipe(size_t index, size_t p) {
    OutputPipe& pipe = *children_[index].pipes[p];
    pipe.stream.async_read_some(
        asio::buffer(pipe.buffer), [this, index, p](const boost::system::error_code& ec, size_t n) {
          Child& child = children_[index];
          OutputPipe& pipe = *child.pipes[p];
          if (n > 0) {
            pipe.partial.append(pipe.buffer.data(), n);
            size_t start = 0;
            for (size_t nl; (nl = pipe.partial.find('\n', start)) != std::string::npos;
                 start = nl + 1) {
              EmitLine(child.tag, std::string_view(pipe.partial).substr(start, nl - start),
                       pipe.target_fd);
            }
            pipe.partial.erase(0, start);
          }
          if (ec) {
            if (!pipe.partial.empty()) EmitLine(child.tag, pipe.partial, pipe.target_fd);
            pipe.partial.clear();
            pipe.open = false;
            boost::system::error_code ignored;
            pipe.stream.close(ignored);
            return CheckDone();
          }
          ReadPipe(index, p);
        });
  }

  // glog lines of a child already carry its tag; everything else gets it here. Worker 0's
  // step lines go through the progress display (launch/progress.h).
  void EmitLine(const std::string& tag, std::string_view line, int fd) {
    if (fd == STDOUT_FILENO && tag == "w0") {
      if (std::optional<std::string> shown = progress_.OnLine(line)) {
        WriteAll(fd, *shown);
        return;
      }
    }
    BreakProgress(fd);
    const std::string prefix = "[" + tag + "]";
    std::string out;
    if (line.substr(0, prefix.size()) != prefix) out = prefix + " ";
    out.append(line);
    out.push_back('\n');
    WriteAll(fd, out);
  }

  // Finishes an open progress line before a line goes to `fd`: always for stdout, and for
  // stderr when it shares the terminal (the launcher's own glog lines go there too).
  void BreakProgress(int fd) {
    if (fd == STDOUT_FILENO || stderr_terminal_) {
      WriteAll(STDOUT_FILENO, progress_.BeforeOtherOutput());
    }
  }

  void WaitSignal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      if (sig == SIGCHLD) {
        Reap();
      } else if (sig == SIGUSR1) {
        OnDumpRequest();
      } else {
        OnInterrupt(sig);
      }
      if (!done_) WaitSignal();
    });
  }

  void Reap() {
    for (Child& c : children_) {
      if (c.exited) continue;
      int st = 0;
      const pid_t r = ::waitpid(c.pid, &st, WNOHANG);
      if (r == c.pid) {
        c.exited = true;
        c.wait_status = st;
        OnExit(c);
      }
    }
    CheckDone();
  }

  void OnExit(Child& c) {
    if (!c.Failed()) {
      VLOG(1) << c.Name() << " exited with code 0";
      return;
    }
    BreakProgress(STDERR_FILENO);
    failures_.push_back(&c - children_.data());
    // A crash while the job is already coming down (another process, perhaps on another
    // node, was lost) is not the cause.
    if (first_news_ && !(first_news_->role == c.role && first_news_->rank == c.rank)) {
      c.after_news = true;
    }
    if (c.IsConsequence()) {
      LOG(WARNING) << c.Name() << " " << c.DescribeExit();
    } else {
      LOG(ERROR) << c.Name() << " " << c.DescribeExit();
    }
    // A consequence is no news: the job has already failed.
    if (!c.IsConsequence() && service_) service_->ReportLost(c.role, c.rank, c.DescribeExit());
    // On another node: node 0's service hears of it now, not at a heartbeat timeout or
    // at the join deadline (a process that dies before the job is complete).
    if (!c.IsConsequence() && node_client_) {
      const Status reported = node_client_->ReportLost(c.role, c.rank,
                                                       c.DescribeExit() + " on node " +
                                                           std::to_string(options_.node_rank) +
                                                           " (pid " + std::to_string(c.pid) + ")");
      if (!reported.ok()) LOG(WARNING) << "cannot report it to node 0: " << reported.ToString();
    }
    StartGrace();
  }

  void OnPeerLost(const PeerLost& news) {
    BreakProgress(STDERR_FILENO);
    LOG(WARNING) << news.ToString();
    if (!first_news_) first_news_ = news;
    StartGrace();
  }

  // SIGUSR1: every worker dumps its flight recorder and reports its latest op; the
  // launcher that owns the service names the disagreement (HangReport).
  void OnDumpRequest() {
    BreakProgress(STDERR_FILENO);
    int forwarded = 0;
    for (const Child& c : children_) {
      if (c.exited || c.role != Role::kWorker) continue;
      ::kill(c.pid, SIGUSR1);
      ++forwarded;
    }
    if (!service_) {
      LOG(WARNING) << "received SIGUSR1; forwarded it to " << forwarded
                   << " workers (node 0's launcher names where they wait)";
      return;
    }
    LOG(WARNING) << "received SIGUSR1; asking " << forwarded
                 << " workers for their flight recorders";
    hang_.BeginSignalRound();
    signal_round_ = true;
    hang_timer_.expires_after(kSignalReportWait);
    hang_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec && signal_round_ && hang_.open()) PrintHangDiagnosis();
    });
  }

  void OnKeySet(const std::string& key, const std::string& value) {
    if (hang_.OnKeySet(key, value)) signal_round_ = false;  // a timeout began a round
    // A timeout round is printed when the job ends, just above its cause; a signal round
    // as soon as every worker has reported.
    if (signal_round_ && hang_.complete()) PrintHangDiagnosis();
  }

  void PrintHangDiagnosis() {
    BreakProgress(STDERR_FILENO);
    hang_timer_.cancel();
    LOG(ERROR) << hang_.TakeLine();
  }

  void OnInterrupt(int sig) {
    BreakProgress(STDERR_FILENO);
    if (interrupted_ == 0) interrupted_ = sig;
    LOG(WARNING) << "received " << SignalName(sig) << "; forwarding it to the running processes";
    SignalAll(sig);
    ScheduleKill(options_.grace);
  }

  void OnTimeout() {
    BreakProgress(STDERR_FILENO);
    timed_out_ = true;
    LOG(ERROR) << "the job ran past --timeout ("
               << std::chrono::duration<double>(options_.timeout).count() << " s); stopping it";
    SignalAll(SIGTERM);
    ScheduleKill(kTermToKill);
  }

  // After a failure the others should exit on their own once they hear of it; those
  // still running after the grace period are stopped.
  void StartGrace() {
    if (grace_started_ || done_) return;
    grace_started_ = true;
    grace_timer_.expires_after(options_.grace);
    grace_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || done_) return;
      BreakProgress(STDERR_FILENO);
      for (const Child& c : children_) {
        if (!c.exited) {
          LOG(WARNING) << c.Name() << " still running " << options_.grace.count()
                       << " ms after the failure; sending SIGTERM";
        }
      }
      SignalAll(SIGTERM);
      ScheduleKill(kTermToKill);
    });
  }

  void ScheduleKill(milliseconds delay) {
    if (kill_scheduled_) return;
    kill_scheduled_ = true;
    kill_timer_.expires_after(delay);
    kill_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || done_) return;
      BreakProgress(STDERR_FILENO);
      for (const Child& c : children_) {
        if (!c.exited) LOG(WARNING) << c.Name() << " did not stop; sending SIGKILL";
      }
      SignalAll(SIGKILL);
    });
  }

  void SignalAll(int sig) {
    for (Child& c : children_) {
      if (c.exited) continue;
      if (sig == SIGTERM || sig == SIGKILL) c.signalled_by_launcher = true;
      ::kill(c.pid, sig);
      // A stopped process acts on SIGTERM only once continued.
      if (sig == SIGTERM) ::kill(c.pid, SIGCONT);
    }
  }

  void CheckDone() {
    if (done_) return;
    for (const Child& c : children_) {
      if (!c.exited) return;
      for (const auto& p : c.pipes) {
        if (p->open) return;
      }
    }
    // Members on other nodes may still be leaving: keep serving them a while.
    if (service_ && !linger_done_ && failures_.empty() && interrupted_ == 0 && !timed_out_ &&
        WorldWorkers() + WorldServers() > options_.num_workers + options_.num_servers) {
      return LingerForRemoteMembers();
    }
    done_ = true;
    boost::system::error_code ignored;
    signals_.cancel(ignored);
    timeout_timer_.cancel();
    grace_timer_.cancel();
    kill_timer_.cancel();
    hang_timer_.cancel();
    if (service_) service_->Stop();
    io_.stop();
  }

  // Node 0 of a multi-node job: its own children are done, but the service must stay
  // until every member elsewhere has said goodbye (or was lost), at most --grace-ms.
  void LingerForRemoteMembers() {
    if (linger_started_) return;
    linger_started_ = true;
    linger_deadline_ = std::chrono::steady_clock::now() + options_.grace;
    PollLinger();
  }
  void PollLinger() {
    const RendezvousSnapshot snap = service_->Snapshot();
    const int world = WorldWorkers() + WorldServers();
    if (snap.left + static_cast<int>(snap.lost.size()) >= world ||
        std::chrono::steady_clock::now() >= linger_deadline_) {
      if (snap.left + static_cast<int>(snap.lost.size()) < world) {
        LOG(WARNING) << "only " << snap.left << " of " << world
                     << " processes said goodbye within --grace-ms; stopping the service";
      }
      linger_done_ = true;
      return CheckDone();
    }
    linger_timer_.expires_after(milliseconds(20));
    linger_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) PollLinger();
    });
  }

  int Finish() {
    // A job that ended before its last step leaves the progress line open.
    WriteAll(STDOUT_FILENO, progress_.BeforeOtherOutput());
    // Who waited where, when a collective timed out: the line users look for.
    if (hang_.open()) LOG(ERROR) << hang_.TakeLine();
    // The cause: the first failure that is not a reaction to another one.
    const Child* cause = nullptr;
    for (size_t i : failures_) {
      if (!children_[i].IsConsequence()) {
        cause = &children_[i];
        break;
      }
    }
    if (timed_out_) {
      LOG(ERROR) << "job failed: it ran past --timeout of "
                 << std::chrono::duration<double>(options_.timeout).count() << " s";
      return kExitTimeout;
    }
    if (interrupted_ != 0) {
      LOG(ERROR) << "job interrupted by " << SignalName(interrupted_);
      return 128 + interrupted_;
    }
    if (cause != nullptr) {
      LOG(ERROR) << "job failed: " << cause->Name() << " " << cause->DescribeExit();
      return kExitFailure;
    }
    if (first_news_) {
      LOG(ERROR) << "job failed: " << first_news_->ToString();
      return kExitFailure;
    }
    if (!failures_.empty()) {
      const Child& c = children_[failures_.front()];
      LOG(ERROR) << "job failed: " << c.Name() << " " << c.DescribeExit();
      return kExitFailure;
    }
    LOG(INFO) << "all " << children_.size() << " processes exited with code 0";
    return kExitOk;
  }

  const LaunchOptions& options_;
  std::vector<std::string> worker_args_;  // options_.worker_args, plus the plan's --resume
  asio::io_context io_;
  asio::signal_set signals_;
  asio::steady_timer timeout_timer_;
  asio::steady_timer grace_timer_;
  asio::steady_timer kill_timer_;
  asio::steady_timer linger_timer_;
  asio::steady_timer hang_timer_;
  HangReport hang_;
  bool signal_round_ = false;  // the open HangReport round began with SIGUSR1
  std::unique_ptr<RendezvousService> service_;
  // Node launchers of nodes > 0: their connection to node 0's service. Declared after
  // io_, so destroyed (its thread joined) first.
  std::unique_ptr<RendezvousClient> node_client_;
  uint16_t port_ = 0;
  std::vector<Child> children_;
  std::vector<size_t> failures_;  // indices into children_, in exit order
  std::optional<PeerLost> first_news_;
  int interrupted_ = 0;
  bool timed_out_ = false;
  bool grace_started_ = false;
  bool kill_scheduled_ = false;
  bool done_ = false;
  bool linger_started_ = false;
  bool linger_done_ = false;
  std::chrono::steady_clock::time_point linger_deadline_;
  ProgressDisplay progress_;
  bool stderr_terminal_;
};

}  // namespace

int RunLocalJob(const LaunchOptions& options) {
  LocalJob job(options);
  return job.Run();
}

}  // namespace pszero
