// Hang diagnosis: the flight recorder keeps the last 256 collectives; when a collective
// passes --collective-timeout-s every worker logs its recorder and the diagnosis names
// where each one waits.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/subprocess.h"
#include "worker/collectives/flight_recorder.h"

namespace pszero::collectives {
namespace {

using ::pszero::testing::BinaryPath;
using ::pszero::testing::ProcessResult;
using ::pszero::testing::RunProcess;

TEST(FlightRecorderTest, KeepsTheLast256AndDiagnosesDisagreement) {
  FlightRecorder& fr = FlightRecorder::Get();
  FlightRecorder::SetThreadLabel("bucket 4");
  uint64_t last = 0;
  for (uint32_t i = 0; i < 300; ++i) {
    last = fr.Begin(7, i, 0, 2, "allreduce");
    if (i + 1 < 300) fr.End(last, 128, true);
  }
  FlightRecorder::SetThreadLabel("");
  const std::vector<OpRecord> ops = fr.Snapshot();
  ASSERT_EQ(ops.size(), FlightRecorder::kCapacity);
  EXPECT_EQ(ops.back().seq, 299u);
  EXPECT_EQ(ops.front().seq, 300u - FlightRecorder::kCapacity);
  EXPECT_EQ(ops.back().end_us, 0);  // still running
  EXPECT_EQ(fr.Latest().id, last);
  EXPECT_EQ(fr.Latest().Describe(), "allreduce #299 on comm 7 (bucket 4)");
  EXPECT_NE(fr.Dump().find("RUNNING"), std::string::npos);
  fr.End(last, 0, true);

  OpRecord a = fr.Latest();
  OpRecord b = a;
  EXPECT_EQ(DiagnoseHang({a, b}), "");  // the same op everywhere: no disagreement
  b.op = "allgather";
  b.label = "";
  EXPECT_EQ(DiagnoseHang({a, b}),
            "rank 0 waits in allreduce #299 on comm 7 (bucket 4); rank 1 waits in allgather #299 "
            "on comm 7");
  EXPECT_EQ(DiagnoseHang({a, OpRecord()}),
            "rank 0 waits in allreduce #299 on comm 7 (bucket 4); rank 1 sent no report");
  const OpRecord back = OpRecordFromJson(ToJson(a));
  EXPECT_EQ(back.Describe(), a.Describe());
  EXPECT_EQ(back.id, a.id);
}

TEST(HangTest, StuckCollectiveIsDiagnosedByEveryWorker) {
  ::unsetenv("PSZERO_FAULT_ONCE");
  const ProcessResult r = RunProcess(
      {BinaryPath("pszero-launch"), "--timeout", "120", "--workers", "2", "--sync", "allreduce",
       "--model", "custom", "--layers", "2", "--d-model", "64", "--heads", "4", "--seq", "16",
       "--batch", "4", "--vocab", "64", "--steps", "5", "--collective-timeout-s", "3"},
      std::chrono::seconds(150), {"PSZERO_FAULT_INJECT=hang:w1:step2"});
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  // Worker 1 waits in a barrier nobody else enters; worker 0 in the next step's first
  // gradient bucket, which worker 1 never posts.
  for (const char* tag : {"[w0]", "[w1]"}) {
    bool found = false;
    size_t at = 0;
    while ((at = r.err.find(std::string(tag), at)) != std::string::npos) {
      const size_t end = r.err.find('\n', at);
      const std::string line = r.err.substr(at, end - at);
      if (line.find("hang diagnosis: rank 0 waits in allreduce #") != std::string::npos &&
          line.find("(allreduce bucket ") != std::string::npos &&
          line.find("rank 1 waits in barrier #") != std::string::npos) {
        found = true;
      }
      at = end;
    }
    EXPECT_TRUE(found) << tag << " gave no diagnosis:\n" << r.err;
  }
  EXPECT_NE(r.err.find("flight recorder, last 256"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("exited with code 4"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace pszero::collectives
