// Device tensors through the communicator: host-staged (any number of ranks on one GPU)
// and NCCL (one GPU per rank, so it needs as many GPUs as ranks). Skipped with a message
// where there is no GPU or no CUDA build.
#include <gtest/gtest.h>

#include <vector>

#include "tests/worker/collective_test_util.h"
#include "worker/collectives/communicator.h"

#ifdef PSZERO_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace pszero::collectives {
namespace {

int DeviceCount() {
#ifdef PSZERO_HAVE_CUDA
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
#else
  return 0;
#endif
}

Tensor HostFilled(int64_t count, float value) {
  Tensor t = *Tensor::Empty({count}, DType::kFloat32, MemoryCategory::kOther, nullptr);
  std::fill_n(t.data<float>(), count, value);
  return t;
}

void RunDeviceAllReduce(bool nccl) {
  const int n = 2;
  const int devices = DeviceCount();
  if (devices == 0) GTEST_SKIP() << "no CUDA device (or a build without CUDA): GPU test skipped";
  if (nccl && devices < n) {
    GTEST_SKIP() << "NCCL needs one GPU per rank: " << devices << " found, " << n << " needed";
  }
  testing::CommRanks ranks(n, {});
  InMemoryKeyValueStore store;
  const int64_t count = (1 << 20) + 3;
  std::vector<Tensor> device(n), back(n);
  testing::CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
#ifdef PSZERO_HAVE_CUDA
    cudaSetDevice(nccl ? r : 0);
#endif
    if (nccl) PSZERO_RETURN_IF_ERROR(ranks.comm(r).EnableNccl(&store, "gpu-test", r));
    PSZERO_ASSIGN_OR_RETURN(
        device[r],
        HostFilled(count, float(r + 1)).Clone(MemoryCategory::kGrads, nullptr, Device::kCuda));
    PSZERO_RETURN_IF_ERROR(ranks.comm(r).AllReduce(device[r], ReduceOp::kSum));
    PSZERO_ASSIGN_OR_RETURN(back[r], device[r].Clone(MemoryCategory::kOther, nullptr));
    return Status::Ok();
  }));
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(back[r].defined());
    EXPECT_EQ(back[r].data<float>()[0], 3.0f);
    EXPECT_EQ(back[r].data<float>()[count - 1], 3.0f);
  }
}

TEST(CollectivesGpuTest, HostStagedAllReduce) { RunDeviceAllReduce(/*nccl=*/false); }
TEST(CollectivesGpuTest, NcclAllReduce) { RunDeviceAllReduce(/*nccl=*/true); }

TEST(CollectivesGpuTest, EnableNcclWithoutCudaIsAnError) {
#ifdef PSZERO_HAVE_CUDA
  GTEST_SKIP() << "CUDA build";
#else
  testing::CommRanks ranks(1, {});
  InMemoryKeyValueStore store;
  Status s = ranks.comm(0).EnableNccl(&store, "x", 0);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("CUDA"), std::string::npos);
#endif
}

}  // namespace
}  // namespace pszero::collectives
