// ProgressDisplay (launch/progress.h): parsing worker 0's step lines, the ETA arithmetic,
// and the exact text the launcher writes on a terminal and elsewhere.
#include "launch/progress.h"

#include <gtest/gtest.h>

namespace pszero {
namespace {

TEST(ProgressTest, ParsesWorkerStepLine) {
  const auto s = ParseStepLine("step 3/10 loss 5.123456 time_ms 412.500 tokens_per_s 9941.7");
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(s->step, 3);
  EXPECT_EQ(s->steps, 10);
  EXPECT_DOUBLE_EQ(s->loss, 5.123456);
  EXPECT_DOUBLE_EQ(s->time_ms, 412.5);
  EXPECT_DOUBLE_EQ(s->tokens_per_s, 9941.7);
}

TEST(ProgressTest, RejectsOtherLines) {
  EXPECT_FALSE(ParseStepLine("final_params_sha256 623dd1ef").has_value());
  EXPECT_FALSE(ParseStepLine("step 3/10 loss 5.1 time_ms 4.0").has_value());
  EXPECT_FALSE(ParseStepLine("step 3/10 loss 5.1 time_ms 4.0 tokens_per_s 9.0 extra").has_value());
  EXPECT_FALSE(ParseStepLine("step 0/10 loss 5.1 time_ms 4.0 tokens_per_s 9.0").has_value());
  EXPECT_FALSE(ParseStepLine("step 11/10 loss 5.1 time_ms 4.0 tokens_per_s 9.0").has_value());
  EXPECT_FALSE(ParseStepLine("").has_value());
}

TEST(ProgressTest, FormatsEta) {
  EXPECT_EQ(FormatEta(0), "00:00");
  EXPECT_EQ(FormatEta(59.4), "00:59");
  EXPECT_EQ(FormatEta(59.5), "01:00");
  EXPECT_EQ(FormatEta(754), "12:34");
  EXPECT_EQ(FormatEta(3599.4), "59:59");
  EXPECT_EQ(FormatEta(3725), "1:02:05");
  EXPECT_EQ(FormatEta(-1), "--:--");
}

TEST(ProgressTest, TerminalRendersOneUpdatingLine) {
  ProgressDisplay p("w0", true);
  // ETA = (K - k) x mean step time so far: 3 x 1.0 s, then 2 x 2.0 s, then 1 x 2.0 s.
  EXPECT_EQ(p.OnLine("step 1/4 loss 5.500000 time_ms 1000.000 tokens_per_s 4096.0"),
            "\r\033[Kstep 1/4  loss 5.5000  step 1000.0 ms  4096 tok/s  ETA 00:03");
  EXPECT_TRUE(p.line_open());
  EXPECT_EQ(p.OnLine("step 2/4 loss 5.250000 time_ms 3000.000 tokens_per_s 1365.3"),
            "\r\033[Kstep 2/4  loss 5.2500  step 3000.0 ms  1365 tok/s  ETA 00:04");
  // Another line: the progress line is finished first, once.
  EXPECT_EQ(p.OnLine("final_params_sha256 00"), std::nullopt);
  EXPECT_EQ(p.BeforeOtherOutput(), "\n");
  EXPECT_EQ(p.BeforeOtherOutput(), "");
  EXPECT_EQ(p.OnLine("step 3/4 loss 5.125000 time_ms 2000.000 tokens_per_s 2048.0"),
            "\r\033[Kstep 3/4  loss 5.1250  step 2000.0 ms  2048 tok/s  ETA 00:02");
  // The last step ends the line.
  EXPECT_EQ(p.OnLine("step 4/4 loss 5.000000 time_ms 2000.000 tokens_per_s 2048.0"),
            "\r\033[Kstep 4/4  loss 5.0000  step 2000.0 ms  2048 tok/s  ETA 00:00\n");
  EXPECT_FALSE(p.line_open());
  EXPECT_EQ(p.BeforeOtherOutput(), "");
}

TEST(ProgressTest, LongRunsShowHours) {
  ProgressDisplay p("w0", true);
  EXPECT_EQ(p.OnLine("step 1/1000 loss 2.000000 time_ms 10000.000 tokens_per_s 409.6"),
            "\r\033[Kstep 1/1000  loss 2.0000  step 10000.0 ms  410 tok/s  ETA 2:46:30");
}

TEST(ProgressTest, PlainOutputKeepsTheLineAndAddsEta) {
  ProgressDisplay p("w0", false);
  EXPECT_EQ(p.OnLine("step 1/4 loss 5.500000 time_ms 1000.000 tokens_per_s 4096.0"),
            "[w0] step 1/4 loss 5.500000 time_ms 1000.000 tokens_per_s 4096.0 eta_s 3.0\n");
  EXPECT_EQ(p.BeforeOtherOutput(), "");
  EXPECT_EQ(p.OnLine("step 2/4 loss 5.250000 time_ms 3000.000 tokens_per_s 1365.3"),
            "[w0] step 2/4 loss 5.250000 time_ms 3000.000 tokens_per_s 1365.3 eta_s 4.0\n");
  EXPECT_EQ(p.OnLine("step 4/4 loss 5.000000 time_ms 2000.000 tokens_per_s 2048.0"),
            "[w0] step 4/4 loss 5.000000 time_ms 2000.000 tokens_per_s 2048.0 eta_s 0.0\n");
  EXPECT_FALSE(p.line_open());
}

}  // namespace
}  // namespace pszero
