#include "worker/train/ps_sync.h"

#include <glog/logging.h>

#include <cstring>
#include <string>

#include "common/half.h"
#include "common/ucx/ucx_transport.h"

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
  return Status::Ok();
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
  std::unique_ptr<PsSync> s(new PsSync(params, options));
  s->transport_ = transport;
  ps::PsClientOptions co;
  co.worker = options.dp_rank;
  co.num_workers = options.dp_size;
  co.key_space = static_cast<uint32_t>(options.tp_rank);
  for (int r = 0; r < options.num_servers; ++r) co.server_ranks.push_back(r);
  co.slice_bytes = slice_bytes;
  co.pull_on_push = true;
  const auto n = static_cast<size_t>(params->numel());
  std::span<float> p(params->params().data<float>(), n);
  std::span<const float> g(params->grads().data<float>(), n);
  PSZERO_ASSIGN_OR_RETURN(s->client_, ps::PsClient::Create(transport, co, p, g));
  PSZERO_RETURN_IF_ERROR(s->client_->Initialize(options.timeout));
  if (options.dp_rank == 0) s->init_bytes_ = params->numel() * 4;
  PSZERO_RETURN_IF_ERROR(params->RefreshBf16());
  s->bf16_stale_.assign(params->units().size(), false);
  s->sent_at_step_start_ = s->client_->stats().push_bytes;
  s->received_at_step_start_ = s->client_->stats().pull_bytes;
  return s;
}

PsSync::~PsSync() = default;

Status PsSync::Progress() { return transport_->Progress().status(); }

void PsSync::RefreshBf16Range(int64_t begin, int64_t end) {
  if (!params_->has_bf16()) return;
  const float* p = params_->params().data<float>();
  bf16_t* b = params_->params_bf16().data<bf16_t>();
  for (int64_t i = begin; i < end; ++i) b[i].bits = FloatToBf16Bits(p[i]);
}

Status PsSync::BeforeForward(int unit) {
  const model::ParamUnit& u = params_->units()[static_cast<size_t>(unit)];
  PSZERO_RETURN_IF_ERROR(client_->WaitParams(u.begin, u.end, options_.timeout));
  if (bf16_stale_[static_cast<size_t>(unit)]) {
    RefreshBf16Range(u.begin, u.end);
    bf16_stale_[static_cast<size_t>(unit)] = false;
  }
  return Status::Ok();
}

Status PsSync::GradientsReady(int unit) {
  const model::ParamUnit& u = params_->units()[static_cast<size_t>(unit)];
  PSZERO_RETURN_IF_ERROR(client_->PushGradients(u.begin, u.end));
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
    bf16_stale_.assign(bf16_stale_.size(), params_->has_bf16());
  } else {
    PSZERO_RETURN_IF_ERROR(client_->WaitAll(options_.timeout));
    PSZERO_RETURN_IF_ERROR(params_->RefreshBf16());
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
    if (!bf16_stale_[u]) continue;
    RefreshBf16Range(units[u].begin, units[u].end);
    bf16_stale_[u] = false;
  }
  return Status::Ok();
}

void PsSync::Abort(const Status& why) { client_->Abort(why); }

Result<std::vector<float>> PsSync::LocalParams(const model::ParamBuffer& params) {
  PSZERO_RETURN_IF_ERROR(Flush());
  if (options_.consistency == ps::Consistency::kBsp) return SyncStrategy::LocalParams(params);
  const auto n = static_cast<size_t>(params.numel());
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
  // Under bsp the checkpoint's parameters are the resident ones (LocalParams): they must be
  // the servers' bits, or the moments would belong to other parameters.
  if (options_.consistency == ps::Consistency::kBsp &&
      std::memcmp(server_params.data(), params.params().data<float>(), n * 4) != 0) {
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
  if (std::memcmp(params_->params().data<float>(), params.data(), n * 4) != 0) {
    return Status::Internal("ps sync: the servers hold other parameters at step " +
                            std::to_string(steps) +
                            " than the restored ones (servers already past that step?)");
  }
  PSZERO_RETURN_IF_ERROR(params_->RefreshBf16());
  bf16_stale_.assign(bf16_stale_.size(), false);
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
