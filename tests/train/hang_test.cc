// Hang diagnosis: the flight recorder keeps the last 256 collectives; when a collective
// passes --collective-timeout-s every worker logs its recorder and the diagnosis names
// where each one waits, and so does pszero-launch, in one line of its own; SIGUSR1 to
// pszero-launch makes it ask every worker and print the same line while the job hangs.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "launch/hang_report.h"
#include "tests/launch/multinode_test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"
#include "worker/collectives/flight_recorder.h"

namespace pszero::collectives {
namespace {

using ::pszero::testing::BinaryPath;
using ::pszero::testing::ChildProcess;
using ::pszero::testing::FreePort;
using ::pszero::testing::kClusterVars;
using ::pszero::testing::ProcessResult;
using ::pszero::testing::RunProcess;

// A two-worker job whose worker 1 enters a world barrier at step 2 that worker 0 never
// enters (PSZERO_FAULT_INJECT=hang:w1:step2): worker 0 goes on into step 2 and waits in
// its first gradient bucket's allreduce, which worker 1 never posts.
std::vector<std::string> HungJob(const std::string& collective_timeout_s) {
  return {BinaryPath("pszero-launch"),
          "--timeout",
          "120",
          "--workers",
          "2",
          "--sync",
          "allreduce",
          "--model",
          "custom",
          "--layers",
          "2",
          "--d-model",
          "64",
          "--heads",
          "4",
          "--seq",
          "16",
          "--batch",
          "4",
          "--vocab",
          "64",
          "--steps",
          "5",
          "--collective-timeout-s",
          collective_timeout_s};
}
const char kHangFault[] = "PSZERO_FAULT_INJECT=hang:w1:step2";
// What every worker and the launcher say about that job: worker 0 in step 2's gradient
// bucket on the data-parallel comm, worker 1 in the barrier on the world comm. The op
// numbers depend on how many ops the collectives' set-up takes; ExpectedDiagnosis() reads
// them from the workers' own flight-recorder dumps.
const std::regex kDiagnosisShape(
    R"(rank 0 waits in allreduce #\d+ on comm 1 \(allreduce bucket 0\); )"
    R"(rank 1 waits in barrier #\d+ on comm 0)");

// Worker `tag`'s latest op as OpRecord::Describe() writes it: the last line of the last
// flight-recorder dump it printed ("[w0]   allreduce #2 on comm 1 (allreduce bucket 0)
// rank 0/2, RUNNING for 39 ms").
std::string LastRecordedOp(const std::string& out, const std::string& tag) {
  std::string last;
  std::istringstream lines(out);
  const std::string prefix = tag + "   ";
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(prefix, 0) != 0) continue;
    const size_t end = line.find(" rank ");
    if (end != std::string::npos) last = line.substr(prefix.size(), end - prefix.size());
  }
  return last;
}

// The line the launcher must print, from what each worker's recorder says.
std::string ExpectedDiagnosis(const std::string& out) {
  return "rank 0 waits in " + LastRecordedOp(out, "[w0]") + "; rank 1 waits in " +
         LastRecordedOp(out, "[w1]");
}

size_t Count(const std::string& out, const std::string& what) {
  size_t n = 0;
  for (size_t at = out.find(what); at != std::string::npos; at = out.find(what, at + 1)) ++n;
  return n;
}

// The text after "hang diagnosis: " of every line of `out` that starts with `tag`.
std::vector<std::string> Diagnoses(const std::string& out, const std::string& tag) {
  std::vector<std::string> found;
  std::istringstream lines(out);
  const std::string marker = "hang diagnosis: ";
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(tag, 0) != 0) continue;
    const size_t at = line.find(marker);
    if (at != std::string::npos) found.push_back(line.substr(at + marker.size()));
  }
  return found;
}

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
  a.end_us = 0;  // as a worker reports the op that timed out: where it waits
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

TEST(FlightRecorderTest, DiagnosisNamesRanksAtTheSameOpTogether) {
  OpRecord bucket;
  bucket.id = 9;
  bucket.comm = 1;
  bucket.seq = 812;
  bucket.op = "allreduce";
  bucket.label = "allreduce bucket 4";
  OpRecord barrier = bucket;
  barrier.id = 3;
  barrier.comm = 0;
  barrier.seq = 3;
  barrier.op = "barrier";
  barrier.label = "";
  OpRecord done = bucket;
  done.end_us = 5;  // ended well: the rank is past it
  EXPECT_EQ(DiagnoseHang({bucket, barrier, bucket, bucket, bucket, done, OpRecord()}),
            "ranks 0,2-4 wait in allreduce #812 on comm 1 (allreduce bucket 4); rank 1 waits in "
            "barrier #3 on comm 0; rank 5 is past allreduce #812 on comm 1 (allreduce bucket 4); "
            "rank 6 sent no report");
  EXPECT_EQ(DiagnoseHang({bucket, bucket}), "");
  EXPECT_EQ(DescribeAgreement({bucket, bucket}),
            "every worker waits in allreduce #812 on comm 1 (allreduce bucket 4)");
  const OpRecord back = OpRecordFromJson(ToJson(done));
  EXPECT_EQ(back.end_us, 5);
}

TEST(HangReportTest, CollectsOneReportPerWorkerPerRound) {
  auto report = [](const OpRecord& r) { return ToJson(r).dump(); };
  OpRecord a;
  a.id = 4;
  a.comm = 1;
  a.seq = 2;
  a.op = "allreduce";
  a.label = "allreduce bucket 0";
  OpRecord b = a;
  b.comm = 0;
  b.seq = 1;
  b.op = "barrier";
  b.label = "";
  const std::string timeout = kHangTimeoutKeyPrefix;
  const std::string signal = kHangSignalKeyPrefix;

  HangReport hang(3);
  EXPECT_FALSE(hang.OnKeySet("pszero/blob/w1", "x"));
  EXPECT_FALSE(hang.OnKeySet(signal + "0", report(a)));  // no round asked for it
  EXPECT_FALSE(hang.open());
  EXPECT_FALSE(hang.saw_timeout());
  EXPECT_TRUE(hang.OnKeySet(timeout + "1", report(b)));  // the first timeout begins a round
  EXPECT_TRUE(hang.saw_timeout());
  EXPECT_FALSE(hang.OnKeySet(timeout + "0", report(a)));
  EXPECT_FALSE(hang.OnKeySet(timeout + "0", report(a)));             // counted once
  EXPECT_FALSE(hang.OnKeySet(timeout + "7", report(a)));             // no such worker
  EXPECT_FALSE(hang.OnKeySet(timeout + "2", R"({"comm": "one"})"));  // not a report
  EXPECT_FALSE(hang.complete());
  EXPECT_EQ(hang.reported(), 2);
  EXPECT_EQ(hang.TakeLine(),
            "hang diagnosis: rank 0 waits in allreduce #2 on comm 1 (allreduce bucket 0); rank 1 "
            "waits in barrier #1 on comm 0; rank 2 sent no report");
  EXPECT_FALSE(hang.open());

  hang.BeginSignalRound();  // forgets the earlier round
  EXPECT_EQ(hang.reported(), 0);
  for (int r = 0; r < 3; ++r) hang.OnKeySet(signal + std::to_string(r), report(a));
  EXPECT_TRUE(hang.complete());
  EXPECT_EQ(hang.TakeLine(),
            "hang diagnosis: no disagreement: every worker waits in allreduce #2 on comm 1 "
            "(allreduce bucket 0)");

  // --rendezvous-only: mpirun, not the service's launcher, forwarded the signal.
  HangReport unasked(2, /*open_on_signal_report=*/true);
  EXPECT_TRUE(unasked.OnKeySet(signal + "1", report(b)));
  EXPECT_FALSE(unasked.OnKeySet(signal + "0", report(a)));
  EXPECT_TRUE(unasked.complete());
  EXPECT_FALSE(unasked.saw_timeout());
}

TEST(HangTest, StuckCollectiveIsDiagnosedByEveryWorkerAndTheLauncher) {
  ::unsetenv("PSZERO_FAULT_ONCE");
  const ProcessResult r = RunProcess(HungJob("3"), std::chrono::seconds(150), {kHangFault});
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

  // The launcher's own line: exactly once, the same words as the workers', just above the
  // last line (the cause).
  const std::vector<std::string> launcher = Diagnoses(r.err, "[launch]");
  ASSERT_EQ(launcher.size(), 1u) << r.err;
  EXPECT_TRUE(std::regex_match(launcher[0], kDiagnosisShape)) << launcher[0];
  EXPECT_EQ(launcher[0], ExpectedDiagnosis(r.err)) << r.err;
  for (const char* tag : {"[w0]", "[w1]"}) {
    for (const std::string& d : Diagnoses(r.err, tag)) EXPECT_EQ(d, launcher[0]) << tag;
  }
  // Line numbers: the launcher's diagnosis, the last worker line, the cause.
  int diagnosis_at = -1, last_worker_at = -1, cause_at = -1, n = 0;
  std::istringstream lines(r.err);
  for (std::string line; std::getline(lines, line); ++n) {
    if (line.rfind("[w", 0) == 0) last_worker_at = n;
    if (line.rfind("[launch]", 0) != 0) continue;
    if (line.find("hang diagnosis: ") != std::string::npos) diagnosis_at = n;
    if (line.find("job failed: worker ") != std::string::npos) cause_at = n;
  }
  EXPECT_GT(diagnosis_at, last_worker_at) << r.err;
  EXPECT_EQ(cause_at, diagnosis_at + 1) << r.err;
}

TEST(HangTest, SigusrToTheLauncherNamesWhereEachWorkerWaits) {
  ::unsetenv("PSZERO_FAULT_ONCE");
  // A collective deadline far away: the job hangs until the test stops it.
  auto job = ChildProcess::Spawn(HungJob("600"), {kHangFault});
  ASSERT_NE(job, nullptr);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  auto wait_for = [&](auto done) {
    while (!done() && std::chrono::steady_clock::now() < deadline &&
           !job->Wait(std::chrono::milliseconds(50))) {
    }
    return done();
  };
  ASSERT_TRUE(wait_for([&] {
    return job->Output().find("fault injection: hang in a world barrier at 'step2'") !=
           std::string::npos;
  })) << job->Output();
  // Worker 0 reaches its bucket's allreduce a moment after worker 1 enters the barrier; a
  // report taken before that names its previous op, so ask again until it names the
  // bucket (each round ends with the launcher's line and both workers' dumps: no sleeping
  // here).
  std::vector<std::string> lines;
  std::string out;
  for (size_t round = 1; round <= 20; ++round) {
    job->Signal(SIGUSR1);
    ASSERT_TRUE(wait_for([&] {
      const std::string now = job->Output();
      return Diagnoses(now, "[launch]").size() == round &&
             Count(now, "SIGUSR1: flight recorder") == 2 * round;
    })) << job->Output();
    out = job->Output();
    lines = Diagnoses(out, "[launch]");
    if (std::regex_match(lines.back(), kDiagnosisShape)) break;
  }
  EXPECT_TRUE(std::regex_match(lines.back(), kDiagnosisShape)) << out;
  EXPECT_EQ(lines.back(), ExpectedDiagnosis(out)) << out;
  EXPECT_FALSE(job->exited()) << "SIGUSR1 must not stop the job:\n" << job->Output();
  EXPECT_NE(job->Output().find("SIGUSR1: flight recorder, last 256"), std::string::npos);

  job->Signal(SIGTERM);
  const ProcessResult r = job->Finish(std::chrono::seconds(30));
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.out;
}

// `pszero-launch --rendezvous-only` with workers another tool started (torchrun-style
// variables): the service hears their reports and names the hang too, and exits 1 although
// the workers said goodbye.
TEST(HangTest, RendezvousOnlyServiceNamesTheHang) {
  const std::string port = std::to_string(FreePort());
  const std::string token = "PSZERO_TOKEN=0123456789abcdef";
  auto service = ChildProcess::Spawn({BinaryPath("pszero-launch"), "--rendezvous-only", "--workers",
                                      "2", "--master-port", port, "--timeout", "120"},
                                     {token}, kClusterVars);
  ASSERT_NE(service, nullptr);
  std::vector<std::string> job = HungJob("3");
  job.erase(job.begin(), job.begin() + 5);  // pszero-launch --timeout 120 --workers 2
  job.insert(job.begin(), BinaryPath("pszero-worker"));
  std::vector<std::unique_ptr<ChildProcess>> workers;
  for (int rank : {0, 1}) {
    workers.push_back(ChildProcess::Spawn(
        job,
        {token, kHangFault, "RANK=" + std::to_string(rank), "LOCAL_RANK=" + std::to_string(rank),
         "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + port},
        kClusterVars));
    ASSERT_NE(workers.back(), nullptr);
  }
  // The workers' output as the launcher would show it: every line tagged.
  std::string tagged;
  for (int rank : {0, 1}) {
    const ProcessResult w = workers[static_cast<size_t>(rank)]->Finish(std::chrono::seconds(60));
    EXPECT_EQ(w.exit_code, 4) << w.out;
    std::istringstream lines(w.out);
    const std::string tag = "[w" + std::to_string(rank) + "]";
    for (std::string line; std::getline(lines, line);) {
      tagged += (line.rfind(tag, 0) == 0 ? line : tag + " " + line) + "\n";
    }
  }
  const ProcessResult s = service->Finish(std::chrono::seconds(30));
  EXPECT_EQ(s.exit_code, 1) << s.out;
  const std::vector<std::string> lines = Diagnoses(s.out, "[launch]");
  ASSERT_EQ(lines.size(), 1u) << s.out;
  EXPECT_TRUE(std::regex_match(lines[0], kDiagnosisShape)) << lines[0];
  EXPECT_EQ(lines[0], ExpectedDiagnosis(tagged)) << tagged;
  EXPECT_NE(s.out.find("job failed: a collective ran past --collective-timeout-s"),
            std::string::npos)
      << s.out;
}

}  // namespace
}  // namespace pszero::collectives
