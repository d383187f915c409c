#include "common/control_plane_main.h"

#include <fcntl.h>

#include <glog/logging.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <iostream>
#include <new>
#include <thread>
#include <utility>

#include "common/auth.h"
#include "common/cluster_env.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/logging.h"
#include "common/rendezvous_client.h"

namespace pszero {

namespace {

using std::chrono::milliseconds;

struct ControlPlaneFlags {
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string token_file;
  int node_rank = 0;
  int local_rank = 0;
  int rank = -1;
  int heartbeat_ms = 500;
  int join_timeout_ms = 60000;
  int wait_timeout_ms = 60000;
};

void AddFlags(CLI::App& app, ControlPlaneFlags& f) {
  app.add_option("--master-addr", f.master_addr, "Address of the rendezvous service")
      ->envname("PSZERO_MASTER_ADDR");
  app.add_option("--master-port", f.master_port, "Port of the rendezvous service")
      ->envname("PSZERO_MASTER_PORT")
      ->required()
      ->check(CLI::Range(1, 65535));
  app.add_option("--token-file", f.token_file,
                 "File holding the cluster token (default: $PSZERO_TOKEN)")
      ->check(CLI::ExistingFile);
  app.add_option("--node-rank", f.node_rank, "Rank of this machine in the job")
      ->envname("PSZERO_NODE_RANK")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--local-rank", f.local_rank, "Rank of this process on its machine")
      ->envname("PSZERO_LOCAL_RANK")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--rank", f.rank, "Rank to ask for (-1: assigned by the service)")
      ->envname("PSZERO_RANK")
      ->check(CLI::Range(-1, 1 << 20));
  app.add_option("--heartbeat-ms", f.heartbeat_ms, "Heartbeat interval")
      ->envname("PSZERO_HEARTBEAT_MS")
      ->check(CLI::Range(10, 60000));
  app.add_option("--join-timeout-ms", f.join_timeout_ms, "Deadline for the whole job to join")
      ->envname("PSZERO_JOIN_TIMEOUT_MS")
      ->check(CLI::Range(1, 86400000));
  app.add_option("--wait-timeout-ms", f.wait_timeout_ms, "Deadline of each barrier and lookup")
      ->envname("PSZERO_WAIT_TIMEOUT_MS")
      ->check(CLI::Range(1, 86400000));
}

std::string BlobFor(Role role, int node_rank, int local_rank) {
  return std::string(RoleName(role)) + " node " + std::to_string(node_rank) + " local " +
         std::to_string(local_rank);
}

std::string GreetingKey(Role role, int rank) { return "pszero/hello/" + PeerTag(role, rank); }
std::string Greeting(Role role, int rank) { return "hello from " + PeerTag(role, rank); }

// `body`, with an exception turned into a Status: memory running out mid-work (a model
// too large for this machine) ends the process through the normal failure path, with its
// exit code and one "out of memory" line, rather than std::terminate.
Status RunCatching(const std::function<Status()>& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Status::ResourceExhausted("std::bad_alloc: a memory allocation failed");
  } catch (const std::exception& e) {
    return Status::Internal(std::string("uncaught exception: ") + e.what());
  }
}

// Runs `hooks.serve` while a background thread waits in `barrier`, the workers' last one
// (no wait deadline: the job's length is the workers' business; a lost peer still ends the
// barrier with Unavailable).
Status ServeUntilBarrier(RendezvousClient& client, const ProcessWork& hooks,
                         const std::string& barrier) {
  MaybeInjectFault(PeerTag(client.role(), client.rank()), barrier);
  std::atomic<bool> done{false};
  Status waited;
  std::thread waiter([&] {
    waited = client.Barrier(barrier, milliseconds(86400000));
    done = true;
  });
  Status served = RunCatching([&] { return hooks.serve(client, [&] { return done.load(); }); });
  if (!served.ok()) {
    // The barrier cannot complete without this process: leave so that it fails.
    client.Leave();
  }
  waiter.join();
  PSZERO_RETURN_IF_ERROR(served);
  if (waited.ok()) LOG(INFO) << "passed barrier '" << barrier << "'";
  return waited;
}

class Rounds {
 public:
  Rounds(RendezvousClient& client, milliseconds timeout, const ProcessWork& hooks)
      : client_(client), timeout_(timeout), hooks_(hooks) {}

  Status Run() {
    PSZERO_RETURN_IF_ERROR(Barrier("joined"));
    PSZERO_RETURN_IF_ERROR(client_.Set(GreetingKey(client_.role(), client_.rank()),
                                       Greeting(client_.role(), client_.rank()), timeout_));
    PSZERO_RETURN_IF_ERROR(Barrier("published"));
    for (const wire::MemberInfo& m : client_.members()) {
      const int rank = static_cast<int>(m.rank);
      PSZERO_ASSIGN_OR_RETURN(std::string blob, client_.PeerBlob(m.role, rank, timeout_));
      const std::string want =
          BlobFor(m.role, static_cast<int>(m.node_rank), static_cast<int>(m.local_rank));
      if (blob != want) {
        return Status::Corruption("blob of " + PeerName(m.role, rank) + " is '" + blob +
                                  "', expected '" + want + "'");
      }
      PSZERO_ASSIGN_OR_RETURN(std::string hello, client_.Get(GreetingKey(m.role, rank), timeout_));
      if (hello != Greeting(m.role, rank)) {
        return Status::Corruption("greeting of " + PeerName(m.role, rank) + " is '" + hello + "'");
      }
    }
    LOG(INFO) << "looked up the blobs and greetings of all " << client_.members().size()
              << " processes";
    if (!hooks_.serve) return Barrier(kDoneBarrier);
    return ServeUntilBarrier(client_, hooks_, kDoneBarrier);
  }

 private:
  Status Barrier(const std::string& name) {
    MaybeInjectFault(PeerTag(client_.role(), client_.rank()), name);
    PSZERO_RETURN_IF_ERROR(client_.Barrier(name, timeout_));
    LOG(INFO) << "passed barrier '" << name << "'";
    return Status::Ok();
  }

  RendezvousClient& client_;
  milliseconds timeout_;
  const ProcessWork& hooks_;
};

}  // namespace

bool FaultAsked(std::string_view action, std::string_view tag, std::string_view point) {
  const char* fault = std::getenv("PSZERO_FAULT_INJECT");
  if (fault == nullptr) return false;
  if (fault != std::string(action) + ":" + std::string(tag) + ":" + std::string(point))
    return false;
  // PSZERO_FAULT_ONCE=<path>: fire only if the file does not exist yet (and create it),
  // so that a restarted job does not meet the same fault again.
  if (const char* once = std::getenv("PSZERO_FAULT_ONCE")) {
    const int fd = ::open(once, O_CREAT | O_EXCL | O_WRONLY, 0600);
    if (fd < 0) return false;
    ::close(fd);
  }
  return true;
}

void MaybeInjectFault(std::string_view tag, std::string_view point) {
  for (const auto& [action, sig] : {std::pair{"sigkill", SIGKILL}, std::pair{"sigstop", SIGSTOP}}) {
    if (FaultAsked(action, tag, point)) {
      LOG(WARNING) << "fault injection: " << action << " at '" << point << "'";
      ::raise(sig);
    }
  }
}

int ControlPlaneMain(Role role, int argc, char** argv) {
  return ControlPlaneMain(role, argc, argv, ProcessWork{});
}

int ControlPlaneMain(Role role, int argc, char** argv, const ProcessWork& work) {
  const std::string name = role == Role::kServer ? "pszero-server" : "pszero-worker";
  // Under pszero-launch the tag is known before the rank (local mode assigns rank =
  // local rank), so early lines carry it too.
  const char* tag = std::getenv("PSZERO_LOG_TAG");
  InitLogging(argv[0], tag != nullptr && *tag != '\0' ? tag : std::string(RoleName(role)));
  auto app = MakeApp(name, name + ": a pszero " + std::string(RoleName(role)) +
                               " process (started by pszero-launch)");
  // Started by mpirun or a torchrun-style tool: its variables give the defaults of
  // --rank, --local-rank, --node-rank, --master-addr and --master-port (docs/cluster.md).
  Result<ProcessEnv> outside = DeriveProcessEnv(CurrentEnv());
  if (!outside.ok()) {
    std::cerr << name << ": error: " << outside.status().message() << "\n";
    return kExitUsage;
  }
  ExportProcessEnv(*outside);
  ControlPlaneFlags flags;
  AddFlags(*app, flags);
  if (work.add_flags) work.add_flags(*app);
  if (auto code = ParseFlags(*app, argc, argv)) return *code;
  if (work.check_flags) {
    const Status s = work.check_flags();
    if (!s.ok()) {
      std::cerr << name << ": error: " << s.message() << "\n";
      return kExitUsage;
    }
  }
  const bool run_work = work.run && (!work.enabled || work.enabled());

  RendezvousOptions options;
  options.master_addr = flags.master_addr;
  options.master_port = static_cast<uint16_t>(flags.master_port);
  options.role = role;
  options.node_rank = flags.node_rank;
  options.local_rank = flags.local_rank;
  options.requested_rank = flags.rank;
  options.heartbeat_interval = milliseconds(flags.heartbeat_ms);
  options.blob = BlobFor(role, flags.node_rank, flags.local_rank);
  // A missing token is not fatal here: the service refuses the join, and the process
  // reports "authentication failed" like any other wrong token.
  Result<std::string> token = LoadClusterToken(flags.token_file);
  if (token.ok()) {
    options.token = *token;
  } else if (!flags.token_file.empty()) {
    std::cerr << name << ": error: --token-file: " << token.status().message() << "\n";
    return kExitUsage;
  } else {
    LOG(WARNING) << token.status().message();
  }

  // Tests: a process that dies before it has joined (its tag is known from the launcher).
  if (tag != nullptr && *tag != '\0') MaybeInjectFault(tag, "join");
  Result<std::unique_ptr<RendezvousClient>> client =
      RendezvousClient::Join(options, milliseconds(flags.join_timeout_ms));
  if (!client.ok()) {
    if (client.status().code() == StatusCode::kUnauthenticated) {
      LOG(ERROR) << "authentication failed: the rendezvous service at " << flags.master_addr << ":"
                 << flags.master_port << " refused the cluster token";
    } else {
      LOG(ERROR) << "cannot join the job: " << client.status().ToString();
    }
    return ExitCodeFor(client.status());
  }
  RendezvousClient& c = **client;
  SetLogTag(PeerTag(role, c.rank()));
  LOG(INFO) << "joined as " << PeerName(role, c.rank()) << " (" << c.num_servers() << " servers, "
            << c.num_workers() << " workers)";

  const milliseconds wait_timeout(flags.wait_timeout_ms);
  // Worker 0 tells serving processes which life the workers live (they all run the same
  // command line): the rounds, or their own work (training), which they end in barrier
  // kWorkDoneBarrier without entering the rounds' barriers.
  Status s;
  if (role == Role::kWorker && c.rank() == 0) {
    s = c.Set(kWorkerLifeKey, run_work ? kWorkerLifeWork : kWorkerLifeRounds, wait_timeout);
  }
  if (s.ok()) {
    if (run_work) {
      s = RunCatching([&] { return work.run(c); });
    } else if (work.serve) {
      Result<std::string> life = c.Get(kWorkerLifeKey, wait_timeout);
      if (!life.ok()) {
        s = life.status().WithContext("learning what the workers do");
      } else if (*life == kWorkerLifeWork) {
        LOG(INFO) << "the workers train: serving until barrier '" << kWorkDoneBarrier << "'";
        s = ServeUntilBarrier(c, work, kWorkDoneBarrier);
      } else {
        s = Rounds(c, wait_timeout, work).Run();
      }
    } else {
      s = Rounds(c, wait_timeout, work).Run();
    }
  }
  if (!s.ok()) {
    if (s.code() == StatusCode::kInvalidArgument) {
      std::cerr << name << ": error: " << s.message() << "\n";
      return kExitUsage;
    }
    if (auto lost = c.peer_lost()) {
      LOG(ERROR) << "stopping: " << lost->ToString();
    } else {
      LOG(ERROR) << "stopping: " << s.ToString();
    }
    return ExitCodeFor(s);
  }
  LOG(INFO) << (run_work ? "work done; leaving" : "control plane done; leaving");
  c.Leave();
  return kExitOk;
}

}  // namespace pszero
