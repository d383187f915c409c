// ChildProcess: a child that runs beside the test (unlike RunProcess, which waits for it),
// so a test can talk to it, kill it by pid at a chosen moment, and reap it. The child's
// stdout/stderr go to the test's own (ctest keeps them). The destructor kills (SIGKILL)
// and reaps a child that is still running: no test leaves a process behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"

namespace pszero::testing {

class ChildProcess {
 public:
  // argv[0] is the program path; `env` entries ("K=V") are added to the environment.
  // Returns a child with pid() < 0 and error() set when the spawn failed.
  static ChildProcess Spawn(const std::vector<std::string>& argv,
                            const std::vector<std::string>& env = {});
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&&) = delete;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& error() const { return error_; }
  // Sends `signal` to this child only.
  void Kill(int signal);
  // Waits for the child to exit; past `timeout` kills it (SIGKILL) and says timed_out.
  ProcessResult Wait(std::chrono::milliseconds timeout);

 private:
  ChildProcess() = default;
  pid_t pid_ = -1;
  std::string error_;
};

}  // namespace pszero::testing
