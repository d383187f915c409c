#include "common/ucx/ucx_transport.h"

#include <sched.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <set>
#include <sstream>

#include <glog/logging.h>

namespace pszero::ucx {

namespace {

// Whether a UCX_TLS value (nullptr: unset) can load a shared-memory (mm) transport.
bool SharedMemoryAllowed(const char* tls) {
  if (tls == nullptr || *tls == '\0' || *tls == '^') return true;  // all, or all but some
  std::istringstream items(tls);
  for (std::string item; std::getline(items, item, ',');) {
    item = item.substr(0, item.find(':'));
    if (item == "all" || item == "sm" || item == "shm" || item == "mm" || item == "posix" ||
        item == "sysv" || item == "xpmem") {
      return true;
    }
  }
  return false;
}

// One UCX AM id carries every pszero active message; the pszero id is in the header.
constexpr unsigned kUcxAmId = 7;
constexpr uint32_t kAmMagic = 0x70737a41;  // "psZA"

struct AmWireHeader {
  uint32_t magic;
  int32_t src_rank;
  uint16_t id;
  uint16_t header_bytes;
};

uint64_t WireTag(int src_rank, uint64_t tag) {
  return (static_cast<uint64_t>(src_rank) << kTagBits) | (tag & kTagMask);
}

std::string HexEncode(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

Result<std::string> HexDecode(std::string_view hex) {
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (hex.size() % 2 != 0) return Status::Corruption("odd-length hex address");
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return Status::Corruption("bad hex digit in address");
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

std::string TagString(uint64_t tag) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "tag 0x%llx (comm %llu seq %llu seg %llu)",
                static_cast<unsigned long long>(tag),
                static_cast<unsigned long long>(tag >> (kTagSeqBits + kTagSegmentBits)),
                static_cast<unsigned long long>((tag >> kTagSegmentBits) &
                                                ((uint64_t{1} << kTagSeqBits) - 1)),
                static_cast<unsigned long long>(tag & ((uint64_t{1} << kTagSegmentBits) - 1)));
  return buf;
}

bool IsPeerFailure(ucs_status_t status) {
  switch (status) {
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_TIMED_OUT:
      return true;
    default:
      return false;
  }
}

}  // namespace

// ---- private types ----

struct UcxTransport::Peer {
  UcxTransport* transport = nullptr;
  int rank = -1;
  std::unique_ptr<UcxEndpoint> endpoint;
  Status failure;  // not ok once the peer is known dead
  PeerByteCounters counters;
};

struct UcxTransport::AmArrival {
  int peer = -1;
  uint16_t id = 0;
  std::vector<std::byte> header;
  void* data = nullptr;  // eager data held by UCX (release after delivery), or rndv desc
  size_t length = 0;
  bool rendezvous = false;
  bool held = false;             // data must be returned with ucp_am_data_release
  std::vector<std::byte> owned;  // eager data copied out, or transport-owned rndv buffer
  void* destination = nullptr;   // where a rendezvous payload lands
};

struct UcxTransport::PendingOp {
  enum class Kind { kSend, kRecv, kAmSend, kAmData };
  UcxTransport* transport = nullptr;
  Kind kind = Kind::kSend;
  std::shared_ptr<Completion> completion;
  UcxRequest request;
  size_t posted_bytes = 0;
  std::vector<std::byte> am_header;    // kAmSend: kept until the send completes
  std::unique_ptr<AmArrival> arrival;  // kAmData
  ucs_status_t ucx_status = UCS_INPROGRESS;
  size_t length = 0;
  bool abandoned = false;  // ended with its peer's failure while UCX still held the request
};

class UcxTransport::EpollFd {
 public:
  static Result<std::unique_ptr<EpollFd>> Create(int event_fd) {
    int fd = epoll_create1(EPOLL_CLOEXEC);
    if (fd < 0) return Status::IoError(std::string("epoll_create1: ") + std::strerror(errno));
    auto epoll = std::unique_ptr<EpollFd>(new EpollFd(fd));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = event_fd;
    if (epoll_ctl(fd, EPOLL_CTL_ADD, event_fd, &ev) != 0) {
      return Status::IoError(std::string("epoll_ctl: ") + std::strerror(errno));
    }
    return epoll;
  }
  ~EpollFd() { ::close(fd_); }
  EpollFd(const EpollFd&) = delete;
  EpollFd& operator=(const EpollFd&) = delete;
  // Sleeps until the fd is readable or `timeout_ms` passes.
  void Wait(int timeout_ms) {
    epoll_event ev{};
    (void)epoll_wait(fd_, &ev, 1, timeout_ms);  // EINTR or timeout: the caller re-checks
  }

 private:
  explicit EpollFd(int fd) : fd_(fd) {}
  int fd_;
};

class UcxTransport::Registration final : public MemoryRegistration {
 public:
  explicit Registration(std::unique_ptr<UcxMemory> memory) : memory_(std::move(memory)) {}
  void* data() const override { return memory_->data(); }
  size_t bytes() const override { return memory_->bytes(); }
  ucp_mem_h memh() const { return memory_->get(); }

 private:
  std::unique_ptr<UcxMemory> memory_;
};

// ---- creation and teardown ----

UcxTransport::UcxTransport(UcxTransportOptions options, KeyValueStore* store)
    : options_(std::move(options)), store_(store) {}

Result<std::unique_ptr<UcxTransport>> UcxTransport::Create(const UcxTransportOptions& options,
                                                           KeyValueStore* store) {
  if (store == nullptr) return Status::InvalidArgument("UcxTransport needs a KeyValueStore");
  if (options.world_size < 1 || options.world_size > kMaxTransportRanks) {
    return Status::InvalidArgument("world size " + std::to_string(options.world_size) +
                                   " outside [1, " + std::to_string(kMaxTransportRanks) + "]");
  }
  if (options.rank < 0 || options.rank >= options.world_size) {
    return Status::InvalidArgument("rank " + std::to_string(options.rank) + " outside world of " +
                                   std::to_string(options.world_size));
  }
  auto transport = std::unique_ptr<UcxTransport>(new UcxTransport(options, store));

  std::map<std::string, std::string> defaults;
  defaults["KEEPALIVE_INTERVAL"] = std::to_string(options.keepalive_interval.count()) + "ms";
  // UCX_POSIX_ERROR_HANDLING and UCX_SYSV_ERROR_HANDLING are per-transport aliases of the
  // shared-memory base option MM_ERROR_HANDLING; only the base name is accepted by
  // ucp_config_modify (the aliases are reported as "invalid configuration" and ignored).
  // With UCX_TLS naming no shared-memory transport (tcp,self: an emulated host) the mm
  // options do not exist, and UCX would print "invalid configuration" to stdout.
  const bool shm = SharedMemoryAllowed(std::getenv("UCX_TLS"));
  if (shm && options.shm_error_handling && std::getenv("UCX_POSIX_ERROR_HANDLING") == nullptr &&
      std::getenv("UCX_SYSV_ERROR_HANDLING") == nullptr) {
    defaults["MM_ERROR_HANDLING"] = "y";
  }
  if (shm && options.shm_fifo_size > 0 && std::getenv("UCX_POSIX_FIFO_SIZE") == nullptr &&
      std::getenv("UCX_SYSV_FIFO_SIZE") == nullptr) {
    defaults["MM_FIFO_SIZE"] = std::to_string(options.shm_fifo_size);
  }
  PSZERO_ASSIGN_OR_RETURN(transport->context_, UcxContext::Create(defaults));
  PSZERO_ASSIGN_OR_RETURN(transport->worker_, UcxWorker::Create(transport->context_));
  PSZERO_ASSIGN_OR_RETURN(transport->epoll_, EpollFd::Create(transport->worker_->event_fd()));

  ucp_am_handler_param_t am{};
  am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                  UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  am.id = kUcxAmId;
  am.flags = UCP_AM_FLAG_WHOLE_MSG | UCP_AM_FLAG_PERSISTENT_DATA;
  am.cb = &UcxTransport::OnAmArrival;
  am.arg = transport.get();
  ucs_status_t st = ucp_worker_set_am_recv_handler(transport->worker_->get(), &am);
  if (st != UCS_OK) return UcsError("worker_set_am_recv_handler", st);

  transport->peers_.resize(options.world_size);
  for (int r = 0; r < options.world_size; ++r) {
    auto peer = std::make_unique<Peer>();
    peer->transport = transport.get();
    peer->rank = r;
    transport->peers_[r] = std::move(peer);
  }

  PSZERO_ASSIGN_OR_RETURN(std::string address, transport->worker_->Address());
  PSZERO_RETURN_IF_ERROR(store->Set(
      options.key_prefix + "/ucx-address/" + std::to_string(options.rank), HexEncode(address)));
  return transport;
}

UcxTransport::~UcxTransport() {
  if (!worker_) return;  // Create failed before there was anything to drive
  // Handlers may refer to objects their owner has already destroyed: drop what still
  // arrives while tearing down.
  am_handlers_.clear();
  auto drain = [this](std::chrono::milliseconds budget) {
    const auto deadline = std::chrono::steady_clock::now() + budget;
    while (!pending_.empty() && std::chrono::steady_clock::now() < deadline) (void)Progress();
  };
  // Receives never finish on their own once nobody sends: cancel them. Sends get a bounded
  // time to finish; then endpoints are closed (forced if anything is still pending, which
  // completes their sends with an error).
  for (auto& [op, owned] : pending_) {
    if (op->kind == PendingOp::Kind::kRecv) ucp_request_cancel(worker_->get(), op->request.get());
  }
  drain(std::chrono::milliseconds(500));
  for (auto& peer : peers_) {
    if (peer && peer->endpoint) {
      (void)peer->endpoint->Close(/*force=*/!peer->failure.ok() || !pending_.empty(),
                                  std::chrono::milliseconds(500));
    }
  }
  // Whatever is left (e.g. AM payload fetches) is cancelled, so that no UCX callback can
  // run after its PendingOp is gone.
  for (auto& [op, owned] : pending_) ucp_request_cancel(worker_->get(), op->request.get());
  drain(std::chrono::milliseconds(500));
  if (!pending_.empty()) {
    LOG(WARNING) << "rank " << options_.rank << ": " << pending_.size()
                 << " operations still pending at teardown";
  }
  for (auto& arrival : am_arrivals_) {
    if (arrival->held) ucp_am_data_release(worker_->get(), arrival->data);
  }
  am_arrivals_.clear();
  // Requests that outlive the transport must not call back into it.
  for (auto& [op, owned] : pending_) {
    if (!op->completion->done) {
      op->completion->done = true;
      op->completion->status = Status::Unavailable("transport closed");
    }
  }
  pending_.clear();
  peers_.clear();
}

// ---- endpoints and peers ----

Status UcxTransport::CheckPeer(int peer) const {
  if (peer < 0 || peer >= options_.world_size) {
    return Status::InvalidArgument("peer rank " + std::to_string(peer) + " outside world of " +
                                   std::to_string(options_.world_size));
  }
  return peers_[peer]->failure;
}

Result<UcxEndpoint*> UcxTransport::Endpoint(int peer) {
  PSZERO_RETURN_IF_ERROR(CheckPeer(peer));
  Peer& p = *peers_[peer];
  if (!p.endpoint) {
    const std::string key = options_.key_prefix + "/ucx-address/" + std::to_string(peer);
    Result<std::string> hex = store_->Get(key, options_.connect_timeout);
    if (!hex.ok()) {
      return Status(hex.status().code() == StatusCode::kDeadlineExceeded ? StatusCode::kUnavailable
                                                                         : hex.status().code(),
                    "peer rank " + std::to_string(peer) +
                        " never published its address: " + hex.status().ToString());
    }
    PSZERO_ASSIGN_OR_RETURN(std::string address, HexDecode(*hex));
    Result<std::unique_ptr<UcxEndpoint>> ep = UcxEndpoint::Create(
        worker_.get(), address, &UcxTransport::OnEndpointError, &p, options_.peer_error_handling);
    if (!ep.ok()) {
      return Status::Unavailable("peer rank " + std::to_string(peer) + ": " +
                                 ep.status().ToString());
    }
    p.endpoint = std::move(ep).value();
  }
  return p.endpoint.get();
}

Status UcxTransport::Connect(int peer) { return Endpoint(peer).status(); }

std::string UcxTransport::EndpointTransports(int peer) {
  if (peer < 0 || peer >= options_.world_size || !peers_[peer]->endpoint) return "";
  char* text = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&text, &size);
  if (stream == nullptr) return "";
  ucp_ep_print_info(peers_[peer]->endpoint->get(), stream);
  std::fclose(stream);
  std::string info(text, size);
  std::free(text);
  // Lines look like "lane[0]:  0:posix/memory.0 md[0] -> ...".
  static const std::regex kLane(R"(lane\[\d+\]:\s+\d+:(\S+?)\.\d+\s)");
  std::set<std::string> names;
  for (auto it = std::sregex_iterator(info.begin(), info.end(), kLane);
       it != std::sregex_iterator(); ++it) {
    names.insert((*it)[1].str());
  }
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : " ") + n;
  return out;
}

void UcxTransport::Abandon(const Completion* completion) {
  PendingOp* op = nullptr;
  for (auto& [p, owned] : pending_) {
    if (p->completion.get() == completion) op = p;
  }
  // Sends cannot be cancelled (a failed peer's are completed by the forced close); a
  // receive is, and its buffer is safe once UCX has called back.
  if (op == nullptr || op->kind != PendingOp::Kind::kRecv) return;
  ucp_request_cancel(worker_->get(), op->request.get());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (!completion->done && std::chrono::steady_clock::now() < deadline) (void)Progress();
  if (!completion->done) {
    LOG(WARNING) << "rank " << options_.rank << ": an abandoned receive from rank "
                 << completion->peer << " did not end within 2 s";
  }
}

void UcxTransport::OnEndpointError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* peer = static_cast<Peer*>(arg);
  peer->transport->MarkPeerFailed(peer, status);
}

void UcxTransport::MarkPeerFailed(Peer* peer, ucs_status_t status) {
  if (!peer->failure.ok()) return;
  peer->failure = Status::Unavailable("peer rank " + std::to_string(peer->rank) +
                                      " failed: " + ucs_status_string(status));
  LOG(WARNING) << "rank " << options_.rank << ": " << peer->failure.ToString();
  failed_peers_.push_back(peer);
}

int UcxTransport::HandleFailedPeers() {
  int events = 0;
  while (!failed_peers_.empty()) {
    std::vector<Peer*> failed;
    failed.swap(failed_peers_);
    for (Peer* peer : failed) {
      // Tagged receives are posted on the worker, not the endpoint: cancel them here.
      for (auto& [op, owned] : pending_) {
        if (op->kind == PendingOp::Kind::kRecv && op->completion->peer == peer->rank) {
          ucp_request_cancel(worker_->get(), op->request.get());
        }
      }
      // After an error UCX requires a forced close; it completes the endpoint's sends.
      if (peer->endpoint) {
        Status closed = peer->endpoint->Close(/*force=*/true, std::chrono::seconds(1));
        if (!closed.ok()) {
          LOG(WARNING) << "rank " << options_.rank << ": closing the endpoint of failed rank "
                       << peer->rank << ": " << closed.ToString();
        }
        peer->endpoint.reset();
      }
      events += FinishCompleted();
      events += AbandonPeerOps(*peer);
      ++events;
    }
  }
  return events;
}

int UcxTransport::AbandonPeerOps(const Peer& peer) {
  // UCX 1.13 does not always complete a rendezvous send whose RTS went out before the
  // failure (the forced close leaves it waiting for an RTR that cannot come; seen in CI).
  // Nothing more moves on the closed endpoint, so the operation ends here with the peer's
  // failure. The request stays in pending_, owned, until UCX lets go of it or teardown.
  int events = 0;
  for (auto& [op, owned] : pending_) {
    Completion& c = *op->completion;
    if (c.peer != peer.rank || c.done) continue;
    c.status = OpStatus(*op, UCS_ERR_CONNECTION_RESET);
    c.done = true;
    op->abandoned = true;
    if (op->kind != PendingOp::Kind::kRecv) --outgoing_;
    ++events;
  }
  if (events > 0) {
    LOG(WARNING) << "rank " << options_.rank << ": " << events << " operation(s) with failed rank "
                 << peer.rank << " were still pending in UCX after the forced close; ended here";
  }
  return events;
}

// ---- registration cache ----

Result<std::shared_ptr<MemoryRegistration>> UcxTransport::RegisterMemory(void* data, size_t bytes) {
  if (data == nullptr || bytes == 0) {
    return Status::InvalidArgument("RegisterMemory of an empty range");
  }
  const auto start = reinterpret_cast<uintptr_t>(data);
  auto it = registrations_.upper_bound(start);
  if (it != registrations_.begin()) {
    --it;
    if (auto reg = it->second.lock(); reg && it->first + reg->bytes() >= start + bytes) {
      return std::shared_ptr<MemoryRegistration>(reg);
    }
  }
  // Drop registrations nobody holds any more.
  std::erase_if(registrations_, [](const auto& entry) { return entry.second.expired(); });
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<UcxMemory> memory,
                          UcxMemory::Register(context_, data, bytes));
  auto reg = std::make_shared<Registration>(std::move(memory));
  registrations_[start] = reg;
  return std::shared_ptr<MemoryRegistration>(reg);
}

ucp_mem_h UcxTransport::FindMemh(const void* data, size_t bytes) {
  if (registrations_.empty() || bytes == 0) return nullptr;
  const auto start = reinterpret_cast<uintptr_t>(data);
  auto it = registrations_.upper_bound(start);
  if (it == registrations_.begin()) return nullptr;
  --it;
  auto reg = it->second.lock();
  if (!reg || it->first + reg->bytes() < start + bytes) return nullptr;
  return reg->memh();
}

// ---- operations ----

Result<Request> UcxTransport::Track(std::unique_ptr<PendingOp> op, ucs_status_ptr_t request) {
  if (UCS_PTR_IS_ERR(request)) {
    Status s = OpStatus(*op, UCS_PTR_STATUS(request));
    if (IsPeerFailure(UCS_PTR_STATUS(request))) {
      MarkPeerFailed(peers_[op->completion->peer].get(), UCS_PTR_STATUS(request));
    }
    return s;
  }
  Request handle(op->completion, this);
  if (request == nullptr) {  // completed in place; the callback will not run
    op->ucx_status = UCS_OK;
    Finish(op.get());
    return handle;
  }
  op->request = UcxRequest(request);
  if (op->kind != PendingOp::Kind::kRecv) ++outgoing_;
  PendingOp* key = op.get();
  pending_.emplace(key, std::move(op));
  return handle;
}

Result<Request> UcxTransport::Send(int peer, uint64_t tag, const void* data, size_t bytes) {
  if (tag > kTagMask) return Status::InvalidArgument("tag wider than 48 bits: " + TagString(tag));
  PSZERO_ASSIGN_OR_RETURN(UcxEndpoint * ep, Endpoint(peer));
  auto op = std::make_unique<PendingOp>();
  op->transport = this;
  op->kind = PendingOp::Kind::kSend;
  op->completion = std::make_shared<Completion>();
  op->completion->peer = peer;
  op->completion->tag = tag;
  op->completion->kind = "send";
  op->posted_bytes = bytes;
  op->length = bytes;

  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &UcxTransport::OnSendDone;
  param.user_data = op.get();
  if (ucp_mem_h memh = FindMemh(data, bytes)) {
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    param.memh = memh;
  }
  ucs_status_ptr_t r =
      ucp_tag_send_nbx(ep->get(), data, bytes, WireTag(options_.rank, tag), &param);
  return Track(std::move(op), r);
}

Result<Request> UcxTransport::Recv(int peer, uint64_t tag, void* data, size_t bytes) {
  if (tag > kTagMask) return Status::InvalidArgument("tag wider than 48 bits: " + TagString(tag));
  // The endpoint is not needed to receive, but it lets keepalive notice a dead sender.
  PSZERO_RETURN_IF_ERROR(Endpoint(peer).status());
  auto op = std::make_unique<PendingOp>();
  op->transport = this;
  op->kind = PendingOp::Kind::kRecv;
  op->completion = std::make_shared<Completion>();
  op->completion->peer = peer;
  op->completion->tag = tag;
  op->completion->kind = "recv";
  op->posted_bytes = bytes;

  ucp_tag_recv_info_t info{};
  ucp_request_param_t param{};
  // UCX 1.13 leaves recv_info.tag_info unfilled when a receive completes in place (the
  // message was already waiting), so the received length would be lost: ask for a request.
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                       UCP_OP_ATTR_FIELD_RECV_INFO | UCP_OP_ATTR_FLAG_NO_IMM_CMPL;
  param.cb.recv = &UcxTransport::OnRecvDone;
  param.user_data = op.get();
  param.recv_info.tag_info = &info;
  if (ucp_mem_h memh = FindMemh(data, bytes)) {
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    param.memh = memh;
  }
  ucs_status_ptr_t r =
      ucp_tag_recv_nbx(worker_->get(), data, bytes, WireTag(peer, tag), ~uint64_t{0}, &param);
  if (r == nullptr) op->length = info.length;
  return Track(std::move(op), r);
}

Status UcxTransport::SetAmHandler(uint16_t id, AmHandler handler) {
  if (!handler.on_message) return Status::InvalidArgument("AM handler without on_message");
  am_handlers_[id] = std::move(handler);
  return Status::Ok();
}

Result<Request> UcxTransport::SendAm(int peer, uint16_t id, std::span<const std::byte> header,
                                     const void* payload, size_t payload_bytes) {
  if (header.size() > kMaxAmHeaderBytes) {
    return Status::InvalidArgument("AM header of " + std::to_string(header.size()) +
                                   " bytes exceeds " + std::to_string(kMaxAmHeaderBytes));
  }
  PSZERO_ASSIGN_OR_RETURN(UcxEndpoint * ep, Endpoint(peer));
  auto op = std::make_unique<PendingOp>();
  op->transport = this;
  op->kind = PendingOp::Kind::kAmSend;
  op->completion = std::make_shared<Completion>();
  op->completion->peer = peer;
  op->completion->tag = id;
  op->completion->kind = "am-send";
  op->length = header.size() + payload_bytes;
  // UCX 1.13 has no UCP_AM_SEND_FLAG_COPY_HEADER: the header must live until completion.
  AmWireHeader wire{kAmMagic, options_.rank, id, static_cast<uint16_t>(header.size())};
  op->am_header.resize(sizeof(wire) + header.size());
  std::memcpy(op->am_header.data(), &wire, sizeof(wire));
  if (!header.empty()) {
    std::memcpy(op->am_header.data() + sizeof(wire), header.data(), header.size());
  }

  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &UcxTransport::OnSendDone;
  param.user_data = op.get();
  if (ucp_mem_h memh = FindMemh(payload, payload_bytes)) {
    param.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
    param.memh = memh;
  }
  ucs_status_ptr_t r = ucp_am_send_nbx(ep->get(), kUcxAmId, op->am_header.data(),
                                       op->am_header.size(), payload, payload_bytes, &param);
  return Track(std::move(op), r);
}

// ---- completion ----

void UcxTransport::OnSendDone(void* /*request*/, ucs_status_t status, void* user_data) {
  auto* op = static_cast<PendingOp*>(user_data);
  op->ucx_status = status;
  op->transport->completed_.push_back(op);
}

void UcxTransport::OnRecvDone(void* /*request*/, ucs_status_t status,
                              const ucp_tag_recv_info_t* info, void* user_data) {
  auto* op = static_cast<PendingOp*>(user_data);
  op->ucx_status = status;
  if (status == UCS_OK && info != nullptr) op->length = info->length;
  op->transport->completed_.push_back(op);
}

void UcxTransport::OnAmDataDone(void* /*request*/, ucs_status_t status, size_t length,
                                void* user_data) {
  auto* op = static_cast<PendingOp*>(user_data);
  op->ucx_status = status;
  op->length = length;
  op->transport->completed_.push_back(op);
}

Status UcxTransport::OpStatus(const PendingOp& op, ucs_status_t status) const {
  const Completion& c = *op.completion;
  if (status == UCS_OK) return Status::Ok();
  const Status& failure = peers_[c.peer]->failure;
  std::string what =
      std::string(c.kind) +
      (op.kind == PendingOp::Kind::kSend || op.kind == PendingOp::Kind::kAmSend ? " to rank "
                                                                                : " from rank ") +
      std::to_string(c.peer) + " " +
      (op.kind == PendingOp::Kind::kAmSend || op.kind == PendingOp::Kind::kAmData
           ? "AM id " + std::to_string(c.tag)
           : TagString(c.tag));
  if (!failure.ok()) return failure.WithContext(what);
  if (status == UCS_ERR_MESSAGE_TRUNCATED) {
    return Status::InvalidArgument(what + ": message longer than the " +
                                   std::to_string(op.posted_bytes) + " bytes posted");
  }
  if (IsPeerFailure(status)) {
    return Status::Unavailable(what + ": peer rank " + std::to_string(c.peer) +
                               " failed: " + ucs_status_string(status));
  }
  if (status == UCS_ERR_CANCELED) return Status::Unavailable(what + ": cancelled");
  return Status::Internal(what + ": " + ucs_status_string(status));
}

void UcxTransport::Finish(PendingOp* op) {
  Completion& c = *op->completion;
  c.status = OpStatus(*op, op->ucx_status);
  if (op->ucx_status != UCS_OK && IsPeerFailure(op->ucx_status)) {
    MarkPeerFailed(peers_[c.peer].get(), op->ucx_status);
  }
  if (c.status.ok()) {
    c.bytes = op->length;
    PeerByteCounters& counters = peers_[c.peer]->counters;
    if (op->kind == PendingOp::Kind::kRecv || op->kind == PendingOp::Kind::kAmData) {
      counters.bytes_received += op->length;
      if (op->kind == PendingOp::Kind::kRecv) ++counters.messages_received;
    } else {
      counters.bytes_sent += op->length;
      ++counters.messages_sent;
    }
  }
  c.done = true;
  if (op->kind == PendingOp::Kind::kAmData && op->arrival) {
    AmArrival& a = *op->arrival;
    if (c.status.ok()) {
      DeliverAm(a,
                std::span<const std::byte>(static_cast<const std::byte*>(a.destination), a.length));
    } else {
      LOG(WARNING) << "rank " << options_.rank << ": dropped AM id " << a.id << ": "
                   << c.status.ToString();
    }
  }
}

int UcxTransport::FinishCompleted() {
  int events = 0;
  while (!completed_.empty()) {
    std::vector<PendingOp*> done;
    done.swap(completed_);
    for (PendingOp* op : done) {
      auto it = pending_.find(op);
      if (it == pending_.end()) continue;  // already finished
      std::unique_ptr<PendingOp> owned = std::move(it->second);
      pending_.erase(it);
      if (owned->abandoned) continue;  // ended already with its peer's failure
      if (owned->kind != PendingOp::Kind::kRecv) --outgoing_;
      Finish(owned.get());
      ++events;
    }
  }
  return events;
}

// ---- active messages ----

ucs_status_t UcxTransport::OnAmArrival(void* arg, const void* header, size_t header_length,
                                       void* data, size_t length,
                                       const ucp_am_recv_param_t* param) {
  auto* self = static_cast<UcxTransport*>(arg);
  AmWireHeader wire{};
  if (header_length < sizeof(wire)) return UCS_OK;  // not ours: drop
  std::memcpy(&wire, header, sizeof(wire));
  if (wire.magic != kAmMagic || header_length != sizeof(wire) + wire.header_bytes ||
      wire.src_rank < 0 || wire.src_rank >= self->options_.world_size) {
    LOG(WARNING) << "rank " << self->options_.rank << ": dropped a malformed active message";
    return UCS_OK;
  }
  auto arrival = std::make_unique<AmArrival>();
  arrival->peer = wire.src_rank;
  arrival->id = wire.id;
  const auto* user_header = static_cast<const std::byte*>(header) + sizeof(wire);
  arrival->header.assign(user_header, user_header + wire.header_bytes);
  arrival->length = length;
  ucs_status_t result = UCS_OK;
  if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
    arrival->rendezvous = true;
    arrival->data = data;  // descriptor for ucp_am_recv_data_nbx
    result = UCS_INPROGRESS;
  } else if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) {
    arrival->data = data;  // UCX keeps it until ucp_am_data_release: no copy
    arrival->held = true;
    result = UCS_INPROGRESS;
  } else if (length > 0) {
    const auto* bytes = static_cast<const std::byte*>(data);
    arrival->owned.assign(bytes, bytes + length);
    arrival->data = arrival->owned.data();
  }
  self->am_arrivals_.push_back(std::move(arrival));
  return result;
}

void UcxTransport::DeliverAm(AmArrival& arrival, std::span<const std::byte> payload) {
  peers_[arrival.peer]->counters.bytes_received += arrival.header.size();
  ++peers_[arrival.peer]->counters.messages_received;
  auto it = am_handlers_.find(arrival.id);
  if (it == am_handlers_.end()) {
    LOG(WARNING) << "rank " << options_.rank << ": no handler for AM id " << arrival.id
                 << " from rank " << arrival.peer << "; dropped";
    return;
  }
  AmInfo info{arrival.peer, arrival.id, arrival.header, arrival.length};
  it->second.on_message(info, payload);
}

int UcxTransport::DispatchAm() {
  int events = 0;
  while (!am_arrivals_.empty()) {
    std::unique_ptr<AmArrival> arrival = std::move(am_arrivals_.front());
    am_arrivals_.pop_front();
    ++events;
    if (!arrival->rendezvous) {
      peers_[arrival->peer]->counters.bytes_received += arrival->length;
      DeliverAm(*arrival, std::span<const std::byte>(static_cast<const std::byte*>(arrival->data),
                                                     arrival->length));
      if (arrival->held) ucp_am_data_release(worker_->get(), arrival->data);
      continue;
    }
    // Rendezvous: the handler may say where the payload goes; then fetch it zero-copy.
    auto it = am_handlers_.find(arrival->id);
    void* destination = nullptr;
    if (it != am_handlers_.end() && it->second.payload_destination) {
      AmInfo info{arrival->peer, arrival->id, arrival->header, arrival->length};
      destination = it->second.payload_destination(info);
    }
    if (destination == nullptr) {
      arrival->owned.resize(arrival->length);
      destination = arrival->owned.data();
    }
    arrival->destination = destination;
    auto op = std::make_unique<PendingOp>();
    op->transport = this;
    op->kind = PendingOp::Kind::kAmData;
    op->completion = std::make_shared<Completion>();
    op->completion->peer = arrival->peer;
    op->completion->tag = arrival->id;
    op->completion->kind = "am-recv";
    op->posted_bytes = arrival->length;
    op->length = arrival->length;
    void* desc = arrival->data;
    const size_t length = arrival->length;
    op->arrival = std::move(arrival);
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    param.cb.recv_am = &UcxTransport::OnAmDataDone;
    param.user_data = op.get();
    if (ucp_mem_h memh = FindMemh(destination, length)) {
      param.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      param.memh = memh;
    }
    ucs_status_ptr_t r = ucp_am_recv_data_nbx(worker_->get(), desc, destination, length, &param);
    if (UCS_PTR_IS_ERR(r)) {
      op->ucx_status = UCS_PTR_STATUS(r);
      Finish(op.get());
    } else if (r == nullptr) {
      op->ucx_status = UCS_OK;
      Finish(op.get());
    } else {
      op->request = UcxRequest(r);
      ++outgoing_;
      PendingOp* key = op.get();
      pending_.emplace(key, std::move(op));
    }
  }
  return events;
}

// ---- progress ----

Result<int> UcxTransport::Progress() {
  while (ucp_worker_progress(worker_->get()) != 0) {
  }
  int events = HandleFailedPeers();
  events += FinishCompleted();
  events += DispatchAm();
  events += FinishCompleted();  // payload receives that completed during dispatch
  events += HandleFailedPeers();
  return events;
}

void UcxTransport::Block(std::chrono::steady_clock::duration timeout) {
  // Shared-memory transports raise wake-up events when a message arrives, but not when a
  // send that waits for room in the peer's FIFO could move on: while this rank has data
  // going out, it keeps progressing, yielding the CPU between rounds instead of sleeping.
  if (outgoing_ > 0) {
    sched_yield();
    return;
  }
  ucs_status_t st = ucp_worker_arm(worker_->get());
  if (st == UCS_ERR_BUSY) return;  // events are waiting: progress instead of sleeping
  if (st != UCS_OK) return;        // cannot arm: fall back to polling
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
  ms = std::clamp<int64_t>(ms, 1, options_.max_block.count());
  epoll_->Wait(static_cast<int>(ms));
}

Result<int> UcxTransport::Poll(std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  auto spin_until = start + options_.spin_budget;
  while (true) {
    PSZERO_ASSIGN_OR_RETURN(int events, Progress());
    if (events > 0) return events;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return 0;
    if (options_.progress_mode == ProgressMode::kSpin || now < spin_until) continue;
    Block(deadline - now);
    spin_until = std::chrono::steady_clock::now() + options_.spin_budget;
  }
}

Status UcxTransport::WaitAll(std::span<Request> requests, std::chrono::milliseconds timeout) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  auto spin_until = start + options_.spin_budget;
  size_t first_pending = 0;  // requests before it are done
  while (true) {
    while (first_pending < requests.size() &&
           (!requests[first_pending].valid() || requests[first_pending].done())) {
      ++first_pending;
    }
    if (first_pending == requests.size()) break;
    PSZERO_RETURN_IF_ERROR(Progress().status());
    if (requests[first_pending].done()) continue;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      const Completion& c = *requests[first_pending].completion();
      return Status::DeadlineExceeded(
          std::string(c.kind) + " with rank " + std::to_string(c.peer) + " " +
          (std::strcmp(c.kind, "am-send") == 0 ? "AM id " + std::to_string(c.tag)
                                               : TagString(c.tag)) +
          " still pending after " + std::to_string(timeout.count()) + " ms (rank " +
          std::to_string(options_.rank) + " waiting)");
    }
    if (options_.progress_mode == ProgressMode::kSpin || now < spin_until) continue;
    Block(deadline - now);
    spin_until = std::chrono::steady_clock::now() + options_.spin_budget;
  }
  for (const Request& r : requests) {
    if (r.valid() && !r.status().ok()) return r.status();
  }
  return Status::Ok();
}

// ---- counters ----

PeerByteCounters UcxTransport::Counters(int peer) const {
  if (peer < 0 || peer >= options_.world_size) return {};
  return peers_[peer]->counters;
}

PeerByteCounters UcxTransport::TotalCounters() const {
  PeerByteCounters total;
  for (const auto& p : peers_) {
    total.bytes_sent += p->counters.bytes_sent;
    total.bytes_received += p->counters.bytes_received;
    total.messages_sent += p->counters.messages_sent;
    total.messages_received += p->counters.messages_received;
  }
  return total;
}

}  // namespace pszero::ucx
