// RunChild (launch/bench/child_run.h), how pszero-bench runs pszero-launch and python:
// output and exit status collected, the deadline stopping the child's whole process group
// (a grandchild holding the pipes included), a program that cannot start, LastLines.
#include "launch/bench/child_run.h"

#include <gtest/gtest.h>

namespace pszero::bench {
namespace {

using std::chrono::milliseconds;

TEST(ChildRunTest, CollectsOutputAndExitCode) {
  Result<ChildRun> r =
      RunChild({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}, milliseconds(30000));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE(r->timed_out);
  EXPECT_FALSE(r->signaled);
  EXPECT_EQ(r->exit_code, 3);
  EXPECT_EQ(r->out, "out\n");
  EXPECT_EQ(r->err, "err\n");
  EXPECT_FALSE(r->ok());
  EXPECT_EQ(r->Describe(), "exit code 3");
}

TEST(ChildRunTest, LooksUpThePath) {
  Result<ChildRun> r = RunChild({"sh", "-c", "printf %s hello"}, milliseconds(30000));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->ok());
  EXPECT_EQ(r->out, "hello");
}

TEST(ChildRunTest, DeadlineStopsTheWholeGroup) {
  // The shell waits on a grandchild that holds the pipes: only stopping the group ends it.
  Result<ChildRun> r =
      RunChild({"/bin/sh", "-c", "echo started; sleep 60 & wait"}, milliseconds(300));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->timed_out);
  EXPECT_EQ(r->out, "started\n");
  EXPECT_EQ(r->Describe(), "timed out");
}

TEST(ChildRunTest, ProgramThatCannotStart) {
  Result<ChildRun> r = RunChild({"/nonexistent/pszero-launch"}, milliseconds(1000));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().message(),
            "cannot start /nonexistent/pszero-launch: No such file or directory");
}

TEST(ChildRunTest, LastLines) {
  EXPECT_EQ(LastLines("a\nb\nc\n", 2), "b\nc");
  EXPECT_EQ(LastLines("a\nb\nc", 1), "c");
  EXPECT_EQ(LastLines("a\n", 5), "a");
  EXPECT_EQ(LastLines("", 3), "");
}

}  // namespace
}  // namespace pszero::bench
