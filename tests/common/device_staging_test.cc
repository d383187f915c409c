// DeviceStager: device buffers staged through pinned host chunks over the UCX transport,
// ranks as threads. Needs a CUDA build and a GPU; skipped (with a message) otherwise,
// after checking that a CPU build refuses to stage.
#include "common/device_staging.h"

#include <gtest/gtest.h>

#ifdef PSZERO_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#include "tests/common/transport_test_util.h"

namespace pszero {
namespace {

using std::chrono::milliseconds;

#ifdef PSZERO_HAVE_CUDA
// One buffer cannot hold chunk k while chunk k-1 is still being sent from it.
TEST(DeviceStagingTest, OneBufferIsRefused) {
  testing::ThreadRanks world(1);
  ASSERT_EQ(world.ranks.size(), 1u);
  StagingOptions options;
  options.depth = 1;
  auto stager = DeviceStager::Create(world.ranks[0].get(), options);
  EXPECT_EQ(stager.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(stager.status().message().find("depth >= 2"), std::string::npos);
}
#endif

TEST(DeviceStagingTest, StagedTransferMatchesByteForByte) {
  testing::ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
#ifndef PSZERO_HAVE_CUDA
  auto stager = DeviceStager::Create(world.ranks[0].get(), {});
  EXPECT_EQ(stager.status().code(), StatusCode::kInvalidArgument);
  GTEST_SKIP() << "CPU build: device staging is CUDA-only";
#else
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    GTEST_SKIP() << "no CUDA device";
  }
  constexpr size_t kBytes = (10 << 20) + 3;  // 11 chunks of 1 MiB, the last one short
  StagingOptions options;
  options.chunk_bytes = 1 << 20;
  options.depth = 2;
  auto host = testing::PatternBuffer(kBytes, 77);
  std::vector<std::byte> back(kBytes);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    PSZERO_ASSIGN_OR_RETURN(auto stager, DeviceStager::Create(&t, options));
    if (stager->NumChunks(kBytes) != 11) return Status::Internal("chunk count");
    void* device = nullptr;
    if (cudaMalloc(&device, kBytes) != cudaSuccess) return Status::Internal("cudaMalloc");
    Status s;
    if (t.rank() == 0) {
      cudaMemcpy(device, host.data(), kBytes, cudaMemcpyHostToDevice);
      s = stager->Send(1, MakeTag(0, 1, 0), device, kBytes, milliseconds(60000));
    } else {
      s = stager->Recv(0, MakeTag(0, 1, 0), device, kBytes, milliseconds(60000));
      cudaMemcpy(back.data(), device, kBytes, cudaMemcpyDeviceToHost);
    }
    cudaFree(device);
    return s;
  });
  EXPECT_ALL_OK(statuses);
  EXPECT_EQ(testing::FirstMismatch(back.data(), kBytes, 77), kBytes);
#endif
}

}  // namespace
}  // namespace pszero
