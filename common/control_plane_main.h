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
// ProcessWork lets a role live more than the control-plane part of its life without a
// main of its own: its flags, and either `run` instead of the rounds (pszero-worker's
// training) or `serve` inside them (pszero-server). A failed run or serve stops the
// process with its Status' exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string_view>

#include "common/status.h"
#include "common/wire.h"

namespace pszero {

class RendezvousClient;

// The last barrier of the rounds, and the one a worker's `run` (training,
// worker/train/train_worker.cc) must end in: a serving process (pszero-server) serves
// until the whole job has entered it.
inline constexpr char kDoneBarrier[] = "done";
inline constexpr char kWorkDoneBarrier[] = "train-done";
// Worker 0 publishes under this key whether the workers live the rounds or their `run`,
// so that a serving process lives the same (it has no --model of its own to tell).
inline constexpr char kWorkerLifeKey[] = "pszero/worker-life";
inline constexpr char kWorkerLifeRounds[] = "rounds";
inline constexpr char kWorkerLifeWork[] = "work";

// What a process does once it has joined, instead of the three rounds (pszero-worker's
// training). Every member may be empty.
struct ProcessWork {
  // Adds the process's own flags to the app before parsing.
  std::function<void(CLI::App&)> add_flags;
  // After parsing, before joining: a non-ok Status is a bad flag (its message names the
  // flag; exit 2 with that one line).
  std::function<Status()> check_flags;
  // Whether `run` replaces the rounds for this invocation.
  std::function<bool()> enabled;
  // The work; its Status maps to the exit code as the rounds' does (InvalidArgument: 2).
  // With servers in the job it must end by entering barrier kWorkDoneBarrier.
  std::function<Status(RendezvousClient&)> run;
  // Or serving work (pszero-server's shard store). When the workers live the rounds, it
  // runs inside them, after the lookups, while a background thread waits in barrier
  // "done"; when the workers run their `run` (worker 0 says which under kWorkerLifeKey),
  // it runs right after the join while the thread waits in kWorkDoneBarrier. Either way
  // `job_done()` turns true once the whole job has entered that barrier (every worker
  // finished) or it failed (a lost peer); the process then exits 0 or with the failure.
  std::function<Status(RendezvousClient&, const std::function<bool()>& job_done)> serve;
};

// Fault injection at a named point of a process's work: when PSZERO_FAULT_INJECT is
// "sigkill:<tag>:<point>" or "sigstop:<tag>:<point>" for this process's tag ("w2") and
// `point` (a barrier name, or "step3" at the start of training step 3, 1-based), the
// process raises that signal; with PSZERO_FAULT_ONCE=<path> only the first time (the file
// marks it done, so a restarted job runs clean). For tests only.
void MaybeInjectFault(std::string_view tag, std::string_view point);

// Whether PSZERO_FAULT_INJECT asks for `action` ("hang", ...) at `point` of process `tag`
// (the same "<action>:<tag>:<point>" form; PSZERO_FAULT_ONCE applies). Tests only.
bool FaultAsked(std::string_view action, std::string_view tag, std::string_view point);

// The whole main() of pszero-worker (role kWorker) and pszero-server (kServer).
int ControlPlaneMain(Role role, int argc, char** argv);
int ControlPlaneMain(Role role, int argc, char** argv, const ProcessWork& work);

}  // namespace pszero
