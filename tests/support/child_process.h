// ChildProcess: a child a test starts and keeps running while it does other things (unlike
// RunProcess, which waits), so that it can talk to it, signal it at a chosen moment, and
// reap it. Output goes to a temporary file (Output()). The child is reaped by pid: Wait()
// with a deadline (pidfd + poll, no sleeps), Finish() which also kills it past the
// deadline, and the destructor kills (SIGKILL) and reaps a child still running: no test
// leaves a process behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"

namespace pszero::testing {

class ChildProcess {
 public:
  // argv[0] is the program path; `env` entries ("K=V") are added to this process's
  // environment after removing the variables named in `unset`.
  static std::unique_ptr<ChildProcess> Spawn(const std::vector<std::string>& argv,
                                             const std::vector<std::string>& env = {},
                                             const std::vector<std::string>& unset = {});
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  void Signal(int sig) const;
  // Waits until the child exits; false after `timeout` (the child keeps running).
  bool Wait(std::chrono::milliseconds timeout);
  // Waits up to `timeout`; past it kills the child (SIGKILL) and says timed_out. The
  // result holds the exit code or signal and the child's output.
  ProcessResult Finish(std::chrono::milliseconds timeout);
  bool exited() const { return exited_; }
  int wait_status() const { return status_; }
  // Everything the child wrote to stdout and stderr so far.
  std::string Output() const;

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string output_path_;
};

}  // namespace pszero::testing
