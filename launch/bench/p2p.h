// Point-to-point latency and bandwidth of the UCX transport between two processes, and the
// same sizes measured by ucx_perftest (ucx-utils) as the yardstick.
//
// Latency: ping-pong of one message each way; reported as half the round trip (as
// ucx_perftest tag_lat does). Bandwidth: rank 0 streams `iters` messages with `window`
// sends in flight while rank 1 keeps as many receives posted; the clock stops when rank
// 1's 8-byte acknowledgement arrives (as tag_bw streams, with the ack making it honest).
// Both ranks run the same deterministic schedule, so no size list travels on the wire.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/file_util.h"  // PhysicalMemoryBytes, the cap on any one size a flag names
#include "common/status.h"
#include "common/transport.h"

namespace pszero::bench {

// A child process (the benchmark's peer, or ucx_perftest's server), killed with SIGKILL
// and reaped by pid unless it was waited for.
class BenchChild {
 public:
  // argv[0] is the program path; quiet sends the child's stdout/stderr to /dev/null.
  static Result<BenchChild> Spawn(const std::vector<std::string>& argv, bool quiet = false);
  BenchChild(BenchChild&& other) noexcept : pid_(other.pid_) { other.pid_ = -1; }
  BenchChild& operator=(BenchChild&&) = delete;
  BenchChild(const BenchChild&) = delete;
  BenchChild& operator=(const BenchChild&) = delete;
  ~BenchChild();
  // Waits for the exit (past `timeout`: SIGKILL); the exit code, or -1.
  int Wait(std::chrono::milliseconds timeout);
  int pid() const { return pid_; }

 private:
  explicit BenchChild(int pid) : pid_(pid) {}
  int Reap();
  int pid_;
};

// Watches children while the parent waits in calls it cannot interrupt (a store's Get, a
// transport's wire-up): when one of them ends unsuccessfully before Stop(), prints one line
// ("<what>: error: <name> exited with code C before the run ended"), removes `cleanup`
// (the run's temp dir) and ends this process with exit code 1 (the other children get
// SIGKILL from their parent-death signal). Polls without reaping (waitid WNOWAIT), so that
// BenchChild::Wait still reaps. Thread-safe; Stop() is idempotent and runs on destruction.
class ChildWatch {
 public:
  ChildWatch(std::string what, std::filesystem::path cleanup);
  ~ChildWatch();
  ChildWatch(const ChildWatch&) = delete;
  ChildWatch& operator=(const ChildWatch&) = delete;
  void Add(const BenchChild& child, std::string name);
  void Stop();

 private:
  void Loop();
  std::string what_;
  std::filesystem::path cleanup_;
  std::mutex mu_;
  std::vector<std::pair<int, std::string>> children_;  // pid, name
  bool stop_ = false;
  std::condition_variable cv_;
  std::thread thread_;
};

// InvalidArgument naming `flag` when `ranks` local processes of `bytes_per_rank` each do not
// fit in this machine's memory (before any process starts, rather than a bad_alloc).
Status CheckFitsMemory(const std::string& flag, uint64_t bytes_per_rank, int ranks);

// "8:256M" (every power of two from 8 B to 256 MiB), "4K" or "8,1M,64M"; K/M/G are 2^10.
Result<std::vector<size_t>> ParseSizeList(const std::string& text);

struct P2pSchedule {
  int lat_iters = 0;  // timed ping-pongs
  int lat_warmup = 0;
  int bw_iters = 0;  // timed messages in the stream
  int bw_warmup = 0;
};
// Iterations for one size: many for small messages, few for large (scaled by `scale`).
P2pSchedule ScheduleFor(size_t bytes, double scale);

struct P2pRow {
  size_t bytes = 0;
  P2pSchedule schedule;
  double latency_us = 0;
  double bandwidth_gbps = 0;  // 1e9 B/s
};

// Rank 0 measures every size against rank 1 (which runs P2pServe with the same arguments).
Result<std::vector<P2pRow>> P2pMeasure(Transport& t, const std::vector<size_t>& sizes, double scale,
                                       int window);
Status P2pServe(Transport& t, const std::vector<size_t>& sizes, double scale, int window);

struct PerftestRow {
  size_t bytes = 0;
  double latency_us = 0;      // tag_lat overall
  double bandwidth_gbps = 0;  // tag_bw overall, 1e9 B/s
};

// Path of ucx_perftest on PATH, or nullopt when it is not installed.
std::optional<std::string> FindUcxPerftest();
// Runs ucx_perftest server and client on 127.0.0.1 (a free port) for tag_lat and tag_bw at
// `bytes`, with iteration counts from ScheduleFor. `extra_args` go to both (e.g. "-e").
Result<PerftestRow> RunUcxPerftest(const std::string& perftest, size_t bytes, double scale,
                                   const std::vector<std::string>& extra_args);

}  // namespace pszero::bench
