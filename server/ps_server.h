// PsServer: the key-range shard store of one pszero-server process.
//
// For every key space (a TP rank's flat parameter buffer) it holds, for the slices the
// slice map (common/ps/ps_protocol.h) gives this server: fp32 master parameters, optimizer
// state (AdamW m and v, or the SGD momentum buffer), one receive slot per data-parallel
// worker and, under ssp/asp, one pull-reply copy per worker.
//
// Key space dtype (fp32 or bf16): the element type of its pushes and pulls, fixed by the
// first request that names the key space (every request carries it in `dtype`; one that
// differs is rejected). A bf16 key space follows the ZeRO mixed-precision split: slots and
// reply copies are bf16, the master and the optimizer state stay fp32, the bsp sum of the
// D bf16 pushes is accumulated in fp32 and rounded to bf16 once (as the deterministic
// collectives reduce bf16), the optimizer reads that bf16 gradient, and pulls get the
// master's bf16 rounding (kept beside it, refreshed by every update, init and state
// write). Init and state payloads are the fp32 master in either dtype. Pushes land in their
// worker's slot (zero-copy through AmHandler::payload_destination for rendezvous payloads); bsp
// pulls are answered from the parameters themselves. All memory is allocated when a key
// space is first named by a request, never per message.
//
// Initialization: DP worker 0 of a key space sends the initial parameters of every slice
// (kAmInit); the first init of a key space allocates its storage. Pushes and pulls that
// arrive before their slice is initialized wait (pulls) or are rejected (pushes).
//
// Consistency (per slice; c = the clock a pull carries = steps its worker has pushed):
//   bsp  the step's update is applied once all D pushes of that step have landed: the D
//        slots are summed in ascending worker order in fp32 (kernels::Sum), then one
//        optimizer step. A pull at clock c waits until c steps are applied.
//   ssp  each push is applied on arrival (one optimizer step each). A pull at clock c waits
//        until its own c pushes are applied and every worker has pushed at least c - s.
//   asp  each push is applied on arrival; a pull waits only for its own earlier pushes
//        (read-your-writes, bounded by one message latency), never for other workers.
// A stats request is answered at once with the counters (ServerCounters), for reports.
// State (checkpoints, AdamW only): a state-read at clock c is answered, like a pull, once
// the slice's state has seen c steps (bsp: c updates applied; ssp/asp: every worker's c
// pushes applied), with a copy of params, m and v (allocated per request: these are rare
// and the copy keeps later updates out of the reply). A state-write overwrites params, m
// and v of a slice and sets its clock to the request's: c steps applied, every worker's
// push count c, and the optimizer's update count c (bsp) or c·D (ssp/asp, where every push
// is an update), so that AdamW's bias correction continues where the checkpoint stopped.
// A write is refused while pushes of the slice are pending; a pull reply still in flight
// may see part of it (a restore happens between steps, before anyone pulls).
// Bad requests (unknown key space or slice, wrong geometry, a dtype other than the key space's, a
// worker index out of range, a push into a slot still busy) are answered with an error to
// that worker and change nothing; the server keeps serving.
//
// Lifetime: the transport must outlive the server, or be destroyed first after
// DetachTransport() (what pszero-server does: its slots must outlive the transport's
// teardown, which may still complete a receive into them).
// Threading: one thread (the one that owns the Transport) calls Serve; stats() may be read
// from that thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/ps/ps_protocol.h"
#include "common/transport.h"
#include "kernels/optimizer.h"

namespace pszero::ps {

enum class OptimizerKind : uint8_t {
  kNone,  // the slice's parameters become the summed gradient (push+pull = all-reduce)
  kSgd,
  kAdamW,
};
std::string_view OptimizerName(OptimizerKind k);
Result<OptimizerKind> ParseOptimizer(std::string_view name);

struct PsServerOptions {
  int server_index = 0;  // 0..num_servers-1, the index the slice map uses
  int num_servers = 1;
  int64_t slice_bytes = 4 << 20;
  Consistency consistency = Consistency::kBsp;
  int staleness = 0;  // ssp only
  OptimizerKind optimizer = OptimizerKind::kAdamW;
  kernels::AdamWParams adamw;  // step and grad_scale are set by the server
  kernels::SgdParams sgd;      // grad_scale is set by the server
  // Multiplies the aggregated gradient before the optimizer; 0 means 1/(D·grad_accum)
  // (averaging over the workers and the micro-batches each push sums).
  float grad_scale = 0.0f;
  int grad_accum = 1;  // the workers' --grad-accum
  int threads = 1;     // kernel threads
  // Called after each update of a slice with its count of steps applied (bsp) or updates
  // (ssp/asp): a test hook (pszero-server's fault injection point "apply<N>"). Unset, the
  // update path does nothing more.
  std::function<void(int64_t)> on_update;
};

struct PsServerStats : ServerCounters {
  std::string last_error;  // the last rejection, for logs and tests
};

class PsServer {
 public:
  // Registers the ps AM handlers on `transport`, which must outlive the server.
  static Result<std::unique_ptr<PsServer>> Create(Transport* transport, PsServerOptions options);
  ~PsServer();
  PsServer(const PsServer&) = delete;
  PsServer& operator=(const PsServer&) = delete;

  // Serves for at most `timeout`: handles whatever arrives and retires finished replies.
  // Returns the number of events handled; errors only from the transport itself.
  Result<int> Serve(std::chrono::milliseconds timeout);

  const PsServerStats& stats() const { return stats_; }
  const PsServerOptions& options() const { return options_; }

  // Unhooks the server from its transport (late messages are dropped), so that the
  // transport may be destroyed first: a push still landing in one of this server's slots
  // then finishes or fails inside the transport's destructor while the slot exists.
  // Serve must not be called afterwards.
  void DetachTransport();

 private:
  struct KeySpace;
  struct LocalSlice;
  PsServer(Transport* transport, PsServerOptions options);

  void* PushDestination(const AmInfo& info);
  void OnInit(const AmInfo& info, std::span<const std::byte> payload);
  void OnPush(const AmInfo& info, std::span<const std::byte> payload);
  void OnPull(const AmInfo& info);
  void OnStats(const AmInfo& info);
  void OnStateRead(const AmInfo& info);
  void OnStateWrite(const AmInfo& info, std::span<const std::byte> payload);
  Status CheckStateful() const;
  bool StateReady(const LocalSlice& s, int64_t clock) const;
  void SendStateReply(LocalSlice& s, int worker);
  Result<LocalSlice*> Validate(const RequestHeader& h, int peer, bool need_init);
  void Reject(int peer, const RequestHeader& h, uint16_t am, const Status& why);
  void Ack(int peer, const RequestHeader& h);
  Status Apply(LocalSlice& s, int worker);
  // bf16 key spaces: the master's rounding that pulls are answered with, after a write.
  Status RefreshBf16(LocalSlice& s);
  void ServeParkedPulls(LocalSlice& s);
  bool PullReady(const LocalSlice& s, int worker, int64_t clock);
  void SendReply(LocalSlice& s, int worker);
  void RetireReplies();

  Transport* transport_;
  PsServerOptions options_;
  kernels::KernelContext ctx_;
  std::map<uint32_t, std::unique_ptr<KeySpace>> spaces_;
  std::vector<std::pair<LocalSlice*, int>> replies_in_flight_;
  // State-read replies in flight: each owns the copy its payload is sent from.
  struct StateReply {
    std::vector<float> data;
    Request request;
  };
  std::vector<std::unique_ptr<StateReply>> state_replies_;
  // bf16 bsp sums of more than kernels::kMaxSumInputs workers: fp32, one slice at a time.
  std::vector<float> sum_fp32_;
  PsServerStats stats_;
};

}  // namespace pszero::ps
