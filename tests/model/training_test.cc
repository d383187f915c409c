// Training behaviour on one rank: a small GPT learns a repeated text, bf16 compute tracks
// fp32, and the data stream's contract (seeded order, disjoint DP parts, bad files).
#include <gtest/gtest.h>

#include <fstream>
#include <set>

#include "tests/model/model_test_util.h"

namespace pszero::model {
namespace {

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string RepeatedText() {
  std::string text;
  for (int i = 0; i < 40; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  return text;
}

ModelConfig TextGpt() {
  ModelConfig c = testing::SmallGpt();
  c.d_model = 64;
  c.heads = 4;
  c.layers = 2;
  c.seq = 32;
  c.batch = 8;
  c.vocab = 256;
  return c;
}

// ln(256) = 5.55 at the start; the 45-byte period is predictable from the context.
TEST(TrainingTest, GptLearnsRepeatedTextWithin200Steps) {
  const std::string path = WriteFile("repeated.txt", RepeatedText());
  TensorParallel tp;
  testing::RunResult r;
  ASSERT_TRUE(testing::TrainSteps(TextGpt(), &tp, false, 200, 1, path, &r).ok());
  EXPECT_GT(r.losses.front(), 5.0f);
  float best = r.losses.front();
  for (float l : r.losses) best = std::min(best, l);
  EXPECT_LT(r.losses.back(), 0.5f) << "best " << best;
}

// bf16 GEMM operands (fp32 master weights and optimizer): the loss curve stays within
// 0.05 + 5% of fp32's at every step, and does fall.
TEST(TrainingTest, Bf16TracksFp32) {
  const std::string path = WriteFile("repeated_bf16.txt", RepeatedText());
  TensorParallel tp;
  testing::RunResult fp32, bf16;
  ASSERT_TRUE(testing::TrainSteps(TextGpt(), &tp, false, 60, 1, path, &fp32).ok());
  ASSERT_TRUE(testing::TrainSteps(TextGpt(), &tp, true, 60, 1, path, &bf16).ok());
  for (size_t s = 0; s < fp32.losses.size(); ++s) {
    EXPECT_NEAR(bf16.losses[s], fp32.losses[s], 0.05 + 0.05 * fp32.losses[s]) << "step " << s;
  }
  EXPECT_NE(bf16.final_params, fp32.final_params);  // really a different computation
  EXPECT_LT(bf16.losses.back(), 0.7f * bf16.losses.front());
}

TEST(DataTest, OrderIsAFunctionOfTheSeedAndPartsAreDisjoint) {
  ModelConfig c = testing::SmallGpt();
  c.vocab = 256;
  std::string bytes(4096, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 % 256);
  const std::string path = WriteFile("data.bin", bytes);
  auto make = [&](uint64_t seed, int rank, int size) {
    DataOptions o;
    o.seed = seed;
    o.path = path;
    o.dp_rank = rank;
    o.dp_size = size;
    auto d = DataSource::Create(c, o);
    EXPECT_TRUE(d.ok()) << d.status().ToString();
    return std::move(d).value();
  };
  Batch a, b, other;
  ASSERT_TRUE(make(1, 0, 1)->Next(3, &a).ok());
  ASSERT_TRUE(make(1, 0, 1)->Next(3, &b).ok());
  ASSERT_TRUE(make(2, 0, 1)->Next(3, &other).ok());
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NE(a.tokens, other.tokens);
  for (size_t i = 0; i + 1 < a.tokens.size(); ++i) {
    if ((i + 1) % c.seq != 0) {
      EXPECT_EQ(a.targets[i], a.tokens[i + 1]);
    }
  }
  // Two DP ranks over a corpus of 256 distinct bytes: rank r only ever sees its half.
  std::string distinct;
  for (int i = 0; i < 256; ++i) distinct += static_cast<char>(i);
  const std::string path2 = WriteFile("distinct.bin", distinct);
  std::set<int32_t> seen[2];
  for (int r = 0; r < 2; ++r) {
    DataOptions o;
    o.seed = 5;
    o.path = path2;
    o.dp_rank = r;
    o.dp_size = 2;
    auto d = DataSource::Create(c, o);
    ASSERT_TRUE(d.ok());
    for (int s = 0; s < 20; ++s) {
      Batch batch;
      ASSERT_TRUE((*d)->Next(s, &batch).ok());
      seen[r].insert(batch.tokens.begin(), batch.tokens.end());
    }
  }
  for (int32_t t : seen[0]) EXPECT_LT(t, 128);
  for (int32_t t : seen[1]) EXPECT_GE(t, 128);
}

TEST(DataTest, BadFilesAreInvalidArgumentNamingTheFlag) {
  const ModelConfig c = testing::SmallGpt();
  for (const std::string& path :
       {WriteFile("empty.bin", ""), ::testing::TempDir() + "/does-not-exist.bin",
        ::testing::TempDir()}) {
    DataOptions o;
    o.path = path;
    auto d = DataSource::Create(c, o);
    ASSERT_FALSE(d.ok()) << path;
    EXPECT_EQ(d.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(d.status().message().rfind("--data ", 0), 0u) << d.status().message();
  }
}

TEST(ConfigTest, PresetsMatchTheDesignTable) {
  EXPECT_EQ(ParamCount(*PresetConfig("mlp")), 33583104);        // ≈33.6 M
  EXPECT_EQ(ParamCount(*PresetConfig("gpt-tiny")), 3257856);    // ≈3.2 M
  EXPECT_EQ(ParamCount(*PresetConfig("gpt-small")), 85449216);  // ≈85 M
  EXPECT_FALSE(PresetConfig("gpt-huge").ok());
  ModelConfig c = *PresetConfig("gpt-tiny");
  EXPECT_TRUE(ValidateConfig(c, 4).ok());
  EXPECT_FALSE(ValidateConfig(c, 3).ok());
  // The flat buffer of a model holds exactly ParamCount parameters at T = 1.
  TensorParallel tp;
  ModelContext ctx{kernels::KernelContext::Host(), &tp, nullptr, false, 1, {}};
  auto m = Model::Create(c, ctx, 0);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->params().numel(), ParamCount(c));
  EXPECT_EQ((*m)->params().units().size(), static_cast<size_t>(c.layers + 2));
}

}  // namespace
}  // namespace pszero::model
