// Device tensors through the communicator: host-staged (any number of ranks on one GPU)
// and NCCL (one GPU per rank, so it needs as many GPUs as ranks). With one GPU, NCCL itself
// still runs every op on a communicator of one rank (the NcclBackend directly: the
// Communicator short-cuts a group of one), and ranks sharing the GPU must fall back to the
// staged path. Skipped with a message where there is no GPU or no CUDA build.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/half.h"
#include "tests/worker/collective_test_util.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/nccl_backend.h"

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

// Ranks that share the one GPU: EnableNccl succeeds and keeps them on the staged path
// (NCCL would refuse: "Duplicate GPU detected"), and every op still gives the right answer.
TEST(CollectivesGpuTest, RanksSharingAGpuFallBackToStaged) {
  if (DeviceCount() == 0)
    GTEST_SKIP() << "no CUDA device (or a build without CUDA): GPU test skipped";
  const int n = 2;
  testing::CommRanks ranks(n, {});
  InMemoryKeyValueStore store;
  const int64_t block = (1 << 16) + 5;
  std::vector<Tensor> reduced(n), gathered(n), exchanged(n);
  testing::CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
#ifdef PSZERO_HAVE_CUDA
    cudaSetDevice(0);
#endif
    PSZERO_RETURN_IF_ERROR(ranks.comm(r).EnableNccl(&store, "shared-gpu", 0));
    PSZERO_ASSIGN_OR_RETURN(
        Tensor in,
        HostFilled(block * n, float(r + 1)).Clone(MemoryCategory::kGrads, nullptr, Device::kCuda));
    PSZERO_ASSIGN_OR_RETURN(
        Tensor out, HostFilled(block, 0.0f).Clone(MemoryCategory::kGrads, nullptr, Device::kCuda));
    PSZERO_RETURN_IF_ERROR(ranks.comm(r).ReduceScatter(in, out, ReduceOp::kSum));
    PSZERO_ASSIGN_OR_RETURN(reduced[r], out.Clone(MemoryCategory::kOther, nullptr));
    PSZERO_ASSIGN_OR_RETURN(Tensor mine,
                            HostFilled(block, float(10 * (r + 1)))
                                .Clone(MemoryCategory::kParams, nullptr, Device::kCuda));
    PSZERO_RETURN_IF_ERROR(ranks.comm(r).AllGather(mine, in));
    PSZERO_ASSIGN_OR_RETURN(gathered[r], in.Clone(MemoryCategory::kOther, nullptr));
    // All-to-all: block p of rank r holds 100 r + p and lands as block r on rank p.
    Tensor blocks = HostFilled(block * n, 0.0f);
    for (int p = 0; p < n; ++p) {
      std::fill_n(blocks.data<float>() + p * block, block, float(100 * r + p));
    }
    PSZERO_ASSIGN_OR_RETURN(Tensor send,
                            blocks.Clone(MemoryCategory::kOther, nullptr, Device::kCuda));
    PSZERO_RETURN_IF_ERROR(ranks.comm(r).AllToAll(send, in));
    PSZERO_ASSIGN_OR_RETURN(exchanged[r], in.Clone(MemoryCategory::kOther, nullptr));
    return Status::Ok();
  }));
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(reduced[r].defined() && gathered[r].defined());
    EXPECT_EQ(reduced[r].data<float>()[0], 3.0f);
    EXPECT_EQ(reduced[r].data<float>()[block - 1], 3.0f);
    EXPECT_EQ(gathered[r].data<float>()[0], 10.0f);
    EXPECT_EQ(gathered[r].data<float>()[block], 20.0f);
    EXPECT_EQ(gathered[r].data<float>()[2 * block - 1], 20.0f);
    ASSERT_TRUE(exchanged[r].defined());
    for (int p = 0; p < n; ++p) {
      EXPECT_EQ(exchanged[r].data<float>()[p * block], float(100 * p + r));
      EXPECT_EQ(exchanged[r].data<float>()[(p + 1) * block - 1], float(100 * p + r));
    }
  }
}

#ifdef PSZERO_HAVE_CUDA
// Host values of `dtype` from doubles (exact in every dtype used here).
Tensor HostOf(DType dtype, const std::vector<double>& v) {
  Tensor t =
      *Tensor::Empty({static_cast<int64_t>(v.size())}, dtype, MemoryCategory::kOther, nullptr);
  for (size_t i = 0; i < v.size(); ++i) {
    switch (dtype) {
      case DType::kFloat32:
        t.data<float>()[i] = static_cast<float>(v[i]);
        break;
      case DType::kBFloat16:
        t.data<bf16_t>()[i].bits = FloatToBf16Bits(static_cast<float>(v[i]));
        break;
      case DType::kInt32:
        t.data<int32_t>()[i] = static_cast<int32_t>(v[i]);
        break;
      case DType::kInt64:
        t.data<int64_t>()[i] = static_cast<int64_t>(v[i]);
        break;
      default:
        ADD_FAILURE() << "dtype not used here";
    }
  }
  return t;
}

// cudaMemset returns before it has run, on the legacy stream, which the backend's
// non-blocking stream does not wait for: wait here so the op cannot race it.
bool ZeroAndWait(const Tensor& t) {
  return cudaMemset(t.data(), 0, t.nbytes()) == cudaSuccess &&
         cudaDeviceSynchronize() == cudaSuccess;
}

bool SameBytes(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data(), b.data(), a.nbytes()) == 0;
}
#endif

// NCCL on a communicator of one rank: every op, dtype and reduction runs through NCCL's
// API on the backend's stream and the deadline-polling wait. On one rank every op is the
// identity, so the device result must equal the input bit for bit.
TEST(NcclBackendGpuTest, EveryOpOnACommunicatorOfOne) {
  if (DeviceCount() == 0)
    GTEST_SKIP() << "no CUDA device (or a build without CUDA): GPU test skipped";
#ifdef PSZERO_HAVE_CUDA
  const auto timeout = std::chrono::milliseconds(30000);
  InMemoryKeyValueStore store;
  ASSERT_TRUE(cudaSetDevice(0) == cudaSuccess);
  Result<bool> distinct = NcclBackend::DistinctGpus(&store, "one", 0, 1, 0, timeout);
  ASSERT_TRUE(distinct.ok()) << distinct.status().ToString();
  EXPECT_TRUE(distinct.value());
  auto backend = NcclBackend::Create(&store, "one", 0, 1, 0, timeout);
  ASSERT_TRUE(backend.ok()) << backend.status().ToString();
  NcclBackend& nccl = *backend.value();
  std::vector<double> values;
  for (int i = 0; i < 4099; ++i) values.push_back((i % 61) - 30);
  for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kInt32, DType::kInt64}) {
    SCOPED_TRACE(std::string(DTypeName(dtype)));
    const Tensor host = HostOf(dtype, values);
    auto dev = [&]() { return *host.Clone(MemoryCategory::kOther, nullptr, Device::kCuda); };
    auto back = [](const Tensor& d) { return *d.Clone(MemoryCategory::kOther, nullptr); };
    const bool floating = dtype == DType::kFloat32 || dtype == DType::kBFloat16;
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
      if (op == ReduceOp::kAvg && !floating) continue;
      Tensor d = dev();
      Status s = nccl.AllReduce(d, op, timeout);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_TRUE(SameBytes(back(d), host)) << "allreduce op " << static_cast<int>(op);
    }
    Tensor in = dev(), out = dev();
    ASSERT_TRUE(ZeroAndWait(out));
    ASSERT_TRUE(nccl.ReduceScatter(in, out, ReduceOp::kSum, timeout).ok());
    EXPECT_TRUE(SameBytes(back(out), host)) << "reduce_scatter";
    ASSERT_TRUE(ZeroAndWait(out));
    ASSERT_TRUE(nccl.AllGather(in, out, timeout).ok());
    EXPECT_TRUE(SameBytes(back(out), host)) << "allgather";
    Tensor b = dev();
    ASSERT_TRUE(nccl.Broadcast(b, 0, timeout).ok());
    EXPECT_TRUE(SameBytes(back(b), host)) << "broadcast";
    ASSERT_TRUE(ZeroAndWait(out));
    const int64_t counts[1] = {in.numel()};
    Status a2a = nccl.AllToAllV(in, counts, out, counts, timeout);
    ASSERT_TRUE(a2a.ok()) << a2a.ToString();
    EXPECT_TRUE(SameBytes(back(out), host)) << "alltoall";
  }
#endif
}

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
