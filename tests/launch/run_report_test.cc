// Run reports as pszero-bench reads them (launch/bench/run_report.h): the figures taken
// from hand-written pszero.run/1 fixtures (tests/launch/fixtures), the exact table rows,
// and errors that name the field.
#include "launch/bench/run_report.h"

#include <gtest/gtest.h>

#include <fstream>

namespace pszero::bench {
namespace {

const std::string kFixtures = PSZERO_LAUNCH_FIXTURES;

nlohmann::json Load(const std::string& name) {
  std::ifstream in(kFixtures + "/" + name);
  return nlohmann::json::parse(in);
}

TEST(RunReportTest, TakesTheLargestRankAndTheSummary) {
  Result<RunSummary> r = ReadRunReport(kFixtures + "/gpt-tiny-zero2.json");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->sync, "zero2");
  EXPECT_EQ(r->model, "gpt-tiny");
  EXPECT_EQ(r->workers, 4);
  EXPECT_EQ(r->servers, 0);
  EXPECT_EQ(r->steps, 10);
  EXPECT_DOUBLE_EQ(r->median_step_s, 0.398);
  EXPECT_DOUBLE_EQ(r->tokens_per_s, 10291.4);
  EXPECT_DOUBLE_EQ(r->final_loss, 3.12);
  // Rank 2 holds the most: its measured peak and its prediction.
  EXPECT_EQ(r->state_measured_bytes, 24117248);
  EXPECT_EQ(r->state_predicted_bytes, 22998528);
  EXPECT_EQ(r->state_formula, "2Ψ+14Ψ/D");
  EXPECT_EQ(r->sent_bytes_per_step, 9856512);
  EXPECT_EQ(r->theory_bytes_per_step, 9856512);
  EXPECT_EQ(r->sha256.substr(0, 8), "623dd1ef");
  EXPECT_EQ(r->source, kFixtures + "/gpt-tiny-zero2.json");
}

TEST(RunReportTest, RowsAreExact) {
  EXPECT_EQ(RunTableHeader(),
            "# per rank (the largest): model state = params + grads + optimizer, peak; sent = the "
            "sync mode's bytes in one step\n"
            "# mode      model     workers  tp   step ms   tokens/s  state MiB  predicted  ratio"
            "   sent MiB     theory  ratio final loss  sha256\n");
  Result<RunSummary> zero2 = SummarizeRunReport(Load("gpt-tiny-zero2.json"));
  Result<RunSummary> mlp = SummarizeRunReport(Load("mlp-allreduce.json"));
  Result<RunSummary> ps = SummarizeRunReport(Load("gpt-tiny-ps.json"));
  ASSERT_TRUE(zero2.ok() && mlp.ok() && ps.ok());
  EXPECT_EQ(RunTableRow(*zero2),
            "  zero2     gpt-tiny        4   1     398.0    10291.4      23.00      21.93  1.049"
            "       9.40       9.40  1.000     3.1200  623dd1ef0000\n");
  // The rank that sent the most (rank 1, 1 KiB over the ring's 2Ψ(D-1)/D x 4 B).
  EXPECT_EQ(RunTableRow(*mlp),
            "  allreduce mlp             4   1    1234.5       51.8     512.44     512.44  1.000"
            "     192.17     192.16  1.000     0.9877  abcdef012345\n");
  // ps: the mode names its servers; no theory, no ratio.
  EXPECT_EQ(RunTableRow(*ps),
            "  ps/2      gpt-tiny        2   1     500.0     4096.0      12.43      12.43  1.000"
            "      24.86       0.00      -     3.5000  0123456789ab\n");
}

TEST(RunReportTest, JsonHasRatiosAndNullWithoutTheory) {
  Result<RunSummary> ps = SummarizeRunReport(Load("gpt-tiny-ps.json"));
  ASSERT_TRUE(ps.ok());
  const nlohmann::json j = ToJson(*ps);
  EXPECT_EQ(j["sync"], "ps");
  EXPECT_EQ(j["servers"], 2);
  EXPECT_DOUBLE_EQ(j["model_state_bytes"]["ratio"].get<double>(), 1.0);
  EXPECT_TRUE(j["bytes_per_step"]["ratio"].is_null());
  EXPECT_EQ(j["bytes_per_step"]["sent"], 26062848);
}

TEST(RunReportTest, ErrorsNameTheField) {
  Result<RunSummary> r = ReadRunReport(kFixtures + "/missing-median.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            kFixtures + "/missing-median.json: summary.median_step_s: missing");

  nlohmann::json doc = Load("gpt-tiny-zero2.json");
  doc["schema"] = "pszero.run/2";
  EXPECT_EQ(SummarizeRunReport(doc).status().message(),
            "schema: 'pszero.run/2', expected 'pszero.run/1'");
  doc = Load("gpt-tiny-zero2.json");
  doc["ranks"][3]["bytes_per_step"]["theory"] = "lots";
  EXPECT_EQ(SummarizeRunReport(doc).status().message(),
            "ranks[3].bytes_per_step.theory: wrong type (string)");
  doc = Load("gpt-tiny-zero2.json");
  doc["ranks"] = nlohmann::json::array();
  EXPECT_EQ(SummarizeRunReport(doc).status().message(), "ranks: empty");
  EXPECT_FALSE(ReadRunReport(kFixtures + "/no-such-report.json").ok());
}

}  // namespace
}  // namespace pszero::bench
