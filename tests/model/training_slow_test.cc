// The gpt-tiny preset itself (3.26 M parameters, seq 128, batch 8) on a repeated sentence:
// its loss falls from ln 256 ≈ 5.5 below 0.5 within 200 steps. Labelled slow (minutes on
// 2 cores); training_test.cc has the fast small-GPT variant in the default suite.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/model/model_test_util.h"

namespace pszero::model {
namespace {

TEST(TrainingSlowTest, GptTinyLearnsRepeatedTextWithin200Steps) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  const std::string path = ::testing::TempDir() + "/repeated_tiny.txt";
  std::ofstream(path, std::ios::binary) << text;
  TensorParallel tp;
  testing::RunResult r;
  auto config = PresetConfig("gpt-tiny");
  ASSERT_TRUE(config.ok());
  ASSERT_TRUE(testing::TrainSteps(*config, &tp, false, 200, 1, path, &r).ok());
  EXPECT_GT(r.losses.front(), 5.0f);
  EXPECT_LT(r.losses.back(), 0.5f);
}

}  // namespace
}  // namespace pszero::model
