// Runs a child process for a test and collects its exit status and output.
// The child is always reaped by pid; past the deadline it is killed (SIGKILL) and the
// result says so. Used by every test that drives a real pszero binary.
#pragma once

#include <chrono>
#include <string>
#include <vector>

namespace pszero::testing {

struct ProcessResult {
  int exit_code = -1;   // valid when !signaled
  int term_signal = 0;  // valid when signaled
  bool signaled = false;
  bool timed_out = false;
  std::string out;
  std::string err;
};

// argv[0] is the program path. `env` entries ("K=V") are added to the environment.
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60),
                         const std::vector<std::string>& env = {});

// Path of a pszero binary in the build tree (e.g. "pszero-bench").
std::string BinaryPath(const std::string& name);

}  // namespace pszero::testing
