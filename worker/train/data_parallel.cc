#include "worker/train/data_parallel.h"

#include <algorithm>

#include "common/trace.h"
#include "kernels/cast.h"
#include "kernels/optimizer.h"
#include "kernels/reduce.h"

namespace pszero::train {

Result<SyncPlan> SyncPlanFor(std::string_view mode, int dp_size) {
  SyncPlan plan;
  // 16 floats: a piece of every unit starts on a 64-byte line.
  plan.unit_align = 16 * static_cast<int64_t>(std::max(dp_size, 1));
  if (mode == "single") return plan;
  // bf16 compute: bf16 parameters and gradients only; the strategy (ps: the servers) keeps
  // the fp32 master.
  plan.storage.fp32_copies = false;
  if (mode == "allreduce" || mode == "zero1" || mode == "ps") return plan;
  if (mode == "zero2") {
    plan.storage.grads_resident = false;
    return plan;
  }
  if (mode == "zero3") {
    plan.storage.params_resident = false;
    plan.storage.grads_resident = false;
    return plan;
  }
  return Status::InvalidArgument("--sync " + std::string(mode) +
                                 ": not one of allreduce, zero1, zero2, zero3, ps");
}

Result<Tensor> BufferPool::Acquire(int64_t n, bool zero) {
  Tensor out;
  {
    std::lock_guard lock(mu_);
    // The smallest spare that fits.
    int best = -1;
    for (int i = 0; i < static_cast<int>(spare_.size()); ++i) {
      if (spare_[i].numel() >= n && (best < 0 || spare_[i].numel() < spare_[best].numel()))
        best = i;
    }
    if (best >= 0) {
      out = std::move(spare_[best]);
      spare_.erase(spare_.begin() + best);
    } else {
      // Make room: spares that do not fit go first.
      while (!spare_.empty() && in_use_ + static_cast<int>(spare_.size()) >= max_buffers_) {
        spare_.erase(spare_.begin());
      }
    }
    ++in_use_;
  }
  if (!out.defined()) {
    // Host: shared memory, the intra-host collectives read it in place.
    const int64_t size = std::max(n, fixed_elements_);
    Result<Tensor> t = device_ == Device::kHost
                           ? Tensor::EmptyShared({size}, dtype_, category_, tracker_)
                           : Tensor::Empty({size}, dtype_, category_, tracker_, device_);
    if (!t.ok()) {
      std::lock_guard lock(mu_);
      --in_use_;
      return t.status();
    }
    out = std::move(t).value();
  }
  if (zero) PSZERO_RETURN_IF_ERROR(Tensor::Wrap(out.data(), {n}, dtype_, device_).ZeroFill());
  return out;
}

void BufferPool::Release(Tensor buffer) {
  std::lock_guard lock(mu_);
  --in_use_;
  if (buffer.defined() && in_use_ + static_cast<int>(spare_.size()) < max_buffers_) {
    spare_.push_back(std::move(buffer));
  }
}

ModelStateBytes PredictModelState(std::string_view mode, int64_t psi, int dp_size, bool bf16) {
  const int64_t d = std::max(dp_size, 1);
  ModelStateBytes b;
  // Per parameter: compute params, grads, optimizer (fp32: m, v; bf16: master, m, v).
  const int64_t p = bf16 ? 2 : 4;
  const int64_t g = bf16 ? 2 : 4;
  const int64_t k = bf16 ? 12 : 8;
  if (mode == "zero1") {
    b = {p * psi, g * psi, k * psi / d, ""};
  } else if (mode == "zero2") {
    b = {p * psi, g * psi / d, k * psi / d, ""};
  } else if (mode == "zero3") {
    b = {p * psi / d, g * psi / d, k * psi / d, ""};
  } else if (mode == "ps") {
    b = {p * psi, g * psi, 0, ""};  // the master and the optimizer live on the servers
  } else {                          // allreduce, single
    b = {p * psi, g * psi, k * psi, ""};
  }
  if (mode == "zero1") {
    b.formula = bf16 ? "4Ψ+12Ψ/D" : "8Ψ+8Ψ/D";
  } else if (mode == "zero2") {
    b.formula = bf16 ? "2Ψ+14Ψ/D" : "4Ψ+12Ψ/D";
  } else if (mode == "zero3") {
    b.formula = "16Ψ/D";
  } else if (mode == "ps") {
    b.formula = bf16 ? "4Ψ" : "8Ψ";
  } else {
    b.formula = "16Ψ";
  }
  return b;
}

double TheoryElementsPerStep(std::string_view mode, int64_t psi, int dp_size, int micro_batches) {
  if (mode == "ps") return static_cast<double>(psi);  // push Ψ (and pull Ψ back)
  if (mode == "single" || dp_size <= 1) return 0.0;
  const double frac = static_cast<double>(dp_size - 1) / dp_size;
  const double k = std::max(micro_batches, 1);
  // zero2 reduce-scatters every micro-batch, zero3 also gathers for every one; the others
  // exchange the accumulated gradients once.
  const double times = mode == "zero3" ? 3.0 * k : mode == "zero2" ? k + 1.0 : 2.0;
  return times * static_cast<double>(psi) * frac;
}

int64_t TrafficElementBytes(std::string_view mode, bool bf16) {
  return bf16 && mode != "single" ? 2 : 4;
}

DataParallelSync::DataParallelSync(model::ParamBuffer* params, const DataParallelOptions& options)
    : params_(params), options_(options) {
  mark_ = {options_.group->bytes_sent(), options_.group->bytes_received()};
  // The stream's thread allocates and copies for the device too.
  if (device() != Device::kHost) {
    const kernels::KernelContext k = options_.kernels;
    Enqueue("bind the device", [k] { return kernels::BindThread(k); });
  }
}

Status DataParallelSync::FromHost(const float* host, float* p, int64_t n) const {
  return CopyElements(p, device(), host, Device::kHost, n, DType::kFloat32);
}

DataParallelSync::~DataParallelSync() = default;

void DataParallelSync::PlanBuckets(bool per_unit) {
  const auto& units = params_->units();
  const int n = static_cast<int>(units.size());
  const int64_t limit = std::max<int64_t>(
      1, static_cast<int64_t>(options_.bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  buckets_.clear();
  bucket_of_unit_.assign(n, -1);
  int end = n;
  while (end > 0) {
    int first = end - 1;
    if (!per_unit) {
      while (first > 0 && units[end - 1].end - units[first].begin < limit) --first;
    }
    Bucket b;
    b.first_unit = first;
    b.end_unit = end;
    b.begin = units[first].begin;
    b.end = units[end - 1].end;
    buckets_.push_back(b);
    end = first;
  }
  // Shard offsets in buffer order (the shard is this rank's pieces back to back).
  std::vector<int> order(buckets_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return buckets_[a].begin < buckets_[b].begin; });
  int64_t off = 0;
  for (int i : order) {
    buckets_[i].shard_offset = off;
    off += piece(buckets_[i]);
  }
  for (size_t i = 0; i < buckets_.size(); ++i) {
    for (int u = buckets_[i].first_unit; u < buckets_[i].end_unit; ++u) {
      bucket_of_unit_[u] = static_cast<int>(i);
    }
  }
}

collectives::Work DataParallelSync::Enqueue(std::string name, std::function<Status()> fn) {
  return stream_.Enqueue(std::move(name), std::move(fn));
}

collectives::Work DataParallelSync::EnqueueReduceScatter(std::string name, Tensor all, Tensor mine,
                                                         std::function<void()> done) {
  collectives::Communicator* group = options_.group;
  if (first_micro_batch()) {
    return Enqueue(std::move(name), [group, all, mine, done]() mutable {
      Status s = group->ReduceScatter(all, mine, collectives::ReduceOp::kSum);
      done();
      return s;
    });
  }
  if (piece_pool_ == nullptr) {
    int64_t largest = 0;
    for (const Bucket& b : buckets_) largest = std::max(largest, piece(b));
    piece_pool_ = std::make_unique<BufferPool>(MemoryCategory::kCommBuffers, options_.tracker, 1,
                                               grad_dtype(), device(), largest);
  }
  if (device() != Device::kHost && side_cuda_ == nullptr) {
    Result<std::unique_ptr<kernels::CudaResources>> side = kernels::CudaResources::Create(
        options_.kernels.cuda->device(), kernels::CudaResources::StreamKind::kNonBlocking);
    if (!side.ok()) {
      const Status s = side.status();
      return Enqueue(std::move(name), [s, done] {
        done();
        return s;
      });
    }
    side_cuda_ = std::move(side).value();
  }
  BufferPool* pool = piece_pool_.get();
  // On the stream's thread: the host kernels run there single-threaded (the sum's bits do
  // not depend on the thread count); a device's run on the side stream and are waited for
  // before the buffer goes back to the pool. Its inputs need no device-side ordering: the
  // reduce-scatter has finished `out` when it returns, and `mine` is written only by these
  // ops (the first micro-batch's included) and read by Step after Synchronize.
  const kernels::KernelContext k = device() == Device::kHost
                                       ? kernels::KernelContext::Host(1, options_.kernels.isa)
                                       : kernels::KernelContext::Cuda(side_cuda_.get());
  return Enqueue(std::move(name) + " (accumulate)", [group, all, mine, done, pool, k]() mutable {
    Result<Tensor> buffer = pool->Acquire(mine.numel(), /*zero=*/false);
    if (!buffer.ok()) {
      done();
      return buffer.status();
    }
    Tensor out = Elements(buffer->data(), mine.dtype(), 0, mine.numel(), mine.device());
    Status s = group->ReduceScatter(all, out, collectives::ReduceOp::kSum);
    done();
    if (s.ok()) {
      s = kernels::Accumulate(out.data(), out.dtype(), mine.data(), mine.dtype(), mine.numel(), k);
    }
    if (s.ok()) s = kernels::Fence(k);
    pool->Release(std::move(buffer).value());
    return s;
  });
}

Status DataParallelSync::Synchronize() {
  TraceScope scope("wait sync stream", "wait");
  return stream_.Synchronize(options_.timeout);
}

Status DataParallelSync::Wait(const collectives::Work& work) { return work.Wait(options_.timeout); }

Status DataParallelSync::Update(int64_t step, float* param, const void* grad, float* m, float* v,
                                bf16_t* param_bf16, int64_t n) {
  TraceScope scope("optimizer", "compute");
  kernels::AdamWParams hp = options_.optimizer.adamw;
  hp.step = step;
  // The mean over the group and the step's micro-batches (1/D when K = 1, as before).
  hp.grad_scale = 1.0f / (static_cast<float>(size()) * static_cast<float>(micro_batches()));
  return kernels::AdamW(hp, param, grad, grad_dtype(), m, v, param_bf16, n, options_.kernels);
}

Status DataParallelSync::CreateOptimizerState(bool sharded) {
  if (params_->bf16() && !bf16_only()) {
    return Status::Internal(std::string(name()) +
                            ": bf16 compute needs the bf16-only storage of SyncPlanFor");
  }
  sharded_ = sharded;
  const int64_t n = sharded ? shard_numel() : params_->numel();
  for (Tensor* t : {&m_, &v_}) {
    PSZERO_ASSIGN_OR_RETURN(*t, Tensor::Zeros({n}, DType::kFloat32, MemoryCategory::kOptimizer,
                                              options_.tracker, device()));
  }
  if (!bf16_only()) return Status::Ok();
  PSZERO_ASSIGN_OR_RETURN(master_, Tensor::Empty({n}, DType::kFloat32, MemoryCategory::kOptimizer,
                                                 options_.tracker, device()));
  float* master = master_.data<float>();
  if (!sharded) return params_->FillInitialValues(0, n, master);
  for (const Bucket& b : buckets_) {
    const int64_t begin = b.begin + rank() * piece(b);
    PSZERO_RETURN_IF_ERROR(
        params_->FillInitialValues(begin, begin + piece(b), master + b.shard_offset));
  }
  return Status::Ok();
}

Status DataParallelSync::UpdateOwnedPieces(int64_t step, void* grads, bool grads_in_buffer) {
  const DType gt = grad_dtype();
  for (const Bucket& b : buckets_) {
    const int64_t at = b.begin + rank() * piece(b);
    const Tensor g = Elements(grads, gt, grads_in_buffer ? at : b.shard_offset, piece(b));
    float* m = m_.data<float>() + b.shard_offset;
    float* v = v_.data<float>() + b.shard_offset;
    if (bf16_only()) {
      PSZERO_RETURN_IF_ERROR(Update(step, master_.data<float>() + b.shard_offset, g.data(), m, v,
                                    params_->params_bf16().data<bf16_t>() + at, piece(b)));
    } else {
      PSZERO_RETURN_IF_ERROR(
          Update(step, params_->params().data<float>() + at, g.data(), m, v, nullptr, piece(b)));
    }
  }
  // Every bucket's parameters from their owners' pieces, once the updates have run.
  PSZERO_RETURN_IF_ERROR(Fence());
  const DType pt = params_->param_dtype();
  void* p = params_->sync_params().data();
  collectives::Communicator* group = options_.group;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    Tensor mine = Elements(p, pt, b.begin + rank() * piece(b), piece(b), device());
    Tensor all = Elements(p, pt, b.begin, b.size(), device());
    Enqueue("allgather params bucket " + std::to_string(i),
            [group, mine, all] { return group->AllGather(mine, all); });
  }
  PSZERO_RETURN_IF_ERROR(Synchronize());
  return params_->RefreshBf16();
}

Result<std::vector<float>> DataParallelSync::LocalParams(const model::ParamBuffer& params) {
  if (!bf16_only()) return SyncStrategy::LocalParams(params);
  return sharded_ ? LocalFromShard(master_) : HostFloats(master_);
}

Result<Moments> DataParallelSync::LocalMoments(const model::ParamBuffer&) {
  if (!sharded_) return CopyMoments(m_, v_);
  Moments out;
  PSZERO_ASSIGN_OR_RETURN(out.m, LocalFromShard(m_));
  PSZERO_ASSIGN_OR_RETURN(out.v, LocalFromShard(v_));
  return out;
}

Status DataParallelSync::RestorePieces(const std::vector<float>& local, float* p) const {
  if (!sharded_) return FromHost(local.data(), p, params_->numel());
  std::vector<float> shard(static_cast<size_t>(shard_numel()));
  ScatterPieces(local.data(), shard.data());
  return FromHost(shard.data(), p, shard_numel());
}

Status DataParallelSync::Restore(const std::vector<float>& params, const Moments& moments) {
  PSZERO_RETURN_IF_ERROR(RestorePieces(moments.m, m_.data<float>()));
  PSZERO_RETURN_IF_ERROR(RestorePieces(moments.v, v_.data<float>()));
  if (!bf16_only()) {
    PSZERO_RETURN_IF_ERROR(
        FromHost(params.data(), params_->params().data<float>(), params_->numel()));
    return params_->RefreshBf16();
  }
  PSZERO_RETURN_IF_ERROR(RestorePieces(params, master_.data<float>()));
  // The parameters the model reads: every one, rounded.
  std::vector<bf16_t> rounded(params.size());
  PSZERO_RETURN_IF_ERROR(kernels::Cast(params.data(), DType::kFloat32, rounded.data(),
                                       DType::kBFloat16, params_->numel(),
                                       kernels::KernelContext::Host(options_.kernels.threads)));
  return CopyElements(params_->params_bf16().data(), device(), rounded.data(), Device::kHost,
                      params_->numel(), DType::kBFloat16);
}

Status DataParallelSync::GatherPieces(const float* shard, float* local) {
  collectives::Communicator* group = options_.group;
  for (size_t i = 0; i < buckets_.size(); ++i) {
    const Bucket& b = buckets_[i];
    Tensor mine = Floats(const_cast<float*>(shard) + b.shard_offset, piece(b));
    Tensor all = Floats(local + b.begin, b.size());
    Enqueue("allgather shard " + std::to_string(i),
            [group, mine, all] { return group->AllGather(mine, all); });
  }
  return Synchronize();
}

void DataParallelSync::ScatterPieces(const float* local, float* shard) const {
  for (const Bucket& b : buckets_) {
    std::copy(local + b.begin + rank() * piece(b), local + b.begin + (rank() + 1) * piece(b),
              shard + b.shard_offset);
  }
}

Result<std::vector<float>> DataParallelSync::LocalFromShard(const Tensor& shard) {
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> pieces, HostFloats(shard));
  std::vector<float> local(static_cast<size_t>(params_->numel()));
  PSZERO_RETURN_IF_ERROR(GatherPieces(pieces.data(), local.data()));
  return local;
}

SyncTraffic DataParallelSync::Counters() const {
  return {options_.group->bytes_sent(), options_.group->bytes_received()};
}

SyncTraffic DataParallelSync::Excluded() const {
  return {excluded_sent_.load(), excluded_received_.load()};
}

void DataParallelSync::EndStepTraffic() {
  const SyncTraffic now = Counters();
  const SyncTraffic ex = Excluded();
  last_step_ = {now.sent - mark_.sent - (ex.sent - excluded_mark_.sent),
                now.received - mark_.received - (ex.received - excluded_mark_.received)};
  mark_ = now;
  excluded_mark_ = ex;
}

SyncTraffic DataParallelSync::total_traffic() const {
  const SyncTraffic now = Counters();
  const SyncTraffic ex = Excluded();
  return {now.sent - ex.sent, now.received - ex.received};
}

Result<float> DataParallelSync::AverageLoss(float loss) {
  if (size() == 1) return loss;
  float value = loss;
  PSZERO_RETURN_IF_ERROR(Wait(Enqueue("loss average", [this, &value] {
    const SyncTraffic before = Counters();
    PSZERO_RETURN_IF_ERROR(options_.group->AllReduce(Tensor::Wrap(&value, {1}, DType::kFloat32),
                                                     collectives::ReduceOp::kAvg));
    const SyncTraffic after = Counters();
    excluded_sent_ += after.sent - before.sent;
    excluded_received_ += after.received - before.received;
    return Status::Ok();
  })));
  return value;
}

}  // namespace pszero::train
