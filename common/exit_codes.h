// Exit codes of pszero processes, in one place so that the launcher, scripts and tests
// read them the same way (docs/launch.md lists them).
#pragma once

#include "common/flags.h"
#include "common/status.h"

namespace pszero {

inline constexpr int kExitOk = 0;
// Any other error; for pszero-launch: a process of the job failed.
inline constexpr int kExitFailure = 1;
// kExitUsage = 2 (common/flags.h): unknown flag or bad value.
// The process stopped because another process of the job was lost, or the rendezvous
// service went away (a consequence, not a cause).
inline constexpr int kExitPeerLost = 3;
// A wait (join, barrier, lookup) ran past its deadline.
inline constexpr int kExitDeadline = 4;
// The rendezvous service refused the cluster token.
inline constexpr int kExitAuthFailed = 5;
// pszero-launch could not start the job (bind, spawn, token file).
inline constexpr int kExitLaunchError = 6;
// pszero-launch: the job ran past --timeout.
inline constexpr int kExitTimeout = 124;
// pszero-launch interrupted by signal N (SIGINT, SIGTERM) exits 128 + N.

// The exit code a worker or server returns for a failed control-plane call.
inline int ExitCodeFor(const Status& status) {
  switch (status.code()) {
    case StatusCode::kOk:
      return kExitOk;
    case StatusCode::kUnavailable:
      return kExitPeerLost;
    case StatusCode::kDeadlineExceeded:
      return kExitDeadline;
    case StatusCode::kUnauthenticated:
      return kExitAuthFailed;
    default:
      return kExitFailure;
  }
}

}  // namespace pszero
