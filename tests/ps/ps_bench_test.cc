// `pszero-bench ps` end to end: a short run with 2 server and 2 worker processes (the bench
// spawns them) and the p2p measurement beside, whose JSON is checked; and a flag error.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;

TEST(PsBenchTest, ShortRunReportsThroughputBesideP2p) {
  ProcessResult r = RunProcess(
      {BinaryPath("pszero-bench"), "ps", "--servers", "2", "--workers", "2", "--bytes", "256K",
       "--ps-slice-mb", "0.0625", "--optimizer", "adamw", "--iters", "3", "--json"},
      std::chrono::seconds(120));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["benchmark"], "ps");
  EXPECT_EQ(doc["servers"], 2);
  EXPECT_EQ(doc["workers"], 2);
  EXPECT_EQ(doc["bytes"], 256 * 1024);
  EXPECT_EQ(doc["slices"], 4);  // 256 KiB in 64 KiB slices
  EXPECT_GT(doc["algbw_gbps"].get<double>(), 0);
  EXPECT_DOUBLE_EQ(doc["busbw_gbps"].get<double>(), 2 * doc["algbw_gbps"].get<double>());
  EXPECT_GT(doc["p2p_gbps"].get<double>(), 0);
}

TEST(PsBenchTest, BadOptimizerIsAUsageError) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "ps", "--optimizer", "lamb"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--optimizer"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero
