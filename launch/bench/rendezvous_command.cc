// `pszero-bench rendezvous`: join and barrier latency of the control plane. For each
// client count N, a rendezvous service (own thread) and N clients (threads of this
// process, each with its own connection and I/O thread) are started; then
//   join    = from releasing all N clients until the last one has its rank (connect,
//             nonce, HMAC, world complete, welcome),
//   barrier = mean time per barrier over --barriers consecutive barriers of all N.
// Each count is measured --repeats times; the table shows median and range (min-max).
#include <algorithm>
#include <barrier>
#include <cstdio>
#include <iostream>
#include <latch>
#include <memory>
#include <thread>

#include "common/auth.h"
#include "common/rendezvous_client.h"
#include "common/report.h"
#include "common/stats.h"
#include "launch/bench/command.h"
#include "launch/rendezvous_service.h"

namespace pszero::bench {

namespace {

using std::chrono::milliseconds;

struct RendezvousFlags {
  std::vector<int> clients = {8, 64, 256};
  int repeats = 3;
  int barriers = 20;
  bool json = false;
  std::string output;
};

struct Sample {
  double join_ms = 0;
  double barrier_ms = 0;
};

Result<Sample> MeasureOnce(int n, int barriers) {
  PSZERO_ASSIGN_OR_RETURN(std::string token, GenerateClusterToken());
  RendezvousServiceOptions so;
  so.num_workers = n;
  so.token = token;
  PSZERO_ASSIGN_OR_RETURN(auto service, RendezvousServiceThread::Start(so));

  std::latch ready(n + 1);
  std::latch go(1);
  std::vector<Status> errors(static_cast<size_t>(n));
  std::vector<std::chrono::steady_clock::time_point> joined(static_cast<size_t>(n));
  std::barrier sync(n + 1);
  std::vector<std::thread> threads;
  std::vector<double> barrier_ms(static_cast<size_t>(n));
  std::chrono::steady_clock::time_point start;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      RendezvousOptions o;
      o.master_port = service->port();
      o.token = token;
      o.local_rank = i;
      ready.count_down();
      go.wait();
      auto client = RendezvousClient::Join(o, milliseconds(120000));
      joined[static_cast<size_t>(i)] = std::chrono::steady_clock::now();
      if (!client.ok()) {
        errors[static_cast<size_t>(i)] = client.status();
        sync.arrive_and_drop();
        return;
      }
      sync.arrive_and_wait();  // everyone joined: time the barriers from a common start
      const auto t0 = std::chrono::steady_clock::now();
      for (int b = 0; b < barriers && errors[static_cast<size_t>(i)].ok(); ++b) {
        errors[static_cast<size_t>(i)] = (*client)->Barrier("bench", milliseconds(120000));
      }
      barrier_ms[static_cast<size_t>(i)] =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() /
          barriers;
    });
  }
  ready.arrive_and_wait();
  start = std::chrono::steady_clock::now();
  go.count_down();
  sync.arrive_and_wait();
  for (auto& t : threads) t.join();
  for (const Status& s : errors) {
    if (!s.ok()) return s;
  }
  Sample sample;
  const auto last = *std::max_element(joined.begin(), joined.end());
  sample.join_ms = std::chrono::duration<double, std::milli>(last - start).count();
  sample.barrier_ms = *std::max_element(barrier_ms.begin(), barrier_ms.end());
  return sample;
}

nlohmann::json Range(const std::vector<double>& v) {
  const Summary s = Summarize(v);
  return {{"median", s.median}, {"min", s.min}, {"max", s.max}, {"samples", v}};
}

int RunRendezvousCommand(const RendezvousFlags& flags) {
  nlohmann::json runs = nlohmann::json::array();
  if (!flags.json) {
    std::printf("# pszero-bench rendezvous: %d repeats, %d barriers per repeat, times in ms\n",
                flags.repeats, flags.barriers);
    std::printf("# %7s  %12s  %21s  %12s  %21s\n", "clients", "join median", "join range",
                "barrier med", "barrier range");
  }
  for (int n : flags.clients) {
    std::vector<double> join, barrier;
    for (int r = 0; r < flags.repeats; ++r) {
      Result<Sample> s = MeasureOnce(n, flags.barriers);
      if (!s.ok()) {
        std::cerr << "pszero-bench rendezvous: " << n << " clients: " << s.status().ToString()
                  << "\n";
        return 1;
      }
      join.push_back(s->join_ms);
      barrier.push_back(s->barrier_ms);
    }
    runs.push_back({{"clients", n}, {"join_ms", Range(join)}, {"barrier_ms", Range(barrier)}});
    if (!flags.json) {
      const Summary j = Summarize(join), b = Summarize(barrier);
      std::printf("  %7d  %12.3f  %9.3f - %9.3f  %12.3f  %9.3f - %9.3f\n", n, j.median, j.min,
                  j.max, b.median, b.min, b.max);
      std::fflush(stdout);
    }
  }
  nlohmann::json doc = {{"benchmark", "rendezvous"},
                        {"repeats", flags.repeats},
                        {"barriers_per_repeat", flags.barriers},
                        {"unit", "ms"},
                        {"runs", runs}};
  if (flags.json) std::cout << doc.dump(2) << "\n";
  if (!flags.output.empty()) {
    Status s = WriteJsonAtomic(flags.output, doc);
    if (!s.ok()) {
      std::cerr << "pszero-bench rendezvous: " << s.ToString() << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

BenchCommand AddRendezvousCommand(CLI::App& root) {
  auto flags = std::make_shared<RendezvousFlags>();
  CLI::App* app = root.add_subcommand(
      "rendezvous", "Join and barrier latency of the control plane (clients as threads)");
  app->add_option("--clients", flags->clients, "Client counts to measure, comma-separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024));
  app->add_option("--repeats", flags->repeats, "Measurements per client count")
      ->check(CLI::Range(1, 100));
  app->add_option("--barriers", flags->barriers, "Consecutive barriers timed per measurement")
      ->check(CLI::Range(1, 100000));
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  app->add_option("--output", flags->output, "Also write the JSON to this file (atomically)");
  return {app, [flags] { return RunRendezvousCommand(*flags); }};
}

}  // namespace pszero::bench
