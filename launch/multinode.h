// pszero-launch beyond one machine (docs/cluster.md).
//
//  * NodeLayout: how many workers and servers each node runs, and so the global rank of
//    each node's first one (the service assigns ranks in node-major order).
//  * RunSshJob(): `--hostfile`: starts one node launcher per host through ssh (or
//    $PSZERO_SSH), hands each the cluster token on its stdin, copies their output, and
//    stops them all when one fails or the launcher is interrupted.
//  * RunRendezvousOnly(): `--rendezvous-only`: only the service, for processes that
//    another launcher starts (mpirun, a torchrun-style tool).
//  * ReadTokenFromStdin() / StopWhenStdinCloses(): the node launcher's side of the ssh
//    path: the token arrives on stdin, never on a command line, and the end of stdin (the
//    ssh connection went away) stops the node's job.
// Call each Run* once per process, from main (they own signal handling for their duration).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"
#include "launch/hostfile.h"
#include "launch/rendezvous_service.h"

namespace pszero {

struct NodeLayout {
  std::vector<int> workers;  // per node
  std::vector<int> servers;  // per node

  int nnodes() const { return static_cast<int>(workers.size()); }
  int TotalWorkers() const;
  int TotalServers() const;
  int WorkerOffset(int node) const;  // global rank of `node`'s first worker
  int ServerOffset(int node) const;
};

// `total` spread over `nnodes`: node n gets total/nnodes, plus one for n < total % nnodes.
std::vector<int> SplitEvenly(int total, int nnodes);

// A per-node count flag: "K" (every node K) or "k0,k1,...,k{N-1}" (one per node).
// InvalidArgument naming `flag`.
Result<std::vector<int>> ParsePerNode(const std::string& text, int nnodes, const std::string& flag);

// Shell-quotes `s` for a POSIX shell ('...' with embedded quotes escaped).
std::string ShellQuote(const std::string& s);

// Whether `address` is a numeric IPv4 or IPv6 address (a name is bound as 0.0.0.0).
bool IsIpLiteral(const std::string& address);

struct SshJobOptions {
  std::vector<HostSlots> hosts;          // one node launcher each; node rank = index
  std::vector<std::string> ssh_command;  // {"ssh"} or $PSZERO_SSH, then "-o BatchMode=yes"
  std::string launch_program;            // pszero-launch, the same path on every host
  std::vector<std::string> node_args;    // every node launcher's flags, without --node-rank
  std::vector<std::string> forward_env;  // "K=V", set on the remote command line (not secrets)
  std::string workdir;                   // the remote launchers start here
  std::string token;                     // written to each node launcher's stdin
  std::chrono::milliseconds grace{5000};
};

// Runs the node launchers to their end; the exit code is docs/launch.md's: 0 when every
// node launcher exited 0, their 124 when one timed out, 1 when one failed (the last line
// names it), 128+N when interrupted by signal N, 6 when an ssh could not be started.
int RunSshJob(const SshJobOptions& options);

// Runs only the service until every member left (0), one was lost (1), `timeout` (124,
// when non-zero) or SIGINT/SIGTERM (128+N). Cannot bind: 6.
int RunRendezvousOnly(const RendezvousServiceOptions& options, std::chrono::milliseconds timeout);

// Reads the cluster token from the first line of stdin. InvalidArgument when stdin ends
// first or the line is empty.
Result<std::string> ReadTokenFromStdin();

// Starts a thread that waits for the end of stdin and then sends this process SIGTERM
// (which the launcher forwards to its children): a node launcher started over ssh stops
// when its connection goes away.
void StopWhenStdinCloses();

}  // namespace pszero
