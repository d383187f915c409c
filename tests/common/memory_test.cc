#include "common/memory.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "common/report.h"
#include "common/tensor.h"

namespace pszero {
namespace {

Tensor Make(const Shape& shape, DType dtype, MemoryCategory category, MemoryTracker* tracker) {
  Result<Tensor> t = Tensor::Empty(shape, dtype, category, tracker);
  EXPECT_TRUE(t.ok());
  return std::move(t).value();
}

TEST(MemoryTrackerTest, CountsLiveAndPeakPerCategory) {
  MemoryTracker tracker;
  {
    Tensor params = Make({1000}, DType::kFloat32, MemoryCategory::kParams, &tracker);
    Tensor grads = Make({1000}, DType::kBFloat16, MemoryCategory::kGrads, &tracker);
    EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).live_bytes, 4000);
    EXPECT_EQ(tracker.Usage(MemoryCategory::kGrads).live_bytes, 2000);
    EXPECT_EQ(tracker.Total().live_bytes, 6000);
    {
      Tensor act = Make({250}, DType::kFloat32, MemoryCategory::kActivations, &tracker);
      EXPECT_EQ(tracker.Total().live_bytes, 7000);
    }
    EXPECT_EQ(tracker.Usage(MemoryCategory::kActivations).live_bytes, 0);
    EXPECT_EQ(tracker.Usage(MemoryCategory::kActivations).peak_bytes, 1000);
    Tensor comm = Make({100}, DType::kFloat32, MemoryCategory::kCommBuffers, &tracker);
    // The total peak is the peak of the sum (7000), not the sum of peaks (7400).
    EXPECT_EQ(tracker.Total().live_bytes, 6400);
    EXPECT_EQ(tracker.Total().peak_bytes, 7000);
  }
  EXPECT_EQ(tracker.Total().live_bytes, 0);
  EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).peak_bytes, 4000);
  EXPECT_EQ(tracker.Usage(MemoryCategory::kOptimizer).peak_bytes, 0);
}

TEST(MemoryTrackerTest, ViewsDoNotCountAndKeepStorageAlive) {
  MemoryTracker tracker;
  Tensor view;
  {
    Tensor t = Make({10, 10}, DType::kFloat32, MemoryCategory::kOptimizer, &tracker);
    view = *t.Slice(0, 2, 4);
    Tensor t2 = *t.Transpose(0, 1);
    EXPECT_EQ(tracker.Usage(MemoryCategory::kOptimizer).live_bytes, 400);
  }
  EXPECT_EQ(tracker.Usage(MemoryCategory::kOptimizer).live_bytes, 400);  // view holds it
  view = Tensor();
  EXPECT_EQ(tracker.Usage(MemoryCategory::kOptimizer).live_bytes, 0);
}

TEST(MemoryTrackerTest, ResetPeaks) {
  MemoryTracker tracker;
  Tensor keep = Make({10}, DType::kFloat32, MemoryCategory::kParams, &tracker);
  { Tensor tmp = Make({100}, DType::kFloat32, MemoryCategory::kParams, &tracker); }
  EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).peak_bytes, 440);
  tracker.ResetPeaks();
  EXPECT_EQ(tracker.Usage(MemoryCategory::kParams).peak_bytes, 40);
  EXPECT_EQ(tracker.Total().peak_bytes, 40);
}

TEST(MemoryTrackerTest, SeparateTrackersAreIndependent) {
  MemoryTracker rank0, rank1;
  Tensor a = Make({8}, DType::kFloat32, MemoryCategory::kParams, &rank0);
  EXPECT_EQ(rank0.Total().live_bytes, 32);
  EXPECT_EQ(rank1.Total().live_bytes, 0);
}

TEST(MemoryTrackerTest, ThreadSafe) {
  MemoryTracker tracker;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&tracker] {
      for (int i = 0; i < 2000; ++i) {
        Tensor x = Make({16}, DType::kFloat32, MemoryCategory::kCommBuffers, &tracker);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(tracker.Total().live_bytes, 0);
  const int64_t peak = tracker.Usage(MemoryCategory::kCommBuffers).peak_bytes;
  EXPECT_GE(peak, 64);
  EXPECT_LE(peak, 4 * 64);
}

TEST(MemoryTrackerTest, JsonHasEveryCategory) {
  MemoryTracker tracker;
  Tensor p = Make({4}, DType::kFloat32, MemoryCategory::kParams, &tracker);
  nlohmann::json j = ToJson(tracker);
  EXPECT_EQ(j["cpu"]["params"]["live_bytes"], 16);
  EXPECT_EQ(j["cpu"]["total"]["peak_bytes"], 16);
  for (const char* c : {"grads", "optimizer", "activations", "comm_buffers", "other"}) {
    EXPECT_EQ(j["cpu"][c]["live_bytes"], 0) << c;
  }
  EXPECT_FALSE(j.contains("cuda"));
}

}  // namespace
}  // namespace pszero
