#include "launch/rendezvous_service.h"

#include <glog/logging.h>

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <deque>
#include <set>

#include "common/auth.h"

namespace pszero {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

// Before a connection has joined, no frame can be longer than a join frame.
constexpr uint32_t kMaxPreJoinPayloadBytes =
    1 + 4 + 4 + 4 + 4 + wire::kMaxHostBytes + 4 + wire::kMaxBlobBytes + wire::kMacBytes;

// The welcome frame lists every member; 4096 members with 200-byte host names still fit
// the default 1 MiB frame.
constexpr int kMaxWorldSize = 4096;

std::string Ms(milliseconds t) { return std::to_string(t.count()) + " ms"; }

}  // namespace

class RendezvousService::Impl : public std::enable_shared_from_this<Impl> {
 public:
  Impl(asio::io_context& io, RendezvousServiceOptions options)
      : io_(io),
        options_(std::move(options)),
        acceptor_(io),
        heartbeat_timer_(io),
        accept_retry_timer_(io) {}

  Status Bind() {
    boost::system::error_code ec;
    const asio::ip::address address = asio::ip::make_address(options_.address, ec);
    if (ec) return Status::InvalidArgument("bad --master-addr '" + options_.address + "'");
    const tcp::endpoint endpoint(address, options_.port);
    acceptor_.open(endpoint.protocol(), ec);
    if (!ec) acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor_.bind(endpoint, ec);
    if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return Status::IoError("cannot listen on " + options_.address + ":" +
                             std::to_string(options_.port) + ": " + ec.message());
    }
    port_ = acceptor_.local_endpoint(ec).port();
    return Status::Ok();
  }

  void Begin() {
    if (!options_.launch_plan.empty()) kv_[kLaunchPlanKey] = options_.launch_plan;
    Accept();
    ScheduleHeartbeatCheck();
  }

  uint16_t port() const { return port_; }

  void ReportLost(Role role, int rank, std::string reason) {
    asio::post(io_, [self = shared_from_this(), role, rank, reason = std::move(reason)] {
      self->OnReportLost(role, rank, reason);
    });
  }

  void PostStop() {
    asio::post(io_, [self = shared_from_this()] { self->StopNow(); });
  }

  void StopNow() {
    if (stopped_) return;
    stopped_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    heartbeat_timer_.cancel();
    accept_retry_timer_.cancel();
    std::vector<std::shared_ptr<Connection>> conns(conns_.begin(), conns_.end());
    for (auto& c : conns) CloseConnection(c);
    conns_.clear();
    members_.clear();
    launchers_.clear();
    barriers_.clear();
    get_waiters_.clear();
    UpdateSnapshot();
  }

  RendezvousSnapshot Snapshot() const {
    std::lock_guard lock(snap_mu_);
    return snap_;
  }

  bool WaitUntil(const std::function<bool(const RendezvousSnapshot&)>& predicate,
                 milliseconds timeout) const {
    std::unique_lock lock(snap_mu_);
    return snap_cv_.wait_for(lock, timeout, [&] { return predicate(snap_); });
  }

 private:
  struct Connection {
    explicit Connection(tcp::socket s, asio::io_context& io)
        : socket(std::move(s)), handshake_timer(io) {}
    tcp::socket socket;
    asio::steady_timer handshake_timer;
    std::array<char, wire::kHeaderBytes> header{};
    wire::MessageType type = wire::MessageType::kHeartbeat;
    std::string payload;
    std::deque<std::shared_ptr<const std::string>> out;  // frames, possibly shared
    bool writing = false;
    bool closing = false;  // close once the queue is written
    bool closed = false;
    std::string nonce;
    uint64_t member = 0;    // 0: not joined
    bool launcher = false;  // member is a key of launchers_, not of members_
    std::string close_reason;
    std::string peer;  // remote address, for messages
  };
  using ConnPtr = std::shared_ptr<Connection>;

  enum class MemberState { kJoined, kLeft, kLost };
  struct Member {
    Role role = Role::kWorker;
    uint32_t node_rank = 0;
    uint32_t local_rank = 0;
    int32_t requested_rank = -1;
    int rank = -1;  // assigned when the world is complete
    std::string host;
    std::string blob;
    ConnPtr conn;
    Clock::time_point last_seen;
    MemberState state = MemberState::kJoined;
  };

  // A node launcher of another node (Role::kLauncher): outside the world.
  struct Launcher {
    int node_rank = 0;
    ConnPtr conn;
    Clock::time_point last_seen;
    bool left = false;
  };

  struct Waiter {
    std::weak_ptr<Connection> conn;
    uint64_t request_id = 0;
    uint64_t member = 0;
  };
  struct BarrierState {
    std::set<uint64_t> arrived;
    std::vector<Waiter> waiters;
  };

  int world_size() const { return options_.num_servers + options_.num_workers; }
  int expected(Role role) const {
    return role == Role::kServer ? options_.num_servers : options_.num_workers;
  }

  // ---- connections --------------------------------------------------------------------

  void Accept() {
    acceptor_.async_accept(
        [self = shared_from_this()](const boost::system::error_code& ec, tcp::socket socket) {
          self->OnAccept(ec, std::move(socket));
        });
  }

  void OnAccept(const boost::system::error_code& ec, tcp::socket socket) {
    if (stopped_ || ec == asio::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors and the like: try again shortly rather than spin.
      LOG(WARNING) << "rendezvous: accept failed: " << ec.message();
      accept_retry_timer_.expires_after(milliseconds(100));
      accept_retry_timer_.async_wait(
          [self = shared_from_this()](const boost::system::error_code& e) {
            if (!e && !self->stopped_) self->Accept();
          });
      return;
    }
    auto conn = std::make_shared<Connection>(std::move(socket), io_);
    boost::system::error_code ignored;
    conn->socket.set_option(tcp::no_delay(true), ignored);
    const tcp::endpoint remote = conn->socket.remote_endpoint(ignored);
    conn->peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    conns_.insert(conn);
    Result<std::string> nonce = SecureRandomBytes(wire::kNonceBytes);
    if (!nonce.ok()) {
      LOG(ERROR) << "rendezvous: " << nonce.status().ToString();
      CloseConnection(conn);
    } else {
      conn->nonce = std::move(nonce).value();
      conn->handshake_timer.expires_after(options_.handshake_timeout);
      conn->handshake_timer.async_wait([self = shared_from_this(),
                                        conn](const boost::system::error_code& e) {
        if (!e && conn->member == 0 && !conn->closed) {
          self->Reject(
              conn,
              Status::DeadlineExceeded("no join within " + Ms(self->options_.handshake_timeout)),
              &self->protocol_errors_);
        }
      });
      Send(conn, wire::Challenge{conn->nonce});
      ReadHeader(conn);
    }
    UpdateSnapshot();
    Accept();
  }

  void ReadHeader(const ConnPtr& conn) {
    asio::async_read(
        conn->socket, asio::buffer(conn->header),
        [self = shared_from_this(), conn](const boost::system::error_code& ec, size_t) {
          if (ec) return self->Disconnect(conn, "connection closed (" + ec.message() + ")");
          if (conn->closing || conn->closed) return;
          const uint32_t limit = conn->member == 0 ? std::min(self->options_.max_payload_bytes,
                                                              kMaxPreJoinPayloadBytes)
                                                   : self->options_.max_payload_bytes;
          Result<wire::FrameHeader> h =
              wire::DecodeHeader(std::string_view(conn->header.data(), conn->header.size()), limit);
          if (!h.ok()) return self->Reject(conn, h.status(), &self->protocol_errors_);
          conn->type = h->type;
          conn->payload.resize(h->payload_bytes);
          if (conn->payload.empty()) return self->OnPayload(conn);
          asio::async_read(conn->socket, asio::buffer(conn->payload),
                           [self, conn](const boost::system::error_code& ec2, size_t) {
                             if (ec2) {
                               return self->Disconnect(conn,
                                                       "connection closed (" + ec2.message() + ")");
                             }
                             self->OnPayload(conn);
                           });
        });
  }

  void OnPayload(const ConnPtr& conn) {
    if (conn->closing || conn->closed) return;
    Result<wire::Message> m = wire::DecodePayload(conn->type, conn->payload);
    if (!m.ok()) return Reject(conn, m.status(), &protocol_errors_);
    Dispatch(conn, std::move(m).value());
    if (!conn->closing && !conn->closed) ReadHeader(conn);
  }

  void Send(const ConnPtr& conn, const wire::Message& message) {
    if (conn->closed) return;
    SendFrame(conn, std::make_shared<const std::string>(wire::EncodeFrame(message)));
  }

  void SendFrame(const ConnPtr& conn, std::shared_ptr<const std::string> frame) {
    if (conn->closed) return;
    conn->out.push_back(std::move(frame));
    if (!conn->writing) WriteNext(conn);
  }

  void WriteNext(const ConnPtr& conn) {
    conn->writing = true;
    asio::async_write(
        conn->socket, asio::buffer(*conn->out.front()),
        [self = shared_from_this(), conn](const boost::system::error_code& ec, size_t) {
          conn->writing = false;
          if (ec) return self->Disconnect(conn, "connection closed (" + ec.message() + ")");
          conn->out.pop_front();
          if (!conn->out.empty()) return self->WriteNext(conn);
          if (conn->closing) self->Disconnect(conn, conn->close_reason);
        });
  }

  // Sends an Error frame, then closes; `counter` counts the cause.
  void Reject(const ConnPtr& conn, const Status& status, int* counter) {
    if (conn->closing || conn->closed) return;
    ++*counter;
    VLOG(1) << "rendezvous: rejected " << conn->peer << ": " << status.ToString();
    if (counter == &protocol_errors_) {
      LOG(WARNING) << "rendezvous: dropping connection from " << conn->peer << ": "
                   << status.ToString();
    }
    Send(conn, wire::Error{status.code(), status.message()});
    conn->closing = true;
    conn->close_reason = "protocol error: " + status.ToString();
    if (!conn->writing) Disconnect(conn, conn->close_reason);
    UpdateSnapshot();
  }

  void CloseConnection(const ConnPtr& conn) {
    if (conn->closed) return;
    conn->closed = true;
    boost::system::error_code ignored;
    conn->handshake_timer.cancel();
    conn->socket.shutdown(tcp::socket::shutdown_both, ignored);
    conn->socket.close(ignored);
    conns_.erase(conn);
  }

  // The connection is gone (or being dropped by us): settle its member.
  void Disconnect(const ConnPtr& conn, const std::string& reason) {
    if (stopped_) return;
    const bool was_closed = conn->closed;
    CloseConnection(conn);
    if (was_closed) return;
    if (conn->launcher) return LauncherGone(conn->member, reason);
    auto it = members_.find(conn->member);
    if (it != members_.end()) {
      Member& m = it->second;
      if (m.state == MemberState::kJoined) {
        if (world_complete_) {
          Lose(it->first, reason);
        } else {
          // Before ranks exist a member may go and come back; it just no longer counts.
          VLOG(1) << "rendezvous: " << RoleName(m.role) << " from " << conn->peer
                  << " went away before the job was complete: " << reason;
          members_.erase(it);
        }
      }
    }
    UpdateSnapshot();
  }

  // ---- protocol -----------------------------------------------------------------------

  void Dispatch(const ConnPtr& conn, wire::Message message) {
    if (conn->member == 0) {
      if (auto* join = std::get_if<wire::Join>(&message)) return OnJoin(conn, *join);
      return Reject(conn,
                    Status::Corruption("expected a join frame, got " +
                                       std::string(wire::MessageTypeName(wire::TypeOf(message)))),
                    &protocol_errors_);
    }
    if (conn->launcher) return DispatchLauncher(conn, std::move(message));
    auto it = members_.find(conn->member);
    if (it == members_.end()) return;
    const uint64_t id = it->first;
    Member& member = it->second;
    member.last_seen = Clock::now();
    if (std::holds_alternative<wire::Heartbeat>(message)) return;
    if (auto* set = std::get_if<wire::Set>(&message)) {
      Send(conn, wire::Reply{set->request_id, StatusCode::kOk, "", ""});
      return Publish(set->key, std::move(set->value));
    }
    if (auto* get = std::get_if<wire::Get>(&message)) return OnGet(conn, id, *get);
    if (auto* barrier = std::get_if<wire::Barrier>(&message)) {
      return OnBarrier(conn, id, *barrier);
    }
    if (auto* cancel = std::get_if<wire::Cancel>(&message)) return OnCancel(id, cancel->request_id);
    if (std::holds_alternative<wire::Leave>(message)) return OnLeave(id);
    Reject(conn,
           Status::Corruption("unexpected " +
                              std::string(wire::MessageTypeName(wire::TypeOf(message))) +
                              " frame from a client"),
           &protocol_errors_);
  }

  void OnGet(const ConnPtr& conn, uint64_t id, const wire::Get& get) {
    auto kv = kv_.find(get.key);
    if (kv != kv_.end()) {
      return Send(conn, wire::Reply{get.request_id, StatusCode::kOk, "", kv->second});
    }
    if (!failure_.empty()) {
      return Send(conn, wire::Reply{get.request_id, StatusCode::kUnavailable, failure_, ""});
    }
    get_waiters_[get.key].push_back(Waiter{conn, get.request_id, id});
  }

  // ---- node launchers of other nodes ----------------------------------------------------

  void OnLauncherJoin(const ConnPtr& conn, const wire::Join& join) {
    if (!failure_.empty()) {
      return Reject(conn, Status::Unavailable("the job has failed: " + failure_), &refused_joins_);
    }
    for (const auto& [id, l] : launchers_) {
      if (!l.left && l.node_rank == static_cast<int>(join.node_rank)) {
        return Reject(conn,
                      Status::InvalidArgument("the node launcher of node " +
                                              std::to_string(join.node_rank) + " already joined"),
                      &refused_joins_);
      }
    }
    conn->handshake_timer.cancel();
    const uint64_t id = next_member_id_++;
    launchers_.emplace(id, Launcher{static_cast<int>(join.node_rank), conn, Clock::now(), false});
    conn->member = id;
    conn->launcher = true;
    // Its welcome lists only itself (rank = node rank): it needs no ranks of the world.
    wire::Welcome welcome;
    welcome.num_servers = static_cast<uint32_t>(options_.num_servers);
    welcome.num_workers = static_cast<uint32_t>(options_.num_workers);
    welcome.heartbeat_timeout_ms = static_cast<uint32_t>(options_.heartbeat_timeout.count());
    welcome.members.push_back(
        wire::MemberInfo{Role::kLauncher, join.node_rank, join.node_rank, 0, join.host});
    Send(conn, welcome);
    VLOG(1) << "rendezvous: node launcher of node " << join.node_rank << " joined from "
            << conn->peer;
    UpdateSnapshot();
  }

  void DispatchLauncher(const ConnPtr& conn, wire::Message message) {
    auto it = launchers_.find(conn->member);
    if (it == launchers_.end()) return;
    Launcher& launcher = it->second;
    launcher.last_seen = Clock::now();
    if (std::holds_alternative<wire::Heartbeat>(message)) return;
    if (auto* get = std::get_if<wire::Get>(&message)) return OnGet(conn, it->first, *get);
    if (auto* cancel = std::get_if<wire::Cancel>(&message)) {
      return OnCancel(it->first, cancel->request_id);
    }
    if (auto* report = std::get_if<wire::PeerLost>(&message)) {
      if (report->role == Role::kLauncher ||
          report->rank >= static_cast<uint32_t>(expected(report->role))) {
        return Reject(conn,
                      Status::InvalidArgument(
                          "node launcher " + std::to_string(launcher.node_rank) + " reported " +
                          PeerName(report->role, static_cast<int>(report->rank)) +
                          ", not a process of this job"),
                      &protocol_errors_);
      }
      return OnReportLost(report->role, static_cast<int>(report->rank), report->reason);
    }
    if (std::holds_alternative<wire::Leave>(message)) {
      launcher.left = true;
      return UpdateSnapshot();
    }
    Reject(conn,
           Status::Corruption("unexpected " +
                              std::string(wire::MessageTypeName(wire::TypeOf(message))) +
                              " frame from a node launcher"),
           &protocol_errors_);
  }

  // A node launcher that went away without a goodbye: nobody watches its node's
  // processes any more, so the job fails.
  void LauncherGone(uint64_t id, const std::string& reason) {
    auto it = launchers_.find(id);
    if (it == launchers_.end()) return;
    const int node = it->second.node_rank;
    const bool left = it->second.left;
    if (it->second.conn) CloseConnection(it->second.conn);
    launchers_.erase(it);
    if (!left) FailJob(PeerLost{Role::kLauncher, node, reason});
    UpdateSnapshot();
  }

  void OnJoin(const ConnPtr& conn, const wire::Join& join) {
    if (!MacEquals(join.mac,
                   JoinMac(options_.token, conn->nonce, join.role, join.requested_rank))) {
      LOG(WARNING) << "rendezvous: authentication failed for a " << RoleName(join.role) << " from "
                   << conn->peer;
      ++auth_failures_;
      Send(conn, wire::Error{StatusCode::kUnauthenticated,
                             "authentication failed: the cluster token does not match"});
      conn->closing = true;
      conn->close_reason = "authentication failed";
      UpdateSnapshot();
      return;
    }
    if (join.role == Role::kLauncher) return OnLauncherJoin(conn, join);
    Status refuse = CheckAdmission(join);
    if (!refuse.ok()) return Reject(conn, refuse, &refused_joins_);
    conn->handshake_timer.cancel();
    const uint64_t id = next_member_id_++;
    Member m;
    m.role = join.role;
    m.node_rank = join.node_rank;
    m.local_rank = join.local_rank;
    m.requested_rank = join.requested_rank;
    m.host = join.host;
    m.blob = join.blob;
    m.conn = conn;
    m.last_seen = Clock::now();
    members_.emplace(id, std::move(m));
    conn->member = id;
    if (static_cast<int>(members_.size()) == world_size()) CompleteWorld();
    UpdateSnapshot();
  }

  Status CheckAdmission(const wire::Join& join) const {
    if (!failure_.empty()) return Status::Unavailable("the job has failed: " + failure_);
    if (world_complete_) return Status::InvalidArgument("the job is already complete");
    const int want = expected(join.role);
    int have = 0;
    for (const auto& [id, m] : members_) {
      if (m.role != join.role) continue;
      ++have;
      if (m.node_rank == join.node_rank && m.local_rank == join.local_rank) {
        return Status::InvalidArgument(std::string(RoleName(join.role)) + " with node rank " +
                                       std::to_string(join.node_rank) + " and local rank " +
                                       std::to_string(join.local_rank) + " already joined");
      }
      if (join.requested_rank >= 0 && m.requested_rank == join.requested_rank) {
        return Status::InvalidArgument(PeerName(join.role, join.requested_rank) +
                                       " already joined");
      }
    }
    if (have >= want) {
      return Status::InvalidArgument("the job expects " + std::to_string(want) + " " +
                                     std::string(RoleName(join.role)) + "s and has them all");
    }
    if (join.requested_rank >= want) {
      return Status::InvalidArgument("requested rank " + std::to_string(join.requested_rank) +
                                     " but the job has " + std::to_string(want) + " " +
                                     std::string(RoleName(join.role)) + "s");
    }
    return Status::Ok();
  }

  // Ranks: requested ones first, the rest in (node rank, local rank) order.
  void CompleteWorld() {
    world_complete_ = true;
    for (Role role : {Role::kServer, Role::kWorker}) {
      std::vector<uint64_t> ids;
      std::vector<bool> taken(static_cast<size_t>(expected(role)), false);
      for (auto& [id, m] : members_) {
        if (m.role != role) continue;
        if (m.requested_rank >= 0) {
          m.rank = m.requested_rank;
          taken[static_cast<size_t>(m.rank)] = true;
        } else {
          ids.push_back(id);
        }
      }
      std::sort(ids.begin(), ids.end(), [&](uint64_t a, uint64_t b) {
        const Member& x = members_.at(a);
        const Member& y = members_.at(b);
        return std::tie(x.node_rank, x.local_rank, a) < std::tie(y.node_rank, y.local_rank, b);
      });
      size_t next = 0;
      for (uint64_t id : ids) {
        while (taken[next]) ++next;
        members_.at(id).rank = static_cast<int>(next);
        taken[next] = true;
      }
    }
    wire::Welcome welcome;
    welcome.num_servers = static_cast<uint32_t>(options_.num_servers);
    welcome.num_workers = static_cast<uint32_t>(options_.num_workers);
    welcome.heartbeat_timeout_ms = static_cast<uint32_t>(options_.heartbeat_timeout.count());
    for (auto& [id, m] : members_) {
      welcome.members.push_back(wire::MemberInfo{m.role, static_cast<uint32_t>(m.rank), m.node_rank,
                                                 m.local_rank, m.host});
      Publish(wire::BlobKey(m.role, m.rank), std::move(m.blob));
      m.blob.clear();
    }
    std::sort(welcome.members.begin(), welcome.members.end(),
              [](const wire::MemberInfo& a, const wire::MemberInfo& b) {
                return std::tie(a.role, a.rank) < std::tie(b.role, b.rank);
              });
    const auto frame = std::make_shared<const std::string>(wire::EncodeFrame(welcome));
    for (auto& [id, m] : members_) SendFrame(m.conn, frame);
    LOG(INFO) << "rendezvous: all " << world_size() << " processes joined (" << options_.num_servers
              << " servers, " << options_.num_workers << " workers); ranks assigned";
  }

  void Publish(const std::string& key, std::string value) {
    auto waiters = get_waiters_.extract(key);
    if (!waiters.empty()) {
      for (const Waiter& w : waiters.mapped()) {
        if (auto c = w.conn.lock()) Send(c, wire::Reply{w.request_id, StatusCode::kOk, "", value});
      }
    }
    if (options_.on_set) options_.on_set(key, value);
    kv_[key] = std::move(value);
  }

  void OnBarrier(const ConnPtr& conn, uint64_t id, const wire::Barrier& barrier) {
    auto fail = [&](const std::string& why) {
      Send(conn, wire::Reply{barrier.request_id, StatusCode::kUnavailable, why, ""});
    };
    if (!failure_.empty()) return fail("barrier '" + barrier.name + "' failed: " + failure_);
    BarrierState& b = barriers_[barrier.name];
    if (!b.arrived.insert(id).second) {
      return Send(conn, wire::Reply{barrier.request_id, StatusCode::kInvalidArgument,
                                    "already waiting in barrier '" + barrier.name + "'", ""});
    }
    b.waiters.push_back(Waiter{conn, barrier.request_id, id});
    if (static_cast<int>(b.arrived.size()) == world_size()) {
      for (const Waiter& w : b.waiters) {
        if (auto c = w.conn.lock()) Send(c, wire::Reply{w.request_id, StatusCode::kOk, "", ""});
      }
      barriers_.erase(barrier.name);
    } else {
      FailBarriersMissingLeftMembers();
    }
    UpdateSnapshot();
  }

  void OnCancel(uint64_t member, uint64_t request_id) {
    for (auto it = barriers_.begin(); it != barriers_.end();) {
      auto& waiters = it->second.waiters;
      const auto before = waiters.size();
      std::erase_if(waiters, [&](const Waiter& w) {
        return w.member == member && w.request_id == request_id;
      });
      if (waiters.size() != before) it->second.arrived.erase(member);
      it = it->second.arrived.empty() ? barriers_.erase(it) : std::next(it);
    }
    for (auto& [key, waiters] : get_waiters_) {
      std::erase_if(waiters, [&](const Waiter& w) {
        return w.member == member && w.request_id == request_id;
      });
    }
    UpdateSnapshot();
  }

  void OnLeave(uint64_t id) {
    if (!world_complete_) {  // gave up waiting for the others: no longer counts
      members_.erase(id);
      return UpdateSnapshot();
    }
    Member& m = members_.at(id);
    m.state = MemberState::kLeft;
    ++left_;
    FailBarriersMissingLeftMembers();
    UpdateSnapshot();
  }

  // A barrier that waits for a member who has left can never complete.
  void FailBarriersMissingLeftMembers() {
    for (auto it = barriers_.begin(); it != barriers_.end();) {
      std::string missing;
      for (const auto& [id, m] : members_) {
        if (m.state == MemberState::kLeft && !it->second.arrived.count(id)) {
          missing = PeerName(m.role, m.rank);
          break;
        }
      }
      if (missing.empty()) {
        ++it;
        continue;
      }
      const std::string why =
          "barrier '" + it->first + "' cannot complete: " + missing + " has left the job";
      for (const Waiter& w : it->second.waiters) {
        if (auto c = w.conn.lock())
          Send(c, wire::Reply{w.request_id, StatusCode::kUnavailable, why, ""});
      }
      it = barriers_.erase(it);
    }
  }

  // ---- failures -----------------------------------------------------------------------

  void Lose(uint64_t id, const std::string& reason) {
    Member& m = members_.at(id);
    if (m.state != MemberState::kJoined) return;
    m.state = MemberState::kLost;
    if (m.conn) CloseConnection(m.conn);
    FailJob(PeerLost{m.role, m.rank, reason});
  }

  void OnReportLost(Role role, int rank, const std::string& reason) {
    if (stopped_) return;
    if (world_complete_) {
      for (auto& [id, m] : members_) {
        if (m.role == role && m.rank == rank) return Lose(id, reason);
      }
      return;
    }
    FailJob(PeerLost{role, rank, reason});
  }

  // Tells every survivor, fails every pending wait; later joins and waits fail too.
  void FailJob(const PeerLost& news) {
    LOG(WARNING) << "rendezvous: " << news.ToString();
    lost_.push_back(news);
    if (failure_.empty()) failure_ = news.ToString();
    const wire::PeerLost frame{news.role, static_cast<uint32_t>(news.rank), news.reason};
    for (auto& [id, m] : members_) {
      if (m.state == MemberState::kJoined && m.conn) Send(m.conn, frame);
    }
    for (auto& [id, l] : launchers_) {
      if (!l.left && l.conn) Send(l.conn, frame);
    }
    const std::string why = "failed: " + news.ToString();
    for (auto& [name, b] : barriers_) {
      for (const Waiter& w : b.waiters) {
        if (auto c = w.conn.lock()) {
          Send(c, wire::Reply{w.request_id, StatusCode::kUnavailable,
                              "barrier '" + name + "' " + why, ""});
        }
      }
    }
    barriers_.clear();
    for (auto& [key, waiters] : get_waiters_) {
      for (const Waiter& w : waiters) {
        if (auto c = w.conn.lock()) {
          Send(c, wire::Reply{w.request_id, StatusCode::kUnavailable,
                              "lookup of '" + key + "' " + why, ""});
        }
      }
    }
    get_waiters_.clear();
    UpdateSnapshot();
    if (options_.on_peer_lost) options_.on_peer_lost(news);
  }

  void ScheduleHeartbeatCheck() {
    const milliseconds period = std::max(milliseconds(10), options_.heartbeat_timeout / 4);
    heartbeat_timer_.expires_after(period);
    heartbeat_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->stopped_) return;
      self->CheckHeartbeats();
      self->ScheduleHeartbeatCheck();
    });
  }

  void CheckHeartbeats() {
    const auto now = Clock::now();
    std::vector<uint64_t> silent;
    for (const auto& [id, m] : members_) {
      if (m.state == MemberState::kJoined && now - m.last_seen > options_.heartbeat_timeout) {
        silent.push_back(id);
      }
    }
    std::vector<std::pair<uint64_t, milliseconds>> silent_launchers;
    for (const auto& [id, l] : launchers_) {
      if (!l.left && now - l.last_seen > options_.heartbeat_timeout) {
        silent_launchers.emplace_back(id,
                                      std::chrono::duration_cast<milliseconds>(now - l.last_seen));
      }
    }
    for (const auto& [id, quiet] : silent_launchers) {
      LauncherGone(id, "no heartbeat for " + Ms(quiet) + " (timeout " +
                           Ms(options_.heartbeat_timeout) + ")");
    }
    for (uint64_t id : silent) {
      const auto quiet = std::chrono::duration_cast<milliseconds>(now - members_.at(id).last_seen);
      const std::string reason =
          "no heartbeat for " + Ms(quiet) + " (timeout " + Ms(options_.heartbeat_timeout) + ")";
      if (world_complete_) {
        Lose(id, reason);
      } else {
        ConnPtr conn = members_.at(id).conn;
        members_.erase(id);
        if (conn) CloseConnection(conn);
      }
    }
    if (!silent.empty()) UpdateSnapshot();
  }

  void UpdateSnapshot() {
    RendezvousSnapshot s;
    s.connections = static_cast<int>(conns_.size());
    s.joined = static_cast<int>(members_.size());
    s.world_complete = world_complete_;
    s.auth_failures = auth_failures_;
    s.protocol_errors = protocol_errors_;
    s.refused_joins = refused_joins_;
    s.left = left_;
    for (const auto& [id, l] : launchers_) s.launchers += l.left ? 0 : 1;
    s.lost = lost_;
    for (const auto& [name, b] : barriers_) {
      s.barrier_arrivals[name] = static_cast<int>(b.arrived.size());
    }
    {
      std::lock_guard lock(snap_mu_);
      snap_ = std::move(s);
    }
    snap_cv_.notify_all();
  }

  asio::io_context& io_;
  RendezvousServiceOptions options_;
  tcp::acceptor acceptor_;
  asio::steady_timer heartbeat_timer_;
  asio::steady_timer accept_retry_timer_;
  uint16_t port_ = 0;
  bool stopped_ = false;

  std::set<ConnPtr> conns_;
  std::map<uint64_t, Member> members_;
  std::map<uint64_t, Launcher> launchers_;
  uint64_t next_member_id_ = 1;
  bool world_complete_ = false;
  std::map<std::string, std::string> kv_;
  std::map<std::string, std::vector<Waiter>> get_waiters_;
  std::map<std::string, BarrierState> barriers_;
  std::string failure_;  // empty while the job is healthy
  std::vector<PeerLost> lost_;
  int auth_failures_ = 0;
  int protocol_errors_ = 0;
  int refused_joins_ = 0;
  int left_ = 0;

  mutable std::mutex snap_mu_;
  mutable std::condition_variable snap_cv_;
  RendezvousSnapshot snap_;
};

// ---- RendezvousService --------------------------------------------------------------------

Result<std::unique_ptr<RendezvousService>> RendezvousService::Start(
    asio::io_context& io, RendezvousServiceOptions options) {
  if (options.token.empty()) return Status::InvalidArgument("the cluster token is empty");
  if (options.num_servers < 0 || options.num_workers < 0 ||
      options.num_servers + options.num_workers < 1 ||
      options.num_servers + options.num_workers > kMaxWorldSize) {
    return Status::InvalidArgument("a job needs between 1 and " + std::to_string(kMaxWorldSize) +
                                   " processes");
  }
  if (options.heartbeat_timeout.count() <= 0) {
    return Status::InvalidArgument("heartbeat timeout must be positive");
  }
  auto impl = std::make_shared<Impl>(io, std::move(options));
  PSZERO_RETURN_IF_ERROR(impl->Bind());
  impl->Begin();
  return std::unique_ptr<RendezvousService>(new RendezvousService(std::move(impl)));
}

RendezvousService::RendezvousService(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
RendezvousService::~RendezvousService() { impl_->StopNow(); }

uint16_t RendezvousService::port() const { return impl_->port(); }
void RendezvousService::ReportLost(Role role, int rank, std::string reason) {
  impl_->ReportLost(role, rank, std::move(reason));
}
void RendezvousService::Stop() { impl_->PostStop(); }
RendezvousSnapshot RendezvousService::Snapshot() const { return impl_->Snapshot(); }
bool RendezvousService::WaitUntil(const std::function<bool(const RendezvousSnapshot&)>& predicate,
                                  milliseconds timeout) const {
  return impl_->WaitUntil(predicate, timeout);
}

// ---- RendezvousServiceThread --------------------------------------------------------------

RendezvousServiceThread::RendezvousServiceThread() : io_(std::make_unique<asio::io_context>()) {}

Result<std::unique_ptr<RendezvousServiceThread>> RendezvousServiceThread::Start(
    RendezvousServiceOptions options) {
  std::unique_ptr<RendezvousServiceThread> t(new RendezvousServiceThread());
  PSZERO_ASSIGN_OR_RETURN(t->service_, RendezvousService::Start(*t->io_, std::move(options)));
  t->thread_ = std::thread([io = t->io_.get()] { io->run(); });
  return t;
}

RendezvousServiceThread::~RendezvousServiceThread() {
  if (service_) service_->Stop();
  io_->stop();
  if (thread_.joinable()) thread_.join();
  service_.reset();
}

}  // namespace pszero
