// The real `pszero-bench simulate`: the paper's table through the command line, the
// projection series, calibration from recorded files, and flag errors (exit 2, one line
// naming the flag).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;

ProcessResult Simulate(std::vector<std::string> args) {
  args.insert(args.begin(), {BinaryPath("pszero-bench"), "simulate"});
  return RunProcess(args);
}

void ExpectUsageError(const std::vector<std::string>& args, const std::string& flag) {
  ProcessResult r = Simulate(args);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(flag), std::string::npos) << "does not name " << flag << ": " << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(SimulateCliTest, PaperTableAsJson) {
  ProcessResult r =
      Simulate({"--params", "7.5B", "--workers", "64", "--precision", "bf16", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["schema"], "pszero.simulate/1");
  std::map<std::string, std::string> gb;
  for (const auto& m : doc["modes"]) gb[m["mode"]] = m["memory"]["paper_gb"];
  EXPECT_EQ(gb["allreduce"], "120");
  EXPECT_EQ(gb["zero1"], "31.4");
  EXPECT_EQ(gb["zero2"], "16.6");
  EXPECT_EQ(gb["zero3"], "1.88");
  for (const auto& m : doc["modes"]) {
    EXPECT_GT(m["step_s"].get<double>(), 0.0);
    EXPECT_GE(m["step_s"].get<double>() + 1e-12, m["compute_s"].get<double>());
  }
}

TEST(SimulateCliTest, TablePrintsEveryMode) {
  ProcessResult r = Simulate({"--model", "gpt-small", "--workers", "8"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* mode : {"allreduce", "zero1", "zero2", "zero3", "ps"}) {
    EXPECT_NE(r.out.find(mode), std::string::npos) << mode << "\n" << r.out;
  }
  EXPECT_NE(r.out.find("16Ψ/D"), std::string::npos) << r.out;
}

// --grad-accum and --recompute: recorded in the JSON options and the table's header; K
// micro-batches compute K times as long.
TEST(SimulateCliTest, GradAccumAndRecomputeAreRecorded) {
  ProcessResult one = Simulate({"--model", "gpt-small", "--workers", "8", "--json"});
  ProcessResult four = Simulate({"--model", "gpt-small", "--workers", "8", "--grad-accum", "4",
                                 "--recompute", "full", "--json"});
  ASSERT_EQ(one.exit_code, 0) << one.err;
  ASSERT_EQ(four.exit_code, 0) << four.err;
  nlohmann::json a = nlohmann::json::parse(one.out), b = nlohmann::json::parse(four.out);
  EXPECT_EQ(a["options"]["grad_accum"], 1);
  EXPECT_EQ(a["options"]["recompute"], "none");
  EXPECT_EQ(b["options"]["grad_accum"], 4);
  EXPECT_EQ(b["options"]["recompute"], "full");
  for (size_t i = 0; i < a["modes"].size(); ++i) {
    EXPECT_GT(b["modes"][i]["compute_s"].get<double>(),
              4 * a["modes"][i]["compute_s"].get<double>());
    EXPECT_GE(b["modes"][i]["step_s"].get<double>(), b["modes"][i]["compute_s"].get<double>());
  }
  ProcessResult table = Simulate(
      {"--model", "gpt-small", "--workers", "8", "--grad-accum", "4", "--recompute", "selective"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("grad-accum K = 4, recompute selective"), std::string::npos)
      << table.out;
  // --recompute-layers: recorded (-1 when not given); 6 of gpt-small's 12 blocks re-run 5,
  // less than the default's 11.
  ProcessResult half = Simulate({"--model", "gpt-small", "--workers", "8", "--recompute", "full",
                                 "--recompute-layers", "6", "--json"});
  ProcessResult full =
      Simulate({"--model", "gpt-small", "--workers", "8", "--recompute", "full", "--json"});
  ASSERT_EQ(half.exit_code, 0) << half.err;
  ASSERT_EQ(full.exit_code, 0) << full.err;
  nlohmann::json h = nlohmann::json::parse(half.out), f = nlohmann::json::parse(full.out);
  EXPECT_EQ(a["options"]["recompute_layers"], -1);
  EXPECT_EQ(h["options"]["recompute_layers"], 6);
  const double none_flops = a["workload"]["flops_per_step_per_rank"].get<double>();
  const double half_flops = h["workload"]["flops_per_step_per_rank"].get<double>();
  const double full_flops = f["workload"]["flops_per_step_per_rank"].get<double>();
  EXPECT_NEAR(half_flops - none_flops, (full_flops - none_flops) * 5 / 11, 1e-9 * full_flops);
  ProcessResult header = Simulate(
      {"--model", "gpt-small", "--workers", "8", "--recompute", "full", "--recompute-layers", "3"});
  ASSERT_EQ(header.exit_code, 0) << header.err;
  EXPECT_NE(header.out.find("recompute full (--recompute-layers 3)"), std::string::npos)
      << header.out;
}

TEST(SimulateCliTest, ProjectionSeriesDoublesUpToN) {
  ProcessResult r =
      Simulate({"--model", "gpt-small", "--sync", "zero3", "--project-to", "1024", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  const auto& series = doc["projection"]["zero3"];
  ASSERT_EQ(series.size(), 11u);
  for (size_t i = 0; i < series.size(); ++i) {
    EXPECT_EQ(series[i]["workers"].get<int>(), 1 << i);
  }
  // zero3 memory per rank falls as 16Ψ/D.
  EXPECT_EQ(series[0]["memory"]["total"].get<int64_t>(),
            1024 * series[10]["memory"]["total"].get<int64_t>());
}

TEST(SimulateCliTest, CalibratesFromRecordedFiles) {
  const std::string dir = PSZERO_SIM_FIXTURES;
  ProcessResult r = Simulate({"--model", "gpt-tiny", "--workers", "4", "--sync", "allreduce",
                              "--host-cores", "2", "--json", "--calibrate",
                              dir + "/run_allreduce_1_r1.json", dir + "/coll_allreduce_4.json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_GT(doc["calibration"]["link"]["bandwidth_gbs"].get<double>(), 0.0);
  EXPECT_GT(doc["calibration"]["compute"]["tflops"].get<double>(), 0.0);
  ASSERT_EQ(doc["calibration"]["check"].size(), 1u);
  EXPECT_NEAR(doc["calibration"]["check"][0]["error"].get<double>(), 0.0, 1e-9);
}

// --calibrate-live at its smallest: one round of 1 and 2 workers, collectives at 2 ranks.
TEST(SimulateCliTest, LiveCalibrationRecordsAndFits) {
  const std::string dir = ::testing::TempDir() + "/simulate_live_" + std::to_string(::getpid());
  ProcessResult r = Simulate({"--model", "gpt-tiny", "--workers", "4", "--json", "--calibrate-live",
                              "--live-max-workers", "2", "--live-rounds", "1", "--live-dir", dir});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json doc = nlohmann::json::parse(r.out);
  const auto& c = doc["calibration"];
  EXPECT_EQ(c["files"].size(), 7u);  // 2 modes x {1, 2} workers + 3 collectives at 2 ranks
  EXPECT_EQ(c["check"].size(), 4u);
  EXPECT_GE(c["host_cores"].get<double>(), 1.0);  // fitted: the runs share this host
  EXPECT_GT(c["compute"]["tflops"].get<double>(), 0.0);
  EXPECT_GE(c["link"]["alpha_us"].get<double>(), 0.0);
  EXPECT_EQ(doc["options"]["host_cores"].get<double>(), 0.0);  // predictions: a device each
  for (const auto& f : c["files"]) {
    EXPECT_TRUE(std::filesystem::exists(f.get<std::string>())) << f;
  }
  std::filesystem::remove_all(dir);
}

TEST(SimulateCliTest, BadInputNamesTheFlag) {
  ExpectUsageError({"--workers", "4"}, "--model");
  ExpectUsageError({"--model", "gpt-tiny", "--params", "1M", "--workers", "4"}, "--model");
  ExpectUsageError({"--model", "gpt-huge", "--workers", "4"}, "--model");
  ExpectUsageError({"--params", "lots", "--workers", "4"}, "--params");
  ExpectUsageError({"--model", "gpt-tiny"}, "--workers");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "0"}, "--workers");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "3", "--tp", "2"}, "--workers");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--sync", "zero4"}, "--sync");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--calibrate", "/nonexistent.json"},
                   "--calibrate");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--bandwidth-gbs", "-1"},
                   "--bandwidth-gbs");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--fit-host-cores"},
                   "--fit-host-cores");
  ExpectUsageError(
      {"--model", "gpt-tiny", "--workers", "2", "--calibrate-live", "--live-max-workers", "1"},
      "--live-max-workers");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--grad-accum", "0"}, "--grad-accum");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--grad-accum", "two"},
                   "--grad-accum");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--recompute", "some"}, "--recompute");
  ExpectUsageError(
      {"--model", "gpt-tiny", "--workers", "2", "--recompute", "full", "--recompute-layers", "5"},
      "--recompute-layers");
  ExpectUsageError({"--model", "gpt-tiny", "--workers", "2", "--recompute-layers", "2"},
                   "--recompute-layers");
}

}  // namespace
}  // namespace pszero
