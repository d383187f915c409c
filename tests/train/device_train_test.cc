// Training on a CUDA device (label gpu) against the same training on the host: the model's
// layers, the single-replica optimizer, every data-parallel mode and tensor parallelism.
// Without a CUDA device (a CPU build, or no GPU here) every test is skipped saying so.
//  * one replica, in process: GPT and MLP, fp32 and bf16, 5 steps on cuda track the CPU's
//    losses and end at the CPU's parameters within a stated tolerance;
//  * pszero-launch, 2 workers: allreduce, zero1, zero2, zero3 with --deterministic end
//    with one sha256 on cuda (as on the host), and their losses — and ps's (1 server, bsp;
//    its AdamW runs on the server's CPU, so its bits may differ from the GPU's AdamW in
//    the last place) — track the host's;
//  * pszero-launch --tp 2 on cuda tracks --tp 2 on the host;
//  * --grad-accum 2 with --deterministic on cuda: allreduce = zero1 and zero2 = zero3 bit
//    for bit (docs/sync.md, "Gradient accumulation"), every mode tracking the host;
//  * --recompute selective and full on cuda give --recompute none's sha256 (fp32, bf16;
//    zero3, and TP 2);
// On a machine with one GPU the workers share it, so their collectives take the staged
// path (NCCL refuses two ranks on one GPU); with a GPU per worker they take NCCL.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda_resources.h"
#include "tests/model/model_test_util.h"
#include "tests/support/job_output.h"
#include "tests/support/subprocess.h"
#include "worker/train/training_rank.h"

namespace pszero::train {
namespace {

using ::pszero::testing::BinaryPath;
using ::pszero::testing::PrintedLosses;
using ::pszero::testing::PrintedSha;
using ::pszero::testing::ProcessResult;
using ::pszero::testing::RunProcess;

class DeviceTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kernels::CudaDeviceCount() == 0) {
      GTEST_SKIP() << "no CUDA device present (CPU build or no GPU): device training not run";
    }
  }
};

struct Outcome {
  std::vector<float> losses;
  std::vector<float> params;
};

Result<Outcome> TrainOneReplica(const model::ModelConfig& config, const std::string& device,
                                const std::string& precision) {
  TrainFlags f;
  f.model = "custom";
  f.device = device;
  f.precision = precision;
  f.steps = 5;
  f.seed = 21;
  std::unique_ptr<kernels::CudaResources> cuda;
  if (device == "cuda") {
    PSZERO_ASSIGN_OR_RETURN(cuda, kernels::CudaResources::Create(0));
  }
  MemoryTracker tracker;
  PSZERO_ASSIGN_OR_RETURN(
      std::unique_ptr<TrainingRank> run,
      BuildTrainingRank(config, f, nullptr, nullptr, &tracker, nullptr, cuda.get()));
  Outcome out;
  for (int64_t s = 0; s < f.steps; ++s) {
    PSZERO_ASSIGN_OR_RETURN(StepResult r, run->trainer->RunStep(s));
    out.losses.push_back(r.loss);
  }
  PSZERO_ASSIGN_OR_RETURN(out.params, run->sync->LocalParams(run->model->params()));
  if (device == "cuda") {
    // The model state lives on the device, not on the host.
    if (tracker.Usage(MemoryCategory::kParams, Device::kCuda).live_bytes == 0 ||
        tracker.Usage(MemoryCategory::kParams, Device::kHost).live_bytes != 0) {
      return Status::Internal("parameters are not on the device");
    }
  }
  return out;
}

// Largest |a - b| / (|b| + floor) over the two vectors.
double MaxRelDiff(const std::vector<float>& a, const std::vector<float>& b, double floor) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / (std::abs(b[i]) + floor));
  }
  return worst;
}

TEST_F(DeviceTrainTest, OneReplicaOnCudaTracksTheHost) {
  for (const model::ModelConfig& config : {testing::SmallGpt(), testing::SmallMlp()}) {
    for (const std::string precision : {"fp32", "bf16"}) {
      SCOPED_TRACE(config.name + " " + precision);
      Result<Outcome> cpu = TrainOneReplica(config, "cpu", precision);
      Result<Outcome> gpu = TrainOneReplica(config, "cuda", precision);
      ASSERT_TRUE(cpu.ok()) << cpu.status().ToString();
      ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
      ASSERT_EQ(gpu->params.size(), cpu->params.size());
      // fp32: other summation orders (cuBLAS, block reductions) over 5 steps of AdamW;
      // bf16: operands rounded to 8 bits on both sides, in different places.
      const double tol = precision == "fp32" ? 1e-4 : 2e-2;
      EXPECT_LT(MaxRelDiff(gpu->losses, cpu->losses, 1e-3), tol);
      EXPECT_LT(MaxRelDiff(gpu->params, cpu->params, 1e-2), precision == "fp32" ? 1e-3 : 5e-2);
    }
  }
}

const std::vector<std::string> kModel = {"--model", "custom", "--layers", "2",  "--d-model", "64",
                                         "--heads", "4",      "--seq",    "16", "--batch",   "4",
                                         "--vocab", "64",     "--seed",   "5",  "--steps",   "4"};

std::vector<double> Losses(const std::string& out) {
  std::vector<double> losses;
  for (const auto& [step, loss] : PrintedLosses(out)) losses.push_back(std::stod(loss));
  return losses;
}

ProcessResult Launch(std::vector<std::string> extra, const std::vector<std::string>& env = {}) {
  // Short deadlines: the GPU session has minutes, and one stuck job must not eat them.
  std::vector<std::string> argv = {BinaryPath("pszero-launch"), "--timeout", "60"};
  argv.insert(argv.end(), kModel.begin(), kModel.end());
  argv.insert(argv.end(), extra.begin(), extra.end());
  return RunProcess(argv, std::chrono::seconds(90), env);
}

TEST_F(DeviceTrainTest, EveryModeOnCudaAgreesBitForBitAndTracksTheHost) {
  const ProcessResult host = Launch({"--workers", "2", "--sync", "allreduce", "--deterministic"});
  ASSERT_EQ(host.exit_code, 0) << host.err;
  const std::vector<double> host_losses = Losses(host.out);
  ASSERT_EQ(host_losses.size(), 4u) << host.out;
  std::vector<std::string> shas;
  for (const std::string mode : {"allreduce", "zero1", "zero2", "zero3", "ps"}) {
    SCOPED_TRACE(mode);
    std::vector<std::string> args = {"--workers",       "2",        "--sync", mode,
                                     "--deterministic", "--device", "cuda"};
    if (mode == "ps") args.insert(args.end(), {"--servers", "1"});
    const ProcessResult r = Launch(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_FALSE(PrintedSha(r.out).empty()) << r.out;
    if (mode != "ps") shas.push_back(PrintedSha(r.out));
    const std::vector<double> losses = Losses(r.out);
    ASSERT_EQ(losses.size(), host_losses.size()) << r.out;
    for (size_t i = 0; i < losses.size(); ++i) {
      EXPECT_NEAR(losses[i], host_losses[i], 1e-3 * std::abs(host_losses[i])) << "step " << i + 1;
    }
  }
  for (const std::string& sha : shas) EXPECT_EQ(sha, shas[0]);
}

TEST_F(DeviceTrainTest, GradAccumOnCudaKeepsTheFamiliesBitForBitAndTracksTheHost) {
  const ProcessResult host =
      Launch({"--workers", "2", "--sync", "allreduce", "--deterministic", "--grad-accum", "2"});
  ASSERT_EQ(host.exit_code, 0) << host.err;
  const std::vector<double> host_losses = Losses(host.out);
  ASSERT_EQ(host_losses.size(), 4u) << host.out;
  std::vector<std::string> shas;
  for (const std::string mode : {"allreduce", "zero1", "zero2", "zero3"}) {
    SCOPED_TRACE(mode);
    const ProcessResult r = Launch({"--workers", "2", "--sync", mode, "--deterministic",
                                    "--grad-accum", "2", "--device", "cuda"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    shas.push_back(PrintedSha(r.out));
    ASSERT_FALSE(shas.back().empty()) << r.out;
    const std::vector<double> losses = Losses(r.out);
    ASSERT_EQ(losses.size(), host_losses.size()) << r.out;
    for (size_t i = 0; i < losses.size(); ++i) {
      EXPECT_NEAR(losses[i], host_losses[i], 1e-3 * std::abs(host_losses[i])) << "step " << i + 1;
    }
  }
  EXPECT_EQ(shas[1], shas[0]) << "zero1 = allreduce";
  EXPECT_EQ(shas[3], shas[2]) << "zero3 = zero2";
}

// Activation recompute on the device: the re-run forward (selective: the attention
// probabilities; full: the block) gives the bits of --recompute none, as on the host, in
// zero3 (parameters gathered for the re-run) and with TP (its all-reduce repeated).
TEST_F(DeviceTrainTest, RecomputeOnCudaIsBitIdenticalToNone) {
  for (const std::string precision : {"fp32", "bf16"}) {
    const std::vector<std::vector<std::string>> layouts = {
        {"--workers", "2", "--sync", "zero3", "--deterministic"}, {"--workers", "2", "--tp", "2"}};
    for (const std::vector<std::string>& layout : layouts) {
      std::string shas[3];
      int i = 0;
      for (const std::string recompute : {"none", "selective", "full"}) {
        SCOPED_TRACE(precision + " " + layout[3] + " " + recompute);
        std::vector<std::string> args = layout;
        args.insert(args.end(),
                    {"--precision", precision, "--recompute", recompute, "--device", "cuda"});
        const ProcessResult r = Launch(args);
        ASSERT_EQ(r.exit_code, 0) << r.err;
        shas[i] = PrintedSha(r.out);
        ASSERT_FALSE(shas[i].empty()) << r.out;
        EXPECT_EQ(shas[i], shas[0]) << recompute << " against none";
        ++i;
      }
    }
  }
}

TEST_F(DeviceTrainTest, TensorParallelOnCudaTracksTheHost) {
  const ProcessResult host = Launch({"--workers", "2", "--tp", "2"});
  ASSERT_EQ(host.exit_code, 0) << host.err;
  const ProcessResult gpu = Launch({"--workers", "2", "--tp", "2", "--device", "cuda"});
  ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
  const std::vector<double> a = Losses(host.out), b = Losses(gpu.out);
  ASSERT_EQ(a.size(), 4u) << host.out;
  ASSERT_EQ(b.size(), a.size()) << gpu.out;
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-3 * std::abs(a[i]));
}

// NCCL in training on a one-GPU machine: with a NCCL host id per worker, NCCL accepts the
// two workers on the one GPU (over its socket transport), so the DP group's and the TP
// group's device collectives go through NCCL, not the staged path. The losses must track
// the host's run of the same job.
TEST_F(DeviceTrainTest, NcclBetweenWorkersSharingTheGpuTracksTheHost) {
  const std::vector<std::string> nccl_env = {"PSZERO_NCCL_HOST_PER_WORKER=1"};
  struct Job {
    std::vector<std::string> args;
    std::string group;
  };
  const std::vector<Job> jobs = {
      {{"--workers", "2", "--sync", "allreduce"}, "dp"},
      {{"--workers", "2", "--sync", "zero2"}, "dp"},
      {{"--workers", "2", "--sync", "zero2", "--grad-accum", "2"}, "dp"},
      {{"--workers", "2", "--sync", "zero3"}, "dp"},
      // Later micro-batches add their reduce-scatter results on the side stream.
      {{"--workers", "2", "--sync", "zero3", "--grad-accum", "2"}, "dp"},
      {{"--workers", "2", "--sync", "zero2", "--grad-accum", "2", "--precision", "bf16"}, "dp"},
      {{"--workers", "2", "--tp", "2"}, "tp"},
  };
  for (const Job& job : jobs) {
    std::string trace;
    for (const std::string& a : job.args) trace += a + " ";
    SCOPED_TRACE(trace);
    const ProcessResult host = Launch(job.args);
    ASSERT_EQ(host.exit_code, 0) << host.err;
    std::vector<std::string> args = job.args;
    args.insert(args.end(), {"--device", "cuda"});
    const ProcessResult gpu = Launch(args, nccl_env);
    ASSERT_EQ(gpu.exit_code, 0) << gpu.err;
    EXPECT_NE(gpu.err.find("NCCL on the " + job.group + " group (2 ranks)"), std::string::npos)
        << gpu.err;
    const std::vector<double> a = Losses(host.out), b = Losses(gpu.out);
    ASSERT_EQ(a.size(), 4u) << host.out;
    ASSERT_EQ(b.size(), a.size()) << gpu.out;
    for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(b[i], a[i], 1e-3 * std::abs(a[i]));
  }
}

}  // namespace
}  // namespace pszero::train
