// A child process a test starts and keeps running while it does other things (unlike
// RunProcess, which waits). Output goes to a file beside the test's temp directory. The
// child is reaped by pid: Wait() with a deadline (pidfd + poll, no sleeps), and the
// destructor kills (SIGKILL) and reaps a child still running.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

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
