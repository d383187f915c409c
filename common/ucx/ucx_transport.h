// UcxTransport: the Transport over UCX (ucp), for host memory.
//
// Each rank owns one UcxTransport: a UCX context and one worker (single-thread mode),
// whose address it publishes in a KeyValueStore under "<key_prefix>/ucx-address/<rank>"
// when created. Endpoints to peers are created lazily on first use (send, receive or AM
// reply) from the addresses others published, always in error-handling mode "peer", so a
// dead peer fails its operations instead of hanging them: pending sends complete with
// the endpoint's error, pending receives from that peer are cancelled, and both report
// Status::Unavailable naming the peer rank. Receives also create the endpoint, so UCX's
// keepalive watches every peer a rank is waiting for.
//
// UCX chooses the wire (shared memory, CMA, TCP, RDMA) and the protocol (eager for small
// messages, rendezvous zero-copy for large) itself, following UCX_TLS and the other UCX_*
// variables. UcxTransportOptions only supplies defaults for variables the user has not
// set (see docs/transport.md for why each one).
//
// Ownership: the transport owns every UCX handle (common/ucx/ucx_handles.h) and destroys
// them in reverse order: outstanding requests are cancelled or finished, endpoints closed,
// then the worker, then the context. Memory registrations returned by RegisterMemory keep
// the context alive. Used by one thread at a time (see common/transport.h).
#pragma once

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/kv_store.h"
#include "common/transport.h"
#include "common/ucx/ucx_handles.h"

namespace pszero::ucx {

enum class ProgressMode {
  // Spin for spin_budget, then ucp_worker_arm + epoll on the event fd; while this rank has
  // sends in flight, yield the CPU between progress rounds instead of sleeping.
  kSpinThenBlock,
  kSpin,  // busy-poll until done (lowest latency, steals the CPU; for benchmarks)
};

struct UcxTransportOptions {
  int rank = 0;
  int world_size = 1;
  // Keys in the store: "<key_prefix>/ucx-address/<rank>". Must be unique per job.
  std::string key_prefix = "pszero";
  // How long a first contact waits for the peer's address to be published.
  std::chrono::milliseconds connect_timeout{30000};
  ProgressMode progress_mode = ProgressMode::kSpinThenBlock;
  // Busy-polling time while waiting before blocking on the event fd.
  std::chrono::microseconds spin_budget{50};
  // Longest single sleep on the event fd: keepalive (dead-peer detection) only runs while
  // the worker is progressed, so a blocked waiter wakes at least this often.
  std::chrono::milliseconds max_block{100};
  // UCX_KEEPALIVE_INTERVAL default (UCX's own is 20 s, too slow for a 5 s failure bound).
  std::chrono::milliseconds keepalive_interval{1000};
  // UCX_POSIX_ERROR_HANDLING / UCX_SYSV_ERROR_HANDLING default: Debian's UCX 1.13 leaves
  // them off, and then "peer" endpoints cannot use shared memory at all.
  bool shm_error_handling = true;
  // UCX_POSIX/SYSV_FIFO_SIZE default (UCX's own is 64 elements of 8 KiB segments). A
  // deeper FIFO lets a large message through with fewer hand-offs between two processes
  // that share a core, but with UCX 1.13 it hides a dead peer from the survivors for tens
  // of seconds (docs/transport.md), so 0, UCX's default, is the default.
  int shm_fifo_size = 0;
  // Error-handling mode "peer" on every endpoint. Turning it off (mode "none") exists only
  // to measure its cost (`pszero-bench p2p --err-mode none`): a dead peer then hangs or
  // aborts the process, as UCX decides.
  bool peer_error_handling = true;
};

class UcxTransport final : public Transport {
 public:
  // Creates the context and worker and publishes the worker address in `store`. The store
  // must outlive the transport.
  static Result<std::unique_ptr<UcxTransport>> Create(const UcxTransportOptions& options,
                                                      KeyValueStore* store);
  ~UcxTransport() override;
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  int rank() const override { return options_.rank; }
  int world_size() const override { return options_.world_size; }

  Result<Request> Send(int peer, uint64_t tag, const void* data, size_t bytes) override;
  Result<Request> Recv(int peer, uint64_t tag, void* data, size_t bytes) override;
  Status SetAmHandler(uint16_t id, AmHandler handler) override;
  Result<Request> SendAm(int peer, uint16_t id, std::span<const std::byte> header,
                         const void* payload, size_t payload_bytes) override;
  Result<std::shared_ptr<MemoryRegistration>> RegisterMemory(void* data, size_t bytes) override;
  Result<int> Progress() override;
  Result<int> Poll(std::chrono::milliseconds timeout) override;
  Status WaitAll(std::span<Request> requests, std::chrono::milliseconds timeout) override;
  void Abandon(const Completion* completion) override;
  PeerByteCounters Counters(int peer) const override;
  PeerByteCounters TotalCounters() const override;

  Status Connect(int peer) override;
  Status PeerStatus(int peer) const override { return CheckPeer(peer); }
  const UcxTransportOptions& options() const { return options_; }
  // Names of the UCX transports (lanes) the endpoint to `peer` uses, e.g. "posix/memory
  // cma/memory" (for logs and the benchmark); empty before the endpoint exists.
  std::string EndpointTransports(int peer);

 private:
  struct Peer;
  struct PendingOp;
  struct AmArrival;
  class EpollFd;
  class Registration;

  UcxTransport(UcxTransportOptions options, KeyValueStore* store);

  Result<UcxEndpoint*> Endpoint(int peer);
  Status CheckPeer(int peer) const;
  ucp_mem_h FindMemh(const void* data, size_t bytes);
  Result<Request> Track(std::unique_ptr<PendingOp> op, ucs_status_ptr_t request);
  void Finish(PendingOp* op);
  Status OpStatus(const PendingOp& op, ucs_status_t status) const;
  void MarkPeerFailed(Peer* peer, ucs_status_t status);
  int HandleFailedPeers();
  // Ends the operations with a failed peer that UCX left pending after the forced close.
  int AbandonPeerOps(const Peer& peer);
  int FinishCompleted();
  int DispatchAm();
  void DeliverAm(AmArrival& arrival, std::span<const std::byte> payload);
  // Arms the worker and sleeps on the event fd for at most `timeout`.
  void Block(std::chrono::steady_clock::duration timeout);

  static void OnSendDone(void* request, ucs_status_t status, void* user_data);
  static void OnRecvDone(void* request, ucs_status_t status, const ucp_tag_recv_info_t* info,
                         void* user_data);
  static void OnAmDataDone(void* request, ucs_status_t status, size_t length, void* user_data);
  static ucs_status_t OnAmArrival(void* arg, const void* header, size_t header_length, void* data,
                                  size_t length, const ucp_am_recv_param_t* param);
  static void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status);

  UcxTransportOptions options_;
  KeyValueStore* store_;  // not owned
  // Declaration order is destruction order reversed: context, worker, epoll, then the
  // endpoints and requests that depend on them.
  std::shared_ptr<UcxContext> context_;
  std::unique_ptr<UcxWorker> worker_;
  std::unique_ptr<EpollFd> epoll_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::unordered_map<PendingOp*, std::unique_ptr<PendingOp>> pending_;
  std::vector<PendingOp*> completed_;  // filled by UCX callbacks, drained by Progress
  std::vector<Peer*> failed_peers_;    // filled by the endpoint error callback
  std::deque<std::unique_ptr<AmArrival>> am_arrivals_;
  std::unordered_map<uint16_t, AmHandler> am_handlers_;
  std::map<uintptr_t, std::weak_ptr<Registration>> registrations_;  // by start address
  int outgoing_ = 0;  // pending sends, AM sends and AM payload fetches
};

}  // namespace pszero::ucx
