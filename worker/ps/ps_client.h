// PsClient: one worker's side of the parameter server (the `ps` SyncStrategy wraps it).
// It works on two flat buffers of one key space (a TP rank), both of the key space's dtype
// (PsClientOptions::dtype: fp32, or bf16 for mixed precision): the parameters, which pulls
// overwrite slice by slice, and the twin gradient buffer, which pushes read slice by slice. Both
// are the caller's; they must outlive the client, and a slice's gradient must stay untouched from
// its push until WaitAll/WaitParams returns.
//
// A step, the way a training loop drives it:
//   PushGradients(begin, end)  as each backward bucket is ready: every slice that became
//                              complete is pushed at once (async active message; UCX
//                              moves large slices zero-copy by rendezvous)
//   EndStep()                  all slices pushed: the clock advances and a pull of every
//                              slice starts (prefetch; the server answers when its
//                              consistency mode allows); with `pull_on_push`, each
//                              slice's pull already started when it was pushed
//   WaitParams(begin, end, t)  before the forward of the layer living in [begin, end)
//   WaitAll(t)                 everything in flight (pushes acknowledged, pulls landed)
// Pulls land in place in the parameter buffer (AmHandler::payload_destination).
//
// Initialize(): DP worker 0 sends the initial fp32 master (its parameters, or with bf16
// buffers the fp32 values given) as the initial values of every slice; then every worker
// pulls them, so all replicas start from worker 0's parameters (bf16: their rounding).
//
// Rules the server enforces (and the client keeps): at most one push and one pull of a
// slice in flight, and a slice is pushed once per step, after its previous pull landed.
//
// Checkpoints (AdamW on the servers): ReadState copies every slice's params, m and v out
// of the servers once their state has seen this client's clock; WriteState (one worker of
// the key space) overwrites them and sets the servers' clock; ResumeAt sets this client's
// clock and pulls the parameters at it (every worker, after the write).
//
// Failures: every wait has a deadline; a dead server gives Unavailable naming it
// ("ps server 1 (transport rank 1)"), a rejected request gives the server's reason, and
// Abort() (e.g. on the control plane's news of a lost peer) fails the current and every
// later wait with its status.
// Threading: the thread that drives the Transport; the client installs the ack/reply AM
// handlers on it (one PsClient per transport). Abort() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/ps/ps_protocol.h"
#include "common/transport.h"

namespace pszero::ps {

struct PsClientOptions {
  int worker = 0;       // data-parallel rank within the key space's group
  int num_workers = 1;  // D
  uint32_t key_space = 0;
  // Transport rank of server s (index s of the slice map).
  std::vector<int> server_ranks;
  int64_t slice_bytes = 4 << 20;  // must equal the servers' --ps-slice-mb
  // Start each slice's pull for the next clock as soon as its push is sent, instead of at
  // EndStep, so that the server's update and the pull overlap the rest of backward. The
  // pull lands in the parameter buffer while backward may still run: only for callers
  // that no longer read a slice's parameters once its gradients are complete.
  bool pull_on_push = false;
  // The element type of the parameter and gradient buffers, of pushes and of pulls: fp32
  // or bf16 (the servers keep the fp32 master either way).
  DType dtype = DType::kFloat32;
};

struct PsClientStats {
  int64_t push_bytes = 0;
  int64_t pull_bytes = 0;
  int64_t pushes = 0;
  int64_t pulls = 0;
};

class PsClient {
 public:
  // fp32 buffers (options.dtype must be fp32).
  static Result<std::unique_ptr<PsClient>> Create(Transport* transport, PsClientOptions options,
                                                  std::span<float> params,
                                                  std::span<const float> grads);
  // Buffers of `numel` elements of options.dtype each.
  static Result<std::unique_ptr<PsClient>> Create(Transport* transport, PsClientOptions options,
                                                  void* params, const void* grads, int64_t numel);
  ~PsClient();
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  const SliceMap& map() const { return map_; }
  int64_t clock() const { return clock_; }
  const PsClientStats& stats() const { return stats_; }

  // Worker 0 sends the initial parameters (`initial`, the fp32 master of the whole key
  // space; empty: the fp32 parameter buffer, which bf16 buffers cannot be); every worker
  // then pulls them all and waits.
  Status Initialize(std::chrono::milliseconds timeout, std::span<const float> initial = {});

  // Marks gradient elements [begin, end) of this step ready; pushes every slice that is now
  // complete. Elements must not be marked twice in one step.
  Status PushGradients(int64_t begin, int64_t end);
  // Pushes one slice's gradient for the current step.
  Status PushSlice(int slice);
  // Every slice pushed: advances the clock and starts pulling every slice (prefetch).
  Status EndStep();
  // Starts pulling one slice at the current clock.
  Status PullSlice(int slice);

  // Waits until the slices touching [begin, end) have landed and their pushes are
  // acknowledged.
  Status WaitParams(int64_t begin, int64_t end, std::chrono::milliseconds timeout);
  Status WaitAll(std::chrono::milliseconds timeout);
  // Waits until every push (and init) is acknowledged, i.e. the gradient buffer may change;
  // pulls may still be in flight.
  Status WaitPushes(std::chrono::milliseconds timeout);

  // Fails the current wait (within ~100 ms) and every later one with `why`. Thread-safe;
  // the first reason sticks.
  void Abort(const Status& why);

  // Reads params, m and v of every slice (numel values each, the key space's layout) as the
  // servers hold them once their state has seen clock() steps (waits for the other
  // workers' pushes of those steps). Nothing of this client may be in flight.
  Status ReadState(std::span<float> params, std::span<float> m, std::span<float> v,
                   std::chrono::milliseconds timeout);
  // Overwrites params, m and v of every slice on its server and sets the servers' clock to
  // `steps` (the optimizer continues with step steps + 1); waits for every ack. One worker
  // of the key space writes; no push of the key space may be pending at the servers.
  Status WriteState(std::span<const float> params, std::span<const float> m,
                    std::span<const float> v, int64_t steps, std::chrono::milliseconds timeout);
  // A worker resuming after `steps` steps: sets the clock to `steps`, pulls every slice at
  // it (answered once the servers' state has seen `steps` steps, i.e. after WriteState on
  // fresh servers) and waits. Nothing of this client may be in flight.
  Status ResumeAt(int64_t steps, std::chrono::milliseconds timeout);

  // Asks server `server` for its counters (for run reports) and waits for the answer.
  Result<ServerCounters> QueryServerStats(int server, std::chrono::milliseconds timeout);

  // For tests of bad input: sends `header` as a push (or as AM `am`: a state write or read)
  // with `payload` and waits for the server's answer (the rejection, or ok).
  Status SendRawPush(int server, const RequestHeader& header, const void* payload, size_t bytes,
                     std::chrono::milliseconds timeout) {
    return SendRaw(server, kAmPush, header, payload, bytes, timeout);
  }
  Status SendRaw(int server, uint16_t am, const RequestHeader& header, const void* payload,
                 size_t bytes, std::chrono::milliseconds timeout);
  RequestHeader Header(int slice) const;

 private:
  struct SliceState;
  PsClient(Transport* transport, PsClientOptions options, SliceMap map, void* params,
           const void* grads);
  // Bytes of `numel` elements of the key space's dtype.
  size_t Bytes(int64_t numel) const { return static_cast<size_t>(numel) * element_bytes_; }
  std::byte* ParamsAt(int64_t i) const { return params_ + Bytes(i); }
  std::string ServerName(int server) const;
  void OnAck(const AmInfo& info);
  void* ReplyDestination(const AmInfo& info);
  void OnReply(const AmInfo& info, std::span<const std::byte> payload);
  void OnStateReply(const AmInfo& info, std::span<const std::byte> payload);
  Status CheckIdle(const char* what) const;
  Status SendRequest(uint16_t am, int slice, const void* payload, size_t bytes, int64_t clock);
  Status AbortStatus();
  Status WaitSlices(int first, int last, bool pulls_too, std::chrono::milliseconds timeout);
  // Polls until `answered` or `timeout`; fails early when `server` is known dead.
  Status WaitForAnswer(const bool& answered, int server, const char* what,
                       std::chrono::milliseconds timeout);

  Transport* transport_;
  PsClientOptions options_;
  SliceMap map_;
  std::byte* params_;
  const std::byte* grads_;
  size_t element_bytes_;
  std::vector<SliceState> slices_;
  int64_t clock_ = 0;
  uint64_t next_request_ = 1;
  PsClientStats stats_;
  // QueryServerStats: the answer, matched by request id.
  uint64_t stats_request_ = 0;
  bool stats_answered_ = false;
  ServerCounters stats_answer_;
  // SendRawPush: the answer to the raw request, matched by request id.
  uint64_t raw_request_ = 0;
  bool raw_answered_ = false;
  Status raw_status_;
  // ReadState: where the replies go; WriteState: the payloads ([params, m, v] per slice),
  // kept until the next state call or the end (a failed wait may leave sends in flight).
  std::span<float> state_params_, state_m_, state_v_;
  std::vector<float> state_staging_;
  std::atomic<bool> aborted_{false};
  std::mutex abort_mu_;
  Status abort_status_;
};

}  // namespace pszero::ps
