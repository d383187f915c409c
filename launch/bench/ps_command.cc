// `pszero-bench ps`: push+pull throughput of the parameter server. S server processes
// and W worker processes on this machine (the command re-executes this binary for every
// rank but worker 0, which it plays itself; ranks swap UCX addresses through a
// FileKeyValueStore in a fresh temporary directory). Each worker pushes a gradient of
// --bytes (every slice, bsp) and pulls the updated parameters back, iteration after
// iteration. Reported per worker: algbw = bytes / time of one push+pull round, and
// busbw = 2 bytes / time (what crosses the worker's link both ways), beside UCX p2p
// bandwidth for --bytes measured in the same invocation (launch/bench/p2p.h).
// With --emulate-hosts H [--link-gbit G] the ranks run on H hosts of an emulated cluster
// (emulated_cluster.h), at most one per rank: the workers in blocks as pszero-launch
// spreads them (worker 0, this command, on host 0), server s on host H-1-s mod H (from the
// last host back: with one server it is away from worker 0; with H, one per host as
// BytePS places them), the p2p yardstick's peer on server 0's host; UCX over tcp on the
// rate-limited links. This process makes the namespaces and runs the
// command again in host 0's, with the hidden --rank-netns naming every rank's namespace.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>

#include "common/control_plane_main.h"
#include "common/file_kv_store.h"
#include "common/flags.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "common/ucx/ucx_transport.h"
#include "launch/bench/command.h"
#include "launch/bench/emulated_cluster.h"
#include "launch/bench/p2p.h"
#include "server/ps_server.h"
#include "worker/ps/ps_client.h"

namespace pszero::bench {

namespace {

using std::chrono::milliseconds;
constexpr milliseconds kTimeout(120000);

struct PsFlags {
  int servers = 1;
  int workers = 1;
  std::string bytes = "64M";
  std::string optimizer = "none";
  double slice_mb = 4.0;
  int iters = 0;  // 0: from the size
  bool no_p2p = false;
  bool json = false;
  std::string output;
  std::string peer_dir;  // hidden: set in the peer processes
  int peer_rank = -1;
  int emulate_hosts = 0;
  double link_gbit = 0;
  std::string rank_netns;  // hidden: every rank's namespace, comma-separated
};

int Fail(const Status& s) {
  std::cerr << "pszero-bench ps: " << s.ToString() << "\n";
  return 1;
}

size_t Bytes(const PsFlags& f) { return (*ParseSizeList(f.bytes))[0]; }
int64_t SliceBytes(const PsFlags& f) { return static_cast<int64_t>(f.slice_mb * (1 << 20)); }
int Iters(const PsFlags& f) {
  if (f.iters > 0) return f.iters;
  return static_cast<int>(std::clamp<size_t>((size_t{512} << 20) / Bytes(f), 5, 100));
}

ucx::UcxTransportOptions Options(int rank, int world, const std::string& prefix) {
  ucx::UcxTransportOptions o;
  o.rank = rank;
  o.world_size = world;
  o.key_prefix = prefix;
  return o;
}

Status RunServer(const PsFlags& f, FileKeyValueStore& store, ucx::UcxTransport& t) {
  ps::PsServerOptions o;
  o.server_index = f.peer_rank;
  o.num_servers = f.servers;
  o.slice_bytes = SliceBytes(f);
  o.consistency = ps::Consistency::kBsp;
  o.optimizer = *ps::ParseOptimizer(f.optimizer);
  PSZERO_ASSIGN_OR_RETURN(auto server, ps::PsServer::Create(&t, o));
  PSZERO_RETURN_IF_ERROR(store.Set("ps/server-ready/" + std::to_string(f.peer_rank), "1"));
  const auto give_up = std::chrono::steady_clock::now() + kTimeout;
  auto next_check = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() < give_up) {
    PSZERO_RETURN_IF_ERROR(server->Serve(milliseconds(50)).status());
    if (std::chrono::steady_clock::now() >= next_check) {
      if (store.Get("ps/done", milliseconds(0)).ok()) return Status::Ok();
      next_check = std::chrono::steady_clock::now() + milliseconds(100);
    }
  }
  return Status::DeadlineExceeded("ps bench server: no end of run");
}

// One worker's run; returns the median seconds of one push+pull round.
Result<double> RunWorker(const PsFlags& f, int worker, FileKeyValueStore& store,
                         ucx::UcxTransport& t) {
  for (int s = 0; s < f.servers; ++s) {
    PSZERO_RETURN_IF_ERROR(store.Get("ps/server-ready/" + std::to_string(s), kTimeout).status());
  }
  const auto numel = static_cast<int64_t>(Bytes(f) / 4);
  std::vector<float> params(static_cast<size_t>(numel), 0.5f), grads(params.size(), 0.25f);
  PSZERO_ASSIGN_OR_RETURN(auto params_reg, t.RegisterMemory(params.data(), params.size() * 4));
  PSZERO_ASSIGN_OR_RETURN(auto grads_reg, t.RegisterMemory(grads.data(), grads.size() * 4));
  ps::PsClientOptions o;
  o.worker = worker;
  o.num_workers = f.workers;
  for (int s = 0; s < f.servers; ++s) o.server_ranks.push_back(s);
  o.slice_bytes = SliceBytes(f);
  PSZERO_ASSIGN_OR_RETURN(auto client, ps::PsClient::Create(&t, o, params, grads));
  PSZERO_RETURN_IF_ERROR(client->Initialize(kTimeout));
  const int warmup = 2;
  const int iters = Iters(f);
  std::vector<double> seconds;
  for (int i = 0; i < warmup + iters; ++i) {
    const auto start = std::chrono::steady_clock::now();
    PSZERO_RETURN_IF_ERROR(client->PushGradients(0, numel));
    PSZERO_RETURN_IF_ERROR(client->EndStep());
    PSZERO_RETURN_IF_ERROR(client->WaitAll(kTimeout));
    if (i >= warmup) {
      seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  std::sort(seconds.begin(), seconds.end());
  return seconds[seconds.size() / 2];
}

int RunPeer(const PsFlags& f) {
  // Tests end a peer here (PSZERO_FAULT_INJECT=sigkill:ps<rank>:start) to check that the
  // parent notices at once.
  MaybeInjectFault("ps" + std::to_string(f.peer_rank), "start");
  FileKeyValueStore store(f.peer_dir);
  const int world = f.servers + f.workers;
  auto t = ucx::UcxTransport::Create(Options(f.peer_rank, world, "ps"), &store);
  if (!t.ok()) return Fail(t.status());
  if (f.peer_rank < f.servers) {
    Status s = RunServer(f, store, **t);
    return s.ok() ? 0 : Fail(s);
  }
  const int worker = f.peer_rank - f.servers;
  Result<double> median = RunWorker(f, worker, store, **t);
  if (!median.ok()) return Fail(median.status());
  Status s = store.Set("ps/result/" + std::to_string(worker), std::to_string(*median));
  return s.ok() ? 0 : Fail(s);
}

Result<std::string> SelfPath() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Status::IoError("cannot find /proc/self/exe: " + ec.message());
  return self.string();
}

// UCX p2p bandwidth at `bytes` between two processes, as `pszero-bench p2p` measures it.
// `on` prefixes the peer's command line (an emulated host's `ip netns exec NS`).
Result<double> MeasureP2p(const std::string& self, size_t bytes, std::vector<std::string> on) {
  PSZERO_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("pszero-ps-p2p"));
  FileKeyValueStore store(dir.path());
  for (const std::string& a :
       {self, std::string("p2p"), std::string("--peer-dir"), dir.path().string(),
        std::string("--sizes"), std::to_string(bytes), std::string("--no-perftest")}) {
    on.push_back(a);
  }
  PSZERO_ASSIGN_OR_RETURN(BenchChild peer, BenchChild::Spawn(on));
  ucx::UcxTransportOptions o = Options(0, 2, "p2p");
  PSZERO_ASSIGN_OR_RETURN(auto t, ucx::UcxTransport::Create(o, &store));
  Result<std::vector<P2pRow>> rows = P2pMeasure(*t, {bytes}, 1.0, 16);
  const int code = peer.Wait(milliseconds(60000));
  if (!rows.ok()) return rows.status();
  if (code != 0) return Status::Internal("p2p peer exited with " + std::to_string(code));
  return (*rows)[0].bandwidth_gbps;
}

std::string Number(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.17g", v);
  return text;
}

// Hosts of an emulated run: never more than ranks.
int HostsUsed(const PsFlags& f) { return std::min(f.emulate_hosts, f.servers + f.workers); }

// The host of each rank (servers first, then workers): server s on host H-1-s mod H,
// workers spread in blocks as pszero-launch spreads them over nodes.
std::vector<int> RankHosts(const PsFlags& f) {
  const int h = HostsUsed(f);
  std::vector<int> hosts;
  for (int s = 0; s < f.servers; ++s) hosts.push_back(h - 1 - s % h);
  for (int node = 0; node < h; ++node) {
    const int k = f.workers / h + (node < f.workers % h ? 1 : 0);
    for (int i = 0; i < k; ++i) hosts.push_back(node);
  }
  return hosts;
}

// --emulate-hosts: this command again on host 0, with --rank-netns placing every rank.
int RunEmulated(const PsFlags& f) {
  Result<std::string> self = SelfPath();
  if (!self.ok()) return Fail(self.status());
  EmulatedClusterOptions options;
  options.hosts = HostsUsed(f);
  options.link_gbit = f.link_gbit;
  return RunOnEmulatedHostZero("ps", options, [&](const EmulatedCluster& cluster) {
    std::string rank_netns;
    for (int host : RankHosts(f)) {
      rank_netns += (rank_netns.empty() ? "" : ",") + cluster.Namespace(host);
    }
    std::vector<std::string> argv = {*self,
                                     "ps",
                                     "--servers",
                                     std::to_string(f.servers),
                                     "--workers",
                                     std::to_string(f.workers),
                                     "--bytes",
                                     f.bytes,
                                     "--optimizer",
                                     f.optimizer,
                                     "--ps-slice-mb",
                                     Number(f.slice_mb),
                                     "--iters",
                                     std::to_string(f.iters),
                                     "--emulate-hosts",
                                     std::to_string(f.emulate_hosts),
                                     "--rank-netns",
                                     rank_netns};
    if (f.link_gbit > 0) argv.insert(argv.end(), {"--link-gbit", Number(f.link_gbit)});
    if (f.no_p2p) argv.push_back("--no-p2p");
    if (f.json) argv.push_back("--json");
    if (!f.output.empty()) {
      argv.insert(argv.end(), {"--output", std::filesystem::absolute(f.output).string()});
    }
    return argv;
  });
}

// The checks of the driver's flags, before anything starts: InvalidArgument naming the flag.
Status CheckPsFlags(const PsFlags& f) {
  if (f.link_gbit > 0 && f.emulate_hosts == 0) {
    return Status::InvalidArgument("--link-gbit: only with --emulate-hosts");
  }
  // Every worker holds parameters and gradients of --bytes; the servers, parameters and
  // the optimizer's state over all of them.
  return CheckFitsMemory("--bytes", 2 * uint64_t{Bytes(f)}, f.workers + f.servers);
}

int RunPsCommand(const PsFlags& f) {
  if (!f.peer_dir.empty()) return RunPeer(f);
  if (Status s = CheckPsFlags(f); !s.ok()) {
    std::cerr << "pszero-bench ps: error: " << s.message() << "\n";
    return 2;
  }
  if (f.emulate_hosts > 0 && f.rank_netns.empty()) return RunEmulated(f);
  // The prefix that starts rank r on its emulated host (empty: this machine).
  std::vector<std::string> rank_netns;
  if (!f.rank_netns.empty()) {
    std::istringstream names(f.rank_netns);
    for (std::string n; std::getline(names, n, ',');) rank_netns.push_back(n);
    if (static_cast<int>(rank_netns.size()) != f.servers + f.workers) {
      std::cerr << "pszero-bench ps: error: --rank-netns: one namespace per rank\n";
      return 2;
    }
  }
  const std::string ip = rank_netns.empty() ? "" : IpProgram();
  auto on = [&](int rank) -> std::vector<std::string> {
    if (rank_netns.empty()) return {};
    return {ip, "netns", "exec", rank_netns[static_cast<size_t>(rank)]};
  };
  Result<std::string> self = SelfPath();
  if (!self.ok()) return Fail(self.status());
  const size_t bytes = Bytes(f);
  double p2p = 0;
  if (!f.no_p2p) {
    // Between two hosts when emulated: the peer on server 0's host.
    Result<double> r = MeasureP2p(*self, bytes, on(0));
    if (!r.ok()) return Fail(r.status().WithContext("p2p"));
    p2p = *r;
  }
  Result<TempDir> dir = TempDir::Create("pszero-ps");
  if (!dir.ok()) return Fail(dir.status());
  FileKeyValueStore store(dir->path());
  const int world = f.servers + f.workers;
  std::vector<BenchChild> children;
  // A child that fails while this process waits for it (in the store, in the wire-up) ends
  // the run at once rather than after the 120 s timeout.
  ChildWatch watch("pszero-bench ps", dir->path());
  // This process's own failure is the one line: the watch must not report the children
  // that then die for want of it.
  auto fail = [&](const Status& s) {
    watch.Stop();
    return Fail(s);
  };
  for (int rank = 0; rank < world; ++rank) {
    if (rank == f.servers) continue;  // worker 0 is this process
    std::vector<std::string> argv = on(rank);
    for (const std::string& a :
         {*self, std::string("ps"), std::string("--peer-dir"), dir->path().string(),
          std::string("--peer-rank"), std::to_string(rank), std::string("--servers"),
          std::to_string(f.servers), std::string("--workers"), std::to_string(f.workers),
          std::string("--bytes"), f.bytes, std::string("--optimizer"), f.optimizer,
          std::string("--ps-slice-mb"), Number(f.slice_mb), std::string("--iters"),
          std::to_string(Iters(f))}) {
      argv.push_back(a);
    }
    Result<BenchChild> child = BenchChild::Spawn(argv);
    if (!child.ok()) return fail(child.status());
    watch.Add(*child, (rank < f.servers ? "server " + std::to_string(rank)
                                        : "worker " + std::to_string(rank - f.servers)) +
                          " (rank " + std::to_string(rank) + ")");
    children.push_back(std::move(child).value());
  }
  std::vector<double> medians;
  {
    auto t = ucx::UcxTransport::Create(Options(f.servers, world, "ps"), &store);
    if (!t.ok()) return fail(t.status());
    Result<double> mine = RunWorker(f, 0, store, **t);
    if (!mine.ok()) return fail(mine.status());
    medians.push_back(*mine);
    for (int w = 1; w < f.workers; ++w) {
      Result<std::string> r = store.Get("ps/result/" + std::to_string(w), kTimeout);
      if (!r.ok()) return fail(r.status());
      medians.push_back(std::stod(*r));
    }
    Status done = store.Set("ps/done", "1");
    if (!done.ok()) return fail(done);
    watch.Stop();
    for (auto& c : children) {
      const int code = c.Wait(kTimeout);
      if (code != 0)
        return Fail(Status::Internal("a ps bench process exited with " + std::to_string(code)));
    }
  }
  double slowest = *std::max_element(medians.begin(), medians.end());
  double per_worker_alg = 0;
  for (double s : medians) per_worker_alg += static_cast<double>(bytes) / s / 1e9;
  per_worker_alg /= static_cast<double>(medians.size());
  const double busbw = 2 * per_worker_alg;
  const double aggregate =
      static_cast<double>(f.workers) * 2.0 * static_cast<double>(bytes) / slowest / 1e9;
  auto map = ps::SliceMap::Create(static_cast<int64_t>(bytes / 4), SliceBytes(f), f.servers);
  nlohmann::json doc = {
      {"benchmark", "ps"},
      {"servers", f.servers},
      {"workers", f.workers},
      {"bytes", bytes},
      {"optimizer", f.optimizer},
      {"consistency", "bsp"},
      {"slices", map.ok() ? map->num_slices() : 0},
      {"iters", Iters(f)},
      {"time_us", slowest * 1e6},
      {"algbw_gbps", per_worker_alg},
      {"busbw_gbps", busbw},
      {"aggregate_gbps", aggregate},
      {"p2p_gbps", p2p},
      {"emulate_hosts", f.emulate_hosts},
      {"hosts_used", f.emulate_hosts > 0 ? nlohmann::json(HostsUsed(f)) : nlohmann::json(nullptr)},
      {"link_gbit", f.link_gbit},
      {"rank_namespaces",
       f.rank_netns.empty() ? nlohmann::json(nullptr) : nlohmann::json(rank_netns)},
      {"busbw_over_p2p", p2p > 0 ? busbw / p2p : 0.0},
      {"unit",
       "per worker: algbw = bytes / (push+pull round), busbw = 2 bytes / round; "
       "aggregate = all workers' push+pull bytes / slowest round; GB/s = 1e9 B/s"}};
  if (f.json) {
    std::cout << doc.dump(2) << "\n";
  } else {
    std::printf(
        "# pszero-bench ps: %d servers, %d workers, bsp, optimizer %s, slices of %.2f MiB\n",
        f.servers, f.workers, f.optimizer.c_str(), f.slice_mb);
    if (f.emulate_hosts > 0) {
      std::printf(
          "# emulated hosts: %d network namespaces, links %s each way (tc tbf); workers in "
          "blocks from host 0, server s on host H-1-s mod H\n",
          HostsUsed(f),
          f.link_gbit > 0 ? (Number(f.link_gbit) + " Gbit/s").c_str() : "not limited");
    }
    std::printf("# %12s %8s %8s %12s %10s %10s %12s %10s %8s\n", "bytes", "servers", "workers",
                "time_us", "algbw", "busbw", "aggregate", "p2p_bw", "bus/p2p");
    std::printf("  %12zu %8d %8d %12.1f %10.3f %10.3f %12.3f %10.3f %8.2f\n", bytes, f.servers,
                f.workers, slowest * 1e6, per_worker_alg, busbw, aggregate, p2p,
                p2p > 0 ? busbw / p2p : 0.0);
  }
  if (!f.output.empty()) {
    Status s = WriteJsonAtomic(f.output, doc);
    if (!s.ok()) return Fail(s);
  }
  return 0;
}

}  // namespace

BenchCommand AddPsCommand(CLI::App& root) {
  auto flags = std::make_shared<PsFlags>();
  CLI::App* app = root.add_subcommand(
      "ps", "Parameter-server push+pull throughput per worker, beside UCX p2p bandwidth");
  app->add_option("--servers", flags->servers, "Server processes")->check(CLI::Range(1, 64));
  app->add_option("--workers", flags->workers, "Worker processes")->check(CLI::Range(1, 64));
  app->add_option("--bytes", flags->bytes, "Gradient (and parameter) bytes per worker, e.g. 4M")
      ->check(CLI::Validator(
          [](std::string& text) {
            Result<std::vector<size_t>> sizes = ParseSizeList(text);
            if (!sizes.ok()) return sizes.status().message();
            if (sizes->size() != 1 || (*sizes)[0] < 4)
              return std::string("one size of at least 4 bytes");
            return std::string();
          },
          "BYTES"));
  app->add_option("--optimizer", flags->optimizer, "Server update: none (sum only) or adamw")
      ->check(CLI::IsMember({"none", "adamw"}));
  app->add_option("--ps-slice-mb", flags->slice_mb, "Slice size in MiB")
      ->check(pszero::FiniteRange(0.0001, 4096.0));
  app->add_option("--iters", flags->iters, "Timed iterations (0: from the size)")
      ->check(CLI::Range(0, 100000));
  app->add_flag("--no-p2p", flags->no_p2p, "Do not measure UCX p2p bandwidth beside");
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  app->add_option("--output", flags->output, "Also write the JSON to this file (atomically)");
  AddEmulationFlags(app, &flags->emulate_hosts, &flags->link_gbit,
                    "Run the ranks on this many emulated hosts");
  app->add_option("--rank-netns", flags->rank_netns, "Internal: every rank's namespace")->group("");
  app->add_option("--peer-dir", flags->peer_dir, "Internal: run as a peer process")->group("");
  app->add_option("--peer-rank", flags->peer_rank, "Internal: the peer's rank")->group("");
  return {app, [flags] { return RunPsCommand(*flags); }, [flags] { return CheckPsFlags(*flags); }};
}

}  // namespace pszero::bench
