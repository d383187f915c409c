// The local launcher behind `pszero-launch`: one job on this machine.
//
// RunLocalJob() starts the rendezvous service in-process, spawns S pszero-server and W
// pszero-worker children with the job's environment (the cluster token travels only
// there), prefixes every line they print with their tag ("[s0] ", "[w3] "), forwards
// SIGINT and SIGTERM to them, and reaps each by pid. When a child fails it tells the
// others through the service, gives them `grace` to exit on their own, then stops the
// rest (SIGTERM, then SIGKILL). Everything runs on one thread and one io_context (a node
// launcher's RendezvousClient has its own I/O thread, whose news are posted to it).
// Exit codes are those of common/exit_codes.h; docs/launch.md lists them.
// Call once per process (it installs signal handlers for its duration).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pszero {

// What node 0's rendezvous service tells the node launchers of the other nodes
// (RendezvousServiceOptions::launch_plan): which generation of the job it serves (0, then
// one more per --max-restarts restart) and the checkpoint every worker resumes from
// (empty: none), so that every node restarts from the checkpoint node 0 chose.
struct LaunchPlan {
  int generation = 0;
  std::string resume;

  std::string Encode() const;
  static Result<LaunchPlan> Decode(std::string_view text);  // Corruption when malformed
};

// The PSZERO_* variables of the launcher's environment that reach its servers and workers
// (local children and, over ssh, other nodes); every other PSZERO_* is the launcher's to
// set. Fault injection for tests (docs/launch.md), the collectives' switches
// (docs/collectives.md) and NCCL's host per worker (a one-GPU check).
inline constexpr const char* kPassedThroughVariables[] = {
    "PSZERO_FAULT_INJECT", "PSZERO_FAULT_ONCE",  "PSZERO_HIERARCHICAL",
    "PSZERO_INTRA_HOST",   "PSZERO_SINGLE_COPY", "PSZERO_NCCL_HOST_PER_WORKER"};

struct LaunchOptions {
  int num_workers = 1;
  int num_servers = 0;
  std::string master_addr = "127.0.0.1";
  uint16_t master_port = 0;              // 0: a free port, printed
  std::string token;                     // the cluster token handed to the children
  std::string bin_dir;                   // where pszero-worker and pszero-server are
  std::chrono::milliseconds timeout{0};  // whole job; 0: none
  std::chrono::milliseconds heartbeat_interval{500};
  std::chrono::milliseconds heartbeat_timeout{2000};
  std::chrono::milliseconds join_timeout{60000};
  std::chrono::milliseconds grace{5000};  // after a failure, before SIGTERM
  std::vector<std::string> worker_args;   // appended to every pszero-worker's command line
  std::vector<std::string> server_args;   // appended to every pszero-server's command line

  // Multi-node (launch/multinode.h): this node's part of a larger job. The defaults are a
  // single-node job: the service runs here and the world is num_servers + num_workers.
  int node_rank = 0;
  bool host_service = true;    // false: the service runs elsewhere (master_addr:master_port)
  std::string bind_addr;       // what the service binds; empty: master_addr
  int world_workers = -1;      // workers in the whole job; -1: num_workers
  int world_servers = -1;      // servers in the whole job; -1: num_servers
  int worker_rank_offset = 0;  // global rank of this node's first worker (node-major order)
  int server_rank_offset = 0;  // global rank of this node's first server

  // Restarts across nodes (docs/cluster.md). Node 0 publishes LaunchPlan{generation,
  // resume} through its service (the workers' --resume is already in worker_args). The
  // node launcher of any other node (join_as_node_launcher) first joins that service as
  // Role::kLauncher, waiting until it serves `generation`, appends `--resume <plan's>`
  // to worker_args, reports each of its children's deaths to the service at once, and
  // hears of every loss elsewhere.
  int generation = 0;
  std::string resume;
  bool join_as_node_launcher = false;
};

// Runs the job to its end and returns the launcher's exit code.
int RunLocalJob(const LaunchOptions& options);

// Directory of the running executable (from /proc/self/exe); empty when unknown.
std::string ExecutableDir();

}  // namespace pszero
