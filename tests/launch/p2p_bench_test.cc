// `pszero-bench p2p` end to end: a short run between two real processes (the bench spawns
// its own peer) whose JSON is checked, and its flag errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;

TEST(P2pBenchTest, ShortRunReportsEverySize) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "p2p", "--sizes", "8,64K,1M", "--scale",
                                "0.01", "--no-perftest", "--json"},
                               std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["benchmark"], "p2p");
  EXPECT_EQ(doc["err_mode"], "peer");
  EXPECT_NE(doc["perftest"].get<std::string>().find("not run"), std::string::npos);
  ASSERT_EQ(doc["runs"].size(), 3u);
  const size_t expected[] = {8, 65536, 1 << 20};
  for (size_t i = 0; i < 3; ++i) {
    const auto& run = doc["runs"][i];
    EXPECT_EQ(run["bytes"].get<size_t>(), expected[i]);
    EXPECT_GT(run["latency_us"].get<double>(), 0);
    EXPECT_GT(run["bandwidth_gbps"].get<double>(), 0);
    EXPECT_FALSE(run.contains("bandwidth_ratio"));
  }
}

TEST(P2pBenchTest, BadSizesIsAUsageError) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "p2p", "--sizes", "8:4X"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--sizes"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(P2pBenchTest, HelpListsFlags) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "p2p", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* flag :
       {"--sizes", "--json", "--progress", "--err-mode", "--window", "--no-perftest", "--output"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  }
  EXPECT_EQ(r.out.find("--peer-dir"), std::string::npos);
}

}  // namespace
}  // namespace pszero
