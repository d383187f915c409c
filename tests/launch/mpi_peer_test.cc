// The Open MPI yardstick binary: runs under mpirun with 2 ranks and reports rows whose
// bus bandwidth follows nccl-tests' definition.
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

TEST(MpiPeerTest, AllreduceRows) {
  if (::access(PSZERO_MPIRUN, X_OK) != 0 ||
      ::access(testing::BinaryPath("pszero-bench-mpi").c_str(), X_OK) != 0) {
    GTEST_SKIP() << "Open MPI not installed (openmpi-bin, libopenmpi-dev)";
  }
  testing::ProcessResult r = testing::RunProcess(
      {PSZERO_MPIRUN, "--allow-run-as-root", "--oversubscribe", "-np", "2",
       testing::BinaryPath("pszero-bench-mpi"), "--op", "allreduce", "--min-bytes", "1K",
       "--max-bytes", "4K", "--iters", "2", "--warmup", "1"},
      std::chrono::seconds(120), {"OMPI_MCA_plm_rsh_agent=false"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["ranks"], 2);
  ASSERT_EQ(j["rows"].size(), 3u);  // 1K, 2K, 4K
  EXPECT_EQ(j["rows"][0]["bytes"], 1024);
  EXPECT_EQ(j["rows"][2]["count"], 1024);
  for (const auto& row : j["rows"]) {
    EXPECT_GT(row["time_us"].get<double>(), 0);
    // allreduce at n = 2: busbw = algbw * 2(n-1)/n = algbw.
    EXPECT_DOUBLE_EQ(row["busbw_gbps"].get<double>(), row["algbw_gbps"].get<double>());
  }
}

}  // namespace
}  // namespace pszero
