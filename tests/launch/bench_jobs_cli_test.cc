// `pszero-bench checkpoint` and `pszero-bench soak` run real jobs and read their reports:
// the figures are there and plausible (a checkpoint's bytes equal its files; RSS grows by
// less than the whole model per step), and bad flags exit 2 naming the flag.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

ProcessResult Bench(std::vector<std::string> args) {
  std::vector<std::string> argv = {BinaryPath("pszero-bench")};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, std::chrono::seconds(240));
}

TEST(BenchJobsCliTest, CheckpointWriteAndLoadRates) {
  const ProcessResult r = Bench({"checkpoint", "--model", "tiny", "--workers", "2", "--sync",
                                 "zero2", "--repeats", "2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  // tiny custom GPT (d=64, 2 layers, vocab 64, seq 16): embeddings 64·64 + 16·64 = 5,120;
  // a block = two layer norms 2·128 + qkv 3·64·64+192 + proj 64·64+64 + fc 256·64+256 +
  // fc2 64·256+64 = 49,984; ln_f 128: 105,216 parameters. The model file holds them (4 B
  // each), the optimizer shards both moments (8 B each), plus safetensors headers.
  const double bytes = doc["checkpoint_bytes"];
  EXPECT_GT(bytes, 12.0 * 105216);
  EXPECT_LT(bytes, 12.0 * 105216 + 16 * 1024);
  for (const char* k : {"write_gbs", "load_gbs"}) {
    EXPECT_GT(doc[k]["median"].get<double>(), 0.0) << k;
    EXPECT_LE(doc[k]["min"].get<double>(), doc[k]["max"].get<double>()) << k;
  }
}

TEST(BenchJobsCliTest, SoakReportsEveryWorkersRss) {
  const ProcessResult r = Bench({"soak", "--workers", "2", "--steps", "20", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["ranks"].size(), 2u);
  for (const nlohmann::json& rank : doc["ranks"]) {
    EXPECT_GT(rank["rss_start_bytes"].get<double>(), 1 << 20);
    EXPECT_GT(rank["rss_end_bytes"].get<double>(), 1 << 20);
    EXPECT_TRUE(std::isfinite(rank["growth_percent"].get<double>()));
  }
  EXPECT_GT(doc["median_step_s"].get<double>(), 0.0);
}

TEST(BenchJobsCliTest, BadFlagsExitTwo) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"soak", "--steps", "1"},
        std::vector<std::string>{"checkpoint", "--sync", "gossip"},
        std::vector<std::string>{"checkpoint", "--repeats", "0"}}) {
    const ProcessResult r = Bench(args);
    EXPECT_EQ(r.exit_code, 2) << args[1] << ": " << r.err;
    EXPECT_NE(r.err.find(args[1]), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace pszero::testing
