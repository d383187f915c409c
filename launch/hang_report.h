// HangReport: pszero-launch's side of hang diagnosis. A worker publishes its flight
// recorder's latest op in the rendezvous store when a collective passes
// --collective-timeout-s (collectives::kHangTimeoutKeyPrefix) and on SIGUSR1
// (kHangSignalKeyPrefix); the launcher, which owns the store in local mode, feeds every
// key set there to OnKeySet() and, once every worker has reported (or the job ended, or a
// deadline passed), prints Line(): the one line naming who waits where.
//
// A round begins with the first timeout report, or when the launcher forwards SIGUSR1
// (BeginSignalRound: reports of earlier signals are forgotten), or — with
// `open_on_signal_report`, for `--rendezvous-only`, whose workers someone else signals
// (mpirun forwards SIGUSR1 to its ranks) — with the first SIGUSR1 report. Not
// thread-safe: one thread calls it, or the caller locks.
#pragma once

#include <string>
#include <vector>

#include "worker/collectives/flight_recorder.h"

namespace pszero {

class HangReport {
 public:
  explicit HangReport(int num_workers, bool open_on_signal_report = false)
      : num_workers_(num_workers), open_on_signal_report_(open_on_signal_report) {}

  // A key was set in the store. True when it was a worker's report and it began a
  // round (the first timeout report while none is open, or the first SIGUSR1 report with
  // `open_on_signal_report`).
  bool OnKeySet(const std::string& key, const std::string& value);

  // The launcher forwarded SIGUSR1 to the workers: a new round that only takes what the
  // workers report from now on.
  void BeginSignalRound();

  bool open() const { return open_; }
  // Whether any worker reported a collective past --collective-timeout-s.
  bool saw_timeout() const { return saw_timeout_; }
  bool complete() const { return open_ && reported_ == num_workers_; }
  int reported() const { return reported_; }

  // "hang diagnosis: rank 0 waits in allreduce #2 on comm 1 (allreduce bucket 0); rank 1
  // waits in barrier #1 on comm 0" (missing workers: "sent no report"), or "hang
  // diagnosis: no disagreement: every worker waits in ..." when all are at the same op.
  // Closes the round.
  std::string TakeLine();

 private:
  void Open();

  int num_workers_;
  bool open_on_signal_report_;
  bool open_ = false;
  bool saw_timeout_ = false;
  int reported_ = 0;
  std::vector<collectives::OpRecord> latest_;  // id 0: no op (or no report) yet
  std::vector<bool> has_report_;
};

}  // namespace pszero
