// The control-plane part of a pszero-worker's and a pszero-server's life, shared by both
// mains until later issues give them their work: flags (each with a PSZERO_* environment
// variable, which pszero-launch sets), join with the cluster token, then three rounds over
// the whole job: barrier "joined"; publish a greeting and barrier "published"; look up
// every peer's join blob and greeting, checking both; barrier "done"; leave.
//
// Exit codes (common/exit_codes.h): 0 done, 2 bad flag, 3 a peer or the service was
// lost, 4 a wait ran past its deadline, 5 authentication failed, 1 anything else.
//
// Fault injection for tests: PSZERO_FAULT_INJECT="sigkill:<tag>:<barrier>" makes the
// process tagged <tag> ("w2") kill itself with SIGKILL as it enters that barrier;
// "sigstop:<tag>:<barrier>" makes it stop (hang) there instead.
//
// ControlPlaneHooks let a role live more than the control-plane part of its life without
// a main of its own: `add_flags` adds the role's flags before parsing, and `serve` runs
// after the lookups while a background thread waits in barrier "done"; `job_done()` turns
// true once the whole job has entered it (every other process finished its work). A
// failed serve stops the process with its Status' exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

#include "common/status.h"
#include "common/wire.h"

namespace pszero {

class RendezvousClient;

struct ControlPlaneHooks {
  std::function<void(CLI::App& app)> add_flags;
  std::function<Status(RendezvousClient& client, const std::function<bool()>& job_done)> serve;
};

// The whole main() of pszero-worker (role kWorker) and pszero-server (kServer).
int ControlPlaneMain(Role role, int argc, char** argv);
int ControlPlaneMain(Role role, int argc, char** argv, const ControlPlaneHooks& hooks);

}  // namespace pszero
