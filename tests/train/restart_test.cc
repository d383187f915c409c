// Automatic restart (--max-restarts): a worker killed with SIGKILL at a random step
// (seeded) makes the launcher stop the job and start it again from the newest
// checkpoint; with --deterministic the final parameters equal the uninterrupted run's,
// and the launcher logs the death within 5 s of the kill.
#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/job_output.h"
#include "tests/support/subprocess.h"

namespace pszero::train {
namespace {

using ::pszero::testing::BinaryPath;
using ::pszero::testing::GlogSeconds;
using ::pszero::testing::PrintedLosses;
using ::pszero::testing::PrintedSha;
using ::pszero::testing::ProcessResult;
using ::pszero::testing::RunProcess;

const std::vector<std::string> kJob = {
    "--model",         "custom",    "--layers", "2",      "--d-model", "64",      "--heads", "4",
    "--seq",           "16",        "--batch",  "4",      "--vocab",   "64",      "--seed",  "9",
    "--deterministic", "--workers", "3",        "--sync", "zero2",     "--steps", "6"};

ProcessResult Launch(std::vector<std::string> extra, const std::vector<std::string>& env = {}) {
  for (const char* v : {"PSZERO_FAULT_INJECT", "PSZERO_FAULT_ONCE", "PSZERO_TOKEN"}) ::unsetenv(v);
  std::vector<std::string> argv = {BinaryPath("pszero-launch"), "--timeout", "120"};
  argv.insert(argv.end(), kJob.begin(), kJob.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, std::chrono::seconds(200), env);
}

TEST(RestartTest, KilledWorkerRestartsFromTheCheckpointAndEndsBitIdentical) {
  const ProcessResult clean = Launch({});
  ASSERT_EQ(clean.exit_code, 0) << clean.err;
  const std::string want = PrintedSha(clean.out);
  ASSERT_EQ(want.size(), 64u) << clean.out;

  std::mt19937 rng(20261126);
  for (int trial = 0; trial < 5; ++trial) {
    const int worker = static_cast<int>(rng() % 3);
    const int step = 2 + static_cast<int>(rng() % 5);  // 2..6
    SCOPED_TRACE("trial " + std::to_string(trial) + ": kill worker " + std::to_string(worker) +
                 " at step " + std::to_string(step));
    auto dir = TempDir::Create("pszero-restart");
    ASSERT_TRUE(dir.ok());
    const ProcessResult r = Launch(
        {"--checkpoint-dir", (dir->path() / "ck").string(), "--checkpoint-every", "2",
         "--max-restarts", "2"},
        {"PSZERO_FAULT_INJECT=sigkill:w" + std::to_string(worker) + ":step" + std::to_string(step),
         "PSZERO_FAULT_ONCE=" + (dir->path() / "fired").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(PrintedSha(r.out), want);
    EXPECT_NE(r.err.find("restart 1/2 from "), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("restart 2/2"), std::string::npos) << r.err;
    // Detection: the launcher names the killed worker within 5 s of the kill.
    double killed = -1.0, detected = -1.0;
    std::istringstream lines(r.err);
    const std::string tag = "[w" + std::to_string(worker) + "]";
    for (std::string line; std::getline(lines, line);) {
      if (line.rfind(tag, 0) == 0 && line.find("fault injection: sigkill") != std::string::npos) {
        killed = GlogSeconds(line);
      }
      if (detected < 0 && line.rfind("[launch]", 0) == 0 &&
          line.find("worker " + std::to_string(worker) + " (pid ") != std::string::npos &&
          line.find("killed by signal 9") != std::string::npos) {
        detected = GlogSeconds(line);
      }
    }
    ASSERT_GE(killed, 0.0) << r.err;
    ASSERT_GE(detected, 0.0) << r.err;
    EXPECT_LE(detected - killed, 5.0);
  }
}

}  // namespace
}  // namespace pszero::train
