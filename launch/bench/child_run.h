// Runs a program to its end for pszero-bench (pszero-launch for `train --sync`, python3
// for the PyTorch peer) and collects its exit status and output. The child gets its own
// process group, so that on the deadline the whole group (a launcher and its workers, or
// python and its ranks) is stopped: SIGTERM, SIGKILL two seconds later. The child is always
// reaped by pid before RunChild returns. While it runs, SIGINT and SIGTERM sent to
// pszero-bench are forwarded to the child's group (a terminal's Ctrl-C would not reach it
// otherwise) and reported in the result, so that the caller can clean up and exit 128+N
// instead of starting the next child. It blocks; call it
// from one thread at a time (it installs those two signal handlers for its duration).
#pragma once

#include <signal.h>

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"

namespace pszero::bench {

struct ChildRun {
  int exit_code = -1;  // when !signaled
  int term_signal = 0;
  bool signaled = false;
  bool timed_out = false;
  int interrupted_by = 0;  // SIGINT or SIGTERM pszero-bench received meanwhile (forwarded)
  std::string out;         // its stdout
  std::string err;         // its stderr

  bool ok() const { return !signaled && !timed_out && exit_code == 0; }
  // "exit code 2", "signal 9", "timed out": for messages.
  std::string Describe() const;
};

// argv[0] is the program: a path, or a name looked up in PATH. IoError when it cannot be
// started (not found, not executable). `env` entries ("K=V") are set in the child's
// environment (this process's otherwise), replacing a variable of the same name.
Result<ChildRun> RunChild(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                          const std::vector<std::string>& env = {});

// While one exists, SIGINT and SIGTERM do not end pszero-bench: they are noted, and
// signal() says which came first (also one that RunChild forwarded to its child
// meanwhile). For work that must not be cut short between children, such as deleting
// an emulated cluster's namespaces. One at a time; not thread-safe.
class InterruptLatch {
 public:
  InterruptLatch();
  ~InterruptLatch();
  InterruptLatch(const InterruptLatch&) = delete;
  InterruptLatch& operator=(const InterruptLatch&) = delete;
  int signal() const;

 private:
  struct sigaction old_int_ = {};
  struct sigaction old_term_ = {};
};

// InvalidArgument naming --bin-dir (or, when `flag_given` is false, the directory beside
// pszero-bench) unless every program of `names` is an executable file in `dir`: checked
// before a job starts, so that a wrong --bin-dir is a usage error, not a failed job.
Status CheckBinDir(const std::string& dir, bool flag_given, const std::vector<std::string>& names);

// The last `lines` lines of `text`, for error messages.
std::string LastLines(const std::string& text, int lines);

}  // namespace pszero::bench
