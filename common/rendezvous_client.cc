#include "common/rendezvous_client.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include "common/auth.h"

namespace pszero {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

std::string LocalHostName() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

std::string Ms(milliseconds t) { return std::to_string(t.count()) + " ms"; }

// How long Leave() waits for the goodbye to be written before it gives up on it.
constexpr milliseconds kLeaveFlushTimeout{2000};

}  // namespace

class RendezvousClient::Impl {
 public:
  explicit Impl(RendezvousOptions options)
      : options_(std::move(options)),
        work_(asio::make_work_guard(io_)),
        resolver_(io_),
        socket_(io_),
        heartbeat_timer_(io_),
        retry_timer_(io_) {
    if (options_.host.empty()) options_.host = LocalHostName();
  }

  ~Impl() { Leave(); }

  // Connects and waits until welcomed, refused, failed or past the deadline.
  Status Start(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    connect_deadline_ = deadline;
    thread_ = std::thread([this] { io_.run(); });
    asio::post(io_, [this] { Connect(); });
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return welcome_.has_value() || !failure_.empty(); });
    if (welcome_.has_value()) return Status::Ok();
    if (!join_error_.ok()) return join_error_;
    if (!failure_.empty()) return Status::Unavailable(failure_);
    std::string what = "joining the rendezvous service at " + Endpoint() + ": ";
    if (!connected_) {
      what += "could not connect within " + Ms(timeout);
      if (!last_connect_error_.empty()) what += " (" + last_connect_error_ + ")";
    } else {
      what += "the job was not complete within " + Ms(timeout);
    }
    return Status::DeadlineExceeded(what);
  }

  const wire::Welcome& welcome() const { return *welcome_; }
  int rank() const { return rank_; }
  const RendezvousOptions& options() const { return options_; }

  Result<wire::Reply> Call(wire::Message request, uint64_t id, milliseconds timeout,
                           const std::string& what) {
    PSZERO_RETURN_IF_ERROR(wire::Validate(request));
    std::string frame = wire::EncodeFrame(request);
    {
      std::lock_guard lock(mu_);
      if (!failure_.empty()) return Status::Unavailable(failure_);
      pending_.emplace(id, std::nullopt);
    }
    asio::post(io_, [this, f = std::move(frame)]() mutable { Send(std::move(f)); });
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [&] {
      auto it = pending_.find(id);
      return (it != pending_.end() && it->second.has_value()) || !failure_.empty();
    });
    auto node = pending_.extract(id);
    if (!node.empty() && node.mapped().has_value()) {
      wire::Reply reply = std::move(*node.mapped());
      if (reply.code != StatusCode::kOk) return Status(reply.code, reply.message);
      return reply;
    }
    if (!failure_.empty()) return Status::Unavailable(failure_);
    lock.unlock();
    asio::post(io_, [this, id] { Send(wire::EncodeFrame(wire::Cancel{id})); });
    return Status::DeadlineExceeded(what + " within " + Ms(timeout));
  }

  uint64_t NextId() { return next_id_.fetch_add(1); }

  Status SendOneWay(const wire::Message& message) {
    PSZERO_RETURN_IF_ERROR(wire::Validate(message));
    {
      std::lock_guard lock(mu_);
      if (closed_) return Status::Unavailable(failure_);
    }
    asio::post(io_, [this, f = wire::EncodeFrame(message)]() mutable { Send(std::move(f)); });
    return Status::Ok();
  }

  std::optional<PeerLost> FirstLost() const {
    std::lock_guard lock(mu_);
    if (lost_.empty()) return std::nullopt;
    return lost_.front();
  }

  Result<PeerLost> WaitForLost(milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !lost_.empty(); })) {
      return Status::DeadlineExceeded("no peer-loss news within " + Ms(timeout));
    }
    return lost_.front();
  }

  void SetCallback(std::function<void(const PeerLost&)> callback) {
    std::lock_guard lock(mu_);
    callback_ = std::move(callback);
  }

  void StopHeartbeats() {
    asio::post(io_, [this] {
      heartbeats_ = false;
      heartbeat_timer_.cancel();
    });
  }

  void Leave() {
    std::lock_guard leave_lock(leave_mu_);
    if (!thread_.joinable()) return;
    asio::post(io_, [this] { BeginClose(); });
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, kLeaveFlushTimeout, [&] { return closed_; });
    }
    work_.reset();
    io_.stop();
    thread_.join();
    // If the goodbye could not be written in time, callers still must not wait on it.
    std::lock_guard lock(mu_);
    closed_ = true;
    if (failure_.empty()) failure_ = "this process has left the job";
    cv_.notify_all();
  }

 private:
  std::string Endpoint() const {
    return options_.master_addr + ":" + std::to_string(options_.master_port);
  }

  // ---- I/O thread ---------------------------------------------------------------------

  void Connect() {
    if (closing_) return;
    resolver_.async_resolve(
        options_.master_addr, std::to_string(options_.master_port),
        [this](const boost::system::error_code& ec, const tcp::resolver::results_type& results) {
          if (ec)
            return RetryConnect("cannot resolve " + options_.master_addr + ": " + ec.message());
          asio::async_connect(socket_, results,
                              [this](const boost::system::error_code& ec2, const tcp::endpoint&) {
                                if (ec2) return RetryConnect(ec2.message());
                                boost::system::error_code ignored;
                                socket_.set_option(tcp::no_delay(true), ignored);
                                {
                                  std::lock_guard lock(mu_);
                                  connected_ = true;
                                }
                                ReadHeader();
                              });
        });
  }

  // The service may not listen yet (multi-node starts); try again until the deadline.
  void RetryConnect(std::string error) {
    if (closing_) return;
    {
      std::lock_guard lock(mu_);
      last_connect_error_ = std::move(error);
    }
    boost::system::error_code ignored;
    socket_.close(ignored);
    if (Clock::now() >= connect_deadline_) return;  // Start() reports the deadline
    backoff_ = std::min(backoff_ * 2, milliseconds(1000));
    retry_timer_.expires_after(backoff_);
    retry_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) Connect();
    });
  }

  void ReadHeader() {
    asio::async_read(
        socket_, asio::buffer(header_), [this](const boost::system::error_code& ec, size_t) {
          if (ec) return ConnectionLost(ec);
          Result<wire::FrameHeader> h = wire::DecodeHeader(
              std::string_view(header_.data(), header_.size()), options_.max_payload_bytes);
          if (!h.ok()) return ProtocolFailure(h.status());
          type_ = h->type;
          payload_.resize(h->payload_bytes);
          if (payload_.empty()) return OnPayload();
          asio::async_read(socket_, asio::buffer(payload_),
                           [this](const boost::system::error_code& ec2, size_t) {
                             if (ec2) return ConnectionLost(ec2);
                             OnPayload();
                           });
        });
  }

  void OnPayload() {
    Result<wire::Message> m = wire::DecodePayload(type_, payload_);
    if (!m.ok()) return ProtocolFailure(m.status());
    if (Handle(std::move(m).value())) ReadHeader();
  }

  // Returns false when the connection is finished.
  bool Handle(wire::Message message) {
    if (auto* challenge = std::get_if<wire::Challenge>(&message)) {
      if (join_sent_) {
        ProtocolFailure(Status::Corruption("second challenge"));
        return false;
      }
      join_sent_ = true;
      wire::Join join;
      join.role = options_.role;
      join.node_rank = static_cast<uint32_t>(options_.node_rank);
      join.local_rank = static_cast<uint32_t>(options_.local_rank);
      join.requested_rank = options_.requested_rank;
      join.host = options_.host;
      join.blob = options_.blob;
      join.mac = JoinMac(options_.token, challenge->nonce, options_.role, options_.requested_rank);
      Send(wire::EncodeFrame(join));
      ScheduleHeartbeat();
      return true;
    }
    if (auto* welcome = std::get_if<wire::Welcome>(&message)) {
      int rank = -1;
      for (const wire::MemberInfo& m : welcome->members) {
        if (m.role == options_.role && m.node_rank == static_cast<uint32_t>(options_.node_rank) &&
            m.local_rank == static_cast<uint32_t>(options_.local_rank)) {
          rank = static_cast<int>(m.rank);
        }
      }
      if (rank < 0) {
        ProtocolFailure(Status::Corruption("the welcome does not list this process"));
        return false;
      }
      std::lock_guard lock(mu_);
      rank_ = rank;
      welcome_ = std::move(*welcome);
      cv_.notify_all();
      return true;
    }
    if (auto* error = std::get_if<wire::Error>(&message)) {
      Status status(error->code, error->message);
      {
        std::lock_guard lock(mu_);
        if (!welcome_.has_value()) join_error_ = status;
      }
      Fail("rendezvous service at " + Endpoint() + " closed the connection: " + status.ToString());
      CloseSocket();
      return false;
    }
    if (auto* reply = std::get_if<wire::Reply>(&message)) {
      std::lock_guard lock(mu_);
      auto it = pending_.find(reply->request_id);
      if (it != pending_.end()) {
        it->second = std::move(*reply);
        cv_.notify_all();
      }
      return true;
    }
    if (auto* lost = std::get_if<wire::PeerLost>(&message)) {
      PeerLost news{lost->role, static_cast<int>(lost->rank), lost->reason};
      std::function<void(const PeerLost&)> callback;
      {
        std::lock_guard lock(mu_);
        lost_.push_back(news);
        if (failure_.empty()) failure_ = news.ToString();
        callback = callback_;
        cv_.notify_all();
      }
      if (callback) callback(news);
      return true;
    }
    ProtocolFailure(Status::Corruption(
        "unexpected " + std::string(wire::MessageTypeName(wire::TypeOf(message))) + " frame"));
    return false;
  }

  void ScheduleHeartbeat() {
    if (!heartbeats_ || closing_) return;
    heartbeat_timer_.expires_after(options_.heartbeat_interval);
    heartbeat_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec || !heartbeats_ || closing_) return;
      Send(wire::EncodeFrame(wire::Heartbeat{}));
      ScheduleHeartbeat();
    });
  }

  void Send(std::string frame) {
    if (!socket_.is_open() || (closing_ && !closing_send_allowed_)) return;
    out_.push_back(std::move(frame));
    if (!writing_) WriteNext();
  }

  void WriteNext() {
    writing_ = true;
    asio::async_write(socket_, asio::buffer(out_.front()),
                      [this](const boost::system::error_code& ec, size_t) {
                        writing_ = false;
                        if (ec) return ConnectionLost(ec);
                        out_.pop_front();
                        if (!out_.empty()) return WriteNext();
                        if (closing_) FinishClose();
                      });
  }

  void ConnectionLost(const boost::system::error_code& ec) {
    if (closing_) return FinishClose();
    Fail("lost the rendezvous service at " + Endpoint() + ": " + ec.message());
    CloseSocket();
  }

  void ProtocolFailure(const Status& status) {
    Fail("protocol error from the rendezvous service at " + Endpoint() + ": " + status.ToString());
    CloseSocket();
  }

  void Fail(const std::string& reason) {
    std::lock_guard lock(mu_);
    if (failure_.empty()) failure_ = reason;
    cv_.notify_all();
  }

  void CloseSocket() {
    boost::system::error_code ignored;
    heartbeat_timer_.cancel();
    retry_timer_.cancel();
    resolver_.cancel();
    socket_.close(ignored);
  }

  // Says goodbye when the connection is up, then closes once the queue is written.
  void BeginClose() {
    closing_ = true;
    heartbeat_timer_.cancel();
    retry_timer_.cancel();
    resolver_.cancel();
    if (socket_.is_open() && join_sent_) {
      closing_send_allowed_ = true;
      Send(wire::EncodeFrame(wire::Leave{}));
      closing_send_allowed_ = false;
    }
    if (!writing_) FinishClose();
  }

  void FinishClose() {
    CloseSocket();
    std::lock_guard lock(mu_);
    closed_ = true;
    if (failure_.empty()) failure_ = "this process has left the job";
    cv_.notify_all();
  }

  RendezvousOptions options_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_;
  tcp::resolver resolver_;
  tcp::socket socket_;
  asio::steady_timer heartbeat_timer_;
  asio::steady_timer retry_timer_;
  std::thread thread_;
  std::mutex leave_mu_;  // serializes Leave() callers

  // Touched only on the I/O thread.
  std::array<char, wire::kHeaderBytes> header_{};
  wire::MessageType type_ = wire::MessageType::kHeartbeat;
  std::string payload_;
  std::deque<std::string> out_;
  bool writing_ = false;
  bool closing_ = false;
  bool closing_send_allowed_ = false;
  bool join_sent_ = false;
  bool heartbeats_ = true;
  milliseconds backoff_{25};
  Clock::time_point connect_deadline_;

  std::atomic<uint64_t> next_id_{1};

  // Shared between the I/O thread and callers; guarded by mu_.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool connected_ = false;
  std::string last_connect_error_;
  std::optional<wire::Welcome> welcome_;  // set once; immutable afterwards
  int rank_ = -1;
  Status join_error_;
  std::map<uint64_t, std::optional<wire::Reply>> pending_;
  std::string failure_;  // empty while healthy
  std::vector<PeerLost> lost_;
  bool closed_ = false;
  std::function<void(const PeerLost&)> callback_;
};

// ---- RendezvousClient ---------------------------------------------------------------------

RendezvousClient::RendezvousClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RendezvousClient::~RendezvousClient() = default;

Result<std::unique_ptr<RendezvousClient>> RendezvousClient::Join(const RendezvousOptions& options,
                                                                 milliseconds timeout) {
  if (options.master_port == 0) return Status::InvalidArgument("rendezvous port 0");
  if (options.heartbeat_interval.count() <= 0) {
    return Status::InvalidArgument("heartbeat interval must be positive");
  }
  if (options.requested_rank < -1) {
    return Status::InvalidArgument("requested rank " + std::to_string(options.requested_rank));
  }
  wire::Join probe;
  probe.host = options.host;
  probe.blob = options.blob;
  PSZERO_RETURN_IF_ERROR(wire::Validate(probe));
  auto impl = std::make_unique<Impl>(options);
  PSZERO_RETURN_IF_ERROR(impl->Start(timeout));
  return std::unique_ptr<RendezvousClient>(new RendezvousClient(std::move(impl)));
}

Role RendezvousClient::role() const { return impl_->options().role; }
int RendezvousClient::rank() const { return impl_->rank(); }
int RendezvousClient::num_servers() const { return static_cast<int>(impl_->welcome().num_servers); }
int RendezvousClient::num_workers() const { return static_cast<int>(impl_->welcome().num_workers); }
const std::vector<wire::MemberInfo>& RendezvousClient::members() const {
  return impl_->welcome().members;
}

Status RendezvousClient::Set(const std::string& key, std::string_view value) {
  return Set(key, value, kDefaultSetTimeout);
}

Status RendezvousClient::Set(const std::string& key, std::string_view value, milliseconds timeout) {
  const uint64_t id = impl_->NextId();
  Result<wire::Reply> r =
      impl_->Call(wire::Set{id, key, std::string(value)}, id, timeout, "set of key '" + key + "'");
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::string> RendezvousClient::Get(const std::string& key, milliseconds timeout) {
  const uint64_t id = impl_->NextId();
  PSZERO_ASSIGN_OR_RETURN(wire::Reply reply, impl_->Call(wire::Get{id, key}, id, timeout,
                                                         "key '" + key + "' not published"));
  return std::move(reply.value);
}

Result<std::string> RendezvousClient::PeerBlob(Role role, int rank, milliseconds timeout) {
  return Get(wire::BlobKey(role, rank), timeout);
}

Status RendezvousClient::Barrier(const std::string& name, milliseconds timeout) {
  const uint64_t id = impl_->NextId();
  Result<wire::Reply> r =
      impl_->Call(wire::Barrier{id, name}, id, timeout, "barrier '" + name + "' not complete");
  return r.ok() ? Status::Ok() : r.status();
}

std::optional<PeerLost> RendezvousClient::peer_lost() const { return impl_->FirstLost(); }

Result<PeerLost> RendezvousClient::WaitForPeerLost(milliseconds timeout) {
  return impl_->WaitForLost(timeout);
}

void RendezvousClient::SetPeerLostCallback(std::function<void(const PeerLost&)> callback) {
  impl_->SetCallback(std::move(callback));
}

Status RendezvousClient::ReportLost(Role role, int rank, const std::string& reason) {
  if (impl_->options().role != Role::kLauncher) {
    return Status::InvalidArgument("only a node launcher reports lost processes");
  }
  return impl_->SendOneWay(wire::PeerLost{role, static_cast<uint32_t>(rank), reason});
}

void RendezvousClient::Leave() { impl_->Leave(); }

void RendezvousClient::StopHeartbeatsForTesting() { impl_->StopHeartbeats(); }

}  // namespace pszero
