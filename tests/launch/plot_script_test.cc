// scripts/plot.py on a recorded sweep (fixtures/sweep_results.json: `pszero-bench sweep
// --config fixtures/sweep_config.json`, recorded 2026-11-26 on the 2-core VM, stderr tails
// and the simulator's per-run check left out): every picture is written and is a valid PNG.
// Skipped, with the reason, where matplotlib is missing (plot.py exits 77).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "common/temp_dir.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

namespace fs = std::filesystem;

constexpr int kNoMatplotlib = 77;

ProcessResult Plot(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {PSZERO_PLOT_SCRIPT};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, std::chrono::seconds(120));
}

uint32_t BigEndian32(const std::string& b, size_t at) {
  return (static_cast<uint32_t>(static_cast<unsigned char>(b[at])) << 24) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 1])) << 16) |
         (static_cast<uint32_t>(static_cast<unsigned char>(b[at + 2])) << 8) |
         static_cast<uint32_t>(static_cast<unsigned char>(b[at + 3]));
}

// The PNG signature, an IHDR chunk first with a plausible size, and an IEND chunk last.
void ExpectPng(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path << " missing";
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 64u) << path;
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << path;
  EXPECT_EQ(bytes.substr(12, 4), "IHDR") << path;
  const uint32_t width = BigEndian32(bytes, 16), height = BigEndian32(bytes, 20);
  EXPECT_GE(width, 200u) << path;
  EXPECT_LE(width, 2000u) << path;  // dpi 80: small enough for docs/
  EXPECT_GE(height, 150u) << path;
  EXPECT_LE(height, 1000u) << path;
  EXPECT_EQ(bytes.substr(bytes.size() - 8, 4), "IEND") << path;
}

TEST(PlotScriptTest, RendersEveryPictureOfARecordedSweep) {
  Result<TempDir> tmp = TempDir::Create("plot-test");
  ASSERT_TRUE(tmp.ok());
  const fs::path out = tmp->path() / "png";
  const ProcessResult r =
      Plot({std::string(PSZERO_LAUNCH_FIXTURES) + "/sweep_results.json", "--out", out.string()});
  if (r.exit_code == kNoMatplotlib) GTEST_SKIP() << "plot.py: " << r.err;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  for (const char* name : {"busbw_allreduce.png", "busbw_allgather.png", "step_time.png",
                           "memory.png", "bytes_per_step.png", "simulate.png"}) {
    SCOPED_TRACE(name);
    ExpectPng(out / name);
    EXPECT_NE(r.out.find((out / name).string()), std::string::npos) << r.out;
  }
}

TEST(PlotScriptTest, RefusesWhatIsNotASweep) {
  Result<TempDir> tmp = TempDir::Create("plot-test");
  ASSERT_TRUE(tmp.ok());
  const fs::path other = tmp->path() / "other.json";
  std::ofstream(other) << R"({"schema": "pszero.run/1"})";
  const ProcessResult r = Plot({other.string(), "--out", (tmp->path() / "png").string()});
  if (r.exit_code == kNoMatplotlib) GTEST_SKIP() << "plot.py: " << r.err;
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("not a pszero-bench sweep"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp->path() / "png" / "step_time.png"));
}

}  // namespace
}  // namespace pszero::testing
