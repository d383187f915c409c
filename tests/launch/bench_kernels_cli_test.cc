// The real `pszero-bench kernels` on tiny arrays: its JSON has every kernel at 1 thread
// and at --threads, each with a positive bandwidth and triad ratio, and the GEMM rows; bad
// flags exit 2 with one line naming the flag.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;

TEST(BenchKernelsCliTest, JsonHasEveryKernelAndGemm) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "kernels", "--json", "--array-mb",
                                "0.25", "--iters", "1", "--threads", "2", "--gemm-sizes", "32,48"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["benchmark"], "kernels");
  EXPECT_EQ(doc["elements"], 65536);
  ASSERT_EQ(doc["runs"].size(), 2u);
  EXPECT_EQ(doc["runs"][0]["threads"], 1);
  EXPECT_EQ(doc["runs"][1]["threads"], 2);
  for (const auto& run : doc["runs"]) {
    EXPECT_GT(run["triad_best_gbps"].get<double>(), 0);
    std::vector<std::string> names;
    for (const auto& k : run["kernels"]) {
      names.push_back(k["name"]);
      EXPECT_GT(k["best_gbps"].get<double>(), 0) << k["name"];
      EXPECT_GT(k["ratio_to_triad"].get<double>(), 0) << k["name"];
    }
    for (const char* want : {"adamw fp32", "sum k=4 fp32", "cast fp32->bf16", "cast bf16->fp32"}) {
      EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
    }
    ASSERT_EQ(run["gemm"].size(), 2u);
    EXPECT_EQ(run["gemm"][1]["m"], 48);
    EXPECT_GT(run["gemm"][0]["ratio"].get<double>(), 0);
  }
}

TEST(BenchKernelsCliTest, TablePrintsHeaderAndTriad) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "kernels", "--array-mb", "0.25",
                                "--iters", "1", "--threads", "1", "--gemm-sizes", "16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("vs triad"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stream triad"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("openblas GFLOP/s"), std::string::npos) << r.out;
}

// With a CUDA device the CUDA table comes back as JSON; without one (or in a CPU build)
// the command fails with one line saying why, never with a table of zeros.
TEST(BenchKernelsCliTest, CudaDeviceRunsOrExplains) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "kernels", "--device", "cuda", "--json",
                                "--array-mb", "1", "--iters", "1", "--gemm-sizes", "64"});
  if (r.exit_code == 0) {
    const nlohmann::json doc = nlohmann::json::parse(r.out);
    EXPECT_EQ(doc["device"], "cuda");
    EXPECT_GT(doc["copy_best_gbps"].get<double>(), 0);
    EXPECT_EQ(doc["gemm"].size(), 2u);  // fp32 and bf16
    for (const auto& k : doc["kernels"]) EXPECT_GT(k["best_gbps"].get<double>(), 0) << k["name"];
  } else {
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.err.find("CUDA"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST(BenchKernelsCliTest, BadIsaIsAUsageError) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "kernels", "--isa", "sse9"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--isa"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero
