// Shared by the multi-node launch tests: a free TCP port, the tiny training job every run
// trains, the final hash a run prints, and node launchers run side by side as processes.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "tests/support/child_process.h"
#include "tests/support/job_output.h"  // PrintedSha
#include "tests/support/subprocess.h"

namespace pszero::testing {

// A port that was free on 127.0.0.1 a moment ago (bound to port 0 and released).
inline int FreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

// A port in [lo, hi) that was free on 127.0.0.1 a moment ago (tried in pseudo-random
// order from this process's pid); -1 when none was.
inline int FreePortIn(int lo, int hi) {
  const int span = hi - lo;
  for (int i = 0; i < span; ++i) {
    const int port =
        lo +
        static_cast<int>((static_cast<int64_t>(::getpid()) * 7919 + int64_t{i} * 104729) % span);
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    ::close(fd);
    if (ok) return port;
  }
  return -1;
}

// The tiny GPT of tests/train/sync_process_test.cc, for `steps` deterministic steps.
inline std::vector<std::string> TinyTraining(const std::string& sync,
                                             const std::string& steps = "3") {
  return {"--model", "custom", "--layers", "2",       "--d-model", "64",      "--heads",
          "4",       "--seq",  "16",       "--batch", "4",         "--vocab", "64",
          "--seed",  "5",      "--steps",  steps,     "--sync",    sync,      "--deterministic"};
}

inline std::vector<std::string> Cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Environment variables a developer's shell (or a cluster) might carry into a test.
inline const std::vector<std::string> kClusterVars = {"PSZERO_TOKEN",
                                                      "PSZERO_FAULT_INJECT",
                                                      "PSZERO_MASTER_PORT",
                                                      "PSZERO_MASTER_ADDR",
                                                      "PSZERO_SSH",
                                                      "SLURM_JOB_ID",
                                                      "SLURM_NNODES",
                                                      "SLURM_NODELIST",
                                                      "SLURM_JOB_NODELIST",
                                                      "SLURM_PROCID",
                                                      "SLURM_NODEID",
                                                      "SLURM_LOCALID",
                                                      "MASTER_ADDR",
                                                      "MASTER_PORT",
                                                      "NNODES",
                                                      "NODE_RANK",
                                                      "GROUP_RANK",
                                                      "RANK",
                                                      "WORLD_SIZE",
                                                      "LOCAL_RANK",
                                                      "OMPI_COMM_WORLD_RANK",
                                                      "OMPI_COMM_WORLD_SIZE",
                                                      "OMPI_COMM_WORLD_LOCAL_RANK",
                                                      "OMPI_COMM_WORLD_NODE_RANK"};

struct NodeRun {
  int exit_code = -1;
  std::string output;
};

// Starts one pszero-launch per entry of `per_node` (its flags and environment), waits for
// all, and returns each one's exit code and output.
inline std::vector<NodeRun> RunNodes(
    const std::vector<std::pair<std::vector<std::string>, std::vector<std::string>>>& per_node) {
  std::vector<std::unique_ptr<ChildProcess>> nodes;
  for (const auto& [args, env] : per_node) {
    nodes.push_back(ChildProcess::Spawn(
        Cat({BinaryPath("pszero-launch"), "--timeout", "120"}, args), env, kClusterVars));
    EXPECT_NE(nodes.back(), nullptr);
  }
  std::vector<NodeRun> out;
  for (auto& n : nodes) {
    NodeRun run;
    if (n) {
      const ProcessResult r = n->Finish(std::chrono::seconds(150));
      run.exit_code = r.timed_out ? -1 : r.exit_code;
      run.output = n->Output();
    }
    out.push_back(std::move(run));
  }
  return out;
}

inline bool HasLine(const std::string& out, const std::string& prefix, const std::string& text) {
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) == 0 && line.find(text) != std::string::npos) return true;
  }
  return false;
}

inline std::string LastLine(const std::string& s) {
  std::string t = s;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  const size_t nl = t.rfind('\n');
  return nl == std::string::npos ? t : t.substr(nl + 1);
}

}  // namespace pszero::testing
