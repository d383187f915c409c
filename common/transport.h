// Transport: the one data-plane seam. Pairs of ranks move bytes; collectives (ring
// all-reduce, reduce-scatter, all-gather, broadcast, all-to-all over groups of ranks) and
// the parameter server's push/pull are written only against this interface (the shape of
// Gloo's transport/pair + unbound_buffer). The UCX implementation lives in
// common/ucx/ucx_transport.h.
//
// What it offers:
//  * Tagged, non-blocking Send/Recv of (pointer, bytes) to/from a peer rank. A receive
//    matches exactly one send from that peer with the same 64-bit tag; sends to one peer
//    with the same tag complete in order. Data moves from and into the caller's memory
//    (zero-copy where the wire allows); the caller keeps the buffer alive and untouched
//    until the Request completes.
//  * Active messages (AM): a small header plus a bulk payload of any size, delivered to a
//    handler registered for an id (PS push/pull request and response).
//  * A registration cache for large, long-lived buffers (RegisterMemory).
//  * Progress: Progress() never blocks; Wait/WaitAll/Poll spin for a short budget, then
//    sleep on the transport's wake-up fd until something happens or the deadline passes.
//  * Per-peer byte counters, so collectives can prove how many bytes they moved.
//
// Failures: every wait has a deadline. A dead or unreachable peer completes its pending
// operations with Status::Unavailable whose message names the peer rank; an expired
// deadline is DeadlineExceeded naming the peer and tag still pending.
//
// Threading: a Transport and its Requests are used by one thread at a time (each rank's
// progress thread or training loop); AM handlers run on that thread, inside Progress,
// Poll or a Wait, and may send. Distinct transports (e.g. ranks as threads of one test)
// are independent.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/status.h"

namespace pszero {

// ---- Tags ---------------------------------------------------------------------------
// A user tag has 48 bits: (communicator id, op sequence, segment), so that several
// collectives over different groups, several ops in flight and the pipelined segments of
// one op never match each other's messages. The transport keeps the other 16 bits of the
// wire tag for the sender's rank.
inline constexpr int kTagCommBits = 12;     // 4096 communicators (groups of ranks)
inline constexpr int kTagSeqBits = 20;      // op sequence, wraps; only ops in flight must differ
inline constexpr int kTagSegmentBits = 16;  // segments (chunks) of one op
inline constexpr int kTagBits = kTagCommBits + kTagSeqBits + kTagSegmentBits;  // 48
inline constexpr uint64_t kTagMask = (uint64_t{1} << kTagBits) - 1;
inline constexpr int kMaxTransportRanks = 1 << (64 - kTagBits);  // 65536

// Packs a tag; each field is taken modulo its width.
constexpr uint64_t MakeTag(uint32_t comm_id, uint32_t op_seq, uint32_t segment) {
  constexpr uint64_t kComm = (uint64_t{1} << kTagCommBits) - 1;
  constexpr uint64_t kSeq = (uint64_t{1} << kTagSeqBits) - 1;
  constexpr uint64_t kSeg = (uint64_t{1} << kTagSegmentBits) - 1;
  return ((comm_id & kComm) << (kTagSeqBits + kTagSegmentBits)) |
         ((op_seq & kSeq) << kTagSegmentBits) | (segment & kSeg);
}

// ---- Completion handles -----------------------------------------------------------------

// What a Request reports when it completes; filled in by the transport.
struct Completion {
  bool done = false;
  Status status;     // ok, or why it failed (Unavailable names the peer)
  size_t bytes = 0;  // bytes actually moved (a receive may get fewer than posted)
  int peer = -1;
  uint64_t tag = 0;       // user tag (for AM sends: the AM id)
  const char* kind = "";  // "send", "recv", "am-send": used in error messages
};

class Transport;

// A move-only handle to one outstanding operation. Destroying a Request that has not
// completed does not cancel the operation: its buffer must still outlive it, and the
// transport finishes it in a later progress call (or fails it when the peer dies).
class Request {
 public:
  Request() = default;
  Request(std::shared_ptr<Completion> completion, Transport* transport)
      : completion_(std::move(completion)), transport_(transport) {}
  Request(Request&&) noexcept = default;
  Request& operator=(Request&& other) noexcept;
  // A request dropped while still pending (an op that failed half-way) is abandoned: a
  // receive is cancelled and waited for (bounded), so the transport never writes into a
  // buffer its owner frees next.
  ~Request();
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;

  bool valid() const { return completion_ != nullptr; }
  // Makes progress once (never blocks) and says whether the operation completed.
  bool Test();
  // Waits until the operation completes or `timeout` passes; returns its status.
  Status Wait(std::chrono::milliseconds timeout);
  // The status once done (Internal "still pending" before).
  Status status() const;
  size_t bytes() const { return completion_ ? completion_->bytes : 0; }
  int peer() const { return completion_ ? completion_->peer : -1; }
  bool done() const { return completion_ && completion_->done; }
  const Completion* completion() const { return completion_.get(); }

 private:
  void AbandonIfPending();

  std::shared_ptr<Completion> completion_;
  Transport* transport_ = nullptr;
};

// ---- Active messages ------------------------------------------------------------------

// What a handler learns about an arriving message. `header` is valid only during the
// call it is passed to.
struct AmInfo {
  int peer = -1;
  uint16_t id = 0;
  std::span<const std::byte> header;
  size_t payload_bytes = 0;
};

struct AmHandler {
  // Optional: where a large (rendezvous) payload should land, zero-copy, e.g. the server's
  // receive slot for the key range named in the header. It must hold payload_bytes and
  // stay valid until on_message has run. Absent or returning nullptr: the transport
  // receives the payload into a buffer of its own.
  std::function<void*(const AmInfo& info)> payload_destination;
  // Called once the whole payload is in memory. `payload` is valid only during the call
  // (it points into payload_destination's buffer when one was given).
  std::function<void(const AmInfo& info, std::span<const std::byte> payload)> on_message;
};

// Largest AM header; headers are small by design (key ranges, sequence numbers).
inline constexpr size_t kMaxAmHeaderBytes = 1024;

// ---- Registered memory ----------------------------------------------------------------

// A buffer registered with the transport; operations on memory inside it reuse the
// registration. Releasing the last handle deregisters it. The memory must outlive it.
class MemoryRegistration {
 public:
  virtual ~MemoryRegistration() = default;
  virtual void* data() const = 0;
  virtual size_t bytes() const = 0;
};

// ---- Counters -------------------------------------------------------------------------

struct PeerByteCounters {
  uint64_t bytes_sent = 0;      // tagged + AM (header and payload), counted on completion
  uint64_t bytes_received = 0;  // tagged + AM, counted on completion
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
};

// ---- The interface --------------------------------------------------------------------

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // Starts sending `bytes` at `data` to `peer` under `tag` (< 2^48; see MakeTag).
  // Errors here are argument errors or an unreachable peer; failures later are reported
  // by the Request. Sending to oneself is allowed.
  virtual Result<Request> Send(int peer, uint64_t tag, const void* data, size_t bytes) = 0;
  // Starts receiving up to `bytes` into `data` from `peer` under `tag`. A longer message
  // completes the Request with InvalidArgument (truncation).
  virtual Result<Request> Recv(int peer, uint64_t tag, void* data, size_t bytes) = 0;

  // Registers (replacing) the handler for AM id `id`.
  virtual Status SetAmHandler(uint16_t id, AmHandler handler) = 0;
  // Starts sending an AM: `header` (at most kMaxAmHeaderBytes, copied) and `payload`
  // (any size, zero-copy: keep it alive until the Request completes).
  virtual Result<Request> SendAm(int peer, uint16_t id, std::span<const std::byte> header,
                                 const void* payload, size_t payload_bytes) = 0;

  // Registration cache: registers [data, data+bytes) once; operations on memory inside a
  // registered range use it. Registering a range already covered returns the existing one.
  virtual Result<std::shared_ptr<MemoryRegistration>> RegisterMemory(void* data, size_t bytes) = 0;

  // Moves whatever is ready (completions, AM handlers); never blocks. Returns the number
  // of events handled, or an error from the underlying library.
  virtual Result<int> Progress() = 0;
  // Progresses until at least one event is handled or `timeout` passes (spin budget, then
  // blocking wake-up). Returns the number of events handled (0 on timeout). For loops that
  // serve active messages.
  virtual Result<int> Poll(std::chrono::milliseconds timeout) = 0;
  // Waits until every request in `requests` completes, or `timeout` passes. Returns the
  // first failure in order (Unavailable naming the peer), or DeadlineExceeded naming the
  // first request still pending. Invalid (empty) requests are skipped.
  virtual Status WaitAll(std::span<Request> requests, std::chrono::milliseconds timeout) = 0;
  // Called by ~Request for an operation still pending: cancel a receive and wait (bounded)
  // until the transport no longer touches its buffer. Default: nothing.
  virtual void Abandon(const Completion* /*completion*/) {}

  // Creates the connection to `peer` now (fetching its address if needed), so that later
  // operations do not pay for the first contact and a failure of that peer is noticed
  // even before any operation with it is pending.
  virtual Status Connect(int peer) = 0;
  // Ok while `peer` is healthy; Unavailable naming it once the transport knows it failed.
  virtual Status PeerStatus(int peer) const = 0;

  virtual PeerByteCounters Counters(int peer) const = 0;
  // Sum over all peers.
  virtual PeerByteCounters TotalCounters() const = 0;
};

// Status of a completed Completion, or Internal when still pending.
Status CompletionStatus(const Completion& completion);

}  // namespace pszero
