// FlightRecorder: the last 256 collective operations of this process (op, communicator,
// sequence number, bytes, label, start, end), as NCCL's flight recorder keeps them, so that
// a hung or timed-out job can say who waits where. Communicator ops record themselves; the
// collective stream labels what it runs ("allreduce bucket 4").
//
// Dump() lists them; Latest() is the op this process began last — where it waits, or the
// op that just failed. DiagnoseHang() compares every rank's latest op and names the
// disagreement ("rank 0 waits in allreduce #13 on comm 2 (loss average); rank 1 waits in
// barrier #5 on comm 0"). Workers publish their latest op in the job's key-value store
// under the two prefixes below, where the other workers and pszero-launch (which owns the
// rendezvous service) read them. Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace pszero::collectives {

struct OpRecord {
  uint64_t id = 0;  // process-wide, increasing
  uint32_t comm = 0;
  uint32_t seq = 0;  // the communicator's op number
  int comm_rank = 0;
  int comm_size = 0;
  std::string op;     // "allreduce"
  std::string label;  // what asked for it, when known
  int64_t bytes = 0;  // sent, once ended
  int64_t start_us = 0;
  int64_t end_us = 0;  // 0: still running
  bool ok = true;
  std::string Describe() const;  // "allreduce #13 on comm 2 (loss average)"
};

// Key prefixes (followed by the worker's rank) of a worker's latest op, as ToJson() writes
// it: after --collective-timeout-s expired, and on SIGUSR1 (the value then carries a
// fresh "dumped_us" each time, so a second signal is a new value).
inline constexpr char kHangTimeoutKeyPrefix[] = "pszero/hang/timeout/";
inline constexpr char kHangSignalKeyPrefix[] = "pszero/hang/signal/";

class FlightRecorder {
 public:
  static constexpr size_t kCapacity = 256;
  static FlightRecorder& Get();

  uint64_t Begin(uint32_t comm, uint32_t seq, int comm_rank, int comm_size, const char* op);
  void End(uint64_t id, int64_t bytes, bool ok);
  // The label the calling thread's next ops get (empty: none).
  static void SetThreadLabel(std::string label);

  std::vector<OpRecord> Snapshot() const;
  // The op begun last (id 0: none yet).
  OpRecord Latest() const;
  std::string Dump() const;  // one line per op, oldest first

 private:
  mutable std::mutex mu_;
  std::deque<OpRecord> ops_;
  uint64_t next_id_ = 1;
};

nlohmann::json ToJson(const OpRecord& r);
OpRecord OpRecordFromJson(const nlohmann::json& j);

// `latest[r]`: rank r's latest op (id 0: no report from it). One line naming where each rank
// waits (an op that ended, end_us != 0: "is past"; report a failed op with end_us 0); ranks at the
// same op are named together ("ranks 0,2-7 wait in allreduce #812 on comm 1 (allreduce bucket 4);
// rank 1 waits in barrier #3 on comm 0"). Empty when every rank reported the same op (same comm,
// number and kind).
std::string DiagnoseHang(const std::vector<OpRecord>& latest);

// "every worker waits in allreduce #5 on comm 1 (...)": the line for `latest` when
// DiagnoseHang() finds no disagreement (every report is the same op).
std::string DescribeAgreement(const std::vector<OpRecord>& latest);

}  // namespace pszero::collectives
