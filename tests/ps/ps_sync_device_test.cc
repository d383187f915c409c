// PsSync (worker/train/ps_sync.h) with the model's ParamBuffer on a CUDA device: the staged
// path for real. S = 2 servers and D = 2 workers as threads, each worker with its own
// CudaResources, bsp: the replicas end with the same parameters, which equal the servers'
// (LocalMoments checks that) and the host mirror; the bf16 copy on the device is the cast
// of the fp32 parameters; the mirrors are pinned and tracked; the loss falls. Also with
// bf16-only storage (mixed precision): bf16 mirrors (4 bytes per parameter), and the
// device's bf16 parameters are the rounding of the servers' fp32 master.
// Skipped without a CUDA device, and while the model layers cannot live on the device.
// The same staged code runs on host parameters in ps_sync_test (stage_through_host).
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "common/half.h"
#include "common/memory.h"
#include "kernels/cuda_resources.h"
#include "tests/model/model_test_util.h"
#include "tests/ps/ps_test_util.h"
#include "worker/model/data.h"
#include "worker/model/model.h"
#include "worker/train/ps_sync.h"

namespace pszero::testing {
namespace {

using std::chrono::milliseconds;

// One replica whose model lives on the device of `cuda`.
struct DeviceReplica {
  std::unique_ptr<kernels::CudaResources> cuda;
  MemoryTracker tracker;
  model::TensorParallel tp;
  std::unique_ptr<model::Model> model;
  std::unique_ptr<model::DataSource> data;
  model::Batch batch;
};

// Storage of a case: fp32, bf16 with fp32 copies, bf16-only storage (SyncPlanFor("ps")).
enum class Layout { kFp32, kBf16, kBf16Only };

Result<std::unique_ptr<DeviceReplica>> MakeDeviceReplica(Layout precision, uint64_t seed,
                                                         int dp_rank, int dp_size) {
  auto r = std::make_unique<DeviceReplica>();
  PSZERO_ASSIGN_OR_RETURN(r->cuda, kernels::CudaResources::Create(0));
  model::ModelContext ctx;
  ctx.kernels = kernels::KernelContext::Cuda(r->cuda.get());
  ctx.tp = &r->tp;
  ctx.tracker = &r->tracker;
  ctx.bf16 = precision != Layout::kFp32;
  ctx.storage.fp32_copies = precision != Layout::kBf16Only;
  PSZERO_ASSIGN_OR_RETURN(r->model, model::Model::Create(TinyMlp(), ctx, seed));
  model::DataOptions d;
  d.seed = seed;
  d.dp_rank = dp_rank;
  d.dp_size = dp_size;
  PSZERO_ASSIGN_OR_RETURN(r->data, model::DataSource::Create(TinyMlp(), d));
  return r;
}

// A device tensor's elements, copied to the host.
template <typename T>
Result<std::vector<T>> Download(const Tensor& t) {
  std::vector<T> out(static_cast<size_t>(t.numel()));
  PSZERO_RETURN_IF_ERROR(Tensor::Wrap(out.data(), {t.numel()}, t.dtype()).CopyFrom(t));
  return out;
}

class PsSyncDeviceTest : public ::testing::TestWithParam<Layout> {};

TEST_P(PsSyncDeviceTest, DeviceReplicasStayInStepWithTheServersAndLossFalls) {
  if (kernels::CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  const Layout precision = GetParam();
  {
    auto probe = MakeDeviceReplica(precision, 3, 0, 1);
    ASSERT_TRUE(probe.ok()) << probe.status().ToString();
    ASSERT_EQ((*probe)->model->params().sync_params().device(), Device::kCuda);
  }
  const int S = 2, D = 2, steps = 8;
  ps::PsServerOptions so;
  so.slice_bytes = 8192;  // several slices, crossing unit boundaries
  so.consistency = ps::Consistency::kBsp;
  so.optimizer = ps::OptimizerKind::kAdamW;
  so.adamw.lr = 1e-2f;
  std::vector<std::vector<float>> losses(D), finals(D);
  PsRun run = RunPsCluster(S, D, so, [&](int w, Transport& t) -> Status {
    PSZERO_ASSIGN_OR_RETURN(auto r, MakeDeviceReplica(precision, 3, w, D));
    model::ParamBuffer& params = r->model->params();
    train::PsSyncOptions o = SyncOptions(w, D, S);
    o.kernels = r->model->context().kernels;
    o.tracker = &r->tracker;
    PSZERO_ASSIGN_OR_RETURN(auto sync, train::PsSync::Create(&params, &t, o, so.slice_bytes));
    const int64_t n = params.numel();
    const int64_t per = params.bf16_only() ? 4 : 8;  // bytes of pinned mirror per parameter
    if (!sync->staged() || sync->staging_bytes() != per * n ||
        r->tracker.Usage(MemoryCategory::kCommBuffers).live_bytes != per * n) {
      return Status::Internal("device parameters not staged through " + std::to_string(per) +
                              " bytes per parameter");
    }
    for (int step = 0; step < steps; ++step) {
      PSZERO_RETURN_IF_ERROR(r->data->Next(step, &r->batch));
      PSZERO_RETURN_IF_ERROR(params.ZeroGrads());
      PSZERO_ASSIGN_OR_RETURN(float loss, r->model->Forward(r->batch, sync.get()));
      PSZERO_RETURN_IF_ERROR(r->model->Backward(sync.get()));
      PSZERO_RETURN_IF_ERROR(sync->Step(step + 1));
      losses[static_cast<size_t>(w)].push_back(loss);
    }
    PSZERO_RETURN_IF_ERROR(sync->Flush());
    PSZERO_RETURN_IF_ERROR(r->cuda->Synchronize());
    // The servers' parameters are the host mirror's (LocalMoments fails otherwise), which
    // are the device's.
    PSZERO_RETURN_IF_ERROR(sync->LocalMoments(params).status());
    PSZERO_ASSIGN_OR_RETURN(std::vector<float> mirror, sync->LocalParams(params));
    // bf16-only: LocalParams is the servers' master, which the device holds the rounding of.
    std::vector<float> device = mirror;
    if (!params.bf16_only()) {
      PSZERO_ASSIGN_OR_RETURN(device, Download<float>(params.params()));
    }
    if (mirror != device) return Status::Internal("device parameters differ from the mirror");
    if (params.has_bf16()) {
      PSZERO_ASSIGN_OR_RETURN(std::vector<bf16_t> b, Download<bf16_t>(params.params_bf16()));
      for (int64_t i = 0; i < n; ++i) {
        if (b[static_cast<size_t>(i)].bits != FloatToBf16Bits(device[static_cast<size_t>(i)])) {
          return Status::Internal("bf16 copy stale at element " + std::to_string(i));
        }
      }
    }
    finals[static_cast<size_t>(w)] = std::move(device);
    return Status::Ok();
  });
  EXPECT_ALL_OK(run.workers);
  for (const auto& s : run.servers) EXPECT_EQ(s.rejected, 0) << s.last_error;
  EXPECT_TRUE(finals[0] == finals[1]) << "replicas out of step";
  for (int w = 0; w < D; ++w) {
    const auto& l = losses[static_cast<size_t>(w)];
    ASSERT_EQ(l.size(), static_cast<size_t>(steps));
    EXPECT_LT(l.back(), l.front()) << "worker " << w << " loss did not fall";
  }
}

INSTANTIATE_TEST_SUITE_P(Precision, PsSyncDeviceTest,
                         ::testing::Values(Layout::kFp32, Layout::kBf16, Layout::kBf16Only),
                         [](const auto& info) {
                           return info.param == Layout::kFp32   ? "Fp32"
                                  : info.param == Layout::kBf16 ? "Bf16"
                                                                : "Bf16Only";
                         });

}  // namespace
}  // namespace pszero::testing
