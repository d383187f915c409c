// `pszero-bench ps`: push+pull throughput of the parameter server. S server processes
// and W worker processes on this machine (the command re-executes this binary for every
// rank but worker 0, which it plays itself; ranks swap UCX addresses through a
// FileKeyValueStore in a fresh temporary directory). Each worker pushes a gradient of
// --bytes (every slice, bsp) and pulls the updated parameters back, iteration after
// iteration. Reported per worker: algbw = bytes / time of one push+pull round, and
// busbw = 2 bytes / time (what crosses the worker's link both ways), beside UCX p2p
// bandwidth for --bytes measured in the same invocation (launch/bench/p2p.h).
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "common/file_kv_store.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "common/ucx/ucx_transport.h"
#include "launch/bench/command.h"
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
Result<double> MeasureP2p(const std::string& self, size_t bytes) {
  PSZERO_ASSIGN_OR_RETURN(TempDir dir, TempDir::Create("pszero-ps-p2p"));
  FileKeyValueStore store(dir.path());
  PSZERO_ASSIGN_OR_RETURN(
      BenchChild peer, BenchChild::Spawn({self, "p2p", "--peer-dir", dir.path().string(), "--sizes",
                                          std::to_string(bytes), "--no-perftest"}));
  ucx::UcxTransportOptions o = Options(0, 2, "p2p");
  PSZERO_ASSIGN_OR_RETURN(auto t, ucx::UcxTransport::Create(o, &store));
  Result<std::vector<P2pRow>> rows = P2pMeasure(*t, {bytes}, 1.0, 16);
  const int code = peer.Wait(milliseconds(60000));
  if (!rows.ok()) return rows.status();
  if (code != 0) return Status::Internal("p2p peer exited with " + std::to_string(code));
  return (*rows)[0].bandwidth_gbps;
}

int RunPsCommand(const PsFlags& f) {
  if (!f.peer_dir.empty()) return RunPeer(f);
  Result<std::string> self = SelfPath();
  if (!self.ok()) return Fail(self.status());
  const size_t bytes = Bytes(f);
  double p2p = 0;
  if (!f.no_p2p) {
    Result<double> r = MeasureP2p(*self, bytes);
    if (!r.ok()) return Fail(r.status().WithContext("p2p"));
    p2p = *r;
  }
  Result<TempDir> dir = TempDir::Create("pszero-ps");
  if (!dir.ok()) return Fail(dir.status());
  FileKeyValueStore store(dir->path());
  const int world = f.servers + f.workers;
  std::vector<BenchChild> children;
  for (int rank = 0; rank < world; ++rank) {
    if (rank == f.servers) continue;  // worker 0 is this process
    Result<BenchChild> child = BenchChild::Spawn(
        {*self, "ps", "--peer-dir", dir->path().string(), "--peer-rank", std::to_string(rank),
         "--servers", std::to_string(f.servers), "--workers", std::to_string(f.workers), "--bytes",
         f.bytes, "--optimizer", f.optimizer, "--ps-slice-mb", std::to_string(f.slice_mb),
         "--iters", std::to_string(Iters(f))});
    if (!child.ok()) return Fail(child.status());
    children.push_back(std::move(child).value());
  }
  std::vector<double> medians;
  {
    auto t = ucx::UcxTransport::Create(Options(f.servers, world, "ps"), &store);
    if (!t.ok()) return Fail(t.status());
    Result<double> mine = RunWorker(f, 0, store, **t);
    if (!mine.ok()) return Fail(mine.status());
    medians.push_back(*mine);
    for (int w = 1; w < f.workers; ++w) {
      Result<std::string> r = store.Get("ps/result/" + std::to_string(w), kTimeout);
      if (!r.ok()) return Fail(r.status());
      medians.push_back(std::stod(*r));
    }
    Status done = store.Set("ps/done", "1");
    if (!done.ok()) return Fail(done);
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
      ->check(CLI::Range(0.0001, 4096.0));
  app->add_option("--iters", flags->iters, "Timed iterations (0: from the size)")
      ->check(CLI::Range(0, 100000));
  app->add_flag("--no-p2p", flags->no_p2p, "Do not measure UCX p2p bandwidth beside");
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  app->add_option("--output", flags->output, "Also write the JSON to this file (atomically)");
  app->add_option("--peer-dir", flags->peer_dir, "Internal: run as a peer process")->group("");
  app->add_option("--peer-rank", flags->peer_rank, "Internal: the peer's rank")->group("");
  return {app, [flags] { return RunPsCommand(*flags); }};
}

}  // namespace pszero::bench
