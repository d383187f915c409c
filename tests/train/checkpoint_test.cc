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

#include "common/atomic_file.h"
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

// The mlp preset has no vocabulary (vocab 0 in the manifest): its checkpoints resume too,
// bit for bit.
TEST(CheckpointMlpTest, MlpResumesBitForBit) {
  auto d = TempDir::Create("pszero-ckpt-mlp");
  ASSERT_TRUE(d.ok());
  const fs::path ck = d->path() / "ck";
  auto run = [](std::vector<std::string> extra) {
    std::vector<std::string> argv = {BinaryPath("pszero-launch"),
                                     "--timeout",
                                     "120",
                                     "--model",
                                     "mlp",
                                     "--workers",
                                     "1",
                                     "--deterministic"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunProcess(argv, std::chrono::seconds(150));
  };
  const ProcessResult full =
      run({"--steps", "2", "--checkpoint-dir", ck.string(), "--checkpoint-every", "1"});
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const ProcessResult r = run({"--steps", "2", "--resume", (ck / "step-00000001").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(PrintedSha(r.out), PrintedSha(full.out));
  EXPECT_EQ(PrintedSha(r.out).size(), 64u) << r.out;
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

// A copy of `from` (a step directory) at `to`, for a test to break.
void CopyStep(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy(from, to, fs::copy_options::recursive);
}

nlohmann::json ReadJson(const fs::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

void WriteText(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out << text;
}

// Replaces `file` in step directory `dir` by `bytes` and records its sha256 in the
// manifest, as a checkpoint whose hashes match but whose structure is wrong.
void ReplaceHashed(const fs::path& dir, const std::string& file, const std::string& bytes) {
  WriteText(dir / file, bytes);
  nlohmann::json m = ReadJson(dir / "manifest.json");
  m["files"][file] = BytesSha256(bytes);
  WriteText(dir / "manifest.json", m.dump());
}

// The launcher refuses it before starting any process: exit 2, one line, naming `want`.
void ExpectRefused(const std::vector<std::string>& args, const std::string& want,
                   const std::string& what) {
  const ProcessResult r = Launch(args);
  EXPECT_FALSE(r.signaled) << what << ": " << r.err;
  EXPECT_EQ(r.exit_code, 2) << what << ": " << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << what << ": " << r.err;
  EXPECT_NE(r.err.find(want), std::string::npos) << what << ": " << r.err;
}

// Every manifest field is checked for its type and range: a wrong one names the file and
// the key, before any process starts (it used to abort the launcher on a JSON type error,
// or to resume with nonsense).
TEST_F(CheckpointTest, ManifestFieldsOfTheWrongTypeOrRangeAreRefusedNamingTheKey) {
  const fs::path step2 = ck_ / "step-00000002";
  const nlohmann::json good = ReadJson(step2 / "manifest.json");
  struct Case {
    const char* key;
    nlohmann::json value;
  };
  const std::vector<Case> cases = {
      {"format", 5},
      {"grad_accum", "1"},
      {"grad_accum", 1e30},
      {"workers", 0},
      {"dp", 0},
      {"tp", 0},
      {"params", "x"},
      {"precision", 7},
      {"step", uint64_t{1} << 62},
      {"step", -5},
      {"step", ~uint64_t{0}},
      {"step", 0},
      {"files", nlohmann::json::object()},
      {"model", "gpt"},
  };
  int i = 0;
  for (const Case& c : cases) {
    const fs::path dir = dir_->path() / ("bad-" + std::to_string(i++)) / "step-00000002";
    CopyStep(step2, dir);
    nlohmann::json m = good;
    m[c.key] = c.value;
    WriteText(dir / "manifest.json", m.dump());
    ExpectRefused({"--workers", "2", "--steps", "4", "--resume", dir.string()},
                  (dir / "manifest.json").string() + ": \"" + c.key + "\"",
                  std::string(c.key) + " = " + c.value.dump());
  }
  // A manifest's file names stay inside the checkpoint directory.
  for (const char* name : {"/etc/hostname", "../step-00000004/model.safetensors", ".."}) {
    const fs::path dir = dir_->path() / ("bad-" + std::to_string(i++)) / "step-00000002";
    CopyStep(step2, dir);
    nlohmann::json m = good;
    m["files"][name] = good["files"]["model.safetensors"];
    WriteText(dir / "manifest.json", m.dump());
    ExpectRefused({"--workers", "2", "--steps", "4", "--resume", dir.string()},
                  "\"files\" lists \"" + std::string(name) +
                      "\": not a file name inside the checkpoint directory",
                  name);
  }
}

// `latest` and --resume paths that are no checkpoint names: one line, no abort.
TEST_F(CheckpointTest, BadLatestAndOverlongPathsAreRefusedOnOneLine) {
  const fs::path ck = dir_->path() / "latest-long";
  CopyStep(ck_ / "step-00000002", ck / "step-00000002");
  WriteText(ck / "latest", std::string(300, 'a') + "\n");
  ExpectRefused({"--workers", "2", "--steps", "4", "--resume", ck.string()},
                (ck / "latest").string() + ": not a checkpoint name: \"aaaa", "300-char latest");
  WriteText(ck / "latest", std::string("step\xff\x01\nstep-2\n", 14));
  ExpectRefused({"--workers", "2", "--steps", "4", "--resume", ck.string()},
                "not a checkpoint name: \"step\\xff\\x01\\x0astep-2\"", "binary latest");
  const fs::path overlong = dir_->path() / std::string(300, 'b');
  ExpectRefused({"--workers", "2", "--steps", "4", "--resume", overlong.string()},
                "File name too long", "300-char --resume component");
}

// Files whose sha256 matches the manifest but whose structure is wrong, optimizer shards
// that do not tile the parameters, and another model than the checkpoint's: all refused
// by the launcher (exit 2, one line) rather than by the workers once started.
TEST_F(CheckpointTest, StructurallyBadFilesAndAnotherModelAreRefusedBeforeStarting) {
  const fs::path step2 = ck_ / "step-00000002";
  std::string huge_header(8, '\0');
  huge_header[7] = '\x7f';
  std::string bad_shape =
      R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})";
  bad_shape =
      std::string(1, static_cast<char>(bad_shape.size())) + std::string(7, '\0') + bad_shape;
  std::string bad_dtype = R"({"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})";
  bad_dtype = std::string(1, static_cast<char>(bad_dtype.size())) + std::string(7, '\0') +
              bad_dtype + std::string(8, '\0');
  const std::vector<std::pair<std::string, std::string>> files = {
      {"", "shorter than its 8-byte header length"},
      {std::string(8, '\x10') + "garbage", "header of"},
      {huge_header + "{}", "header of"},
      {std::string("\x08\0\0\0\0\0\0\0garbage!", 16), "header is not a JSON object"},
      {bad_shape, "tensor 'w': 0 bytes for 4611686018427387904 F32 values"},
      {bad_dtype, "tensor 'w' is not F32"},
  };
  int i = 0;
  for (const auto& [bytes, want] : files) {
    for (const char* file : {"model.safetensors", "optimizer-00001-of-00002.safetensors"}) {
      const fs::path dir = dir_->path() / ("st-" + std::to_string(i++)) / "step-00000002";
      CopyStep(step2, dir);
      ReplaceHashed(dir, file, bytes);
      ExpectRefused({"--workers", "2", "--steps", "4", "--resume", dir.string()},
                    (dir / file).string() + ": not a valid safetensors file: " + want,
                    std::string(file) + ": " + want);
    }
  }
  {  // Two shards over the same range: they cover as many values as the model has.
    const fs::path dir = dir_->path() / "dup" / "step-00000002";
    CopyStep(step2, dir);
    Result<std::string> shard0 = ReadFile(dir / "optimizer-00000-of-00002.safetensors");
    ASSERT_TRUE(shard0.ok());
    Result<SafetensorsFile> s0 = DecodeSafetensors(*shard0, "shard 0");
    ASSERT_TRUE(s0.ok());
    const int64_t total = std::stoll(s0->metadata.at("total"));
    // Shard 0 widened to the half it does not hold: [0, total/2) twice is not [0, total).
    ReplaceHashed(dir, "optimizer-00001-of-00002.safetensors", *shard0);
    ExpectRefused({"--workers", "2", "--steps", "4", "--resume", dir.string()},
                  "overlaps another shard's",
                  "duplicate shard range, total " + std::to_string(total));
  }
  // Another model than the checkpoint's.
  const ProcessResult r =
      RunProcess({BinaryPath("pszero-launch"), "--timeout", "60", "--model", "gpt-tiny",
                  "--workers", "2", "--steps", "4", "--resume", step2.string()},
                 std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("--resume " + step2.string() + ": checkpoint of model"), std::string::npos)
      << r.err;
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
  // Element counts whose bytes (or whose count) overflow 64 bits, with 0 bytes of data.
  for (const auto& [shape, want] : std::vector<std::pair<std::string, std::string>>{
           {"[4611686018427387904]", "tensor 'w': 0 bytes for 4611686018427387904 F32 values"},
           {"[4611686018427387904,8]", "tensor 'w': bad shape [4611686018427387904,8]"},
           {"[9223372036854775808]", "tensor 'w': bad shape [9223372036854775808]"},
           {"4", "tensor 'w': bad shape 4"}}) {
    const std::string header =
        R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})";
    Result<SafetensorsFile> overflow = DecodeSafetensors(
        std::string(1, static_cast<char>(header.size())) + std::string(7, '\0') + header, "o.st");
    ASSERT_FALSE(overflow.ok()) << shape;
    EXPECT_EQ(overflow.status().message(), "o.st: not a valid safetensors file: " + want);
  }
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
