// pszero-launch: runs a whole pszero job on this machine (local mode), or this node's part
// of a job over several (--nnodes, --hostfile, Slurm, torchrun-style variables), or only
// the rendezvous service (--rendezvous-only). See docs/launch.md and docs/cluster.md for
// flags, environment variables and exit codes.
#include <glog/logging.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "common/auth.h"
#include "common/cluster_env.h"
#include "common/exit_codes.h"
#include "common/file_util.h"
#include "common/flags.h"
#include "common/logging.h"
#include "launch/config_file.h"
#include "launch/hostfile.h"
#include "launch/launcher.h"
#include "launch/multinode.h"
#include "worker/train/checkpoint.h"
#include "worker/train/train_flags.h"

extern char** environ;

namespace {

struct LaunchFlags {
  int workers = 1;
  int servers = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string token_file;
  double timeout_s = 0;
  int heartbeat_ms = 500;
  int heartbeat_timeout_ms = 2000;
  int join_timeout_ms = 60000;
  int grace_ms = 5000;
  std::string bin_dir;
  int max_restarts = 0;
  // pszero-server's consistency flags (docs/ps.md), passed on its command line.
  std::string consistency = "bsp";
  int staleness = 0;
  double ps_slice_mb = 4.0;
  // Beyond one machine (docs/cluster.md).
  int nnodes = 1;
  int node_rank = 0;
  std::string nproc_per_node;    // "K" or "k0,k1,..."
  std::string servers_per_node;  // the same, for servers
  std::string hostfile;
  bool rendezvous_only = false;
  bool token_stdin = false;
};

// The parameter-server flags against --servers and --sync. `training`: --model given
// (otherwise the children only live the control-plane rounds, and servers may be
// started with any --sync for that). InvalidArgument naming the flag.
pszero::Status CheckPsFlags(const CLI::App& app, const LaunchFlags& f,
                            const pszero::train::TrainFlags& train) {
  using pszero::Status;
  const bool ps = train.sync == "ps";
  const bool training = !train.model.empty();
  if (ps && f.servers < 1) {
    return Status::InvalidArgument(
        "--servers: --sync ps needs at least one pszero-server (--servers S with S >= 1)");
  }
  if (!ps && f.servers > 0 && (training || app.count("--sync") > 0)) {
    return Status::InvalidArgument("--servers: " + std::to_string(f.servers) +
                                   " pszero-servers serve only --sync ps, not --sync " +
                                   train.sync + " (use --servers 0)");
  }
  for (const char* flag : {"--consistency", "--staleness", "--ps-slice-mb"}) {
    if (app.count(flag) > 0 && f.servers < 1) {
      return Status::InvalidArgument(std::string(flag) +
                                     ": a pszero-server flag; give --servers S and --sync ps");
    }
  }
  if (app.count("--staleness") > 0 && f.consistency != "ssp") {
    return Status::InvalidArgument("--staleness: only with --consistency ssp, not " +
                                   f.consistency);
  }
  return Status::Ok();
}

// The servers also average over the workers' micro-batches (--grad-accum, when not 1).
std::vector<std::string> ServerArgs(const LaunchFlags& f, const pszero::train::TrainFlags& train) {
  char mb[32];
  std::snprintf(mb, sizeof(mb), "%.17g", f.ps_slice_mb);
  std::vector<std::string> args = {"--consistency", f.consistency,
                                   "--staleness",   std::to_string(f.staleness),
                                   "--ps-slice-mb", mb};
  if (train.grad_accum != 1) {
    args.push_back("--grad-accum");
    args.push_back(std::to_string(train.grad_accum));
  }
  return args;
}

// --master-addr is an IP literal or a host name, checked here without the network (a
// name is resolved by each process when it joins): "999.1.1.1" would only fail after
// every worker's join timeout. The message names no flag.
std::optional<std::string> BadAddress(const std::string& addr) {
  if (pszero::IsIpLiteral(addr)) return std::nullopt;
  if (addr.find_first_not_of("0123456789.") == std::string::npos) {
    return "'" + addr + "' is not an IPv4 address";
  }
  if (addr.find(':') != std::string::npos) return "'" + addr + "' is not an IPv6 address";
  if (addr.size() > 253 || addr.front() == '-' || addr.front() == '.') {
    return "'" + addr + "' is not a host name";
  }
  for (char c : addr) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return "'" + addr + "' is not a host name";
    }
  }
  return std::nullopt;
}

// The collective switches the launcher passes on (docs/collectives.md) take 0 or 1; a
// typo would otherwise leave the default on without a word.
std::optional<std::string> BadSwitchVariable() {
  for (const char* name : {"PSZERO_INTRA_HOST", "PSZERO_HIERARCHICAL", "PSZERO_SINGLE_COPY"}) {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') continue;
    if (std::string(v) != "0" && std::string(v) != "1") {
      return std::string("$") + name + ": '" + v + "' is not 0 or 1";
    }
  }
  return std::nullopt;
}

int Usage(const std::string& message) {
  std::cerr << "pszero-launch: error: " << message << "\n";
  return pszero::kExitUsage;
}

int Usage(const pszero::Status& status) { return Usage(status.message()); }

// The command line minus the flags named (each with its value: "--flag V" or "--flag=V").
std::vector<std::string> WithoutFlags(const std::vector<std::string>& args,
                                      const std::vector<std::string>& flags) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    bool drop = false;
    for (const std::string& f : flags) {
      if (args[i] == f) {
        drop = true;
        ++i;  // its value
        break;
      }
      if (args[i].rfind(f + "=", 0) == 0) {
        drop = true;
        break;
      }
    }
    if (!drop) out.push_back(args[i]);
  }
  return out;
}

std::string JoinCounts(const std::vector<int>& counts) {
  std::string out;
  for (int c : counts) out += (out.empty() ? "" : ",") + std::to_string(c);
  return out;
}

int Main(int argc, char** argv) {
  using std::chrono::milliseconds;
  pszero::InitLogging(argv[0], "launch");
  auto app = pszero::MakeApp("pszero-launch", "pszero-launch: runs a pszero job on this machine");
  LaunchFlags f;
  app->add_option("--workers", f.workers, "Number of pszero-worker processes")
      ->check(CLI::Range(1, 4096));
  app->add_option("--servers", f.servers, "Number of pszero-server processes")
      ->check(CLI::Range(0, 4096));
  app->add_option("--master-addr", f.master_addr, "Address the rendezvous service binds")
      ->check(pszero::NonEmpty());
  app->add_option("--master-port", f.master_port, "Port of the rendezvous service (0: any free)")
      ->check(CLI::Range(0, 65535));
  app->add_option("--token-file", f.token_file,
                  "Cluster token file (default: $PSZERO_TOKEN, else a fresh random token)")
      ->check(CLI::ExistingFile);
  app->add_option("--timeout", f.timeout_s, "Seconds the whole job may run (0: no limit)")
      ->check(pszero::FiniteRange(0.0, 1e7));
  app->add_option("--heartbeat-ms", f.heartbeat_ms, "Heartbeat interval of every process")
      ->check(CLI::Range(10, 60000));
  app->add_option("--heartbeat-timeout-ms", f.heartbeat_timeout_ms,
                  "Silence after which a process is declared lost")
      ->check(CLI::Range(20, 600000));
  app->add_option("--join-timeout-ms", f.join_timeout_ms, "Deadline for every process to join")
      ->check(CLI::Range(1, 86400000));
  app->add_option("--grace-ms", f.grace_ms,
                  "After a failure, how long the others may take to exit before SIGTERM")
      ->check(CLI::Range(0, 3600000));
  app->add_option("--bin-dir", f.bin_dir,
                  "Directory of pszero-worker and pszero-server (default: beside pszero-launch)")
      ->check(CLI::ExistingDirectory);
  app->add_option("--max-restarts", f.max_restarts,
                  "When a process of the job fails, restart the job up to this many times "
                  "(from the newest checkpoint in --checkpoint-dir, if any)")
      ->check(CLI::Range(0, 1000));
  app->add_option("--consistency", f.consistency,
                  "--sync ps: when the servers apply pushes and answer pulls (bsp, ssp, asp)")
      ->check(CLI::IsMember({"bsp", "ssp", "asp"}));
  app->add_option("--staleness", f.staleness,
                  "--consistency ssp: how many steps a worker may run ahead of the slowest")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--ps-slice-mb", f.ps_slice_mb,
                  "--sync ps: size of the key-range slices spread over the servers, MiB")
      ->check(pszero::FiniteRange(0.0001, 4096.0));
  app->add_option("--config",
                  "JSON file of flags (keys: flag names without dashes); "
                  "command-line flags win (docs/cluster.md)");
  app->add_option("--nnodes", f.nnodes,
                  "Machines in the job, one pszero-launch each (default: $NNODES, Slurm's, 1)")
      ->check(CLI::Range(1, 4096));
  app->add_option("--node-rank", f.node_rank,
                  "This machine's rank, 0..nnodes-1; node 0 runs the rendezvous service "
                  "(default: $NODE_RANK, Slurm's, 0)")
      ->check(CLI::Range(0, 4095));
  app->add_option("--nproc-per-node,--workers-per-node", f.nproc_per_node,
                  "Workers on each machine: K, or k0,k1,... one per node (default: --workers "
                  "spread evenly)")
      ->check(pszero::NonEmpty());
  app->add_option("--servers-per-node", f.servers_per_node,
                  "Servers on each machine: S, or s0,s1,... (default: --servers spread evenly)")
      ->check(pszero::NonEmpty());
  app->add_option("--hostfile", f.hostfile,
                  "Start one node launcher per line 'host slots=N' over ssh ($PSZERO_SSH)")
      ->check(pszero::NonEmpty());
  app->add_flag("--rendezvous-only", f.rendezvous_only,
                "Run only the rendezvous service for --workers/--servers processes started "
                "by another tool (mpirun); needs --token-file or $PSZERO_TOKEN");
  app->add_flag("--token-stdin", f.token_stdin,
                "Read the cluster token from stdin's first line and stop when stdin ends "
                "(how --hostfile starts node launchers)");
  pszero::train::TrainFlags train;
  pszero::train::AddTrainFlags(*app, train);
  // --config FILE: its flags first, the command line's win (launch/config_file.h).
  pszero::Result<std::vector<std::string>> expanded =
      pszero::ExpandConfigFlags(std::vector<std::string>(argv + 1, argv + argc), *app);
  if (!expanded.ok()) return Usage(expanded.status());
  std::vector<const char*> args = {argv[0]};
  for (const std::string& a : *expanded) args.push_back(a.c_str());
  if (auto code = pszero::ParseFlags(*app, static_cast<int>(args.size()), args.data())) {
    return *code;
  }

  // Where this node stands: flags, else torchrun-style variables, else Slurm's.
  pszero::Result<pszero::NodeEnv> env = pszero::DeriveNodeEnv(pszero::CurrentEnv());
  if (!env.ok()) return Usage(env.status());
  if (!f.hostfile.empty()) {
    for (const char* flag : {"--nnodes", "--node-rank", "--rendezvous-only", "--token-stdin"}) {
      if (app->count(flag) > 0) {
        return Usage(std::string(flag) + ": not with --hostfile (which sets it for every node)");
      }
    }
  } else {
    if (app->count("--nnodes") == 0 && env->nnodes) f.nnodes = *env->nnodes;
    if (app->count("--node-rank") == 0 && env->node_rank) f.node_rank = *env->node_rank;
  }
  if (app->count("--master-addr") == 0 && env->master_addr) f.master_addr = *env->master_addr;
  if (app->count("--master-port") == 0 && env->master_port) f.master_port = *env->master_port;
  if (!env->source.empty() && f.hostfile.empty() && f.nnodes > 1) {
    LOG(INFO) << "from the " << env->source << " environment: node " << f.node_rank << " of "
              << f.nnodes << ", master " << f.master_addr << ":" << f.master_port;
  }
  if (auto bad = BadAddress(f.master_addr)) {
    return Usage("--master-addr: " + *bad +
                 (app->count("--master-addr") > 0 ? "" : " (from the environment)"));
  }
  if (auto bad = BadSwitchVariable()) return Usage(*bad);
  const bool multinode = f.nnodes > 1 || !f.hostfile.empty();
  if (f.node_rank >= f.nnodes) {
    return Usage("--node-rank: " + std::to_string(f.node_rank) + " not below --nnodes " +
                 std::to_string(f.nnodes));
  }
  if (multinode && f.master_port == 0) {
    if (app->count("--master-port") > 0) {
      return Usage("--master-port: 0 (any free port) works on one machine only; give a port");
    }
    f.master_port = pszero::kDefaultMasterPort;
  }
  if (f.rendezvous_only && f.max_restarts > 0) {
    return Usage("--max-restarts: not with --rendezvous-only (another tool starts the processes)");
  }

  // Per-node counts: the hostfile's slots, --nproc-per-node, or --workers spread evenly.
  std::vector<pszero::HostSlots> hosts;
  if (!f.hostfile.empty()) {
    pszero::Result<std::vector<pszero::HostSlots>> read = pszero::ReadHostfile(f.hostfile);
    if (!read.ok()) return Usage("--hostfile: " + read.status().message());
    hosts = *read;
    f.nnodes = static_cast<int>(hosts.size());
  }
  pszero::NodeLayout layout;
  if (!f.nproc_per_node.empty()) {
    auto counts = pszero::ParsePerNode(f.nproc_per_node, f.nnodes, "--nproc-per-node");
    if (!counts.ok()) return Usage(counts.status());
    layout.workers = *counts;
  } else if (!hosts.empty()) {
    for (const pszero::HostSlots& h : hosts) layout.workers.push_back(h.slots);
  } else {
    layout.workers = pszero::SplitEvenly(f.workers, f.nnodes);
  }
  if (app->count("--workers") > 0 && layout.TotalWorkers() != f.workers) {
    return Usage("--workers: " + std::to_string(f.workers) + " but the nodes run " +
                 std::to_string(layout.TotalWorkers()) + " (" + JoinCounts(layout.workers) + ")");
  }
  if (!f.servers_per_node.empty()) {
    auto counts = pszero::ParsePerNode(f.servers_per_node, f.nnodes, "--servers-per-node");
    if (!counts.ok()) return Usage(counts.status());
    layout.servers = *counts;
    if (app->count("--servers") > 0 && layout.TotalServers() != f.servers) {
      return Usage("--servers: " + std::to_string(f.servers) + " but the nodes run " +
                   std::to_string(layout.TotalServers()) + " (" + JoinCounts(layout.servers) + ")");
    }
  } else {
    layout.servers = pszero::SplitEvenly(f.servers, f.nnodes);
  }
  if (layout.TotalWorkers() < 1) return Usage("--nproc-per-node: the job has no worker");
  f.workers = layout.TotalWorkers();
  f.servers = layout.TotalServers();
  if (pszero::Status s = CheckPsFlags(*app, f, train); !s.ok()) return Usage(s);
  if (pszero::Status s = pszero::train::CheckTrainFlags(train, f.workers); !s.ok()) {
    return Usage(s);
  }
  // Worker 0, which writes the report, runs on node 0 (a --hostfile launcher's node 0 is
  // started over ssh and checks it there).
  if (f.node_rank == 0 && f.hostfile.empty() && !f.rendezvous_only) {
    if (pszero::Status s = pszero::train::CheckReportFlag(train); !s.ok()) return Usage(s);
  }
  // Memory and --trace where this launcher starts workers (not a --hostfile or
  // --rendezvous-only launcher, which may run on a login node).
  if (f.hostfile.empty() && !f.rendezvous_only) {
    if (pszero::Status s = pszero::train::CheckLocalTrainFlags(train, f.workers); !s.ok()) {
      return Usage(s);
    }
  }
  if (f.heartbeat_timeout_ms <= f.heartbeat_ms) {
    std::cerr << "pszero-launch: error: --heartbeat-timeout-ms (" << f.heartbeat_timeout_ms
              << ") must be longer than --heartbeat-ms (" << f.heartbeat_ms << ")\n";
    return pszero::kExitUsage;
  }

  pszero::LaunchOptions options;
  options.num_workers = f.workers;
  options.num_servers = f.servers;
  options.master_addr = f.master_addr;
  options.master_port = static_cast<uint16_t>(f.master_port);
  options.timeout = milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  options.heartbeat_interval = milliseconds(f.heartbeat_ms);
  options.heartbeat_timeout = milliseconds(f.heartbeat_timeout_ms);
  options.join_timeout = milliseconds(f.join_timeout_ms);
  options.grace = milliseconds(f.grace_ms);
  options.worker_args = pszero::train::TrainArgs(train);
  if (f.servers > 0) options.server_args = ServerArgs(f, train);
  options.bin_dir = f.bin_dir.empty() ? pszero::ExecutableDir() : f.bin_dir;
  if (!f.bin_dir.empty() && !f.rendezvous_only && f.hostfile.empty()) {
    for (const char* binary : {"pszero-worker", "pszero-server"}) {
      if (std::string(binary) == "pszero-server" && f.servers == 0) continue;
      if (!pszero::IsExecutableFile(std::filesystem::path(f.bin_dir) / binary)) {
        return Usage("--bin-dir: " + f.bin_dir + " has no executable " + binary);
      }
    }
  }

  // The token: --token-stdin (a node started over ssh), --token-file, $PSZERO_TOKEN, or
  // fresh; every node of a job must hold the same one, so only a job that starts all its
  // nodes itself (one machine, --hostfile) may make one up.
  pszero::Result<std::string> token = pszero::Status::NotFound("no token");
  if (f.token_stdin) {
    token = pszero::ReadTokenFromStdin();
    if (!token.ok()) return Usage(token.status());
    pszero::StopWhenStdinCloses();
  } else {
    token = pszero::LoadClusterToken(f.token_file);
    if (!token.ok() && !f.token_file.empty())
      return Usage("--token-file: " + token.status().message());
    const bool shared = (f.nnodes > 1 && f.hostfile.empty()) || f.rendezvous_only;
    if (!token.ok() && f.token_file.empty() && shared) {
      return Usage(std::string(f.rendezvous_only ? "--rendezvous-only" : "--nnodes") +
                   ": every process of the job needs the same cluster token: give "
                   "--token-file FILE or set $PSZERO_TOKEN");
    }
    if (!token.ok() && f.token_file.empty()) token = pszero::GenerateClusterToken();
  }
  if (!token.ok()) {
    LOG(ERROR) << token.status().ToString();
    return pszero::kExitLaunchError;
  }
  options.token = *token;

  if (f.rendezvous_only) {
    pszero::RendezvousServiceOptions so;
    so.address = pszero::IsIpLiteral(f.master_addr) ? f.master_addr : "0.0.0.0";
    so.port = static_cast<uint16_t>(f.master_port);
    so.num_servers = f.servers;
    so.num_workers = f.workers;
    so.token = options.token;
    so.heartbeat_timeout = options.heartbeat_timeout;
    return pszero::RunRendezvousOnly(so, options.timeout);
  }

  if (!f.hostfile.empty()) {
    pszero::SshJobOptions ssh;
    ssh.hosts = hosts;
    const char* program = std::getenv("PSZERO_SSH");
    ssh.ssh_command = {program != nullptr && *program != '\0' ? program : "ssh", "-o",
                       "BatchMode=yes"};
    ssh.launch_program =
        (std::filesystem::path(pszero::ExecutableDir()) / "pszero-launch").string();
    const std::string master =
        app->count("--master-addr") > 0 || env->master_addr ? f.master_addr : hosts.front().host;
    ssh.node_args = WithoutFlags(
        *expanded, {"--hostfile", "--token-file", "--master-addr", "--master-port", "--workers",
                    "--servers", "--nproc-per-node", "--workers-per-node", "--servers-per-node"});
    for (const std::string& a :
         {std::string("--nnodes"), std::to_string(f.nnodes), std::string("--master-addr"), master,
          std::string("--master-port"), std::to_string(f.master_port),
          std::string("--nproc-per-node"), JoinCounts(layout.workers),
          std::string("--servers-per-node"), JoinCounts(layout.servers)}) {
      ssh.node_args.push_back(a);
    }
    // Settings of the data plane and of the tests travel with the command (never secrets):
    // UCX_*, GLOG_* and the launcher's pass-through list (PSZERO_HIERARCHICAL=0 must reach
    // every host).
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv(*e);
      bool forward = kv.rfind("UCX_", 0) == 0 || kv.rfind("GLOG_", 0) == 0;
      for (const char* name : pszero::kPassedThroughVariables) {
        forward = forward || kv.rfind(std::string(name) + "=", 0) == 0;
      }
      if (forward) ssh.forward_env.push_back(kv);
    }
    std::error_code ec;
    ssh.workdir = std::filesystem::current_path(ec).string();
    ssh.token = options.token;
    ssh.grace = options.grace;
    LOG(INFO) << "hostfile " << f.hostfile << ": " << hosts.size() << " nodes, " << f.workers
              << " workers, " << f.servers << " servers, master " << master << ":" << f.master_port;
    return pszero::RunSshJob(ssh);
  }

  // A name (--master-addr node01, Slurm's first host) may resolve differently here than
  // elsewhere: the service binds every interface then.
  if (!pszero::IsIpLiteral(f.master_addr)) options.bind_addr = "0.0.0.0";
  if (f.nnodes > 1) {
    pszero::SetLogTag("launch:n" + std::to_string(f.node_rank));
    const auto node = static_cast<size_t>(f.node_rank);
    options.node_rank = f.node_rank;
    options.num_workers = layout.workers[node];
    options.num_servers = layout.servers[node];
    options.world_workers = layout.TotalWorkers();
    options.world_servers = layout.TotalServers();
    options.worker_rank_offset = layout.WorkerOffset(f.node_rank);
    options.server_rank_offset = layout.ServerOffset(f.node_rank);
    options.host_service = f.node_rank == 0;
    // Every node but node 0 joins node 0's service itself: it reports its children's
    // deaths at once and takes the checkpoint to resume from node 0's plan.
    options.join_as_node_launcher = f.node_rank != 0;
    if (options.join_as_node_launcher) {
      pszero::train::TrainFlags plain = train;
      plain.resume.clear();
      options.worker_args = pszero::train::TrainArgs(plain);
    }
    LOG(INFO) << "node " << f.node_rank << " of " << f.nnodes << ": " << options.num_workers
              << " workers (from rank " << options.worker_rank_offset << "), "
              << options.num_servers << " servers; rendezvous " << f.master_addr << ":"
              << f.master_port;
  }
  options.resume = train.resume;
  int code = pszero::RunLocalJob(options);
  // Restart after a failed process (not after a timeout, an interrupt or a launch error).
  // Node 0 (or the one machine) picks the newest checkpoint once all its processes are
  // gone (worker 0, which commits checkpoints, is one of them) and its service tells the
  // other nodes, whose launchers rejoin it for the next generation (docs/cluster.md).
  for (int restart = 1; code == pszero::kExitFailure && restart <= f.max_restarts; ++restart) {
    options.generation = restart;
    if (options.join_as_node_launcher) {
      LOG(WARNING) << "restart " << restart << "/" << f.max_restarts
                   << ": rejoining node 0's rendezvous service for generation " << restart;
    } else {
      pszero::train::TrainFlags again = train;
      std::string from = again.resume.empty() ? "the beginning" : again.resume;
      if (!train.checkpoint_dir.empty()) {
        if (auto at = pszero::train::ResolveCheckpoint(train.checkpoint_dir); at.ok()) {
          again.resume = at->string();
          from = at->string();
        }
      }
      LOG(WARNING) << "restart " << restart << "/" << f.max_restarts << " from " << from;
      options.worker_args = pszero::train::TrainArgs(again);
      options.resume = again.resume;
    }
    code = pszero::RunLocalJob(options);
  }
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  return pszero::GuardedMain("pszero-launch", [&] { return Main(argc, argv); });
}
