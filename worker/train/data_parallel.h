// What the data-parallel modes (allreduce, zero1, zero2, zero3) share: the group, the
// stream their collectives run on, the bucket plan over the ParamBuffer's units, the
// fused optimizer over a range, traffic counting, and the ZeRO paper's memory formulas.
//
// Layout: the ParamBuffer is built with units aligned to 16·D elements (SyncPlanFor), so
// every bucket (a run of whole units) cuts into D equal pieces of whole 64-byte lines.
// Rank r of the group owns piece r of every bucket (zero1, zero2) or of every unit
// (zero3), as FSDP owns a slice of every flat parameter; its optimizer state is those
// pieces back to back (the "shard").
//
// Collectives run on the strategy's CollectiveStream (one thread per rank, issue order);
// the group's communicator must not be touched by anyone else once the strategy exists
// (it has a transport of its own: tensor-parallel ops run on the model's thread meanwhile).
// Deterministic communicators make every mode sum each gradient element in ascending rank
// order in fp32, and the optimizer is element-wise, so all modes give the same bits.
//
// bf16 mixed precision (the ZeRO paper's split): the ParamBuffer holds bf16 parameters and
// bf16 gradients only (SyncPlan: fp32_copies false); the gradients are reduced in bf16
// (fp32 accumulation, rounded once), and the optimizer state is the fp32 master weights
// with m and v, over everything (allreduce) or this rank's pieces (zero1/2/3). AdamW
// updates the master and writes its bf16 rounding into the parameters the model reads,
// which zero1/2 then all-gather in bf16. Checkpoints and checksums see the fp32 master.
//
// Device (CUDA) buffers: the optimizer state, the shards and the pools live on the
// ParamBuffer's device, the optimizer runs there, and the collectives take NCCL. Kernels
// run asynchronously on the compute stream, NCCL on a stream of its own: so a hook fences
// the compute stream (kernels::Fence) before it hands a buffer the kernels wrote to a
// collective, and before a buffer the kernels may still read goes back to a pool; a
// collective's result is final when its Work is done (the host waited for it). The
// stream's thread binds the device first. Checkpoint reads and writes stage through host
// vectors.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/memory.h"
#include "common/tensor.h"
#include "kernels/context.h"
#include "kernels/cuda_resources.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/stream.h"
#include "worker/model/param_buffer.h"
#include "worker/train/sync_strategy.h"

namespace pszero::train {

// A non-owning fp32 tensor over n floats at p.
inline Tensor Floats(float* p, int64_t n) { return Tensor::Wrap(p, {n}, DType::kFloat32); }
// A non-owning tensor of n `dtype` elements from element `offset` of base (on `device`).
inline Tensor Elements(void* base, DType dtype, int64_t offset, int64_t n,
                       Device device = Device::kHost) {
  return Tensor::Wrap(static_cast<char*>(base) + offset * static_cast<int64_t>(DTypeSize(dtype)),
                      {n}, dtype, device);
}

// Reusable buffers (fp32, or the dtype given) for what the sharded modes gather and free every step
// (a zero3 layer's parameters, zero2/zero3 gradient buckets): a fresh allocation of tens of MB each
// time costs its page faults again. At most `max_buffers` are held, in use or spare, unless
// more are in use at once; spares that do not fit are freed before a new one is made, so
// the tracked peak stays what the mode needs. Thread-safe (buffers come back from the
// collective stream's thread).
class BufferPool {
 public:
  // Buffers on `device` (host: shared memory, which the intra-host collectives read in
  // place), for requests of at most `largest` elements. On a GPU every buffer has
  // `largest` elements, so that after the first step no buffer is ever freed or made
  // again (cudaFree waits for the whole device, NCCL kernels of other groups included); on
  // the host each is the size asked for.
  BufferPool(MemoryCategory category, MemoryTracker* tracker, int max_buffers,
             DType dtype = DType::kFloat32, Device device = Device::kHost, int64_t largest = 0)
      : category_(category),
        tracker_(tracker),
        max_buffers_(max_buffers),
        dtype_(dtype),
        device_(device),
        fixed_elements_(device == Device::kHost ? 0 : largest) {}
  // An owning tensor of at least n elements (its first n zeroed when `zero`).
  Result<Tensor> Acquire(int64_t n, bool zero);
  void Release(Tensor buffer);

 private:
  MemoryCategory category_;
  MemoryTracker* tracker_;
  int max_buffers_;
  DType dtype_;
  Device device_;
  int64_t fixed_elements_;  // every buffer's size at least (0: as asked)
  std::mutex mu_;
  std::vector<Tensor> spare_;
  int in_use_ = 0;
};

// The ParamBuffer layout and residency a mode needs, fixed before the model is built.
struct SyncPlan {
  int64_t unit_align = 1;
  model::ParamStorage storage;
};
// InvalidArgument for an unknown mode.
Result<SyncPlan> SyncPlanFor(std::string_view mode, int dp_size);

// Model-state bytes of one rank by the ZeRO paper (Ψ = parameters per TP rank, D = group
// size): fp32 16Ψ, 8Ψ+8Ψ/D, 4Ψ+12Ψ/D, 16Ψ/D; bf16 mixed precision 16Ψ, 4Ψ+12Ψ/D,
// 2Ψ+14Ψ/D, 16Ψ/D. ps: the worker's params and grads, 8Ψ in fp32, 4Ψ in bf16 (the servers
// hold the master and the optimizer).
struct ModelStateBytes {
  int64_t params = 0;
  int64_t grads = 0;
  int64_t optimizer = 0;
  std::string formula;
  int64_t total() const { return params + grads + optimizer; }
};
ModelStateBytes PredictModelState(std::string_view mode, int64_t psi, int dp_size, bool bf16);
// Elements each rank sends per step by the paper: 2Ψ(D-1)/D, or 3Ψ(D-1)/D for zero3; ps
// pushes Ψ (and pulls Ψ). With K micro-batches per step (gradient accumulation):
// allreduce, zero1 and ps unchanged, zero2 (K+1)Ψ(D-1)/D, zero3 3KΨ(D-1)/D.
double TheoryElementsPerStep(std::string_view mode, int64_t psi, int dp_size,
                             int micro_batches = 1);
// Bytes per element of that traffic: 2 in bf16 (bf16 gradients and parameters, ps pushes
// and pulls included), else 4; a lone replica ("single") counts 4.
int64_t TrafficElementBytes(std::string_view mode, bool bf16);

struct DataParallelOptions {
  collectives::Communicator* group = nullptr;  // the data-parallel group (required)
  double bucket_mb = 25.0;
  OptimizerOptions optimizer;
  kernels::KernelContext kernels = kernels::KernelContext::Host();
  MemoryTracker* tracker = nullptr;
  std::chrono::milliseconds timeout{120000};
};

// A run of whole units [first_unit, end_unit) = elements [begin, end), reduced together.
struct Bucket {
  int first_unit = 0;
  int end_unit = 0;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t shard_offset = 0;  // where this rank's piece sits in the shard
  int64_t size() const { return end - begin; }
};

class DataParallelSync : public SyncStrategy {
 public:
  ~DataParallelSync() override;
  Result<float> AverageLoss(float loss) override;
  SyncTraffic last_step_traffic() const override { return last_step_; }
  SyncTraffic total_traffic() const override;
  // The fp32 master weights in local layout (gathered when sharded), or the fp32
  // parameters without bf16-only storage.
  Result<std::vector<float>> LocalParams(const model::ParamBuffer& params) override;
  Result<Moments> LocalMoments(const model::ParamBuffer&) override;
  // Keeps the owned part of the moments and the master, and the parameters the model
  // reads (resident parameters: all of them; zero3 overrides).
  Status Restore(const std::vector<float>& params, const Moments& moments) override;

 protected:
  DataParallelSync(model::ParamBuffer* params, const DataParallelOptions& options);

  int rank() const { return options_.group->rank(); }
  int size() const { return options_.group->size(); }
  // Buckets of at least bucket_mb (the last one may be smaller), filled from the last
  // unit backwards as backward produces them; or one bucket per unit.
  void PlanBuckets(bool per_unit);
  int64_t piece(const Bucket& b) const { return b.size() / size(); }
  int64_t shard_numel() const { return params_->numel() / size(); }
  bool bf16_only() const { return params_->bf16_only(); }
  DType grad_dtype() const { return params_->grad_dtype(); }
  // m and v (and, with bf16-only storage, the fp32 master weights, filled with the initial
  // values) over the whole buffer or, `sharded`, this rank's pieces; call after PlanBuckets.
  Status CreateOptimizerState(bool sharded);

  // Runs `fn` on the stream (after everything queued before it).
  collectives::Work Enqueue(std::string name, std::function<Status()> fn);
  // Waits for everything queued.
  Status Synchronize();
  Status Wait(const collectives::Work& work);
  // Fused AdamW over n elements with grad_scale 1/(D·K); gradients of grad_dtype().
  Status Update(int64_t step, float* param, const void* grad, float* m, float* v,
                bf16_t* param_bf16, int64_t n);
  // zero1 / zero2 Step: updates the owned piece of every bucket from `grads` (the piece's
  // gradients at grads + shard_offset, or at the buffer offset when `grads_in_buffer`),
  // then all-gathers every bucket's parameters in place (rank r contributes piece r; bf16
  // ones with bf16-only storage), waits, and refreshes any bf16 copy.
  Status UpdateOwnedPieces(int64_t step, void* grads, bool grads_in_buffer);
  // The whole local-layout vector from this rank's pieces of every bucket (collective),
  // and this rank's pieces cut from a local-layout vector.
  // Host memory on both sides.
  Status GatherPieces(const float* shard, float* local);
  void ScatterPieces(const float* local, float* shard) const;
  // A local-layout host vector into `p` (device()): this rank's pieces when sharded_, else
  // all of it.
  Status RestorePieces(const std::vector<float>& local, float* p) const;
  // The whole local-layout vector gathered from a shard-layout tensor on device()
  // (collective): RestorePieces' inverse.
  Result<std::vector<float>> LocalFromShard(const Tensor& shard);
  // Counts the step's traffic; call at the end of Step.
  void EndStepTraffic();
  // zero2 / zero3: queues the reduce-scatter of a gradient bucket `all` into this rank's
  // piece `mine` of the gradient shard, then runs `done` (which frees `all`). On a step's
  // first micro-batch the result is written into `mine`; on later ones (gradient
  // accumulation) it lands in a buffer of the piece pool and is added into `mine` (fp32
  // arithmetic, rounded once), so the shard holds the sum over the micro-batches.
  collectives::Work EnqueueReduceScatter(std::string name, Tensor all, Tensor mine,
                                         std::function<void()> done);
  // Waits for the kernels enqueued so far (the compute stream; nothing on the host).
  Status Fence() const { return kernels::Fence(options_.kernels); }
  Device device() const { return options_.kernels.device; }
  // n floats of a host vector into a device()-side buffer.
  Status FromHost(const float* host, float* p, int64_t n) const;

  model::ParamBuffer* params_;
  DataParallelOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<int> bucket_of_unit_;
  bool sharded_ = false;  // the optimizer state covers this rank's pieces only
  Tensor master_;         // fp32 master weights (bf16-only storage)
  Tensor m_;
  Tensor v_;

 private:
  // One bucket piece at a time: a later micro-batch's reduce-scatter result (made on first
  // use; comm_buffers). Declared before stream_ so that it outlives the ops queued there.
  std::unique_ptr<BufferPool> piece_pool_;
  // On a GPU, the stream the collective thread adds those results on (non-blocking, made
  // with the pool): on the compute stream the sum would wait behind the backward already
  // queued there, and with it the gathers queued after it (zero3's prefetch).
  std::unique_ptr<kernels::CudaResources> side_cuda_;
  collectives::CollectiveStream stream_;
  SyncTraffic Counters() const;
  SyncTraffic Excluded() const;

  SyncTraffic mark_;           // counters at the end of the last step
  SyncTraffic excluded_mark_;  // Excluded() then
  SyncTraffic last_step_;
  // Traffic of the loss averages (counted on the stream thread, inside the op).
  std::atomic<int64_t> excluded_sent_{0};
  std::atomic<int64_t> excluded_received_{0};
};

}  // namespace pszero::train
