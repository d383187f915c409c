// `pszero-bench collective` end to end: N processes, every op checked (#wrong = 0), the
// bus bandwidth formula, and rank 0's bytes per op equal to the ring bound.
#include <gtest/gtest.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

nlohmann::json RunBench(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {testing::BinaryPath("pszero-bench"), "collective"};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--json");
  testing::ProcessResult r = testing::RunProcess(argv, std::chrono::seconds(240));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return {};
  return nlohmann::json::parse(r.out);
}

TEST(CollectiveBenchTest, EveryOpIsCheckedAndRight) {
  for (const char* op : {"allreduce", "reduce_scatter", "allgather", "broadcast", "alltoall"}) {
    nlohmann::json j = RunBench({"--op", op, "--ranks", "3", "--min-bytes", "12", "--max-bytes",
                                 "192K", "--step-factor", "16", "--iters", "2", "--warmup", "1",
                                 "--check", "--segment-kb", "8"});
    ASSERT_TRUE(j.contains("rows")) << op;
    ASSERT_EQ(j["rows"].size(), 4u) << op;  // 12, 192, 3K, 48K... up to 192K
    for (const auto& row : j["rows"]) {
      EXPECT_EQ(row["wrong"], 0) << op << " " << row.dump();
      EXPECT_EQ(row["count"].get<int64_t>() % 3, 0) << op;
      const double factor = std::string(op) == "allreduce"   ? 4.0 / 3
                            : std::string(op) == "broadcast" ? 1.0
                                                             : 2.0 / 3;
      EXPECT_NEAR(row["busbw_gbps"].get<double>(), row["algbw_gbps"].get<double>() * factor,
                  1e-9 * row["algbw_gbps"].get<double>() + 1e-12);
    }
  }
}

// Every path moves the ring's bound per rank: the UCX ring sends it, the intra-host path
// serves it to the peers' reads (staged or straight from shared buffers); the JSON names
// the path taken.
TEST(CollectiveBenchTest, BytesPerRankAreTheBoundOnEveryPath) {
  for (auto [intra, buffers, expected] :
       {std::tuple{"off", "shared", "ucx"}, std::tuple{"on", "private", "intra-host staged"},
        std::tuple{"on", "shared", "intra-host single-copy"}}) {
    nlohmann::json j = RunBench({"--op", "allreduce", "--ranks", "4", "--min-bytes", "1M",
                                 "--max-bytes", "1M", "--iters", "3", "--warmup", "1", "--small-kb",
                                 "0", "--intra-host", intra, "--buffers", buffers});
    ASSERT_EQ(j["rows"].size(), 1u);
    const int64_t s = j["rows"][0]["bytes"];
    EXPECT_EQ(j["rows"][0]["bytes_sent_rank0"].get<int64_t>(), 2 * 3 * s / 4) << expected;
    const std::string lanes = j["lanes"];
    EXPECT_EQ(lanes.rfind(expected, 0), 0u) << lanes;
    EXPECT_EQ(j["buffers"], buffers);
  }
}

// nccl-tests' in-place forms: reduce-scatter into block rank of its input, all-gather from
// block rank of its output; checked on the single-copy, staged and UCX paths.
TEST(CollectiveBenchTest, InPlaceReduceScatterAndAllGatherAreRight) {
  for (const char* op : {"reduce_scatter", "allgather"}) {
    for (auto [intra, buffers] :
         {std::pair{"on", "shared"}, std::pair{"on", "private"}, std::pair{"off", "private"}}) {
      nlohmann::json j =
          RunBench({"--op",        op,     "--ranks",       "3",          "--min-bytes",  "12",
                    "--max-bytes", "3M",   "--step-factor", "64",         "--iters",      "2",
                    "--warmup",    "1",    "--check",       "--in-place", "--intra-host", intra,
                    "--buffers",   buffers});
      ASSERT_TRUE(j.contains("rows")) << op;
      EXPECT_EQ(j["in_place"], true);
      ASSERT_EQ(j["rows"].size(), 4u) << op;  // 12, 768, 48K and 3M (single copy from 64K)
      for (const auto& row : j["rows"]) {
        EXPECT_EQ(row["wrong"], 0) << op << " " << intra << " " << buffers << " " << row.dump();
      }
    }
  }
}

// Four rank processes on two emulated hosts (network namespaces, UCX over tcp between
// them): the all-reduce is hierarchical (the two ranks of a host share memory) and right,
// and rank 0 sends exactly its inter-host ring's 2(H-1)/H * S/L over the transport; flat,
// the ring's 2(N-1)/N * S. Needs root and iproute2; skipped with the reason otherwise.
TEST(CollectiveBenchTest, HierarchicalAcrossTwoNetworkNamespaces) {
  for (auto [mode, path, wire] : {std::tuple{"on", "hierarchical 2 hosts x 2", 1024 * 1024 / 2},
                                  std::tuple{"off", "ucx", 2 * 3 * 1024 * 1024 / 4}}) {
    testing::ProcessResult r = testing::RunProcess({testing::BinaryPath("pszero-bench"),
                                                    "collective",
                                                    "--emulate-hosts",
                                                    "2",
                                                    "--ranks",
                                                    "4",
                                                    "--op",
                                                    "allreduce",
                                                    "--min-bytes",
                                                    "1K",
                                                    "--max-bytes",
                                                    "1M",
                                                    "--step-factor",
                                                    "32",
                                                    "--iters",
                                                    "3",
                                                    "--warmup",
                                                    "1",
                                                    "--small-kb",
                                                    "0",
                                                    "--check",
                                                    "--hierarchical",
                                                    mode,
                                                    "--json"},
                                                   std::chrono::seconds(240));
    if (r.exit_code == 77) {
      std::cout << "skipping: " << r.err << std::endl;
      GTEST_SKIP() << r.err;
    }
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const nlohmann::json j = nlohmann::json::parse(r.out);
    const std::string lanes = j["lanes"];
    EXPECT_EQ(lanes.rfind(path, 0), 0u) << lanes;
    EXPECT_EQ(j["emulate_hosts"], 2);
    ASSERT_EQ(j["rows"].size(), 3u);  // 1K, 32K, 1M
    for (const auto& row : j["rows"]) EXPECT_EQ(row["wrong"], 0) << mode << " " << row.dump();
    EXPECT_EQ(j["rows"].back()["bytes"], 1024 * 1024);
    EXPECT_EQ(j["rows"].back()["transport_bytes_sent_rank0"].get<int64_t>(), wire) << mode;
  }
}

TEST(CollectiveBenchTest, BadFlagsExit2NamingTheFlag) {
  for (auto [flag, value] : {std::pair{"--op", "gather"}, std::pair{"--ranks", "0"},
                             std::pair{"--min-bytes", "lots"}, std::pair{"--dtype", "fp8"}}) {
    testing::ProcessResult r =
        testing::RunProcess({testing::BinaryPath("pszero-bench"), "collective", flag, value});
    EXPECT_EQ(r.exit_code, 2) << flag;
    EXPECT_NE(r.err.find(flag), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace pszero
