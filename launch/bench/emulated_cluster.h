// An emulated cluster on one machine: H network namespaces stand for H hosts. Each host
// has its own loopback and an `eth0` that is one end of a veth pair; the other ends join a
// bridge that lives in one more namespace, so the only way between hosts is IP over the
// bridge (10.x.y.0/24). With a link rate, tc's token-bucket filter (tbf) limits every host
// link in both directions: on the host's eth0 (what the host sends) and on the bridge's
// end of its pair (what it receives). netem is not assumed (not every kernel has it), so
// no latency is added.
//
// Names come from the creating process's pid (`pz<pid>h<i>` for host i, `pz<pid>br` for
// the bridge), so runs side by side never collide (one cluster at a time per process, or
// give each its own `prefix`); the destructor deletes every namespace the object created,
// by name, whatever happened in between. Namespaces left by a process that was killed
// with SIGKILL are deleted by the next Create (RemoveStaleNamespaces; default prefix only).
//
// Processes run on host i through Exec(i) (`ip netns exec NAME ...`). Whatever runs there
// must keep UCX off shared memory and on eth0 (UcxEnvironment): the hosts share this
// machine's memory, and a transport through it would hide the emulated links. A future
// intra-host fast path must key on the network namespace, so each host keeps its own.
//
// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN), iproute2's `ip`, and for a rate `tc` with
// the sch_tbf qdisc; Create says exactly which is missing. Not thread-safe; one thread
// creates and destroys it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/status.h"

namespace CLI {
class App;
}  // namespace CLI

namespace pszero::bench {

struct EmulatedClusterOptions {
  int hosts = 2;
  double link_gbit = 0;     // per host link and direction; 0: not limited
  int64_t burst_bytes = 0;  // tbf bucket; 0: DefaultBurstBytes(link_gbit)
  std::string prefix;       // name prefix; "": "pz" + this process's pid
};

class EmulatedCluster {
 public:
  static constexpr const char* kInterface = "eth0";

  // The namespaces, links and limits, set up. Unavailable with the exact reason (and the
  // failing command's stderr) when this machine or user cannot make them; anything made
  // before the failure is deleted again.
  static Result<std::unique_ptr<EmulatedCluster>> Create(const EmulatedClusterOptions& options);

  // Deletes every namespace made (which removes their veths, the bridge and the qdiscs).
  ~EmulatedCluster();
  EmulatedCluster(const EmulatedCluster&) = delete;
  EmulatedCluster& operator=(const EmulatedCluster&) = delete;

  int hosts() const { return options_.hosts; }
  double link_gbit() const { return options_.link_gbit; }
  int64_t burst_bytes() const { return options_.burst_bytes; }
  std::string Namespace(int host) const;
  std::string Address(int host) const;  // host's eth0 address, dotted quad
  // The argv prefix that runs a program on `host`: {ip, netns, exec, NAME}.
  std::vector<std::string> Exec(int host) const;
  // What `pszero-launch --hostfile` needs to start one node launcher per host, written
  // into `dir`: a hostfile naming host i by its namespace, with slots[i] workers, and an
  // ssh stand-in for $PSZERO_SSH that runs the remote command in the namespace its host
  // argument names. Returns their paths.
  struct HostfileLaunch {
    std::string hostfile;
    std::string ssh;
  };
  Result<HostfileLaunch> WriteHostfileLaunch(const std::filesystem::path& dir,
                                             const std::vector<int>& slots) const;
  // {"hosts", "link_gbit", "tbf_burst_bytes", "interface", "namespaces", "addresses"}:
  // what a report records about the emulation.
  nlohmann::json Describe() const;

  // "UCX_TLS=tcp,self", "UCX_NET_DEVICES=eth0": UCX over the emulated links only; and
  // "UCX_LOG_FILE=/dev/stderr" unless the environment sets it, to keep stdout clean.
  static std::vector<std::string> UcxEnvironment();
  // The tbf bucket for a rate: 2 ms at the rate, at least 256 KiB (docs/benchmarks.md,
  // "Emulated cluster": smaller buckets do not reach 10 Gbit/s and more on veth).
  static int64_t DefaultBurstBytes(double link_gbit);

 private:
  EmulatedCluster(EmulatedClusterOptions options, std::string ip, std::string tc)
      : options_(std::move(options)), ip_(std::move(ip)), tc_(std::move(tc)) {}
  Status Build();
  Status AddNamespace(const std::string& name);
  Status LimitLink(const std::string& ns, const std::string& dev);
  Status Run(const std::vector<std::string>& argv) const;

  EmulatedClusterOptions options_;
  std::string ip_;
  std::string tc_;
  std::string subnet_;  // first three octets
  std::vector<std::string> created_;
};

// --emulate-hosts H and --link-gbit G on a bench subcommand; `hosts_help` says what runs
// on the emulated hosts.
void AddEmulationFlags(CLI::App* app, int* emulate_hosts, double* link_gbit,
                       const std::string& hosts_help);

// Exit code of a bench command that could not run here and was skipped (the automake and
// ctest convention): --emulate-hosts where namespaces cannot be made.
constexpr int kExitSkipped = 77;

// For a bench command (`name`: "p2p", "ps") that runs itself again inside host 0 of an
// emulated cluster, its peers on the other hosts: makes the cluster, runs
// Exec(0) + args(cluster) with UcxEnvironment(), copies the child's stdout and stderr,
// and deletes the cluster. Returns the child's exit code; kExitSkipped with one line
// "pszero-bench NAME: skipped: ..." on stderr when the cluster cannot be made; 128+N
// after SIGINT or SIGTERM (forwarded to the child).
int RunOnEmulatedHostZero(
    const std::string& name, const EmulatedClusterOptions& options,
    const std::function<std::vector<std::string>(const EmulatedCluster&)>& args);

// The path of iproute2's `ip`, or "" when it is not installed.
std::string IpProgram();

// Deletes namespaces named like an EmulatedCluster's (`pz<pid>...`) whose pid is no longer
// a live process: what a run killed with SIGKILL left behind. Best effort, silent.
void RemoveStaleNamespaces(const std::string& ip);

}  // namespace pszero::bench
