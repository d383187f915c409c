#include "common/stats.h"

#include <gtest/gtest.h>

namespace pszero {
namespace {

TEST(StatsTest, SummaryOfKnownSamples) {
  // 1..11 in scrambled order: median 6, p10 = 2, p90 = 10 (linear interpolation).
  Summary s = Summarize({7, 3, 11, 1, 9, 5, 2, 10, 4, 8, 6});
  EXPECT_EQ(s.count, 11u);
  EXPECT_DOUBLE_EQ(s.min, 1);
  EXPECT_DOUBLE_EQ(s.max, 11);
  EXPECT_DOUBLE_EQ(s.mean, 6);
  EXPECT_DOUBLE_EQ(s.median, 6);
  EXPECT_DOUBLE_EQ(s.p10, 2);
  EXPECT_DOUBLE_EQ(s.p90, 10);
}

TEST(StatsTest, InterpolatesBetweenSamples) {
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4}, 0.5), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({10, 20}, 0.1), 11);
  EXPECT_DOUBLE_EQ(Percentile({5}, 0.9), 5);
  EXPECT_DOUBLE_EQ(Percentile({}, 0.5), 0);
}

TEST(StatsTest, EmptySummary) {
  Summary s = Summarize({});
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.median, 0);
}

TEST(StopwatchTest, IsMonotonic) {
  Stopwatch sw;
  double a = sw.ElapsedSeconds();
  double b = sw.ElapsedSeconds();
  EXPECT_GE(a, 0);
  EXPECT_GE(b, a);
}

}  // namespace
}  // namespace pszero
