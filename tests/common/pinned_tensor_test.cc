// Tensor::EmptyPinned on a CUDA device: page-locked host memory, tracked as host memory of
// its category, and a round trip host→device→host through flat ranges as PsSync stages
// them (worker/train/ps_sync.h). Skipped without a CUDA device.
#include <gtest/gtest.h>

#include <vector>

#include "common/memory.h"
#include "common/tensor.h"
#include "kernels/cuda_resources.h"

namespace pszero {
namespace {

TEST(PinnedTensorTest, PinnedHostMemoryRoundTripsThroughTheDeviceInRanges) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  MemoryTracker tracker;
  const int64_t n = 1 << 20;
  auto pinned = Tensor::EmptyPinned({n}, DType::kFloat32, MemoryCategory::kCommBuffers, &tracker);
  ASSERT_TRUE(pinned.ok()) << pinned.status().ToString();
  EXPECT_TRUE(pinned->pinned());
  EXPECT_EQ(pinned->device(), Device::kHost);
  EXPECT_EQ(tracker.Usage(MemoryCategory::kCommBuffers).live_bytes, n * 4);
  auto device =
      Tensor::Empty({n}, DType::kFloat32, MemoryCategory::kParams, nullptr, Device::kCuda);
  ASSERT_TRUE(device.ok()) << device.status().ToString();
  float* h = pinned->data<float>();
  for (int64_t i = 0; i < n; ++i) h[i] = static_cast<float>(i);
  // Up and back in three uneven ranges, as PsSync copies slices.
  const int64_t cuts[] = {0, 1000, 500000, n};
  for (int k = 0; k < 3; ++k) {
    auto dst = device->Slice(0, cuts[k], cuts[k + 1]);
    auto src = pinned->Slice(0, cuts[k], cuts[k + 1]);
    ASSERT_TRUE(dst.ok() && src.ok());
    ASSERT_TRUE(dst->CopyFrom(*src).ok());
  }
  std::vector<float> back(static_cast<size_t>(n));
  Tensor out = Tensor::Wrap(back.data(), {n}, DType::kFloat32);
  for (int k = 2; k >= 0; --k) {
    auto dst = out.Slice(0, cuts[k], cuts[k + 1]);
    auto src = device->Slice(0, cuts[k], cuts[k + 1]);
    ASSERT_TRUE(dst.ok() && src.ok());
    ASSERT_TRUE(dst->CopyFrom(*src).ok());
  }
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(back[static_cast<size_t>(i)], h[i]) << i;
  *pinned = Tensor();
  EXPECT_EQ(tracker.Usage(MemoryCategory::kCommBuffers).live_bytes, 0);
}

}  // namespace
}  // namespace pszero
