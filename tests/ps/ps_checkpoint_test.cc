// Checkpoints and automatic restart of --sync ps jobs, as users run them (pszero-launch with
// server and worker processes; the tiny custom GPT of tests/train/checkpoint_test.cc):
//  * a ps checkpoint (2 servers, 2 workers, bsp, --deterministic) after step 2 of 4 resumed
//    as allreduce, and as ps, ends with the uninterrupted ps run's sha256, which equals the
//    uninterrupted allreduce run's; an allreduce checkpoint resumed as ps ends the same; the
//    two modes' checkpoints hold the same bytes (model and optimizer files); the same with
//    T = 2, resumed as zero1 and on one server instead of two; ssp and asp checkpoints
//    resume (not bit-exact);
//  * in bf16 (mixed precision: bf16 pushes and pulls, the fp32 master on the servers) ps
//    ends with allreduce's sha256, its run report's memory and bytes ratios are 1.000, and
//    its checkpoint resumes as ps and as allreduce with that sha256;
//  * a server killed with SIGKILL mid-training (fault point "apply<N>": its N-th applied
//    update), or a worker, makes the launcher restart the job from the newest checkpoint
//    (--max-restarts): exit 0, the uninterrupted run's sha256, the death logged by the
//    launcher within 5 s of the kill.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/job_output.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kModel = {
    "--model", "custom", "--layers", "2",  "--d-model", "64", "--heads",        "4", "--seq", "16",
    "--batch", "4",      "--vocab",  "64", "--seed",    "5",  "--deterministic"};
const std::vector<std::string> kPs = {"--servers", "2", "--workers", "2", "--sync", "ps"};
const std::vector<std::string> kAllReduce = {"--workers", "2", "--sync", "allreduce"};

std::vector<std::string> Cat(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

ProcessResult Launch(const std::vector<std::string>& extra,
                     const std::vector<std::string>& env = {}) {
  for (const char* v : {"PSZERO_FAULT_INJECT", "PSZERO_FAULT_ONCE", "PSZERO_TOKEN"}) ::unsetenv(v);
  std::vector<std::string> argv = {BinaryPath("pszero-launch"), "--timeout", "120"};
  argv.insert(argv.end(), kModel.begin(), kModel.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, std::chrono::seconds(200), env);
}

nlohmann::json Manifest(const fs::path& step_dir) {
  std::ifstream in(step_dir / "manifest.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, false);
}

TEST(PsCheckpointTest, ResumedInAnyModeEndsBitIdentical) {
  auto dir = TempDir::Create("pszero-ps-ckpt");
  ASSERT_TRUE(dir.ok());
  const fs::path ps_dir = dir->path() / "ps";
  const fs::path ar_dir = dir->path() / "allreduce";
  const std::vector<std::string> four = {"--steps", "4", "--checkpoint-every", "2"};

  const ProcessResult ps = Launch(Cat(Cat(kPs, four), {"--checkpoint-dir", ps_dir.string()}));
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  const std::string want = PrintedSha(ps.out);
  ASSERT_EQ(want.size(), 64u) << ps.out;
  const ProcessResult ar =
      Launch(Cat(Cat(kAllReduce, four), {"--checkpoint-dir", ar_dir.string()}));
  ASSERT_EQ(ar.exit_code, 0) << ar.err;
  EXPECT_EQ(PrintedSha(ar.out), want) << "ps (bsp) and allreduce differ uninterrupted";

  // The two modes wrote the same bytes: parameters and the optimizer's moments.
  for (const char* step : {"step-00000002", "step-00000004"}) {
    const nlohmann::json a = Manifest(ps_dir / step);
    const nlohmann::json b = Manifest(ar_dir / step);
    ASSERT_TRUE(a.is_object() && b.is_object()) << step;
    EXPECT_EQ(a.at("sync"), "ps");
    EXPECT_EQ(a.at("files"), b.at("files")) << step << ": " << a.dump() << "\n" << b.dump();
    EXPECT_EQ(a.at("params_sha256"), b.at("params_sha256")) << step;
  }
  EXPECT_EQ(Manifest(ps_dir / "step-00000004").at("params_sha256"), want);

  struct Resume {
    const char* what;
    std::vector<std::string> mode;
    fs::path from;
  };
  const Resume resumes[] = {
      {"ps checkpoint resumed as allreduce", kAllReduce, ps_dir / "step-00000002"},
      {"ps checkpoint resumed as ps", kPs, ps_dir / "step-00000002"},
      {"allreduce checkpoint resumed as ps", kPs, ar_dir / "step-00000002"},
  };
  for (const Resume& r : resumes) {
    SCOPED_TRACE(r.what);
    const ProcessResult run = Launch(Cat(r.mode, {"--steps", "4", "--resume", r.from.string()}));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_NE(run.err.find("resumed from"), std::string::npos) << run.err;
    EXPECT_EQ(PrintedSha(run.out), want);
  }
}

TEST(PsCheckpointTest, Bf16MatchesAllreduceAndResumes) {
  auto dir = TempDir::Create("pszero-ps-ckpt-bf16");
  ASSERT_TRUE(dir.ok());
  const fs::path ck = dir->path() / "ps";
  const std::string report = (dir->path() / "ps.json").string();
  const std::vector<std::string> bf16 = {"--precision", "bf16"};
  const std::vector<std::string> four = {"--steps", "4", "--precision", "bf16"};
  const ProcessResult ps =
      Launch(Cat(Cat(kPs, four),
                 {"--checkpoint-dir", ck.string(), "--checkpoint-every", "2", "--report", report}));
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  const std::string want = PrintedSha(ps.out);
  ASSERT_EQ(want.size(), 64u) << ps.out;
  const ProcessResult ar = Launch(Cat(kAllReduce, four));
  ASSERT_EQ(ar.exit_code, 0) << ar.err;
  EXPECT_EQ(PrintedSha(ar.out), want) << "ps (bsp) and allreduce differ in bf16";

  // Workers hold bf16 params and grads only (4Ψ) and push and pull 2 bytes per element.
  std::ifstream in(report);
  ASSERT_TRUE(in.good()) << report;
  const nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  ASSERT_TRUE(doc.is_object());
  ASSERT_EQ(doc["ranks"].size(), 2u);
  for (const nlohmann::json& rank : doc["ranks"]) {
    const nlohmann::json& ms = rank["memory"]["model_state"];
    EXPECT_EQ(ms["formula"], "4Ψ") << ms.dump();
    EXPECT_NEAR(ms["ratio"].get<double>(), 1.0, 1e-3) << ms.dump();
    const nlohmann::json& bytes = rank["bytes_per_step"];
    EXPECT_NEAR(bytes["ratio"].get<double>(), 1.0, 1e-3) << bytes.dump();
  }

  for (const auto& mode : {kPs, kAllReduce}) {
    SCOPED_TRACE(mode.back());
    const ProcessResult run =
        Launch(Cat(Cat(mode, bf16), {"--steps", "4", "--resume", (ck / "step-00000002").string()}));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_NE(run.err.find("resumed from"), std::string::npos) << run.err;
    EXPECT_EQ(PrintedSha(run.out), want);
  }
}

// With T = 2 (two key spaces on the servers) the same holds, and a ps checkpoint resumes
// on another number of servers (the slice map is the servers' business, not the file's).
TEST(PsCheckpointTest, TensorParallelAndAnotherServerCount) {
  auto dir = TempDir::Create("pszero-ps-ckpt-tp");
  ASSERT_TRUE(dir.ok());
  const fs::path ck = dir->path() / "ps";
  const std::vector<std::string> tp = {"--workers", "4", "--tp", "2", "--steps", "4"};
  const ProcessResult ps =
      Launch(Cat(Cat(tp, {"--servers", "2", "--sync", "ps"}),
                 {"--checkpoint-dir", ck.string(), "--checkpoint-every", "2"}));
  ASSERT_EQ(ps.exit_code, 0) << ps.err;
  const std::string want = PrintedSha(ps.out);
  ASSERT_EQ(want.size(), 64u) << ps.out;
  const ProcessResult ar = Launch(Cat(tp, {"--sync", "allreduce"}));
  ASSERT_EQ(ar.exit_code, 0) << ar.err;
  EXPECT_EQ(PrintedSha(ar.out), want);
  const std::string from = (ck / "step-00000002").string();
  for (const std::vector<std::string>& mode : std::vector<std::vector<std::string>>{
           {"--sync", "zero1"}, {"--servers", "1", "--sync", "ps"}}) {
    SCOPED_TRACE(mode.back() + " with " + std::to_string(mode.size() / 2) + " flags");
    const ProcessResult run = Launch(Cat(Cat(tp, mode), {"--resume", from}));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    EXPECT_EQ(PrintedSha(run.out), want);
  }
}

// ssp and asp checkpoints are not bit-exact (docs/checkpoints.md) but resume, in ps and in
// another mode.
TEST(PsCheckpointTest, SspAndAspCheckpointsResume) {
  auto dir = TempDir::Create("pszero-ps-ckpt-ssp");
  ASSERT_TRUE(dir.ok());
  for (const std::vector<std::string>& consistency : std::vector<std::vector<std::string>>{
           {"--consistency", "ssp", "--staleness", "1"}, {"--consistency", "asp"}}) {
    SCOPED_TRACE(consistency[1]);
    const fs::path ck = dir->path() / consistency[1];
    const ProcessResult run =
        Launch(Cat(Cat(kPs, consistency),
                   {"--steps", "4", "--checkpoint-dir", ck.string(), "--checkpoint-every", "2"}));
    ASSERT_EQ(run.exit_code, 0) << run.err;
    const std::string from = (ck / "step-00000002").string();
    const ProcessResult again =
        Launch(Cat(Cat(kPs, consistency), {"--steps", "4", "--resume", from}));
    EXPECT_EQ(again.exit_code, 0) << again.err;
    EXPECT_EQ(PrintedSha(again.out).size(), 64u) << again.out;
    const ProcessResult zero3 =
        Launch(Cat({"--workers", "2", "--sync", "zero3", "--steps", "4"}, {"--resume", from}));
    EXPECT_EQ(zero3.exit_code, 0) << zero3.err;
  }
}

// Kills `tag` ("s1", "w0") at `point` once; the launcher restarts the job from the newest
// checkpoint.
struct Kill {
  std::string tag;
  std::string point;
  std::string launcher_name;  // how the launcher names the process: "server 1"
  bool from_checkpoint;       // a checkpoint exists by then
};

class PsRestartTest : public ::testing::TestWithParam<Kill> {
 protected:
  // The uninterrupted run, once for all kills.
  static void SetUpTestSuite() {
    const ProcessResult clean = Launch(Job());
    ASSERT_EQ(clean.exit_code, 0) << clean.err;
    want_ = PrintedSha(clean.out);
    ASSERT_EQ(want_.size(), 64u) << clean.out;
  }
  static std::vector<std::string> Job() { return Cat(kPs, {"--steps", "6"}); }
  static std::string want_;
};
std::string PsRestartTest::want_;

TEST_P(PsRestartTest, KilledProcessRestartsFromTheCheckpointAndEndsBitIdentical) {
  const Kill& kill = GetParam();
  ASSERT_EQ(want_.size(), 64u) << "the uninterrupted run failed";
  const std::string& want = want_;
  const std::vector<std::string> job = Job();

  auto dir = TempDir::Create("pszero-ps-restart");
  ASSERT_TRUE(dir.ok());
  const ProcessResult r = Launch(Cat(job, {"--checkpoint-dir", (dir->path() / "ck").string(),
                                           "--checkpoint-every", "2", "--max-restarts", "2"}),
                                 {"PSZERO_FAULT_INJECT=sigkill:" + kill.tag + ":" + kill.point,
                                  "PSZERO_FAULT_ONCE=" + (dir->path() / "fired").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(PrintedSha(r.out), want);
  const size_t restart = r.err.find("restart 1/2 from ");
  ASSERT_NE(restart, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("restart 2/2"), std::string::npos) << r.err;
  const std::string from = r.err.substr(restart, r.err.find('\n', restart) - restart);
  if (kill.from_checkpoint) {
    EXPECT_NE(from.find("step-0000000"), std::string::npos) << from;
  } else {
    EXPECT_NE(from.find("the beginning"), std::string::npos) << from;
  }
  // Detection: the launcher names the killed process within 5 s of the kill.
  double killed = -1.0, detected = -1.0;
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("[" + kill.tag + "]", 0) == 0 &&
        line.find("fault injection: sigkill at '" + kill.point + "'") != std::string::npos) {
      killed = GlogSeconds(line);
    }
    if (detected < 0 && line.rfind("[launch]", 0) == 0 &&
        line.find(kill.launcher_name + " (pid ") != std::string::npos &&
        line.find("killed by signal 9") != std::string::npos) {
      detected = GlogSeconds(line);
    }
  }
  ASSERT_GE(killed, 0.0) << r.err;
  ASSERT_GE(detected, 0.0) << r.err;
  EXPECT_LE(detected - killed, 5.0);
}

INSTANTIATE_TEST_SUITE_P(
    Kills, PsRestartTest,
    ::testing::Values(Kill{"s1", "apply3", "server 1", true},   // after checkpoint 2
                      Kill{"s0", "apply5", "server 0", true},   // after checkpoint 4
                      Kill{"s1", "apply1", "server 1", false},  // before any checkpoint
                      Kill{"w1", "step4", "worker 1", true}),
    [](const auto& info) { return info.param.tag + "_" + info.param.point; });

}  // namespace
}  // namespace pszero::testing
