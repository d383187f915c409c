#include "launch/bench/emulated_cluster.h"

#include <CLI/CLI.hpp>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>
#include <thread>

#include "common/flags.h"
#include "launch/bench/child_run.h"

namespace pszero::bench {

namespace {

constexpr auto kCommandTimeout = std::chrono::seconds(30);

std::string FindProgram(const std::vector<const char*>& paths) {
  for (const char* p : paths) {
    if (::access(p, X_OK) == 0) return p;
  }
  return "";
}

// The effective capability set of this process (/proc/self/status CapEff).
uint64_t EffectiveCapabilities() {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  }
  return 0;
}

std::string Join(const std::vector<std::string>& argv) {
  std::string s;
  for (const std::string& a : argv) s += (s.empty() ? "" : " ") + a;
  return s;
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

}  // namespace

int64_t EmulatedCluster::DefaultBurstBytes(double link_gbit) {
  const double two_ms = link_gbit * 1e9 / 8 * 2e-3;
  return std::max<int64_t>(256 * 1024, static_cast<int64_t>(std::llround(two_ms)));
}

std::vector<std::string> EmulatedCluster::UcxEnvironment() {
  std::vector<std::string> env = {"UCX_TLS=tcp,self", std::string("UCX_NET_DEVICES=") + kInterface};
  // UCX logs on stdout by default; over tcp it has more to say (a refused connection
  // while a peer exits), and stdout is the bench's table or JSON.
  if (std::getenv("UCX_LOG_FILE") == nullptr) env.push_back("UCX_LOG_FILE=/dev/stderr");
  return env;
}

std::string EmulatedCluster::Namespace(int host) const {
  return options_.prefix + "h" + std::to_string(host);
}

std::string EmulatedCluster::Address(int host) const {
  return subnet_ + "." + std::to_string(host + 1);
}

std::vector<std::string> EmulatedCluster::Exec(int host) const {
  return {ip_, "netns", "exec", Namespace(host)};
}

nlohmann::json EmulatedCluster::Describe() const {
  nlohmann::json names = nlohmann::json::array(), addresses = nlohmann::json::array();
  for (int i = 0; i < hosts(); ++i) {
    names.push_back(Namespace(i));
    addresses.push_back(Address(i));
  }
  return {{"hosts", hosts()},
          {"link_gbit", link_gbit()},
          {"tbf_burst_bytes", link_gbit() > 0 ? nlohmann::json(burst_bytes()) : nullptr},
          {"interface", kInterface},
          {"ucx", UcxEnvironment()},
          {"namespaces", names},
          {"addresses", addresses}};
}

Result<EmulatedCluster::HostfileLaunch> EmulatedCluster::WriteHostfileLaunch(
    const std::filesystem::path& dir, const std::vector<int>& slots) const {
  if (static_cast<int>(slots.size()) != hosts()) {
    return Status::InvalidArgument("WriteHostfileLaunch: one slot count per host");
  }
  HostfileLaunch out{(dir / "emulated-hosts").string(), (dir / "emulated-ssh").string()};
  {
    std::ofstream f(out.hostfile);
    for (int i = 0; i < hosts(); ++i) f << Namespace(i) << " slots=" << slots[i] << "\n";
    if (!f.flush()) return Status::IoError("cannot write " + out.hostfile);
  }
  {
    // pszero-launch runs `$PSZERO_SSH -o BatchMode=yes HOST COMMAND` (docs/cluster.md).
    std::ofstream f(out.ssh);
    f << "#!/bin/sh\n"
      << "# pszero-bench's emulated cluster: ssh HOST COMMAND as ip netns exec HOST.\n"
      << "[ \"$1\" = -o ] && shift 2\n"
      << "exec " << ip_ << " netns exec \"$1\" /bin/sh -c \"$2\"\n";
    if (!f.flush()) return Status::IoError("cannot write " + out.ssh);
  }
  std::error_code ec;
  std::filesystem::permissions(out.ssh, std::filesystem::perms::owner_all, ec);
  if (ec) return Status::IoError(out.ssh + ": " + ec.message());
  return out;
}

Status EmulatedCluster::Run(const std::vector<std::string>& argv) const {
  Result<ChildRun> r = RunChild(argv, kCommandTimeout);
  if (!r.ok()) return Status::Unavailable(Join(argv) + ": " + r.status().message());
  if (r->interrupted_by != 0) {
    return Status::Unavailable("interrupted by signal " + std::to_string(r->interrupted_by));
  }
  if (!r->ok()) {
    return Status::Unavailable(Join(argv) + ": " + r->Describe() + ": " +
                               Trim(LastLines(r->err, 2)));
  }
  return Status::Ok();
}

Status EmulatedCluster::AddNamespace(const std::string& name) {
  PSZERO_RETURN_IF_ERROR(Run({ip_, "netns", "add", name}));
  created_.push_back(name);
  return Run({ip_, "-n", name, "link", "set", "lo", "up"});
}

Status EmulatedCluster::LimitLink(const std::string& ns, const std::string& dev) {
  // latency: how long a packet may wait in the bucket's queue before it is dropped; long
  // enough that TCP sees back-pressure, not loss, at these rates.
  char rate[32];
  std::snprintf(rate, sizeof(rate), "%.6gmbit", options_.link_gbit * 1000);
  return Run({ip_, "netns", "exec", ns, tc_, "qdisc", "add", "dev", dev, "root", "tbf", "rate",
              rate, "burst", std::to_string(options_.burst_bytes), "latency", "50ms"});
}

Status EmulatedCluster::Build() {
  const std::string bridge = options_.prefix + "br";
  PSZERO_RETURN_IF_ERROR(AddNamespace(bridge));
  PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", bridge, "link", "add", "br0", "type", "bridge"}));
  PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", bridge, "link", "set", "br0", "up"}));
  for (int i = 0; i < hosts(); ++i) {
    const std::string ns = Namespace(i);
    const std::string host_end = options_.prefix + "a" + std::to_string(i);
    const std::string bridge_end = options_.prefix + "b" + std::to_string(i);
    PSZERO_RETURN_IF_ERROR(AddNamespace(ns));
    // Made inside the host's namespace, so that nothing is ever left in this one.
    PSZERO_RETURN_IF_ERROR(
        Run({ip_, "-n", ns, "link", "add", host_end, "type", "veth", "peer", "name", bridge_end}));
    PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", ns, "link", "set", bridge_end, "netns", bridge}));
    PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", ns, "link", "set", host_end, "name", kInterface}));
    PSZERO_RETURN_IF_ERROR(
        Run({ip_, "-n", ns, "addr", "add", Address(i) + "/24", "dev", kInterface}));
    PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", ns, "link", "set", kInterface, "up"}));
    PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", bridge, "link", "set", bridge_end, "master", "br0"}));
    PSZERO_RETURN_IF_ERROR(Run({ip_, "-n", bridge, "link", "set", bridge_end, "up"}));
    if (options_.link_gbit > 0) {
      PSZERO_RETURN_IF_ERROR(LimitLink(ns, kInterface));      // host -> bridge
      PSZERO_RETURN_IF_ERROR(LimitLink(bridge, bridge_end));  // bridge -> host
    }
  }
  // A veth reports its carrier a moment after both ends are up (the kernel's link watch
  // runs up to a second later), and until then UCX finds eth0 inactive and the peers'
  // addresses unreachable: wait for every host's eth0 to be running.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; i < hosts(); ++i) {
    while (true) {
      Result<ChildRun> r = RunChild(
          {ip_, "-n", Namespace(i), "-o", "link", "show", "dev", kInterface}, kCommandTimeout);
      if (r.ok() && r->ok() && r->out.find("LOWER_UP") != std::string::npos &&
          r->out.find("state UP") != std::string::npos) {
        break;
      }
      if (r.ok() && r->interrupted_by != 0) return Status::Unavailable("interrupted");
      if (std::chrono::steady_clock::now() > deadline) {
        return Status::Unavailable(
            Namespace(i) + ": " + kInterface +
            " not running 10 s after set-up: " + (r.ok() ? Trim(r->out) : r.status().message()));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<EmulatedCluster>> EmulatedCluster::Create(
    const EmulatedClusterOptions& options) {
  if (options.hosts < 1) return Status::InvalidArgument("an emulated cluster needs a host");
  constexpr uint64_t kNetAdmin = uint64_t{1} << 12, kSysAdmin = uint64_t{1} << 21;
  const uint64_t caps = EffectiveCapabilities();
  if ((caps & kNetAdmin) == 0 || (caps & kSysAdmin) == 0) {
    return Status::Unavailable(
        std::string(::geteuid() == 0 ? "root without" : "not root and without") +
        " CAP_NET_ADMIN and CAP_SYS_ADMIN (network namespaces need both)");
  }
  const std::string ip = IpProgram();
  if (ip.empty()) return Status::Unavailable("no 'ip' command (install iproute2)");
  const std::string tc = FindProgram({"/usr/sbin/tc", "/sbin/tc", "/usr/bin/tc", "/bin/tc"});
  if (options.link_gbit > 0 && tc.empty()) {
    return Status::Unavailable("no 'tc' command (install iproute2) to limit the links");
  }
  RemoveStaleNamespaces(ip);
  EmulatedClusterOptions o = options;
  const int pid = static_cast<int>(::getpid());
  if (o.prefix.empty()) o.prefix = "pz" + std::to_string(pid);
  if (o.burst_bytes <= 0) o.burst_bytes = DefaultBurstBytes(o.link_gbit);
  std::unique_ptr<EmulatedCluster> c(new EmulatedCluster(o, ip, tc));
  // The subnet is private to these namespaces (the bridge is in one of them), so any
  // would do; from the pid it is also distinct in `ip` listings of parallel runs.
  c->subnet_ = "10." + std::to_string(100 + pid % 100) + "." + std::to_string(pid / 100 % 256);
  if (Status s = c->Build(); !s.ok()) {
    if (s.message().find("tbf") != std::string::npos) {
      return Status::Unavailable("tc cannot make a tbf qdisc (kernel module sch_tbf?): " +
                                 s.message());
    }
    return Status::Unavailable("cannot create network namespaces: " + s.message());
  }
  return c;
}

EmulatedCluster::~EmulatedCluster() {
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    if (Status s = Run({ip_, "netns", "del", *it}); !s.ok()) {
      std::cerr << "emulated cluster: could not delete namespace " << *it << ": " << s.message()
                << "\n";
    }
  }
}

int RunOnEmulatedHostZero(
    const std::string& name, const EmulatedClusterOptions& options,
    const std::function<std::vector<std::string>(const EmulatedCluster&)>& args) {
  InterruptLatch latch;  // outlives the cluster: a Ctrl-C cannot skip its deletion
  Result<std::unique_ptr<EmulatedCluster>> cluster = EmulatedCluster::Create(options);
  if (latch.signal() != 0) return 128 + latch.signal();
  if (!cluster.ok()) {
    std::cerr << "pszero-bench " << name << ": skipped: cannot emulate " << options.hosts
              << " hosts here: " << cluster.status().message() << "\n";
    return kExitSkipped;
  }
  std::vector<std::string> argv = (*cluster)->Exec(0);
  for (std::string& a : args(**cluster)) argv.push_back(std::move(a));
  Result<ChildRun> r = RunChild(argv, std::chrono::hours(24), EmulatedCluster::UcxEnvironment());
  if (!r.ok()) {
    std::cerr << "pszero-bench " << name << ": " << r.status().ToString() << "\n";
    return 1;
  }
  std::fputs(r->out.c_str(), stdout);
  std::fputs(r->err.c_str(), stderr);
  if (r->interrupted_by != 0) return 128 + r->interrupted_by;
  return r->ok() ? 0 : r->signaled || r->timed_out ? 1 : r->exit_code;
}

std::string IpProgram() {
  return FindProgram({"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"});
}

void RemoveStaleNamespaces(const std::string& ip) {
  static const std::regex kName("pz([0-9]+)(br|h[0-9]+)");
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, kName)) continue;
    const long pid = std::stol(m[1].str());
    if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) == 0 || errno != ESRCH) continue;
    (void)RunChild({ip, "netns", "del", name}, kCommandTimeout);
  }
}

void AddEmulationFlags(CLI::App* app, int* emulate_hosts, double* link_gbit,
                       const std::string& hosts_help) {
  app->add_option("--emulate-hosts", *emulate_hosts,
                  hosts_help +
                      " (network namespaces, UCX tcp over a bridge; needs root; exit 77 "
                      "where it cannot)")
      ->check(CLI::Range(1, 64));
  app->add_option("--link-gbit", *link_gbit,
                  "With --emulate-hosts: limit each host link to this rate each way, Gbit/s "
                  "(tc tbf)")
      ->check(pszero::FiniteRange(0.001, 1000.0));
}

}  // namespace pszero::bench
