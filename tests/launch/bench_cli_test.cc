// The real pszero-bench binary: flag errors (exit 2, one line naming the flag), --help,
// --version, and a small STREAM run whose JSON is checked.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/support/subprocess.h"

namespace pszero {
namespace {

using testing::BinaryPath;
using testing::ProcessResult;
using testing::RunProcess;

int CountLines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

void ExpectUsageError(const std::vector<std::string>& args, const std::string& flag) {
  std::vector<std::string> argv = {BinaryPath("pszero-bench")};
  argv.insert(argv.end(), args.begin(), args.end());
  ProcessResult r = RunProcess(argv);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(flag), std::string::npos)
      << "message does not name " << flag << ": " << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(BenchCliTest, UnknownFlag) { ExpectUsageError({"stream", "--bogus"}, "--bogus"); }

TEST(BenchCliTest, NonNumericValue) { ExpectUsageError({"stream", "--iters", "abc"}, "--iters"); }

TEST(BenchCliTest, OutOfRangeValue) { ExpectUsageError({"stream", "--iters", "0"}, "--iters"); }

TEST(BenchCliTest, BadListValue) { ExpectUsageError({"stream", "--threads", "1,0"}, "--threads"); }

TEST(BenchCliTest, UnknownSubcommand) { ExpectUsageError({"teleport"}, "teleport"); }

TEST(BenchCliTest, MissingSubcommand) { ExpectUsageError({}, "subcommand"); }

// Input files that are FIFOs are refused at once (never waited on), and NaN passes no
// floating-point flag: exit 2 and exactly one line.
TEST(BenchCliTest, FifoInputsAndNanAreRefusedAtOnce) {
  const std::string fifo = ::testing::TempDir() + "/pszero-bench-" + std::to_string(::getpid());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string why = fifo + ": is a FIFO with no writer";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"report-table", fifo}, "pszero-bench report-table: error: " + why},
      {{"simulate", "--model", "gpt-tiny", "--workers", "2", "--calibrate", fifo},
       "pszero-bench simulate: error: --calibrate: " + why},
      {{"sweep", "--config", fifo}, "pszero-bench sweep: error: --config: " + why},
      {{"stream", "--array-mb", "nan"},
       "pszero-bench: error: --array-mb: Value nan is not a finite number in [0 - 65536]"},
      {{"kernels", "--array-mb", "inf"},
       "pszero-bench: error: --array-mb: Value inf is not a finite number in [0.001 - 65536]"},
  };
  for (const auto& [args, line] : cases) {
    SCOPED_TRACE(args.front());
    std::vector<std::string> argv = {BinaryPath("pszero-bench")};
    argv.insert(argv.end(), args.begin(), args.end());
    const ProcessResult r = RunProcess(argv, std::chrono::seconds(30));
    EXPECT_FALSE(r.timed_out);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(r.err, line + "\n");
  }
  ::unlink(fifo.c_str());
}

TEST(BenchCliTest, HelpListsFlagsWithDefaults) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "stream", "--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* flag : {"--threads", "--iters", "--array-mb", "--json", "--output"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag;
  }
  EXPECT_NE(r.out.find("=10"), std::string::npos) << "default of --iters not shown:\n" << r.out;
}

TEST(BenchCliTest, Version) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("pszero ", 0), 0u) << r.out;
}

TEST(BenchCliTest, StreamJson) {
  ProcessResult r = RunProcess({BinaryPath("pszero-bench"), "stream", "--array-mb", "4", "--iters",
                                "3", "--threads", "1,2", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["benchmark"], "stream");
  EXPECT_TRUE(j["valid"].get<bool>());
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][1]["threads"], 2);
  EXPECT_EQ(j["runs"][0]["array_bytes"], 4 << 20);
  ASSERT_EQ(j["runs"][0]["kernels"].size(), 4u);
  for (const auto& k : j["runs"][0]["kernels"]) {
    EXPECT_GT(k["best_gbps"].get<double>(), 0) << k.dump();
    EXPECT_GE(k["best_gbps"].get<double>(), k["median_gbps"].get<double>());
    EXPECT_EQ(k["seconds"]["count"], 3);
  }
  EXPECT_EQ(j["runs"][0]["kernels"][3]["name"], "triad");
  EXPECT_EQ(j["runs"][0]["kernels"][3]["bytes"], 24 * (4 << 20) / 8);
}

TEST(BenchCliTest, StreamTable) {
  ProcessResult r = RunProcess(
      {BinaryPath("pszero-bench"), "stream", "--array-mb", "2", "--iters", "2", "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("triad"), std::string::npos);
  EXPECT_NE(r.out.find("validation: passed"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace pszero
