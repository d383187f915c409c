#include "worker/train/ps_sync.h"

#include <glog/logging.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "common/ucx/ucx_transport.h"
#include "kernels/cast.h"
#include "kernels/cuda_resources.h"

namespace pszero::train {

namespace {

Status CheckOptions(const PsSyncOptions& o) {
  if (o.num_servers < 1) {
    return Status::InvalidArgument("--servers: --sync ps needs at least one pszero-server, not " +
                                   std::to_string(o.num_servers));
  }
  if (o.num_workers < 1 || o.worker_rank < 0 || o.worker_rank >= o.num_workers) {
    return Status::InvalidArgument("ps sync: worker rank " + std::to_string(o.worker_rank) +
                                   " outside 0.." + std::to_string(o.num_workers - 1));
  }
  if (o.dp_size < 1 || o.dp_rank < 0 || o.dp_rank >= o.dp_size) {
    return Status::InvalidArgument("ps sync: DP rank " + std::to_string(o.dp_rank) +
                                   " outside 0.." + std::to_string(o.dp_size - 1));
  }
  if (o.tp_rank < 0) return Status::InvalidArgument("ps sync: negative TP rank");
  return kernels::CheckContext(o.kernels);
}

// Elements [begin, end) of a flat tensor on its device, as a tensor of their own.
Tensor Range(const Tensor& flat, int64_t begin, int64_t end) {
  return Tensor::Wrap(
      static_cast<char*>(flat.data()) + begin * static_cast<int64_t>(DTypeSize(flat.dtype())),
      {end - begin}, flat.dtype(), flat.device());
}

// What is left until `deadline` (at least 1 ms: a wait still looks once).
std::chrono::milliseconds Remaining(std::chrono::steady_clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(1));
}

}  // namespace

Result<std::unique_ptr<PsSync>> PsSync::Create(model::ParamBuffer* params,
                                               std::unique_ptr<Transport> transport,
                                               const PsSyncOptions& options, int64_t slice_bytes) {
  Transport* raw = transport.get();
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<PsSync> sync, Create(params, raw, options, slice_bytes));
  // The client (built on `raw`) goes before the transport: see the member order.
  sync->owned_transport_ = std::move(transport);
  return sync;
}

Result<std::unique_ptr<PsSync>> PsSync::Create(model::ParamBuffer* params, Transport* transport,
                                               const PsSyncOptions& options, int64_t slice_bytes) {
  PSZERO_RETURN_IF_ERROR(CheckOptions(options));
  if (params == nullptr || params->numel() < 1) {
    return Status::InvalidArgument("ps sync: no parameters");
  }
  // What the servers keep in step: fp32 parameters and gradients, or with bf16-only storage
  // the bf16 ones (the fp32 master then lives on the servers only).
  const Tensor& model_params = params->sync_params();
  const Tensor& model_grads = params->sync_grads();
  if (!model_params.defined() || !model_grads.defined()) {
    return Status::InvalidArgument("ps sync: needs resident parameters and gradients");
  }
  if (model_params.device() != options.kernels.device ||
      model_grads.device() != options.kernels.device) {
    return Status::InvalidArgument(
        "ps sync: the parameters live on " + std::string(DeviceName(model_params.device())) +
        ", the kernel context is for " + std::string(DeviceName(options.kernels.device)));
  }
  std::unique_ptr<PsSync> s(new PsSync(params, options));
  const int64_t n = params->numel();
  const DType dtype = params->param_dtype();
  void* p = model_params.data();
  const void* g = model_grads.data();
  const bool on_device = model_params.device() == Device::kCuda;
  if (on_device || options.stage_through_host) {
    // Pinned for the device's DMA; plain host memory when only forced (no device).
    const Shape shape{n};
    auto mirror = [&]() {
      return on_device
                 ? Tensor::EmptyPinned(shape, dtype, MemoryCategory::kCommBuffers, options.tracker)
                 : Tensor::Empty(shape, dtype, MemoryCategory::kCommBuffers, options.tracker);
    };
    PSZERO_ASSIGN_OR_RETURN(s->host_params_, mirror());
    PSZERO_ASSIGN_OR_RETURN(s->host_grads_, mirror());
    PSZERO_RETURN_IF_ERROR(s->host_grads_.ZeroFill());
    // DP rank 0 sends these as the servers' initial values.
    PSZERO_RETURN_IF_ERROR(s->WaitForCompute("the initial parameters"));
    PSZERO_RETURN_IF_ERROR(s->host_params_.CopyFrom(Range(model_params, 0, n)));
    p = s->host_params_.data();
    g = s->host_grads_.data();
    LOG(INFO) << "ps sync: staging " << DeviceName(model_params.device())
              << " parameters and gradients through " << s->staging_bytes() << " bytes of "
              << (s->host_params_.pinned() ? "pinned " : "") << "host memory";
  }
  s->transport_ = transport;
  ps::PsClientOptions co;
  co.worker = options.dp_rank;
  co.num_workers = options.dp_size;
  co.key_space = static_cast<uint32_t>(options.tp_rank);
  for (int r = 0; r < options.num_servers; ++r) co.server_ranks.push_back(r);
  co.slice_bytes = slice_bytes;
  co.pull_on_push = true;
  co.dtype = dtype;
  PSZERO_ASSIGN_OR_RETURN(s->client_, ps::PsClient::Create(transport, co, p, g, n));
  // The servers' initial fp32 master: the parameters themselves, or (bf16-only storage)
  // the seed's fp32 values, which the bf16 parameters are the rounding of, as the other
  // modes' optimizers start their master from them.
  std::vector<float> initial;
  if (options.dp_rank == 0 && params->bf16_only()) {
    initial.resize(static_cast<size_t>(n));
    params->InitialValues(0, n, initial.data());
  }
  PSZERO_RETURN_IF_ERROR(s->client_->Initialize(options.timeout, initial));
  if (options.dp_rank == 0) s->init_bytes_ = n * 4;
  PSZERO_RETURN_IF_ERROR(s->ApplyParams(0, n));
  s->stale_.assign(params->units().size(), false);
  s->sent_at_step_start_ = s->client_->stats().push_bytes;
  s->received_at_step_start_ = s->client_->stats().pull_bytes;
  return s;
}

PsSync::~PsSync() = default;

Status PsSync::Progress() { return transport_->Progress().status(); }

Status PsSync::WaitForCompute(const char* what) {
  if (options_.kernels.device != Device::kCuda) return Status::Ok();
  return options_.kernels.cuda->Synchronize().WithContext(std::string("ps sync: computing ") +
                                                          what);
}

const void* PsSync::host_params() const {
  return staged() ? host_params_.data() : params_->sync_params().data();
}

bool PsSync::MatchesResident(const std::vector<float>& master) const {
  const size_t n = master.size();
  if (!params_->bf16_only()) return std::memcmp(host_params(), master.data(), n * 4) == 0;
  std::vector<bf16_t> rounded(n);
  if (!kernels::Cast(master.data(), DType::kFloat32, rounded.data(), DType::kBFloat16,
                     static_cast<int64_t>(n), kernels::KernelContext::Host())
           .ok()) {
    return false;
  }
  return std::memcmp(host_params(), rounded.data(), n * 2) == 0;
}

Status PsSync::ApplyParams(int64_t begin, int64_t end) {
  if (staged()) {
    // A cudaMemcpy on the legacy default stream: ordered after the compute stream's work
    // so far (a blocking stream), and before every kernel enqueued after it.
    PSZERO_RETURN_IF_ERROR(
        Range(params_->sync_params(), begin, end).CopyFrom(Range(host_params_, begin, end)));
  }
  // bf16-only storage: the pulled parameters are the bf16 ones already.
  if (!params_->has_bf16() || params_->bf16_only()) return Status::Ok();
  return kernels::Cast(params_->params().data<float>() + begin, DType::kFloat32,
                       params_->params_bf16().data<bf16_t>() + begin, DType::kBFloat16, end - begin,
                       options_.kernels);
}

Status PsSync::PushGradients(int64_t begin, int64_t end) {
  if (!staged()) return client_->PushGradients(begin, end);
  // Slice by slice: a slice is pushed (asynchronously) as soon as its last part is on the
  // host, and is on the wire while the next part is copied.
  const ps::SliceMap& map = client_->map();
  const auto [first, last] = map.SlicesTouching(begin, end);
  for (int i = first; i < last; ++i) {
    const ps::Slice& slice = map.slice(i);
    const int64_t b = std::max(begin, slice.begin);
    const int64_t e = std::min(end, slice.begin + slice.numel);
    PSZERO_RETURN_IF_ERROR(Range(host_grads_, b, e).CopyFrom(Range(params_->sync_grads(), b, e)));
    PSZERO_RETURN_IF_ERROR(client_->PushGradients(b, e));
    PSZERO_RETURN_IF_ERROR(Progress());
  }
  return Status::Ok();
}

Status PsSync::BeforeForward(int unit) {
  const model::ParamUnit& u = params_->units()[static_cast<size_t>(unit)];
  PSZERO_RETURN_IF_ERROR(client_->WaitParams(u.begin, u.end, options_.timeout));
  if (stale_[static_cast<size_t>(unit)]) {
    PSZERO_RETURN_IF_ERROR(ApplyParams(u.begin, u.end));
    stale_[static_cast<size_t>(unit)] = false;
  }
  return Status::Ok();
}

Status PsSync::GradientsReady(int unit) {
  // Earlier micro-batches of gradient accumulation only add into the gradient buffer.
  if (!last_micro_batch()) return Status::Ok();
  const model::ParamUnit& u = params_->units()[static_cast<size_t>(unit)];
  if (staged()) PSZERO_RETURN_IF_ERROR(WaitForCompute("the gradients"));
  PSZERO_RETURN_IF_ERROR(PushGradients(u.begin, u.end));
  // Moves what is ready (acks, replies, rendezvous completions) while backward goes on.
  return Progress();
}

Status PsSync::Step(int64_t /*step*/) {
  // The servers count the updates themselves (AdamW's step is their count, which is the
  // 1-based step when every step pushes every slice, as here).
  PSZERO_RETURN_IF_ERROR(client_->EndStep());
  if (options_.overlap_pulls_with_forward) {
    // The next step zeroes the gradients: the pushes must have left them.
    PSZERO_RETURN_IF_ERROR(client_->WaitPushes(options_.timeout));
    stale_.assign(stale_.size(), staged() || (params_->has_bf16() && !params_->bf16_only()));
  } else {
    // Slice by slice, last first (backward pushed them, and so started their pulls, in
    // that order): the first slices to land are applied (copied to the device, cast to
    // bf16) while the others are still arriving.
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    const ps::SliceMap& map = client_->map();
    for (int i = map.num_slices() - 1; i >= 0; --i) {
      const ps::Slice& slice = map.slice(i);
      PSZERO_RETURN_IF_ERROR(
          client_->WaitParams(slice.begin, slice.begin + slice.numel, Remaining(deadline)));
      PSZERO_RETURN_IF_ERROR(ApplyParams(slice.begin, slice.begin + slice.numel));
    }
  }
  const ps::PsClientStats& st = client_->stats();
  sent_last_step_ = st.push_bytes - sent_at_step_start_;
  received_last_step_ = st.pull_bytes - received_at_step_start_;
  sent_at_step_start_ = st.push_bytes;
  received_at_step_start_ = st.pull_bytes;
  return Status::Ok();
}

Status PsSync::Flush() {
  PSZERO_RETURN_IF_ERROR(client_->WaitAll(options_.timeout));
  const auto& units = params_->units();
  for (size_t u = 0; u < units.size(); ++u) {
    if (!stale_[u]) continue;
    PSZERO_RETURN_IF_ERROR(ApplyParams(units[u].begin, units[u].end));
    stale_[u] = false;
  }
  return Status::Ok();
}

void PsSync::Abort(const Status& why) { client_->Abort(why); }

Result<std::vector<float>> PsSync::LocalParams(const model::ParamBuffer& params) {
  PSZERO_RETURN_IF_ERROR(Flush());
  const auto n = static_cast<size_t>(params.numel());
  if (options_.consistency == ps::Consistency::kBsp && !params_->bf16_only()) {
    // The resident copy as the client holds it (after Flush, the model's too).
    const auto* p = static_cast<const float*>(host_params());
    return std::vector<float>(p, p + n);
  }
  // ssp/asp, where the resident copy may lag the servers; bf16-only storage, whose
  // resident parameters are only the rounding of the master the servers hold.
  std::vector<float> server_params(n), m(n), v(n);
  PSZERO_RETURN_IF_ERROR(client_->ReadState(server_params, m, v, options_.timeout)
                             .WithContext("reading the servers' parameters"));
  return server_params;
}

Result<Moments> PsSync::LocalMoments(const model::ParamBuffer& params) {
  PSZERO_RETURN_IF_ERROR(Flush());
  const auto n = static_cast<size_t>(params.numel());
  std::vector<float> server_params(n);
  Moments moments{std::vector<float>(n), std::vector<float>(n)};
  PSZERO_RETURN_IF_ERROR(client_->ReadState(server_params, moments.m, moments.v, options_.timeout)
                             .WithContext("reading the optimizer state for a checkpoint"));
  // Under bsp the resident parameters must be the servers' bits (bf16-only storage: their
  // rounding), or the moments would belong to other parameters than the checkpoint's.
  if (options_.consistency == ps::Consistency::kBsp && !MatchesResident(server_params)) {
    return Status::Internal("ps sync: the servers' parameters at clock " +
                            std::to_string(client_->clock()) + " differ from worker " +
                            std::to_string(options_.worker_rank) + "'s");
  }
  return moments;
}

Result<float> PsSync::AverageLoss(float loss) {
  collectives::Communicator* group = options_.group;
  if (group == nullptr || group->size() == 1) return loss;
  PSZERO_RETURN_IF_ERROR(
      group->AllReduce(Tensor::Wrap(&loss, {1}, DType::kFloat32), collectives::ReduceOp::kAvg));
  return loss;
}

Status PsSync::Restore(const std::vector<float>& params, const Moments& moments) {
  if (moments.step > 0) return RestoreAt(params, moments, moments.step);
  if (options_.resume_step < 1) {
    return Status::InvalidArgument(
        "--resume: --sync ps restores the servers' state at the checkpoint's step, which this "
        "worker was not given");
  }
  return RestoreAt(params, moments, options_.resume_step);
}

Status PsSync::RestoreAt(const std::vector<float>& params, const Moments& moments, int64_t steps) {
  const auto n = static_cast<size_t>(params_->numel());
  if (params.size() != n || moments.m.size() != n || moments.v.size() != n) {
    return Status::InvalidArgument("ps sync: restore of " + std::to_string(params.size()) +
                                   " parameters into a key space of " + std::to_string(n));
  }
  if (steps < 1) {
    return Status::InvalidArgument("ps sync: restore at step " + std::to_string(steps) +
                                   " (a checkpoint holds at least one step)");
  }
  PSZERO_RETURN_IF_ERROR(Flush());
  if (options_.dp_rank == 0) {
    PSZERO_RETURN_IF_ERROR(
        client_->WriteState(params, moments.m, moments.v, steps, options_.timeout)
            .WithContext("restoring the servers' state"));
  }
  // Answered once the write above has landed (the servers' clock reaches `steps`): the
  // pulled parameters are the restored ones, on every worker of the group.
  PSZERO_RETURN_IF_ERROR(
      client_->ResumeAt(steps, options_.timeout).WithContext("pulling the restored parameters"));
  if (!MatchesResident(params)) {
    return Status::Internal("ps sync: the servers hold other parameters at step " +
                            std::to_string(steps) +
                            " than the restored ones (servers already past that step?)");
  }
  PSZERO_RETURN_IF_ERROR(ApplyParams(0, params_->numel()));
  stale_.assign(stale_.size(), false);
  sent_at_step_start_ = client_->stats().push_bytes;
  received_at_step_start_ = client_->stats().pull_bytes;
  return Status::Ok();
}

Result<std::vector<ps::ServerCounters>> PsSync::ServerStats() {
  std::vector<ps::ServerCounters> out;
  for (int s = 0; s < options_.num_servers; ++s) {
    PSZERO_ASSIGN_OR_RETURN(ps::ServerCounters c, client_->QueryServerStats(s, options_.timeout));
    out.push_back(c);
  }
  return out;
}

Result<std::unique_ptr<PsSync>> MakePsSync(model::ParamBuffer* params, const PsSyncOptions& options,
                                           KeyValueStore* store) {
  PSZERO_RETURN_IF_ERROR(CheckOptions(options));
  // The servers' configuration: every server must cut the key space the same way.
  ps::ServerConfig config;
  for (int s = 0; s < options.num_servers; ++s) {
    Result<std::string> text = store->Get(ps::ServerConfigKey(s), options.timeout);
    if (!text.ok()) {
      return text.status().WithContext("reading the configuration of ps server " +
                                       std::to_string(s));
    }
    PSZERO_ASSIGN_OR_RETURN(ps::ServerConfig c, ps::ParseServerConfig(*text));
    if (c.grad_accum != options.grad_accum) {
      return Status::InvalidArgument(
          "--grad-accum: the workers sum " + std::to_string(options.grad_accum) +
          " micro-batches per push, ps server " + std::to_string(s) + " averages over " +
          std::to_string(c.grad_accum) + " (start it with --grad-accum " +
          std::to_string(options.grad_accum) + ")");
    }
    if (s == 0) {
      config = c;
    } else if (c.slice_bytes != config.slice_bytes) {
      return Status::InvalidArgument("--ps-slice-mb: ps server " + std::to_string(s) +
                                     " cuts slices of " + std::to_string(c.slice_bytes) +
                                     " bytes, ps server 0 of " +
                                     std::to_string(config.slice_bytes));
    }
  }
  PsSyncOptions with_config = options;
  with_config.consistency = config.consistency;
  ucx::UcxTransportOptions to;
  to.rank = options.num_servers + options.worker_rank;
  to.world_size = options.num_servers + options.num_workers;
  to.key_prefix = "pszero/ps";
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxTransport> transport,
                          ucx::UcxTransport::Create(to, store));
  PSZERO_ASSIGN_OR_RETURN(
      std::unique_ptr<PsSync> sync,
      PsSync::Create(params, std::move(transport), with_config, config.slice_bytes));
  LOG(INFO) << "ps sync: " << options.num_servers << " servers, "
            << ps::ConsistencyName(config.consistency)
            << (config.consistency == ps::Consistency::kSsp
                    ? " staleness " + std::to_string(config.staleness)
                    : std::string())
            << ", optimizer " << config.optimizer << " on the servers; key space "
            << options.tp_rank << " as DP worker " << options.dp_rank << " of " << options.dp_size
            << ", " << sync->slice_map().num_slices() << " slices of " << config.slice_bytes
            << " bytes";
  return sync;
}

}  // namespace pszero::train
