// Checkpoints as users run them (pszero-launch with worker processes): resume in another
// sync mode continues bit for bit; resume with another TP and DP degree reshards exactly;
// corrupt or truncated files are refused naming the file; a worker killed while a
// checkpoint is being written leaves the previous one loadable. And the safetensors
// encoding against the format's spec (an independent reader in Python).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "common/temp_dir.h"
#include "tests/support/job_output.h"
#include "tests/support/subprocess.h"
#include "worker/train/checkpoint.h"

namespace pszero::train {
namespace {

using ::pszero::testing::BinaryPath;
using ::pszero::testing::GlogSeconds;
using ::pszero::testing::PrintedLosses;
using ::pszero::testing::PrintedSha;
using ::pszero::testing::ProcessResult;
using ::pszero::testing::RunProcess;
namespace fs = std::filesystem;

const std::vector<std::string> kModel = {
    "--model", "custom", "--layers", "2",  "--d-model", "64", "--heads",        "4", "--seq", "16",
    "--batch", "4",      "--vocab",  "64", "--seed",    "5",  "--deterministic"};

ProcessResult Launch(std::vector<std::string> extra, const std::vector<std::string>& env = {}) {
  ::unsetenv("PSZERO_FAULT_INJECT");
  ::unsetenv("PSZERO_TOKEN");
  std::vector<std::string> argv = {BinaryPath("pszero-launch"), "--timeout", "120"};
  argv.insert(argv.end(), kModel.begin(), kModel.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, std::chrono::seconds(150), env);
}

std::string ManifestSha(const fs::path& step_dir) {
  std::ifstream in(step_dir / "manifest.json");
  return nlohmann::json::parse(in)["params_sha256"];
}

int CountLines(const std::string& s) {
  return static_cast<int>(std::count(s.begin(), s.end(), '\n'));
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto d = TempDir::Create("pszero-ckpt");
    ASSERT_TRUE(d.ok());
    dir_ = std::make_unique<TempDir>(std::move(d).value());
    ck_ = dir_->path() / "ck";
    // zero3 over 2 replicas, a checkpoint every 2 steps.
    const ProcessResult r = Launch({"--workers", "2", "--sync", "zero3", "--steps", "4",
                                    "--checkpoint-dir", ck_.string(), "--checkpoint-every", "2"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    full_sha_ = PrintedSha(r.out);
    full_losses_ = PrintedLosses(r.out);
    ASSERT_EQ(full_losses_.size(), 4u) << r.out;
  }

  std::unique_ptr<TempDir> dir_;
  fs::path ck_;
  std::string full_sha_;
  std::map<int, std::string> full_losses_;
};

TEST_F(CheckpointTest, ResumedInAnotherModeContinuesBitForBit) {
  ASSERT_TRUE(fs::exists(ck_ / "step-00000002" / "manifest.json"));
  ASSERT_TRUE(fs::exists(ck_ / "step-00000004" / "model.safetensors"));
  const ProcessResult r = Launch({"--workers", "2", "--sync", "allreduce", "--steps", "4",
                                  "--resume", (ck_ / "step-00000002").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(PrintedSha(r.out), full_sha_);
  const auto losses = PrintedLosses(r.out);
  ASSERT_EQ(losses.size(), 2u) << r.out;  // steps 3 and 4 only
  EXPECT_EQ(losses.at(3), full_losses_.at(3));
  EXPECT_EQ(losses.at(4), full_losses_.at(4));
  // The directory's `latest` is the final step.
  const ProcessResult again =
      Launch({"--workers", "2", "--sync", "zero2", "--steps", "4", "--resume", ck_.string()});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(PrintedSha(again.out), full_sha_);
  EXPECT_TRUE(PrintedLosses(again.out).empty());
}

// bf16 mixed precision: the checkpoint holds the fp32 master weights (zero3 assembles them
// from the shards), and every mode resumes from them bit for bit.
TEST(CheckpointBf16Test, ResumedInAnotherModeContinuesBitForBit) {
  auto d = TempDir::Create("pszero-ckpt-bf16");
  ASSERT_TRUE(d.ok());
  const fs::path ck = d->path() / "ck";
  const ProcessResult full =
      Launch({"--workers", "2", "--sync", "zero3", "--precision", "bf16", "--steps", "4",
              "--checkpoint-dir", ck.string(), "--checkpoint-every", "2"});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const std::string want = PrintedSha(full.out);
  ASSERT_EQ(want.size(), 64u) << full.out;
  for (const char* mode : {"allreduce", "zero1", "zero2", "zero3"}) {
    const ProcessResult r = Launch({"--workers", "2", "--sync", mode, "--precision", "bf16",
                                    "--steps", "4", "--resume", (ck / "step-00000002").string()});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(PrintedSha(r.out), want) << mode;
  }
}

TEST_F(CheckpointTest, ResumeReshardsToAnyTpAndDp) {
  const fs::path step2 = ck_ / "step-00000002";
  const std::string want = ManifestSha(step2);
  ASSERT_EQ(want.size(), 64u);
  // --steps 2 from a checkpoint after step 2: no training, the restored parameters' hash.
  for (const std::vector<std::string>& shape :
       {std::vector<std::string>{"--workers", "4", "--tp", "2", "--sync", "zero1"},
        std::vector<std::string>{"--workers", "4", "--sync", "zero3"},
        std::vector<std::string>{"--workers", "1", "--sync", "allreduce"}}) {
    std::vector<std::string> args = shape;
    args.insert(args.end(), {"--steps", "2", "--resume", step2.string()});
    const ProcessResult r = Launch(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(PrintedSha(r.out), want) << shape[1] << " workers, " << shape.back();
  }
}

TEST_F(CheckpointTest, CorruptOrTruncatedFilesAreRefusedNamingThem) {
  const fs::path step2 = ck_ / "step-00000002";
  {
    std::fstream f(step2 / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  ProcessResult r = Launch({"--workers", "2", "--steps", "4", "--resume", step2.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("model.safetensors: sha256 differs"), std::string::npos) << r.err;

  const fs::path step4 = ck_ / "step-00000004";
  const fs::path shard = step4 / "optimizer-00001-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) / 2);
  r = Launch({"--workers", "2", "--steps", "5", "--resume", ck_.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("optimizer-00001-of-00002.safetensors"), std::string::npos) << r.err;

  r = Launch({"--workers", "2", "--steps", "5", "--resume", (dir_->path() / "nothing").string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("no checkpoint here"), std::string::npos) << r.err;
}

TEST_F(CheckpointTest, KillDuringWriteLeavesThePreviousCheckpoint) {
  const fs::path ck = dir_->path() / "killed";
  const ProcessResult r = Launch({"--workers", "2", "--sync", "zero2", "--steps", "3",
                                  "--checkpoint-dir", ck.string(), "--checkpoint-every", "1"},
                                 {"PSZERO_FAULT_INJECT=sigkill:w0:checkpoint3"});
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("fault injection: sigkill at 'checkpoint3'"), std::string::npos) << r.err;
  // step 3's files were written into the temporary directory, never put in place.
  EXPECT_FALSE(fs::exists(ck / "step-00000003"));
  Result<fs::path> latest = VerifyCheckpoint(ck);
  ASSERT_TRUE(latest.ok()) << latest.status().ToString();
  EXPECT_EQ(latest->filename(), "step-00000002");
  const ProcessResult resumed =
      Launch({"--workers", "2", "--sync", "zero2", "--steps", "2", "--resume", ck.string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(PrintedSha(resumed.out), ManifestSha(*latest));
}

TEST(SafetensorsTest, RoundTripAndTheSpecAsAnIndependentReaderSeesIt) {
  SafetensorsFile f;
  f.metadata = {{"format", "pt"}};
  f.tensors.push_back({"a.weight", {2, 3}, {1, 2, 3, 4, 5, 6}});
  f.tensors.push_back({"b", {1}, {-0.5f}});
  const std::string bytes = EncodeSafetensors(f);
  Result<SafetensorsFile> back = DecodeSafetensors(bytes, "mem");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_EQ(back->tensors.size(), 2u);
  EXPECT_EQ(back->tensors[0].name, "a.weight");
  EXPECT_EQ(back->tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(back->tensors[0].data, f.tensors[0].data);
  EXPECT_EQ(back->metadata.at("format"), "pt");
  // The spec by hand: u64 little-endian header size, JSON, data at 8-byte alignment.
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{static_cast<unsigned char>(bytes[i])} << (8 * i);
  EXPECT_EQ((8 + n) % 8, 0u);
  const nlohmann::json header = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(header["a.weight"]["dtype"], "F32");
  EXPECT_EQ(header["a.weight"]["data_offsets"], nlohmann::json::array({0, 24}));
  EXPECT_EQ(header["b"]["data_offsets"], nlohmann::json::array({24, 28}));
  float x;
  std::memcpy(&x, bytes.data() + 8 + n + 24, 4);
  EXPECT_EQ(x, -0.5f);
  // Truncation and lies are refused, naming the file.
  for (const std::string& broken :
       {bytes.substr(0, 5), bytes.substr(0, bytes.size() - 1), std::string(8, '\xff') + "{}"}) {
    Result<SafetensorsFile> r = DecodeSafetensors(broken, "x.safetensors");
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("x.safetensors"), std::string::npos);
  }
}

}  // namespace
}  // namespace pszero::train
