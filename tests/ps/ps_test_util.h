// Parameter-server tests with ranks as threads: S servers (transport ranks 0..S-1, each
// serving on its own thread) and W workers (ranks S..S+W-1), one UcxTransport each, in
// this process.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "server/ps_server.h"
#include "tests/common/transport_test_util.h"
#include "worker/ps/ps_client.h"
#include "worker/train/ps_sync.h"

namespace pszero::testing {

struct PsRun {
  std::vector<Status> workers;
  std::vector<ps::PsServerStats> servers;
};

// Runs `worker_fn(w, transport)` for w in 0..W-1 while S servers serve.
inline PsRun RunPsCluster(int num_servers, int num_workers, const ps::PsServerOptions& base,
                          const std::function<Status(int, Transport&)>& worker_fn) {
  ThreadRanks ranks(num_servers + num_workers);
  PsRun run;
  if (static_cast<int>(ranks.ranks.size()) != num_servers + num_workers) {
    run.workers.assign(static_cast<size_t>(num_workers), Status::Internal("no transports"));
    return run;
  }
  std::vector<std::unique_ptr<ps::PsServer>> servers;
  for (int s = 0; s < num_servers; ++s) {
    ps::PsServerOptions o = base;
    o.server_index = s;
    o.num_servers = num_servers;
    auto server = ps::PsServer::Create(ranks.ranks[static_cast<size_t>(s)].get(), o);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return run;
    servers.push_back(std::move(server).value());
  }
  std::atomic<bool> stop{false};
  std::vector<Status> server_status(static_cast<size_t>(num_servers));
  std::vector<std::thread> threads;
  for (int s = 0; s < num_servers; ++s) {
    threads.emplace_back([&, s] {
      while (!stop.load()) {
        Result<int> r = servers[static_cast<size_t>(s)]->Serve(std::chrono::milliseconds(20));
        if (!r.ok()) {
          server_status[static_cast<size_t>(s)] = r.status();
          return;
        }
      }
    });
  }
  run.workers.resize(static_cast<size_t>(num_workers));
  std::vector<std::thread> workers;
  for (int w = 0; w < num_workers; ++w) {
    workers.emplace_back([&, w] {
      run.workers[static_cast<size_t>(w)] =
          worker_fn(w, *ranks.ranks[static_cast<size_t>(num_servers + w)]);
    });
  }
  for (auto& t : workers) t.join();
  stop = true;
  for (auto& t : threads) t.join();
  for (int s = 0; s < num_servers; ++s) {
    EXPECT_TRUE(server_status[static_cast<size_t>(s)].ok())
        << server_status[static_cast<size_t>(s)].ToString();
    run.servers.push_back(servers[static_cast<size_t>(s)]->stats());
  }
  return run;
}

inline ps::PsClientOptions ClientOptions(int worker, int num_workers, int num_servers,
                                         int64_t slice_bytes) {
  ps::PsClientOptions o;
  o.worker = worker;
  o.num_workers = num_workers;
  for (int s = 0; s < num_servers; ++s) o.server_ranks.push_back(s);
  o.slice_bytes = slice_bytes;
  return o;
}

// PsSync options of worker `w` of D (one replica each, TP rank 0) against S servers.
inline train::PsSyncOptions SyncOptions(
    int w, int D, int S, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  train::PsSyncOptions o;
  o.worker_rank = w;
  o.num_workers = D;
  o.num_servers = S;
  o.dp_rank = w;
  o.dp_size = D;
  o.tp_rank = 0;
  o.timeout = timeout;
  return o;
}

}  // namespace pszero::testing
