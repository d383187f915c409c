#include "worker/ps/ps_client.h"

#include <algorithm>
#include <cstring>

#include "common/dtype.h"

namespace pszero::ps {

struct PsClient::SliceState {
  int64_t ready = 0;         // gradient elements marked ready this step
  bool pushed = false;       // pushed this step
  bool ack_pending = false;  // push or init waiting for the server's ack
  bool pull_pending = false;
  bool state_pending = false;  // a state read waiting for its reply
  uint64_t state_request = 0;
  int64_t pulled_for_clock = -1;  // clock of the last pull requested
  Request send;                   // the push / init AM (its payload is our buffer)
  Status error;                   // first failure reported by the server
};

PsClient::PsClient(Transport* transport, PsClientOptions options, SliceMap map, void* params,
                   const void* grads)
    : transport_(transport),
      options_(std::move(options)),
      map_(std::move(map)),
      params_(static_cast<std::byte*>(params)),
      grads_(static_cast<const std::byte*>(grads)),
      element_bytes_(DTypeSize(options_.dtype)),
      slices_(static_cast<size_t>(map_.num_slices())) {}

PsClient::~PsClient() {
  // The handlers point at this object: late messages are dropped from now on.
  for (uint16_t id : {kAmAck, kAmReply, kAmStatsReply, kAmStateReply}) {
    (void)transport_->SetAmHandler(
        id, {.payload_destination = nullptr,
             .on_message = [](const AmInfo&, std::span<const std::byte>) {}});
  }
}

Result<std::unique_ptr<PsClient>> PsClient::Create(Transport* transport, PsClientOptions options,
                                                   std::span<float> params,
                                                   std::span<const float> grads) {
  if (options.dtype != DType::kFloat32) {
    return Status::InvalidArgument("ps client: fp32 buffers for a " +
                                   std::string(DTypeName(options.dtype)) + " key space");
  }
  if (params.size() != grads.size()) {
    return Status::InvalidArgument(
        "ps client: parameter and gradient buffers must be equal and non-empty");
  }
  return Create(transport, std::move(options), params.data(), grads.data(),
                static_cast<int64_t>(params.size()));
}

Result<std::unique_ptr<PsClient>> PsClient::Create(Transport* transport, PsClientOptions options,
                                                   void* params, const void* grads, int64_t numel) {
  if (options.server_ranks.empty()) return Status::InvalidArgument("ps client: no servers");
  if (options.num_workers < 1 || options.worker < 0 || options.worker >= options.num_workers) {
    return Status::InvalidArgument("ps client: worker index out of range");
  }
  if (options.dtype != DType::kFloat32 && options.dtype != DType::kBFloat16) {
    return Status::InvalidArgument("ps client: a key space is fp32 or bf16, not " +
                                   std::string(DTypeName(options.dtype)));
  }
  if (numel < 1 || params == nullptr || grads == nullptr) {
    return Status::InvalidArgument(
        "ps client: parameter and gradient buffers must be equal and non-empty");
  }
  Result<SliceMap> map =
      SliceMap::Create(numel, options.slice_bytes, static_cast<int>(options.server_ranks.size()));
  if (!map.ok()) return map.status();
  std::unique_ptr<PsClient> client(
      new PsClient(transport, std::move(options), std::move(map).value(), params, grads));
  PsClient* self = client.get();
  AmHandler ack;
  ack.on_message = [self](const AmInfo& info, std::span<const std::byte>) { self->OnAck(info); };
  AmHandler reply;
  reply.payload_destination = [self](const AmInfo& info) { return self->ReplyDestination(info); };
  reply.on_message = [self](const AmInfo& info, std::span<const std::byte> payload) {
    self->OnReply(info, payload);
  };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmAck, std::move(ack)));
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmReply, std::move(reply)));
  AmHandler stats;
  stats.on_message = [self](const AmInfo& info, std::span<const std::byte>) {
    Result<StatsReplyHeader> h = DecodeHeader<StatsReplyHeader>(info.header);
    if (!h.ok() || h->request != self->stats_request_) return;
    self->stats_answer_ = h->counters;
    self->stats_answered_ = true;
  };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmStatsReply, std::move(stats)));
  AmHandler state;
  state.on_message = [self](const AmInfo& info, std::span<const std::byte> payload) {
    self->OnStateReply(info, payload);
  };
  PSZERO_RETURN_IF_ERROR(transport->SetAmHandler(kAmStateReply, std::move(state)));
  for (int rank : client->options_.server_ranks) {
    PSZERO_RETURN_IF_ERROR(transport->Connect(rank));
  }
  return client;
}

std::string PsClient::ServerName(int server) const {
  return "ps server " + std::to_string(server) + " (transport rank " +
         std::to_string(options_.server_ranks[static_cast<size_t>(server)]) + ")";
}

RequestHeader PsClient::Header(int slice) const {
  const Slice& s = map_.slice(slice);
  RequestHeader h;
  h.dtype = static_cast<uint8_t>(options_.dtype);
  h.key_space = options_.key_space;
  h.slice = slice;
  h.worker = options_.worker;
  h.num_workers = options_.num_workers;
  h.total_numel = map_.numel();
  h.slice_begin = s.begin;
  h.numel = s.numel;
  h.clock = clock_;
  return h;
}

Status PsClient::SendRequest(uint16_t am, int slice, const void* payload, size_t bytes,
                             int64_t clock) {
  SliceState& st = slices_[static_cast<size_t>(slice)];
  RequestHeader h = Header(slice);
  h.clock = clock;
  h.request = next_request_++;
  const int server = map_.slice(slice).server;
  Result<Request> sent = transport_->SendAm(options_.server_ranks[static_cast<size_t>(server)], am,
                                            HeaderBytes(h), payload, bytes);
  if (!sent.ok()) return sent.status().WithContext(ServerName(server));
  if (am == kAmPull) {
    st.pull_pending = true;
    st.pulled_for_clock = clock;
    ++stats_.pulls;
  } else {
    st.send = std::move(sent).value();
    st.ack_pending = true;
    if (am == kAmPush) {
      ++stats_.pushes;
      stats_.push_bytes += static_cast<int64_t>(bytes);
    }
  }
  return Status::Ok();
}

Status PsClient::Initialize(std::chrono::milliseconds timeout, std::span<const float> initial) {
  if (options_.worker == 0) {
    if (initial.empty() && options_.dtype == DType::kFloat32) {
      initial = std::span<const float>(reinterpret_cast<const float*>(params_),
                                       static_cast<size_t>(map_.numel()));
    }
    if (initial.size() != static_cast<size_t>(map_.numel())) {
      return Status::InvalidArgument("ps client: initial values of " +
                                     std::to_string(initial.size()) + " fp32 elements for a " +
                                     std::string(DTypeName(options_.dtype)) + " key space of " +
                                     std::to_string(map_.numel()));
    }
    for (int i = 0; i < map_.num_slices(); ++i) {
      const Slice& s = map_.slice(i);
      PSZERO_RETURN_IF_ERROR(SendRequest(kAmInit, i, initial.data() + s.begin,
                                         static_cast<size_t>(s.numel) * 4, clock_));
    }
    PSZERO_RETURN_IF_ERROR(WaitAll(timeout));
  }
  for (int i = 0; i < map_.num_slices(); ++i) PSZERO_RETURN_IF_ERROR(PullSlice(i));
  return WaitAll(timeout);
}

Status PsClient::PushSlice(int slice) {
  if (slice < 0 || slice >= map_.num_slices()) {
    return Status::InvalidArgument("ps client: no slice " + std::to_string(slice));
  }
  SliceState& st = slices_[static_cast<size_t>(slice)];
  if (st.pushed) {
    return Status::InvalidArgument("ps client: slice " + std::to_string(slice) +
                                   " already pushed in step " + std::to_string(clock_));
  }
  if (st.ack_pending || st.pull_pending) {
    return Status::InvalidArgument("ps client: slice " + std::to_string(slice) +
                                   " pushed while its previous push or pull is in flight");
  }
  const Slice& s = map_.slice(slice);
  st.pushed = true;
  PSZERO_RETURN_IF_ERROR(
      SendRequest(kAmPush, slice, grads_ + Bytes(s.begin), Bytes(s.numel), clock_));
  // The server answers this pull once the push above is applied (bsp: with the others').
  if (options_.pull_on_push) return SendRequest(kAmPull, slice, nullptr, 0, clock_ + 1);
  return Status::Ok();
}

Status PsClient::PushGradients(int64_t begin, int64_t end) {
  if (begin < 0 || end > map_.numel() || begin > end) {
    return Status::InvalidArgument("ps client: gradient range out of bounds");
  }
  auto [first, last] = map_.SlicesTouching(begin, end);
  for (int i = first; i < last; ++i) {
    const Slice& s = map_.slice(i);
    SliceState& st = slices_[static_cast<size_t>(i)];
    st.ready += std::min(end, s.begin + s.numel) - std::max(begin, s.begin);
    if (st.ready > s.numel) {
      return Status::InvalidArgument("ps client: gradients of slice " + std::to_string(i) +
                                     " marked ready twice in one step");
    }
    if (st.ready == s.numel) PSZERO_RETURN_IF_ERROR(PushSlice(i));
  }
  return Status::Ok();
}

Status PsClient::EndStep() {
  for (int i = 0; i < map_.num_slices(); ++i) {
    if (!slices_[static_cast<size_t>(i)].pushed) {
      return Status::InvalidArgument("ps client: step " + std::to_string(clock_) +
                                     " ended before slice " + std::to_string(i) + " was pushed");
    }
  }
  ++clock_;
  for (auto& st : slices_) {
    st.pushed = false;
    st.ready = 0;
  }
  for (int i = 0; i < map_.num_slices(); ++i) {
    if (slices_[static_cast<size_t>(i)].pulled_for_clock != clock_) {
      PSZERO_RETURN_IF_ERROR(PullSlice(i));
    }
  }
  return Status::Ok();
}

Status PsClient::PullSlice(int slice) {
  if (slice < 0 || slice >= map_.num_slices()) {
    return Status::InvalidArgument("ps client: no slice " + std::to_string(slice));
  }
  if (slices_[static_cast<size_t>(slice)].pull_pending) {
    return Status::InvalidArgument("ps client: slice " + std::to_string(slice) +
                                   " is already being pulled");
  }
  return SendRequest(kAmPull, slice, nullptr, 0, clock_);
}

void PsClient::Abort(const Status& why) {
  std::lock_guard lock(abort_mu_);
  if (aborted_.load()) return;
  abort_status_ = why.ok() ? Status::Unavailable("ps client aborted") : why;
  aborted_ = true;
}

Status PsClient::AbortStatus() {
  if (!aborted_.load()) return Status::Ok();
  std::lock_guard lock(abort_mu_);
  return abort_status_;
}

void PsClient::OnAck(const AmInfo& info) {
  Result<ReplyHeader> h = DecodeHeader<ReplyHeader>(info.header);
  if (!h.ok()) return;
  Status status;
  if (h->code != 0) {
    const int server = h->server;
    status = Status::InvalidArgument(
        (server >= 0 && server < static_cast<int>(options_.server_ranks.size())
             ? ServerName(server)
             : "ps server at rank " + std::to_string(info.peer)) +
        " rejected the request: " +
        std::string(h->message, strnlen(h->message, sizeof(h->message))));
  }
  if (raw_request_ != 0 && h->request == raw_request_) {
    raw_answered_ = true;
    raw_status_ = status;
    return;
  }
  if (h->slice < 0 || h->slice >= map_.num_slices()) return;
  SliceState& st = slices_[static_cast<size_t>(h->slice)];
  st.ack_pending = false;
  if (!status.ok() && st.error.ok()) st.error = status;
}

void* PsClient::ReplyDestination(const AmInfo& info) {
  Result<ReplyHeader> h = DecodeHeader<ReplyHeader>(info.header);
  if (!h.ok() || h->code != 0 || h->slice < 0 || h->slice >= map_.num_slices()) return nullptr;
  const Slice& s = map_.slice(h->slice);
  if (info.payload_bytes != Bytes(s.numel)) return nullptr;
  return ParamsAt(s.begin);
}

void PsClient::OnReply(const AmInfo& info, std::span<const std::byte> payload) {
  Result<ReplyHeader> h = DecodeHeader<ReplyHeader>(info.header);
  if (!h.ok() || h->slice < 0 || h->slice >= map_.num_slices()) return;
  SliceState& st = slices_[static_cast<size_t>(h->slice)];
  st.pull_pending = false;
  const Slice& s = map_.slice(h->slice);
  Status status;
  if (h->code != 0) {
    status =
        Status::InvalidArgument(ServerName(map_.slice(h->slice).server) +
                                " rejected the pull of slice " + std::to_string(h->slice) + ": " +
                                std::string(h->message, strnlen(h->message, sizeof(h->message))));
  } else if (payload.size() != Bytes(s.numel)) {
    status = Status::Internal(ServerName(s.server) + " sent " + std::to_string(payload.size()) +
                              " bytes for slice " + std::to_string(h->slice));
  } else {
    std::byte* dest = ParamsAt(s.begin);
    if (payload.data() != dest) {
      std::memcpy(dest, payload.data(), payload.size());
    }
    stats_.pull_bytes += static_cast<int64_t>(payload.size());
  }
  if (!status.ok() && st.error.ok()) st.error = status;
}

Status PsClient::WaitSlices(int first, int last, bool pulls_too,
                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    PSZERO_RETURN_IF_ERROR(AbortStatus());
    int pending = -1;
    for (int i = first; i < last; ++i) {
      SliceState& st = slices_[static_cast<size_t>(i)];
      if (!st.error.ok()) {
        Status e = st.error;
        st.error = Status::Ok();
        return e;
      }
      if (st.send.done() && !st.send.status().ok()) {
        return st.send.status().WithContext(ServerName(map_.slice(i).server));
      }
      if (pending < 0 && (st.ack_pending || (pulls_too && (st.pull_pending || st.state_pending)))) {
        pending = i;
      }
    }
    if (pending < 0) return Status::Ok();
    // Any server with work pending that the transport knows dead fails the wait now.
    for (int i = first; i < last; ++i) {
      const SliceState& st = slices_[static_cast<size_t>(i)];
      if (!st.ack_pending && !(pulls_too && (st.pull_pending || st.state_pending))) continue;
      const int server = map_.slice(i).server;
      Status peer = transport_->PeerStatus(options_.server_ranks[static_cast<size_t>(server)]);
      if (!peer.ok()) {
        return Status::Unavailable(ServerName(server) + " is lost: " + peer.message());
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      const SliceState& st = slices_[static_cast<size_t>(pending)];
      return Status::DeadlineExceeded(std::string("ps client worker ") +
                                      std::to_string(options_.worker) + ": " +
                                      (st.ack_pending    ? "push"
                                       : st.pull_pending ? "pull"
                                                         : "state read") +
                                      " of slice " + std::to_string(pending) + " from " +
                                      ServerName(map_.slice(pending).server) +
                                      " still pending at clock " + std::to_string(clock_));
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    Result<int> polled = transport_->Poll(std::min(left, std::chrono::milliseconds(100)));
    if (!polled.ok()) return polled.status();
  }
}

Status PsClient::WaitParams(int64_t begin, int64_t end, std::chrono::milliseconds timeout) {
  auto [first, last] = map_.SlicesTouching(begin, end);
  return WaitSlices(first, last, /*pulls_too=*/true, timeout);
}

Status PsClient::WaitAll(std::chrono::milliseconds timeout) {
  return WaitSlices(0, map_.num_slices(), /*pulls_too=*/true, timeout);
}

Status PsClient::WaitPushes(std::chrono::milliseconds timeout) {
  return WaitSlices(0, map_.num_slices(), /*pulls_too=*/false, timeout);
}

Status PsClient::CheckIdle(const char* what) const {
  for (size_t i = 0; i < slices_.size(); ++i) {
    const SliceState& st = slices_[i];
    if (st.pushed || st.ack_pending || st.pull_pending || st.state_pending) {
      return Status::InvalidArgument(std::string("ps client: ") + what + " while slice " +
                                     std::to_string(i) + " is in flight");
    }
  }
  return Status::Ok();
}

Status PsClient::ReadState(std::span<float> params, std::span<float> m, std::span<float> v,
                           std::chrono::milliseconds timeout) {
  const auto n = static_cast<size_t>(map_.numel());
  if (params.size() != n || m.size() != n || v.size() != n) {
    return Status::InvalidArgument("ps client: state read into buffers of the wrong size");
  }
  PSZERO_RETURN_IF_ERROR(CheckIdle("state read"));
  state_params_ = params;
  state_m_ = m;
  state_v_ = v;
  for (int i = 0; i < map_.num_slices(); ++i) {
    SliceState& st = slices_[static_cast<size_t>(i)];
    RequestHeader h = Header(i);
    h.request = next_request_++;
    const int server = map_.slice(i).server;
    Result<Request> sent = transport_->SendAm(options_.server_ranks[static_cast<size_t>(server)],
                                              kAmStateRead, HeaderBytes(h), nullptr, 0);
    if (!sent.ok()) return sent.status().WithContext(ServerName(server));
    st.state_pending = true;
    st.state_request = h.request;
  }
  Status done = WaitSlices(0, map_.num_slices(), /*pulls_too=*/true, timeout);
  state_params_ = state_m_ = state_v_ = {};
  if (!done.ok()) {
    // Late replies find no destination and are dropped; the read is over.
    for (auto& st : slices_) {
      st.state_pending = false;
      st.error = Status::Ok();
    }
  }
  return done;
}

void PsClient::OnStateReply(const AmInfo& info, std::span<const std::byte> payload) {
  Result<ReplyHeader> h = DecodeHeader<ReplyHeader>(info.header);
  if (!h.ok()) return;
  if (raw_request_ != 0 && h->request == raw_request_) {
    raw_answered_ = true;
    raw_status_ =
        h->code == 0 ? Status::Ok()
                     : Status::InvalidArgument(
                           "ps server " + std::to_string(h->server) + " rejected the state read: " +
                           std::string(h->message, strnlen(h->message, sizeof(h->message))));
    return;
  }
  if (h->slice < 0 || h->slice >= map_.num_slices()) return;
  SliceState& st = slices_[static_cast<size_t>(h->slice)];
  if (!st.state_pending || h->request != st.state_request) return;
  st.state_pending = false;
  const Slice& s = map_.slice(h->slice);
  const auto n = static_cast<size_t>(s.numel);
  Status status;
  if (h->code != 0) {
    status = Status::InvalidArgument(
        ServerName(s.server) + " rejected the state read of slice " + std::to_string(h->slice) +
        ": " + std::string(h->message, strnlen(h->message, sizeof(h->message))));
  } else if (payload.size() != n * 4 * kStateArrays || state_params_.empty()) {
    status = Status::Internal(ServerName(s.server) + " sent " + std::to_string(payload.size()) +
                              " bytes of state for slice " + std::to_string(h->slice));
  } else {
    const std::byte* from = payload.data();
    std::memcpy(state_params_.data() + s.begin, from, n * 4);
    std::memcpy(state_m_.data() + s.begin, from + n * 4, n * 4);
    std::memcpy(state_v_.data() + s.begin, from + 2 * n * 4, n * 4);
  }
  if (!status.ok() && st.error.ok()) st.error = status;
}

Status PsClient::WriteState(std::span<const float> params, std::span<const float> m,
                            std::span<const float> v, int64_t steps,
                            std::chrono::milliseconds timeout) {
  const auto n = static_cast<size_t>(map_.numel());
  if (params.size() != n || m.size() != n || v.size() != n) {
    return Status::InvalidArgument("ps client: state write from buffers of the wrong size");
  }
  if (steps < 0) return Status::InvalidArgument("ps client: state write at a negative step");
  PSZERO_RETURN_IF_ERROR(CheckIdle("state write"));
  // One contiguous [params, m, v] payload per slice.
  state_staging_.resize(n * kStateArrays);
  for (const Slice& s : map_.slices()) {
    float* to = state_staging_.data() + kStateArrays * s.begin;
    const auto k = static_cast<size_t>(s.numel);
    std::memcpy(to, params.data() + s.begin, k * 4);
    std::memcpy(to + k, m.data() + s.begin, k * 4);
    std::memcpy(to + 2 * k, v.data() + s.begin, k * 4);
  }
  for (const Slice& s : map_.slices()) {
    PSZERO_RETURN_IF_ERROR(SendRequest(kAmStateWrite, s.index,
                                       state_staging_.data() + kStateArrays * s.begin,
                                       static_cast<size_t>(s.numel) * 4 * kStateArrays, steps));
  }
  return WaitSlices(0, map_.num_slices(), /*pulls_too=*/false, timeout);
}

Status PsClient::ResumeAt(int64_t steps, std::chrono::milliseconds timeout) {
  if (steps < 0) return Status::InvalidArgument("ps client: resume at a negative step");
  PSZERO_RETURN_IF_ERROR(CheckIdle("resume"));
  clock_ = steps;
  for (int i = 0; i < map_.num_slices(); ++i) PSZERO_RETURN_IF_ERROR(PullSlice(i));
  return WaitAll(timeout);
}

Status PsClient::WaitForAnswer(const bool& answered, int server, const char* what,
                               std::chrono::milliseconds timeout) {
  const int rank = options_.server_ranks[static_cast<size_t>(server)];
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!answered) {
    PSZERO_RETURN_IF_ERROR(AbortStatus());
    Status peer = transport_->PeerStatus(rank);
    if (!peer.ok()) return Status::Unavailable(ServerName(server) + " is lost: " + peer.message());
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      return Status::DeadlineExceeded(std::string("no answer to ") + what + " from " +
                                      ServerName(server));
    }
    Result<int> polled = transport_->Poll(
        std::min(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now),
                 std::chrono::milliseconds(100)));
    if (!polled.ok()) return polled.status();
  }
  return Status::Ok();
}

Result<ServerCounters> PsClient::QueryServerStats(int server, std::chrono::milliseconds timeout) {
  if (server < 0 || server >= static_cast<int>(options_.server_ranks.size())) {
    return Status::InvalidArgument("ps client: no server " + std::to_string(server));
  }
  RequestHeader h;
  h.dtype = static_cast<uint8_t>(options_.dtype);
  h.key_space = options_.key_space;
  h.worker = options_.worker;
  h.num_workers = options_.num_workers;
  h.request = next_request_++;
  stats_request_ = h.request;
  stats_answered_ = false;
  Result<Request> sent = transport_->SendAm(options_.server_ranks[static_cast<size_t>(server)],
                                            kAmStats, HeaderBytes(h), nullptr, 0);
  if (!sent.ok()) return sent.status().WithContext(ServerName(server));
  PSZERO_RETURN_IF_ERROR(WaitForAnswer(stats_answered_, server, "the stats request", timeout));
  return stats_answer_;
}

Status PsClient::SendRaw(int server, uint16_t am, const RequestHeader& header, const void* payload,
                         size_t bytes, std::chrono::milliseconds timeout) {
  RequestHeader h = header;
  h.request = next_request_++;
  raw_request_ = h.request;
  raw_answered_ = false;
  raw_status_ = Status::Ok();
  const int rank = options_.server_ranks[static_cast<size_t>(server)];
  Result<Request> sent = transport_->SendAm(rank, am, HeaderBytes(h), payload, bytes);
  if (!sent.ok()) return sent.status();
  PSZERO_RETURN_IF_ERROR(WaitForAnswer(raw_answered_, server, "the raw request", timeout));
  // Keep the payload's send alive until it is done.
  Status done = transport_->WaitAll(std::span<Request>(&sent.value(), 1), timeout);
  raw_request_ = 0;
  if (!done.ok()) return done;
  return raw_status_;
}

}  // namespace pszero::ps
