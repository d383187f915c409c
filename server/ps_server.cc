#include "server/ps_server.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include <glog/logging.h>

#include "kernels/cast.h"
#include "kernels/reduce.h"

namespace pszero::ps {

std::string_view OptimizerName(OptimizerKind k) {
  switch (k) {
    case OptimizerKind::kNone:
      return "none";
    case OptimizerKind::kSgd:
      return "sgd";
    case OptimizerKind::kAdamW:
      return "adamw";
  }
  return "?";
}

Result<OptimizerKind> ParseOptimizer(std::string_view name) {
  if (name == "none") return OptimizerKind::kNone;
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adamw") return OptimizerKind::kAdamW;
  return Status::InvalidArgument("optimizer must be none, sgd or adamw, not '" + std::string(name) +
                                 "'");
}

namespace {
constexpr int kMaxWorkers = 1 << 16;
constexpr int kMaxSlices = 1 << 24;
enum class SlotState : uint8_t { kFree, kReceiving, kFull };

bool WireDType(uint8_t dtype) {
  return dtype == static_cast<uint8_t>(DType::kFloat32) ||
         dtype == static_cast<uint8_t>(DType::kBFloat16);
}
}  // namespace

struct PsServer::LocalSlice {
  struct Worker {
    std::vector<std::byte> slot;        // push landing zone (the key space's dtype)
    std::vector<std::byte> reply_copy;  // ssp/asp: the parameters as sent by a pull reply
    SlotState state = SlotState::kFree;
    int peer = -1;
    int64_t pushes = 0;  // pushes landed (bsp) / applied (ssp, asp)
    bool pull_parked = false;
    int64_t pull_clock = 0;
    uint64_t pull_request = 0;
    bool replying = false;
    Request reply;
    bool state_read_parked = false;  // a state-read waiting for its clock
    int64_t state_read_clock = 0;
    uint64_t state_read_request = 0;
  };
  Slice slice;
  uint32_t key_space = 0;
  DType dtype = DType::kFloat32;  // of pushes and pulls (the key space's)
  bool initialized = false;
  std::vector<float> params;        // the fp32 master
  std::vector<bf16_t> params_bf16;  // bf16 key spaces: the master's rounding, what pulls get
  std::vector<float> state1;        // AdamW m or SGD momentum
  std::vector<float> state2;        // AdamW v
  std::vector<Worker> workers;
  std::vector<const void*> sum_inputs;  // preallocated kernels::Sum argument
  int arrived = 0;                      // bsp: pushes of the current step landed
  int64_t applied_steps = 0;            // bsp steps applied
  int64_t updates = 0;                  // optimizer steps taken
  // Bytes of one push or pull payload.
  size_t slot_bytes() const { return static_cast<size_t>(slice.numel) * DTypeSize(dtype); }
};

struct PsServer::KeySpace {
  uint32_t id = 0;
  int num_workers = 0;
  DType dtype = DType::kFloat32;
  SliceMap map;
  std::vector<int> local_of;  // global slice index -> index in `slices`, or -1
  std::vector<std::unique_ptr<LocalSlice>> slices;
};

PsServer::PsServer(Transport* transport, PsServerOptions options)
    : transport_(transport),
      options_(std::move(options)),
      ctx_(kernels::KernelContext::Host(options_.threads)) {}

PsServer::~PsServer() { DetachTransport(); }

void PsServer::DetachTransport() {
  if (transport_ == nullptr) return;
  // The handlers point at this object: late messages are dropped from now on.
  for (uint16_t id : {kAmInit, kAmPush, kAmPull, kAmStats, kAmStateRead, kAmStateWrite}) {
    (void)transport_->SetAmHandler(
        id, {.payload_destination = nullptr,
             .on_message = [](const AmInfo&, std::span<const std::byte>) {}});
  }
  transport_ = nullptr;
}

Result<std::unique_ptr<PsServer>> PsServer::Create(Transport* transport, PsServerOptions options) {
  if (options.num_servers < 1 || options.server_index < 0 ||
      options.server_index >= options.num_servers) {
    return Status::InvalidArgument("ps server: index " + std::to_string(options.server_index) +
                                   " outside 0.." + std::to_string(options.num_servers - 1));
  }
  if (options.slice_bytes < 4) return Status::InvalidArgument("ps server: slice bytes < 4");
  if (options.staleness < 0) return Status::InvalidArgument("ps server: staleness < 0");
  if (options.threads < 1) return Status::InvalidArgument("ps server: threads < 1");
  std::unique_ptr<PsServer> server(new PsServer(transport, std::move(options)));
  PsServer* self = server.get();
  AmHandler init;
  init.on_message = [self](const AmInfo& info, std::span<const std::byte> payload) {
    self->OnInit(info, payload);
  };
  AmHandler push;
  push.payload_destination = [self](const AmInfo& info) { return self->PushDestination(info); };
  push.on_message = [self](const AmInfo& info, std::span<const std::byte> payload) {
    self->OnPush(info, payload);
  };
  AmHandler pull;
  pull.on_message = [self](const AmInfo& info, std::span<const std::byte>) { self->OnPull(info); };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmInit, std::move(init)));
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmPush, std::move(push)));
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmPull, std::move(pull)));
  AmHandler stats;
  stats.on_message = [self](const AmInfo& info, std::span<const std::byte>) {
    self->OnStats(info);
  };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmStats, std::move(stats)));
  AmHandler state_read;
  state_read.on_message = [self](const AmInfo& info, std::span<const std::byte>) {
    self->OnStateRead(info);
  };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmStateRead, std::move(state_read)));
  AmHandler state_write;
  state_write.on_message = [self](const AmInfo& info, std::span<const std::byte> payload) {
    self->OnStateWrite(info, payload);
  };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmStateWrite, std::move(state_write)));
  return server;
}

Result<int> PsServer::Serve(std::chrono::milliseconds timeout) {
  Result<int> events = transport_->Poll(timeout);
  RetireReplies();
  return events;
}

// Finds (creating on first contact: the header carries the key space's geometry) the
// slice a request names, and checks everything the header claims against this server's map.
Result<PsServer::LocalSlice*> PsServer::Validate(const RequestHeader& h, int peer, bool need_init) {
  if (!WireDType(h.dtype)) {
    return Status::InvalidArgument("dtype " + std::to_string(h.dtype) +
                                   " rejected: a key space is fp32 or bf16");
  }
  if (h.num_workers < 1 || h.worker < 0 || h.worker >= h.num_workers) {
    return Status::InvalidArgument("worker " + std::to_string(h.worker) + " of " +
                                   std::to_string(h.num_workers) + " is out of range");
  }
  auto it = spaces_.find(h.key_space);
  if (it == spaces_.end()) {
    Result<SliceMap> map =
        SliceMap::Create(h.total_numel, options_.slice_bytes, options_.num_servers);
    if (!map.ok()) return map.status().WithContext("key space " + std::to_string(h.key_space));
    // A header is input: bound what it can make this server allocate.
    if (h.num_workers > kMaxWorkers || map->num_slices() > kMaxSlices) {
      return Status::InvalidArgument("key space " + std::to_string(h.key_space) + " of " +
                                     std::to_string(h.total_numel) + " elements and " +
                                     std::to_string(h.num_workers) + " workers is beyond limits");
    }
    auto space = std::make_unique<KeySpace>();
    space->id = h.key_space;
    space->num_workers = h.num_workers;
    space->dtype = static_cast<DType>(h.dtype);
    space->map = std::move(map).value();
    space->local_of.assign(static_cast<size_t>(space->map.num_slices()), -1);
    const bool adamw = options_.optimizer == OptimizerKind::kAdamW;
    const bool sgd_momentum =
        options_.optimizer == OptimizerKind::kSgd && options_.sgd.momentum != 0;
    int64_t held_bytes = 0;
    try {
      for (int idx : space->map.SlicesOf(options_.server_index)) {
        auto s = std::make_unique<LocalSlice>();
        s->slice = space->map.slice(idx);
        s->key_space = h.key_space;
        s->dtype = space->dtype;
        const auto n = static_cast<size_t>(s->slice.numel);
        const size_t wire_bytes = n * DTypeSize(s->dtype);
        s->params.assign(n, 0.0f);
        if (s->dtype == DType::kBFloat16) s->params_bf16.assign(n, bf16_t{});
        if (adamw || sgd_momentum) s->state1.assign(n, 0.0f);
        if (adamw) s->state2.assign(n, 0.0f);
        s->workers.resize(static_cast<size_t>(h.num_workers));
        for (auto& w : s->workers) {
          w.slot.assign(wire_bytes, std::byte{0});
          if (options_.consistency != Consistency::kBsp)
            w.reply_copy.assign(wire_bytes, std::byte{0});
        }
        s->sum_inputs.resize(static_cast<size_t>(h.num_workers));
        // bf16 with more workers than one Sum call takes: the fp32 sum of the slots.
        if (s->dtype == DType::kBFloat16 && h.num_workers > kernels::kMaxSumInputs &&
            sum_fp32_.size() < n) {
          held_bytes += static_cast<int64_t>(4 * (n - sum_fp32_.size()));
          sum_fp32_.resize(n);
        }
        held_bytes +=
            static_cast<int64_t>(4 * (s->params.size() + s->state1.size() + s->state2.size()) +
                                 2 * s->params_bf16.size() +
                                 (s->workers[0].slot.size() + s->workers[0].reply_copy.size()) *
                                     static_cast<size_t>(h.num_workers));
        space->local_of[static_cast<size_t>(idx)] = static_cast<int>(space->slices.size());
        space->slices.push_back(std::move(s));
      }
    } catch (const std::bad_alloc&) {
      return Status::InvalidArgument("key space " + std::to_string(h.key_space) + " of " +
                                     std::to_string(h.total_numel) +
                                     " elements does not fit in this server's memory");
    }
    stats_.model_bytes += held_bytes;
    LOG(INFO) << "ps server " << options_.server_index << ": key space " << h.key_space << ", "
              << h.num_workers << " workers, " << ConsistencyName(options_.consistency) << ", "
              << space->map.Describe();
    it = spaces_.emplace(h.key_space, std::move(space)).first;
  }
  KeySpace& space = *it->second;
  if (static_cast<DType>(h.dtype) != space.dtype) {
    return Status::InvalidArgument("dtype " + std::string(DTypeName(static_cast<DType>(h.dtype))) +
                                   " does not match key space " + std::to_string(h.key_space) +
                                   "'s " + std::string(DTypeName(space.dtype)));
  }
  if (h.total_numel != space.map.numel() || h.num_workers != space.num_workers) {
    return Status::InvalidArgument(
        "key space " + std::to_string(h.key_space) + " has " + std::to_string(space.map.numel()) +
        " elements and " + std::to_string(space.num_workers) + " workers, request says " +
        std::to_string(h.total_numel) + " and " + std::to_string(h.num_workers));
  }
  if (h.slice < 0 || h.slice >= space.map.num_slices() ||
      space.local_of[static_cast<size_t>(h.slice)] < 0) {
    return Status::InvalidArgument("slice " + std::to_string(h.slice) + " of key space " +
                                   std::to_string(h.key_space) + " is not held by server " +
                                   std::to_string(options_.server_index));
  }
  LocalSlice* s =
      space.slices[static_cast<size_t>(space.local_of[static_cast<size_t>(h.slice)])].get();
  if (h.slice_begin != s->slice.begin || h.numel != s->slice.numel) {
    return Status::InvalidArgument(
        "slice " + std::to_string(h.slice) + " is [" + std::to_string(s->slice.begin) + ", +" +
        std::to_string(s->slice.numel) + "), request says [" + std::to_string(h.slice_begin) +
        ", +" + std::to_string(h.numel) + ") (different --ps-slice-mb or servers?)");
  }
  auto& w = s->workers[static_cast<size_t>(h.worker)];
  if (w.peer >= 0 && w.peer != peer) {
    return Status::InvalidArgument("worker " + std::to_string(h.worker) +
                                   " is already transport rank " + std::to_string(w.peer));
  }
  w.peer = peer;
  if (need_init && !s->initialized) {
    return Status(StatusCode::kInvalidArgument,
                  "slice " + std::to_string(h.slice) + " has no initial parameters yet");
  }
  return s;
}

void PsServer::Reject(int peer, const RequestHeader& h, uint16_t am, const Status& why) {
  ++stats_.rejected;
  stats_.last_error = why.ToString();
  ReplyHeader r;
  r.code = static_cast<int32_t>(WireCode::kInvalidArgument);
  r.key_space = h.key_space;
  r.slice = h.slice;
  r.server = options_.server_index;
  r.request = h.request;
  SetMessage(r, why.message());
  Result<Request> sent = transport_->SendAm(peer, am, HeaderBytes(r), nullptr, 0);
  if (!sent.ok())
    LOG(WARNING) << "ps server: cannot answer rank " << peer << ": " << sent.status().ToString();
}

void PsServer::Ack(int peer, const RequestHeader& h) {
  ReplyHeader r;
  r.key_space = h.key_space;
  r.slice = h.slice;
  r.server = options_.server_index;
  r.request = h.request;
  Result<Request> sent = transport_->SendAm(peer, kAmAck, HeaderBytes(r), nullptr, 0);
  if (!sent.ok())
    LOG(WARNING) << "ps server: cannot ack rank " << peer << ": " << sent.status().ToString();
}

void PsServer::OnInit(const AmInfo& info, std::span<const std::byte> payload) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) {
    Reject(info.peer, RequestHeader{}, kAmAck, h.status());
    return;
  }
  Result<LocalSlice*> s = Validate(*h, info.peer, /*need_init=*/false);
  if (!s.ok()) return Reject(info.peer, *h, kAmAck, s.status());
  LocalSlice& slice = **s;
  if (slice.initialized) {
    return Reject(
        info.peer, *h, kAmAck,
        Status::InvalidArgument("slice " + std::to_string(h->slice) + " is already initialized"));
  }
  if (payload.size() != static_cast<size_t>(slice.slice.numel) * 4) {
    return Reject(
        info.peer, *h, kAmAck,
        Status::InvalidArgument("init payload of " + std::to_string(payload.size()) +
                                " bytes for a slice of " + std::to_string(slice.slice.numel * 4)));
  }
  std::memcpy(slice.params.data(), payload.data(), payload.size());
  if (Status st = RefreshBf16(slice); !st.ok()) return Reject(info.peer, *h, kAmAck, st);
  slice.initialized = true;
  Ack(info.peer, *h);
  ServeParkedPulls(slice);
}

void* PsServer::PushDestination(const AmInfo& info) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) return nullptr;
  Result<LocalSlice*> s = Validate(*h, info.peer, /*need_init=*/true);
  if (!s.ok() || info.payload_bytes != (*s)->slot_bytes()) return nullptr;
  auto& w = (*s)->workers[static_cast<size_t>(h->worker)];
  if (w.state != SlotState::kFree) return nullptr;
  w.state = SlotState::kReceiving;
  return w.slot.data();
}

void PsServer::OnPush(const AmInfo& info, std::span<const std::byte> payload) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) return Reject(info.peer, RequestHeader{}, kAmAck, h.status());
  Result<LocalSlice*> sr = Validate(*h, info.peer, /*need_init=*/true);
  if (!sr.ok()) return Reject(info.peer, *h, kAmAck, sr.status());
  LocalSlice& s = **sr;
  auto& w = s.workers[static_cast<size_t>(h->worker)];
  const bool landed = payload.data() == reinterpret_cast<const std::byte*>(w.slot.data()) &&
                      w.state == SlotState::kReceiving;
  auto reject = [&](const std::string& why) {
    if (landed) w.state = SlotState::kFree;
    Reject(info.peer, *h, kAmAck, Status::InvalidArgument(why));
  };
  if (payload.size() != s.slot_bytes()) {
    return reject("push of " + std::to_string(payload.size()) + " bytes to slice " +
                  std::to_string(h->slice) + " of " + std::to_string(s.slot_bytes()) + " bytes");
  }
  if (!landed && w.state != SlotState::kFree) {
    return reject("push to slice " + std::to_string(h->slice) +
                  " while this worker's previous push of it is still pending");
  }
  const int64_t expected = options_.consistency == Consistency::kBsp ? s.applied_steps : w.pushes;
  if (h->clock != expected) {
    return reject("push for step " + std::to_string(h->clock) + " of slice " +
                  std::to_string(h->slice) + ", expected step " + std::to_string(expected));
  }
  if (!landed) std::memcpy(w.slot.data(), payload.data(), payload.size());
  ++stats_.pushes;
  stats_.push_bytes += static_cast<int64_t>(payload.size());
  ++w.pushes;
  if (options_.consistency == Consistency::kBsp) {
    w.state = SlotState::kFull;
    ++s.arrived;
    Ack(info.peer, *h);
    if (s.arrived == static_cast<int>(s.workers.size())) {
      Status st = Apply(s, -1);
      if (!st.ok()) LOG(ERROR) << "ps server: update failed: " << st.ToString();
    }
  } else {
    Status st = Apply(s, h->worker);
    w.state = SlotState::kFree;
    if (!st.ok()) LOG(ERROR) << "ps server: update failed: " << st.ToString();
    Ack(info.peer, *h);
  }
  ServeParkedPulls(s);
}

// One optimizer step on slice `s`: from every worker's slot in ascending order (bsp,
// worker = -1) or from one worker's slot (ssp, asp).
Status PsServer::Apply(LocalSlice& s, int worker) {
  const int64_t n = s.slice.numel;
  const int d = static_cast<int>(s.workers.size());
  const DType dt = s.dtype;
  void* grad = nullptr;
  if (worker < 0) {
    // bsp: a reply still reading the parameters would see them change: wait for it
    // (RetireReplies calls back here).
    for (const auto& w : s.workers) {
      if (w.replying) return Status::Ok();
    }
    grad = s.workers[0].slot.data();
    // The sum is accumulated in fp32 in ascending worker order and rounded to the key
    // space's dtype once, as the deterministic collectives do (ReduceOrdered): one Sum call
    // when it takes every slot; else (bf16) through an fp32 sum.
    const bool via_fp32 = dt != DType::kFloat32 && d > kernels::kMaxSumInputs;
    void* acc = via_fp32 ? static_cast<void*>(sum_fp32_.data()) : grad;
    for (int first = 0; first < d; first += kernels::kMaxSumInputs) {
      const int k = std::min(kernels::kMaxSumInputs, d - first);
      for (int i = 0; i < k; ++i)
        s.sum_inputs[static_cast<size_t>(i)] =
            s.workers[static_cast<size_t>(first + i)].slot.data();
      PSZERO_RETURN_IF_ERROR(
          kernels::Sum(std::span<const void* const>(s.sum_inputs.data(), static_cast<size_t>(k)),
                       dt, acc, via_fp32 ? DType::kFloat32 : dt, n,
                       /*accumulate=*/first > 0, ctx_));
    }
    if (via_fp32) PSZERO_RETURN_IF_ERROR(kernels::Cast(acc, DType::kFloat32, grad, dt, n, ctx_));
  } else {
    grad = s.workers[static_cast<size_t>(worker)].slot.data();
  }
  const float scale =
      options_.grad_scale != 0.0f
          ? options_.grad_scale
          : 1.0f / (static_cast<float>(d) * static_cast<float>(std::max(options_.grad_accum, 1)));
  // bf16 key spaces: the optimizer writes the master's rounding beside it.
  bf16_t* rounded = s.params_bf16.empty() ? nullptr : s.params_bf16.data();
  Status st;
  switch (options_.optimizer) {
    case OptimizerKind::kNone:
      if (dt == DType::kFloat32) {
        std::memcpy(s.params.data(), grad, static_cast<size_t>(n) * 4);
      } else {
        st = kernels::Cast(grad, dt, s.params.data(), DType::kFloat32, n, ctx_);
        if (st.ok()) st = RefreshBf16(s);
      }
      break;
    case OptimizerKind::kSgd: {
      kernels::SgdParams hp = options_.sgd;
      hp.grad_scale = scale;
      st = kernels::Sgd(hp, s.params.data(), grad, dt, s.state1.empty() ? nullptr : s.state1.data(),
                        rounded, n, ctx_);
      break;
    }
    case OptimizerKind::kAdamW: {
      kernels::AdamWParams hp = options_.adamw;
      hp.grad_scale = scale;
      hp.step = s.updates + 1;
      st = kernels::AdamW(hp, s.params.data(), grad, dt, s.state1.data(), s.state2.data(), rounded,
                          n, ctx_);
      break;
    }
  }
  ++s.updates;
  ++stats_.updates;
  if (worker < 0) {
    ++s.applied_steps;
    s.arrived = 0;
    for (auto& w : s.workers) w.state = SlotState::kFree;
  }
  if (options_.on_update) options_.on_update(worker < 0 ? s.applied_steps : s.updates);
  return st;
}

Status PsServer::RefreshBf16(LocalSlice& s) {
  if (s.params_bf16.empty()) return Status::Ok();
  return kernels::Cast(s.params.data(), DType::kFloat32, s.params_bf16.data(), DType::kBFloat16,
                       s.slice.numel, ctx_);
}

bool PsServer::PullReady(const LocalSlice& s, int worker, int64_t clock) {
  const auto& w = s.workers[static_cast<size_t>(worker)];
  if (!s.initialized || w.replying) return false;
  if (options_.consistency == Consistency::kBsp) return s.applied_steps >= clock;
  if (w.pushes < clock || w.state != SlotState::kFree) return false;
  if (options_.consistency == Consistency::kAsp) return true;
  for (const auto& other : s.workers) {
    if (other.pushes < clock - options_.staleness) return false;
  }
  return true;
}

void PsServer::OnPull(const AmInfo& info) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) return Reject(info.peer, RequestHeader{}, kAmReply, h.status());
  Result<LocalSlice*> sr = Validate(*h, info.peer, /*need_init=*/false);
  if (!sr.ok()) return Reject(info.peer, *h, kAmReply, sr.status());
  LocalSlice& s = **sr;
  auto& w = s.workers[static_cast<size_t>(h->worker)];
  // A reply still in flight (its completion not yet seen here) only delays the new pull.
  if (w.pull_parked) {
    return Reject(info.peer, *h, kAmReply,
                  Status::InvalidArgument("pull of slice " + std::to_string(h->slice) +
                                          " while the previous one is in flight"));
  }
  w.pull_parked = true;
  w.pull_clock = h->clock;
  w.pull_request = h->request;
  if (PullReady(s, h->worker, h->clock)) SendReply(s, h->worker);
}

void PsServer::OnStats(const AmInfo& info) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) return;  // nothing to answer to
  StatsReplyHeader r;
  r.server = options_.server_index;
  r.request = h->request;
  r.counters = stats_;
  Result<Request> sent = transport_->SendAm(info.peer, kAmStatsReply, HeaderBytes(r), nullptr, 0);
  if (!sent.ok()) {
    LOG(WARNING) << "ps server: cannot answer rank " << info.peer << ": "
                 << sent.status().ToString();
  }
}

void PsServer::ServeParkedPulls(LocalSlice& s) {
  for (int i = 0; i < static_cast<int>(s.workers.size()); ++i) {
    const auto& w = s.workers[static_cast<size_t>(i)];
    if (w.pull_parked && PullReady(s, i, w.pull_clock)) SendReply(s, i);
    if (w.state_read_parked && StateReady(s, w.state_read_clock)) SendStateReply(s, i);
  }
}

Status PsServer::CheckStateful() const {
  if (options_.optimizer == OptimizerKind::kAdamW) return Status::Ok();
  return Status::InvalidArgument(
      "the state of a slice (params, AdamW m and v) is kept for --optimizer adamw; this server "
      "runs --optimizer " +
      std::string(OptimizerName(options_.optimizer)));
}

bool PsServer::StateReady(const LocalSlice& s, int64_t clock) const {
  if (!s.initialized) return false;
  if (options_.consistency == Consistency::kBsp) return s.applied_steps >= clock;
  for (const auto& w : s.workers) {
    if (w.pushes < clock || w.state != SlotState::kFree) return false;
  }
  return true;
}

void PsServer::OnStateRead(const AmInfo& info) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) return Reject(info.peer, RequestHeader{}, kAmStateReply, h.status());
  if (Status ok = CheckStateful(); !ok.ok()) return Reject(info.peer, *h, kAmStateReply, ok);
  Result<LocalSlice*> sr = Validate(*h, info.peer, /*need_init=*/false);
  if (!sr.ok()) return Reject(info.peer, *h, kAmStateReply, sr.status());
  LocalSlice& s = **sr;
  auto& w = s.workers[static_cast<size_t>(h->worker)];
  if (w.state_read_parked) {
    return Reject(info.peer, *h, kAmStateReply,
                  Status::InvalidArgument("state read of slice " + std::to_string(h->slice) +
                                          " while the previous one is waiting"));
  }
  w.state_read_parked = true;
  w.state_read_clock = h->clock;
  w.state_read_request = h->request;
  if (StateReady(s, h->clock)) SendStateReply(s, h->worker);
}

void PsServer::SendStateReply(LocalSlice& s, int worker) {
  auto& w = s.workers[static_cast<size_t>(worker)];
  w.state_read_parked = false;
  const size_t n = s.params.size();
  auto reply = std::make_unique<StateReply>();
  reply->data.resize(n * kStateArrays);
  std::memcpy(reply->data.data(), s.params.data(), n * 4);
  std::memcpy(reply->data.data() + n, s.state1.data(), n * 4);
  std::memcpy(reply->data.data() + 2 * n, s.state2.data(), n * 4);
  ReplyHeader r;
  r.key_space = s.key_space;
  r.slice = s.slice.index;
  r.server = options_.server_index;
  r.version = options_.consistency == Consistency::kBsp ? s.applied_steps : s.updates;
  r.request = w.state_read_request;
  Result<Request> sent = transport_->SendAm(w.peer, kAmStateReply, HeaderBytes(r),
                                            reply->data.data(), reply->data.size() * 4);
  if (!sent.ok()) {
    LOG(WARNING) << "ps server " << options_.server_index << ": state reply to rank " << w.peer
                 << " failed: " << sent.status().ToString();
    return;
  }
  reply->request = std::move(sent).value();
  state_replies_.push_back(std::move(reply));
}

void PsServer::OnStateWrite(const AmInfo& info, std::span<const std::byte> payload) {
  Result<RequestHeader> h = DecodeHeader<RequestHeader>(info.header);
  if (!h.ok()) return Reject(info.peer, RequestHeader{}, kAmAck, h.status());
  if (Status ok = CheckStateful(); !ok.ok()) return Reject(info.peer, *h, kAmAck, ok);
  Result<LocalSlice*> sr = Validate(*h, info.peer, /*need_init=*/false);
  if (!sr.ok()) return Reject(info.peer, *h, kAmAck, sr.status());
  LocalSlice& s = **sr;
  const size_t n = s.params.size();
  if (payload.size() != n * 4 * kStateArrays) {
    return Reject(
        info.peer, *h, kAmAck,
        Status::InvalidArgument("state write of " + std::to_string(payload.size()) +
                                " bytes to slice " + std::to_string(h->slice) + ", expected " +
                                std::to_string(n * 4 * kStateArrays) + " (params, m, v)"));
  }
  if (h->clock < 0) {
    return Reject(
        info.peer, *h, kAmAck,
        Status::InvalidArgument("state write with negative clock " + std::to_string(h->clock)));
  }
  const bool pushes_pending =
      s.arrived != 0 || std::any_of(s.workers.begin(), s.workers.end(),
                                    [](const auto& w) { return w.state != SlotState::kFree; });
  if (pushes_pending) {
    return Reject(info.peer, *h, kAmAck,
                  Status::InvalidArgument("state write to slice " + std::to_string(h->slice) +
                                          " while pushes of it are pending"));
  }
  const std::byte* from = payload.data();
  std::memcpy(s.params.data(), from, n * 4);
  std::memcpy(s.state1.data(), from + n * 4, n * 4);
  std::memcpy(s.state2.data(), from + 2 * n * 4, n * 4);
  if (Status st = RefreshBf16(s); !st.ok()) return Reject(info.peer, *h, kAmAck, st);
  s.initialized = true;
  s.applied_steps = h->clock;
  s.updates = options_.consistency == Consistency::kBsp
                  ? h->clock
                  : h->clock * static_cast<int64_t>(s.workers.size());
  for (auto& w : s.workers) w.pushes = h->clock;
  Ack(info.peer, *h);
  ServeParkedPulls(s);
}

void PsServer::SendReply(LocalSlice& s, int worker) {
  auto& w = s.workers[static_cast<size_t>(worker)];
  w.pull_parked = false;
  int64_t min_pushes = w.pushes;
  for (const auto& other : s.workers) min_pushes = std::min(min_pushes, other.pushes);
  stats_.max_served_staleness = std::max(stats_.max_served_staleness, w.pull_clock - min_pushes);
  ReplyHeader r;
  r.key_space = s.key_space;
  r.slice = s.slice.index;
  r.server = options_.server_index;
  r.version = options_.consistency == Consistency::kBsp ? s.applied_steps : s.updates;
  r.request = w.pull_request;
  const size_t bytes = s.slot_bytes();
  const void* source =
      s.params_bf16.empty() ? static_cast<const void*>(s.params.data()) : s.params_bf16.data();
  if (options_.consistency != Consistency::kBsp) {
    // Later pushes of other workers change the parameters while the reply is in flight:
    // send a copy.
    std::memcpy(w.reply_copy.data(), source, bytes);
    source = w.reply_copy.data();
  }
  Result<Request> sent = transport_->SendAm(w.peer, kAmReply, HeaderBytes(r), source, bytes);
  ++stats_.pulls;
  stats_.pull_bytes += static_cast<int64_t>(bytes);
  if (!sent.ok()) {
    LOG(WARNING) << "ps server " << options_.server_index << ": reply to rank " << w.peer
                 << " failed: " << sent.status().ToString();
    return;
  }
  w.reply = std::move(sent).value();
  w.replying = true;
  replies_in_flight_.emplace_back(&s, worker);
}

void PsServer::RetireReplies() {
  for (size_t i = 0; i < state_replies_.size();) {
    if (!state_replies_[i]->request.done()) {
      ++i;
      continue;
    }
    Status st = state_replies_[i]->request.status();
    if (!st.ok()) LOG(WARNING) << "ps server: state reply failed: " << st.ToString();
    state_replies_[i] = std::move(state_replies_.back());
    state_replies_.pop_back();
  }
  for (size_t i = 0; i < replies_in_flight_.size();) {
    auto [s, worker] = replies_in_flight_[i];
    auto& w = s->workers[static_cast<size_t>(worker)];
    if (!w.reply.done()) {
      ++i;
      continue;
    }
    Status st = w.reply.status();
    if (!st.ok()) {
      LOG(WARNING) << "ps server " << options_.server_index << ": reply failed: " << st.ToString();
    }
    w.replying = false;
    w.reply = Request();
    replies_in_flight_[i] = replies_in_flight_.back();
    replies_in_flight_.pop_back();
    if (options_.consistency == Consistency::kBsp &&
        s->arrived == static_cast<int>(s->workers.size())) {
      Status applied = Apply(*s, -1);
      if (!applied.ok()) LOG(ERROR) << "ps server: update failed: " << applied.ToString();
    }
    ServeParkedPulls(*s);
  }
}

}  // namespace pszero::ps
