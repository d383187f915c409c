#include "launch/bench/p2p.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

#include "common/flags.h"

extern char** environ;

namespace pszero::bench {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kTimeout(120000);
constexpr uint32_t kBenchComm = 1;

Result<size_t> ParseSize(const std::string& text) {
  if (text.empty()) return Status::InvalidArgument("empty size");
  // Digits then an optional K/M/G: no sign, no overflow.
  const size_t pos = std::min(text.find_first_not_of("0123456789"), text.size());
  if (pos == 0) return Status::InvalidArgument("bad size '" + text + "'");
  const std::optional<uint64_t> digits = ParseDecimal(std::string_view(text).substr(0, pos));
  if (!digits) return Status::InvalidArgument("size '" + text + "' is too large");
  const uint64_t value = *digits;
  const std::string suffix = text.substr(pos);
  uint64_t multiplier = 1;
  if (suffix == "K" || suffix == "k")
    multiplier = uint64_t{1} << 10;
  else if (suffix == "M" || suffix == "m")
    multiplier = uint64_t{1} << 20;
  else if (suffix == "G" || suffix == "g")
    multiplier = uint64_t{1} << 30;
  else if (!suffix.empty())
    return Status::InvalidArgument("bad size suffix in '" + text + "'");
  if (value == 0) return Status::InvalidArgument("size must be at least 1 byte");
  uint64_t bytes = 0;
  if (__builtin_mul_overflow(value, multiplier, &bytes)) {
    return Status::InvalidArgument("size '" + text + "' is too large");
  }
  const uint64_t memory = PhysicalMemoryBytes();
  if (bytes > memory) {
    return Status::InvalidArgument("size '" + text + "' is more than this machine's memory (" +
                                   std::to_string(memory) + " bytes)");
  }
  return static_cast<size_t>(bytes);
}

Result<int> FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Status::IoError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return Status::IoError(std::string("bind 127.0.0.1:0: ") + std::strerror(errno));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// Runs one ucx_perftest test; returns the CSV "final" line's fields.
Result<std::vector<double>> PerftestOnce(const std::string& perftest, const std::string& test,
                                         size_t bytes, int iters, int warmup,
                                         const std::vector<std::string>& extra) {
  const auto deadline = Clock::now() + kTimeout;
  PSZERO_ASSIGN_OR_RETURN(int port, FreeLoopbackPort());
  std::vector<std::string> server = {perftest, "-p", std::to_string(port)};
  server.insert(server.end(), extra.begin(), extra.end());
  PSZERO_ASSIGN_OR_RETURN(BenchChild child, BenchChild::Spawn(server, /*quiet=*/true));
  std::string command = "timeout 120 " + perftest + " 127.0.0.1 -p " + std::to_string(port) +
                        " -t " + test + " -s " + std::to_string(bytes) + " -n " +
                        std::to_string(iters) + " -w " + std::to_string(warmup) + " -f -v";
  for (const auto& e : extra) command += " " + e;
  command += " 2>/dev/null";
  // The server may not listen yet: the client then fails at once and we retry.
  for (int attempt = 0; attempt < 200 && Clock::now() < deadline; ++attempt) {
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return Status::IoError("popen ucx_perftest failed");
    std::string out;
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
    const int rc = ::pclose(pipe);
    // CSV: a header line, then "iterations,lat50,avg_lat,overall_lat,avg_bw,overall_bw,...".
    std::istringstream lines(out);
    std::string line, last;
    while (std::getline(lines, line)) {
      const size_t first = line.find_first_not_of(' ');
      if (first != std::string::npos && std::isdigit(static_cast<unsigned char>(line[first]))) {
        last = line;
      }
    }
    if (rc == 0 && !last.empty()) {
      std::vector<double> fields;
      std::istringstream cells(last);
      std::string cell;
      while (std::getline(cells, cell, ',')) fields.push_back(std::atof(cell.c_str()));
      if (fields.size() >= 6) {
        (void)child.Wait(std::chrono::milliseconds(10000));
        return fields;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // server start-up
  }
  return Status::Unavailable("ucx_perftest " + test + " at " + std::to_string(bytes) +
                             " bytes did not run (port " + std::to_string(port) + ")");
}

Status PingPong(Transport& t, int peer, bool initiator, std::byte* send_buf, std::byte* recv_buf,
                size_t bytes, uint64_t tag) {
  PSZERO_ASSIGN_OR_RETURN(Request recv, t.Recv(peer, tag, recv_buf, bytes));
  if (!initiator) PSZERO_RETURN_IF_ERROR(recv.Wait(kTimeout));
  PSZERO_ASSIGN_OR_RETURN(Request send, t.Send(peer, tag, send_buf, bytes));
  PSZERO_RETURN_IF_ERROR(send.Wait(kTimeout));
  return recv.Wait(kTimeout);
}

// Streams `count` messages with `window` in flight (rank 0 sends, rank 1 receives), then
// rank 1 acknowledges.
Status Stream(Transport& t, bool sender, std::byte* buf, size_t bytes, int count, int window,
              uint64_t tag, uint64_t ack_tag) {
  const int peer = sender ? 1 : 0;
  std::vector<Request> inflight(window);
  for (int i = 0; i < count; ++i) {
    Request& slot = inflight[i % window];
    if (slot.valid()) PSZERO_RETURN_IF_ERROR(slot.Wait(kTimeout));
    PSZERO_ASSIGN_OR_RETURN(slot,
                            sender ? t.Send(peer, tag, buf, bytes) : t.Recv(peer, tag, buf, bytes));
  }
  PSZERO_RETURN_IF_ERROR(t.WaitAll(inflight, kTimeout));
  uint64_t ack = 0;
  PSZERO_ASSIGN_OR_RETURN(Request r, sender ? t.Recv(peer, ack_tag, &ack, sizeof(ack))
                                            : t.Send(peer, ack_tag, &ack, sizeof(ack)));
  return r.Wait(kTimeout);
}

// Both ranks: the whole schedule. Rank 0 fills `rows`.
Status RunSchedule(Transport& t, const std::vector<size_t>& sizes, double scale, int window,
                   std::vector<P2pRow>* rows) {
  const bool rank0 = t.rank() == 0;
  const int peer = rank0 ? 1 : 0;
  const size_t max_bytes = *std::max_element(sizes.begin(), sizes.end());
  std::vector<std::byte> send_buf(max_bytes, std::byte{1}), recv_buf(max_bytes);
  PSZERO_ASSIGN_OR_RETURN(auto send_reg, t.RegisterMemory(send_buf.data(), max_bytes));
  PSZERO_ASSIGN_OR_RETURN(auto recv_reg, t.RegisterMemory(recv_buf.data(), max_bytes));
  for (size_t s = 0; s < sizes.size(); ++s) {
    const size_t bytes = sizes[s];
    const P2pSchedule sched = ScheduleFor(bytes, scale);
    const uint64_t lat_tag = MakeTag(kBenchComm, static_cast<uint32_t>(s), 0);
    const uint64_t bw_tag = MakeTag(kBenchComm, static_cast<uint32_t>(s), 1);
    const uint64_t ack_tag = MakeTag(kBenchComm, static_cast<uint32_t>(s), 2);
    P2pRow row;
    row.bytes = bytes;
    row.schedule = sched;
    Clock::time_point start;
    for (int i = 0; i < sched.lat_warmup + sched.lat_iters; ++i) {
      if (i == sched.lat_warmup) start = Clock::now();
      PSZERO_RETURN_IF_ERROR(
          PingPong(t, peer, rank0, send_buf.data(), recv_buf.data(), bytes, lat_tag));
    }
    const double lat_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    row.latency_us = lat_seconds / sched.lat_iters / 2 * 1e6;
    std::byte* stream_buf = rank0 ? send_buf.data() : recv_buf.data();
    PSZERO_RETURN_IF_ERROR(
        Stream(t, rank0, stream_buf, bytes, sched.bw_warmup, window, bw_tag, ack_tag));
    start = Clock::now();
    PSZERO_RETURN_IF_ERROR(
        Stream(t, rank0, stream_buf, bytes, sched.bw_iters, window, bw_tag, ack_tag));
    const double bw_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    row.bandwidth_gbps = static_cast<double>(bytes) * sched.bw_iters / bw_seconds / 1e9;
    if (rows != nullptr) rows->push_back(row);
  }
  return Status::Ok();
}

}  // namespace

Result<BenchChild> BenchChild::Spawn(const std::vector<std::string>& argv, bool quiet) {
  if (argv.empty()) return Status::InvalidArgument("BenchChild::Spawn: empty argv");
  // Everything the child needs is built before fork: after it, only async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int report[2];  // the child's exec errno, if exec fails (closed on exec)
  if (::pipe2(report, O_CLOEXEC) != 0) {
    return Status::IoError(std::string("pipe: ") + std::strerror(errno));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int saved = errno;
    ::close(report[0]);
    ::close(report[1]);
    return Status::IoError("cannot start " + argv[0] + ": " + std::strerror(saved));
  }
  if (pid == 0) {
    // A bench child never outlives the bench process (an aborted parent left its peers
    // running under init). The parent may have died before prctl: then exit at once.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
    if (quiet) {
      const int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, 1);
        ::dup2(null, 2);
        if (null > 2) ::close(null);
      }
    }
    ::execv(args[0], args.data());
    const int e = errno;
    (void)!::write(report[1], &e, sizeof(e));
    ::_exit(127);
  }
  ::close(report[1]);
  int exec_errno = 0;
  ssize_t got = 0;
  do {
    got = ::read(report[0], &exec_errno, sizeof(exec_errno));
  } while (got < 0 && errno == EINTR);
  ::close(report[0]);
  BenchChild child(pid);
  if (got == static_cast<ssize_t>(sizeof(exec_errno))) {
    (void)child.Reap();
    return Status::IoError("cannot start " + argv[0] + ": " + std::strerror(exec_errno));
  }
  return child;
}

BenchChild::~BenchChild() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    (void)Reap();
  }
}

int BenchChild::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  auto interval = std::chrono::microseconds(200);
  while (pid_ > 0) {
    int status = 0;
    const pid_t got = ::waitpid(pid_, &status, WNOHANG);
    if (got == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (got < 0 && errno != EINTR) break;
    if (Clock::now() >= deadline) {
      ::kill(pid_, SIGKILL);
      return Reap();
    }
    std::this_thread::sleep_for(interval);  // polling for exit; the deadline bounds it
    interval = std::min(interval * 2, std::chrono::microseconds(20000));
  }
  return -1;
}

int BenchChild::Reap() {
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

ChildWatch::ChildWatch(std::string what, std::filesystem::path cleanup)
    : what_(std::move(what)), cleanup_(std::move(cleanup)), thread_([this] { Loop(); }) {}

ChildWatch::~ChildWatch() { Stop(); }

void ChildWatch::Add(const BenchChild& child, std::string name) {
  std::lock_guard<std::mutex> lock(mu_);
  children_.emplace_back(child.pid(), std::move(name));
}

void ChildWatch::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ChildWatch::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::milliseconds(50), [this] { return stop_; })) {
    for (const auto& [pid, name] : children_) {
      siginfo_t info = {};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0 ||
          info.si_pid != pid) {
        continue;  // running (or already reaped by Wait)
      }
      if (info.si_code == CLD_EXITED && info.si_status == 0) continue;
      const std::string how = info.si_code == CLD_EXITED
                                  ? "exited with code " + std::to_string(info.si_status)
                                  : "was killed by signal " + std::to_string(info.si_status);
      std::cerr << what_ << ": error: " << name << " " << how << " before the run ended\n";
      std::cerr.flush();
      std::error_code ec;
      if (!cleanup_.empty()) std::filesystem::remove_all(cleanup_, ec);
      ::_exit(1);
    }
  }
}

Status CheckFitsMemory(const std::string& flag, uint64_t bytes_per_rank, int ranks) {
  const uint64_t memory = PhysicalMemoryBytes();
  uint64_t total = 0;
  if (!__builtin_mul_overflow(bytes_per_rank, static_cast<uint64_t>(std::max(ranks, 1)), &total) &&
      total <= memory) {
    return Status::Ok();
  }
  return Status::InvalidArgument(flag + ": needs " + std::to_string(bytes_per_rank) +
                                 " bytes per rank on " + std::to_string(ranks) +
                                 " ranks, this machine has " + std::to_string(memory));
}

Result<std::vector<size_t>> ParseSizeList(const std::string& text) {
  std::vector<size_t> sizes;
  if (auto colon = text.find(':'); colon != std::string::npos) {
    PSZERO_ASSIGN_OR_RETURN(size_t lo, ParseSize(text.substr(0, colon)));
    PSZERO_ASSIGN_OR_RETURN(size_t hi, ParseSize(text.substr(colon + 1)));
    if (lo > hi) return Status::InvalidArgument("size range '" + text + "' is empty");
    for (size_t n = lo; n <= hi; n *= 2) sizes.push_back(n);
    return sizes;
  }
  std::istringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    PSZERO_ASSIGN_OR_RETURN(size_t n, ParseSize(item));
    sizes.push_back(n);
  }
  if (sizes.empty()) return Status::InvalidArgument("no sizes in '" + text + "'");
  return sizes;
}

P2pSchedule ScheduleFor(size_t bytes, double scale) {
  auto scaled = [scale](double n, int lo) { return std::max(lo, static_cast<int>(n * scale)); };
  const double b = static_cast<double>(bytes);
  P2pSchedule s;
  s.lat_iters = scaled(std::clamp(double{64 << 20} / b, 4.0, 2000.0), 2);
  s.lat_warmup = std::max(1, s.lat_iters / 10);
  s.bw_iters = scaled(std::clamp(double{1024ull << 20} / b, 8.0, 20000.0), 4);
  s.bw_warmup = std::max(2, s.bw_iters / 10);
  return s;
}

Result<std::vector<P2pRow>> P2pMeasure(Transport& t, const std::vector<size_t>& sizes, double scale,
                                       int window) {
  std::vector<P2pRow> rows;
  PSZERO_RETURN_IF_ERROR(RunSchedule(t, sizes, scale, window, &rows));
  return rows;
}

Status P2pServe(Transport& t, const std::vector<size_t>& sizes, double scale, int window) {
  return RunSchedule(t, sizes, scale, window, nullptr);
}

std::optional<std::string> FindUcxPerftest() {
  const char* path = std::getenv("PATH");
  std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    const auto candidate = std::filesystem::path(dir) / "ucx_perftest";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  }
  return std::nullopt;
}

Result<PerftestRow> RunUcxPerftest(const std::string& perftest, size_t bytes, double scale,
                                   const std::vector<std::string>& extra_args) {
  const P2pSchedule sched = ScheduleFor(bytes, scale);
  PerftestRow row;
  row.bytes = bytes;
  PSZERO_ASSIGN_OR_RETURN(auto lat, PerftestOnce(perftest, "tag_lat", bytes, sched.lat_iters,
                                                 sched.lat_warmup, extra_args));
  row.latency_us = lat[3];  // overall latency, usec (one way)
  PSZERO_ASSIGN_OR_RETURN(auto bw, PerftestOnce(perftest, "tag_bw", bytes, sched.bw_iters,
                                                sched.bw_warmup, extra_args));
  row.bandwidth_gbps = bw[5] * 1048576.0 / 1e9;  // overall MB/s (2^20 B) → 1e9 B/s
  return row;
}

}  // namespace pszero::bench
