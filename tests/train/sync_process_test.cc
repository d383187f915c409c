// The sync modes as users run them: pszero-launch with real worker processes.
//  * --deterministic allreduce and zero3 with T = 2, D = 2 end with the same sha256 (fp32,
//    and bf16 mixed precision), and the run report (docs/report.md) holds what it promises;
//  * --recompute full under zero3 (hooks around every unit, parameters gathered in
//    BeforeBackward) ends with the final_params_sha256 of --recompute none, fp32 and bf16;
//  * --grad-accum 2 with --deterministic, D = 2: allreduce, zero1 and ps (one server, bsp)
//    end with the same sha256, and the report's bytes per step match the theory with K
//    (ratio 1.000), its tokens per step count the micro-batches and it records the flag;
//    a zero2 run with --grad-accum 3 resumed from a checkpoint ends with the same bits;
//  * a worker killed in the middle of training: every survivor stops on its own within
//    5 s, naming it, and the launcher's last line names it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
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

const std::vector<std::string> kModel = {"--model", "custom", "--layers", "2",  "--d-model", "64",
                                         "--heads", "4",      "--seq",    "16", "--batch",   "4",
                                         "--vocab", "64",     "--seed",   "5"};

ProcessResult Launch(std::vector<std::string> extra, const std::vector<std::string>& env = {}) {
  ::unsetenv("PSZERO_FAULT_INJECT");
  ::unsetenv("PSZERO_TOKEN");
  std::vector<std::string> argv = {BinaryPath("pszero-launch"), "--timeout", "120"};
  argv.insert(argv.end(), kModel.begin(), kModel.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, std::chrono::seconds(150), env);
}

TEST(SyncProcessTest, DeterministicModesAgreeAcrossProcessesAndTheReportHoldsUp) {
  auto dir = TempDir::Create("pszero-sync");
  ASSERT_TRUE(dir.ok());
  for (const std::string precision : {"fp32", "bf16"}) {
    std::vector<std::string> shas;
    for (const char* mode : {"allreduce", "zero3"}) {
      SCOPED_TRACE(std::string(mode) + " " + precision);
      const std::string report = (dir->path() / (std::string(mode) + precision + ".json")).string();
      const ProcessResult r =
          Launch({"--workers", "4", "--tp", "2", "--sync", mode, "--steps", "3", "--deterministic",
                  "--precision", precision, "--report", report});
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const std::string sha = PrintedSha(r.out);
      ASSERT_FALSE(sha.empty()) << r.out;
      shas.push_back(sha);

      std::ifstream in(report);
      ASSERT_TRUE(in.good()) << report;
      const nlohmann::json doc = nlohmann::json::parse(in);
      EXPECT_EQ(doc["schema"], "pszero.run/1");
      EXPECT_EQ(doc["flags"]["sync"], mode);
      EXPECT_EQ(doc["flags"]["tp"], 2);
      EXPECT_EQ(doc["flags"]["dp"], 2);
      EXPECT_EQ(doc["flags"]["deterministic"], true);
      EXPECT_EQ(doc["flags"]["precision"], precision);
      EXPECT_EQ(doc["final_params_sha256"], sha);
      ASSERT_EQ(doc["steps"].size(), 3u);
      for (size_t s = 0; s < 3; ++s) {
        EXPECT_EQ(doc["steps"][s]["step"], s + 1);
        EXPECT_GT(doc["steps"][s]["time_s"].get<double>(), 0.0);
        EXPECT_TRUE(std::isfinite(doc["steps"][s]["loss"].get<double>()));
      }
      // Ψ is per TP rank: half the model's matrices plus the replicated vectors.
      const int64_t psi = doc["model"]["params_per_tp_rank"];
      EXPECT_LT(psi, doc["model"]["params"].get<int64_t>());
      ASSERT_EQ(doc["ranks"].size(), 4u);
      for (size_t i = 0; i < 4; ++i) {
        const nlohmann::json& rank = doc["ranks"][i];
        EXPECT_EQ(rank["rank"], i);
        EXPECT_EQ(rank["tp_rank"], i % 2);
        EXPECT_EQ(rank["dp_rank"], i / 2);
        const nlohmann::json& ms = rank["memory"]["model_state"];
        EXPECT_NEAR(ms["ratio"].get<double>(), 1.0, 0.05) << ms.dump();
        EXPECT_EQ(ms["formula"], std::string(mode) == "zero3" ? "16Ψ/D" : "16Ψ");
        const nlohmann::json& bytes = rank["bytes_per_step"];
        EXPECT_NEAR(bytes["ratio"].get<double>(), 1.0, 0.01) << bytes.dump();
        EXPECT_GT(rank["bytes_total"]["sent"].get<int64_t>(), bytes["sent"].get<int64_t>());
      }
    }
    EXPECT_EQ(shas[0], shas[1]);
  }
}

TEST(SyncProcessTest, RecomputeFullUnderZero3EndsWithTheSameParams) {
  auto dir = TempDir::Create("pszero-recompute");
  ASSERT_TRUE(dir.ok());
  for (const std::string precision : {"fp32", "bf16"}) {
    std::vector<std::string> shas;
    for (const std::string recompute : {"none", "full"}) {
      SCOPED_TRACE(recompute + " " + precision);
      const std::string report = (dir->path() / (recompute + precision + ".json")).string();
      ::unsetenv("PSZERO_FAULT_INJECT");
      ::unsetenv("PSZERO_TOKEN");
      const ProcessResult r =
          RunProcess({BinaryPath("pszero-launch"), "--timeout", "120", "--model", "gpt-tiny",
                      "--workers", "2", "--sync", "zero3", "--steps", "2", "--precision", precision,
                      "--recompute", recompute, "--report", report},
                     std::chrono::seconds(150));
      ASSERT_EQ(r.exit_code, 0) << r.err;
      std::ifstream in(report);
      ASSERT_TRUE(in.good()) << report;
      const nlohmann::json doc = nlohmann::json::parse(in);
      EXPECT_EQ(doc["flags"]["recompute"], recompute);
      EXPECT_EQ(doc["final_params_sha256"], PrintedSha(r.out));
      shas.push_back(doc["final_params_sha256"].get<std::string>());
    }
    EXPECT_EQ(shas[0], shas[1]) << precision;
  }
}

TEST(SyncProcessTest, GradAccumAllReduceZero1AndPsAgreeBitForBit) {
  auto dir = TempDir::Create("pszero-accum");
  ASSERT_TRUE(dir.ok());
  std::vector<std::string> shas;
  for (const char* mode : {"allreduce", "zero1", "ps"}) {
    SCOPED_TRACE(mode);
    const std::string report = (dir->path() / (std::string(mode) + ".json")).string();
    const bool ps = std::string(mode) == "ps";
    const ProcessResult r =
        Launch({"--workers", "2", "--servers", ps ? "1" : "0", "--sync", mode, "--steps", "3",
                "--grad-accum", "2", "--deterministic", "--bucket-mb", "1", "--report", report});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    shas.push_back(PrintedSha(r.out));
    ASSERT_FALSE(shas.back().empty()) << r.out;
    std::ifstream in(report);
    ASSERT_TRUE(in.good()) << report;
    const nlohmann::json doc = nlohmann::json::parse(in);
    EXPECT_EQ(doc["flags"]["grad_accum"], 2);
    // batch 4 x seq 16 x D 2 x K 2.
    EXPECT_EQ(doc["model"]["tokens_per_step"], 4 * 16 * 2 * 2);
    for (const nlohmann::json& rank : doc["ranks"]) {
      const nlohmann::json& bytes = rank["bytes_per_step"];
      EXPECT_NEAR(bytes["ratio"].get<double>(), 1.0, 0.01) << bytes.dump();
    }
  }
  EXPECT_EQ(shas[1], shas[0]) << "zero1";
  EXPECT_EQ(shas[2], shas[0]) << "ps";
  // The same run without accumulation is another run.
  const ProcessResult once = Launch({"--workers", "2", "--sync", "allreduce", "--steps", "3",
                                     "--deterministic", "--bucket-mb", "1"});
  ASSERT_EQ(once.exit_code, 0) << once.err;
  ASSERT_FALSE(PrintedSha(once.out).empty()) << once.out;
  EXPECT_NE(PrintedSha(once.out), shas[0]);
}

// The data position is a function of the step and the micro-batch: a resumed run with
// accumulation lands on the uninterrupted run's bits.
TEST(SyncProcessTest, GradAccumResumesBitForBit) {
  auto dir = TempDir::Create("pszero-accum-ckpt");
  ASSERT_TRUE(dir.ok());
  const std::string ckpt = (dir->path() / "ckpt").string();
  const std::vector<std::string> common = {
      "--workers", "2", "--sync", "zero2", "--steps", "4", "--grad-accum", "3", "--deterministic"};
  std::vector<std::string> first = common;
  first.insert(first.end(), {"--checkpoint-dir", ckpt, "--checkpoint-every", "2"});
  const ProcessResult whole = Launch(first);
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  std::vector<std::string> again = common;
  again.insert(again.end(), {"--resume", ckpt + "/step-00000002"});
  const ProcessResult resumed = Launch(again);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  ASSERT_FALSE(PrintedSha(whole.out).empty()) << whole.out;
  EXPECT_EQ(PrintedSha(resumed.out), PrintedSha(whole.out));
  // Another K is another global batch: refused, naming the flag (as another --batch is).
  std::vector<std::string> other = {"--workers",
                                    "2",
                                    "--sync",
                                    "zero2",
                                    "--steps",
                                    "4",
                                    "--grad-accum",
                                    "2",
                                    "--deterministic",
                                    "--resume",
                                    ckpt + "/step-00000002"};
  const ProcessResult refused = Launch(other);
  EXPECT_EQ(refused.exit_code, 2) << refused.err;
  EXPECT_NE(refused.err.find("--grad-accum 2: checkpoint "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("was trained with --grad-accum 3"), std::string::npos) << refused.err;
}

TEST(SyncProcessTest, KilledWorkerStopsEverySurvivorNamingItWithinFiveSeconds) {
  const ProcessResult r = Launch({"--workers", "4", "--sync", "zero3", "--steps", "100000"},
                                 {"PSZERO_FAULT_INJECT=sigkill:w2:step3"});
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("job failed: worker 2 (pid "), std::string::npos) << r.err;
  double killed = -1.0;
  std::vector<double> stopped(4, -1.0);
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("[w2]", 0) == 0 && line.find("fault injection: sigkill") != std::string::npos) {
      killed = GlogSeconds(line);
    }
    for (int w : {0, 1, 3}) {
      if (line.rfind("[w" + std::to_string(w) + "]", 0) == 0 &&
          line.find("stopping: worker 2 lost") != std::string::npos) {
        stopped[w] = GlogSeconds(line);
      }
    }
  }
  ASSERT_GE(killed, 0.0) << r.err;
  for (int w : {0, 1, 3}) {
    ASSERT_GE(stopped[w], 0.0) << "worker " << w << " did not name the lost worker:\n" << r.err;
    EXPECT_LE(stopped[w] - killed, 5.0) << "worker " << w;
  }
  EXPECT_EQ(r.err.find("sending SIGTERM"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero::train
