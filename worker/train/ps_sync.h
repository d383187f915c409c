// PsSync: the `--sync ps` strategy. The replicas of a data-parallel group stay in step
// through S pszero-server processes (server/ps_server.h) that own the fp32 master
// parameters and the optimizer state: a worker pushes its gradients and pulls the
// updated parameters back (worker/ps/ps_client.h does the wire part).
//
// Key spaces: the servers hold one flat parameter space per TP rank t (key space id = t);
// the D workers of TP rank t (one per replica) are its DP group and push to it as workers
// 0..D-1 (their DP ranks). The space is cut into slices (common/ps/ps_protocol.h) spread
// over all servers.
//
// A step, through the hooks:
//   GradientsReady(u)  unit u's gradient range [begin, end) of the flat buffer is final:
//                      every slice it completes is pushed at once (asynchronously) and
//                      that slice's pull for the next step starts with it, so the server's
//                      update and the pull overlap the rest of backward.
//   Step(step)         every slice is pushed: the clock advances; then (default) waits
//                      until every slice has landed in the flat fp32 parameters and
//                      refreshes the bf16 copy, so that the parameters are final when
//                      Step returns, as in every other mode.
//   BeforeForward(u)   waits for the slices touching u (a no-op unless
//                      `overlap_pulls_with_forward`, where Step returns without waiting and
//                      each unit's pull overlaps the forward of the units before it; then
//                      call Flush() before reading the parameters outside a step).
//
// Gradient accumulation (K micro-batches per step, SyncStrategy::BeginMicroBatch): the
// gradients add up in the buffer and only the last micro-batch's GradientsReady pushes;
// the servers average over D·K (PsServerOptions::grad_accum); one clock per step.
//
// Initial parameters: DP worker 0 sends its (seed-initialized) parameters as the servers'
// initial values; every worker then pulls them all (docs/ps.md).
//
// Mixed precision (bf16 compute with bf16-only storage, SyncPlanFor("ps")): the worker
// holds bf16 parameters and bf16 gradients only (the model casts each unit's fp32 gradient
// scratch into them before GradientsReady); it pushes bf16 gradients and pulls bf16
// parameters (the key space is bf16: 2 bytes per element each way). The servers keep the
// fp32 master and AdamW state, sum the D bf16 pushes in fp32 and round once, run AdamW on
// the master and answer pulls with its bf16 rounding: the arithmetic of the data-parallel
// modes in bf16. The initial master sent by DP worker 0 is the seed's fp32 values
// (ParamBuffer::InitialValues). With fp32 copies beside the bf16 ones (a ParamBuffer made
// without the plan) the key space is fp32 and the bf16 copy is refreshed from it.
//
// What the result equals: under bsp the servers sum the D pushed gradients of a slice in
// ascending DP rank order in fp32 (bf16: rounded once), then run AdamW (lr 1e-3, betas 0.9/0.999,
// eps 1e-8, weight decay 0.01, grad_scale 1/D, step = the number of updates, i.e. the 1-based
// step): the same arithmetic as the deterministic collective modes, so ps + bsp is bit-identical to
// them. ssp and asp are served as the servers' --consistency says.
//
// Checkpoints (AdamW on the servers; docs/checkpoints.md): LocalMoments reads params, m
// and v of every slice from the server that owns it (waiting until the servers' state has
// seen this worker's clock). LocalParams is the worker's resident copy under bsp with fp32
// parameters (equal to the servers' after Step; LocalMoments fails with Internal if it is
// not), and the servers' fp32 master under ssp/asp, where the resident copy may lag them,
// and with bf16-only storage, where the resident copy is only its rounding. Restore: every worker
// takes the restored parameters, DP rank 0 writes params, m and v of every slice to its server with
// the step clock of the checkpoint (so AdamW's bias correction continues), and every worker then
// pulls the parameters at that clock, which the servers answer once the write has landed: after
// Restore the resident parameters equal the restored ones and the servers'. The step
// comes from Moments::step (a checkpoint's, set by LoadCheckpoint), else from
// PsSyncOptions::resume_step, or RestoreAt.
//
// Memory: the worker holds only the model's params and grads (the ParamBuffer); optimizer
// state lives on the servers. On the host, pushes read the gradient buffer and pulls land
// in the parameter buffer in place (zero-copy), so PsSync allocates no tensors of its own.
//
// Device parameters (--device cuda; the servers stay on the CPU and the wire is the same):
// UCX here has no CUDA support, so PsSync stages. It owns host mirrors of the flat params
// and grads of the key space's dtype (pinned; 8 bytes per parameter in fp32, 4 with
// bf16-only storage; tracked as comm_buffers) that the
// PsClient works on. GradientsReady(u) waits for the compute stream, then copies u's
// gradients device→host slice by slice and pushes each slice as soon as it is complete,
// so a slice's push is on the wire while the next one is copied. Pulls land in the host
// mirror; each landed range is copied host→device (and cast into the bf16 copy on the
// device) by Step, BeforeForward or Flush, whichever the contract above says makes the
// parameters final: the device parameters are final when they return (in stream order:
// the copies precede every kernel enqueued afterwards). Checkpoint reads and Restore go
// through the mirror. `stage_through_host` forces the same staged path on host
// parameters (tests).
//
// Failures: every wait has `timeout`; a dead server fails the step with Unavailable
// naming it ("ps server 1 (transport rank 1) is lost: ...") within ~5 s (UCX keepalive),
// and Abort() (from the control plane's lost-peer news, on any thread) fails it at once.
// Not thread-safe otherwise: the training thread calls everything.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/kv_store.h"
#include "common/memory.h"
#include "common/ps/ps_protocol.h"
#include "common/tensor.h"
#include "common/transport.h"
#include "kernels/context.h"
#include "worker/collectives/communicator.h"
#include "worker/model/param_buffer.h"
#include "worker/ps/ps_client.h"
#include "worker/train/sync_strategy.h"

namespace pszero::train {

struct PsSyncOptions {
  int worker_rank = 0;                       // this worker's rank among the job's W workers
  int num_workers = 1;                       // W
  int num_servers = 0;                       // S (>= 1)
  int dp_rank = 0;                           // rank in the data-parallel group (the replica)
  int dp_size = 1;                           // D
  int tp_rank = 0;                           // the key space
  std::chrono::milliseconds timeout{60000};  // every wait (a step's pulls, initialization)
  bool overlap_pulls_with_forward = false;   // see the header comment
  // The servers' mode (MakePsSync reads it from their published configuration).
  ps::Consistency consistency = ps::Consistency::kBsp;
  // Micro-batches each push sums (--grad-accum); MakePsSync checks the servers average
  // over as many.
  int grad_accum = 1;
  // Steps done by the checkpoint that Restore will restore (the manifest's "step"); 0 when
  // not resuming.
  int64_t resume_step = 0;
  // The data-parallel group, for AverageLoss only (used on the caller's thread; PsSync's
  // own traffic goes to the servers). Null: AverageLoss returns the local loss.
  collectives::Communicator* group = nullptr;
  // Where the ParamBuffer lives and its kernels run (the model's context): the bf16 copy
  // is refreshed with kernels::Cast on it, and with device parameters it is where the
  // compute stream is waited for. Its device must be the ParamBuffer's.
  kernels::KernelContext kernels;
  // Stage through host mirrors even though the parameters are on the host (tests: the
  // staged path of device parameters, run on a CPU).
  bool stage_through_host = false;
  // Tracks the host mirrors (comm_buffers) when staging; may be null.
  MemoryTracker* tracker = nullptr;
};

class PsSync final : public SyncStrategy {
 public:
  // On a transport where servers are ranks 0..S-1 (tests run them as threads);
  // `slice_bytes` must be the servers'. Sends (DP rank 0) and pulls the initial
  // parameters before returning. `params` and `transport` must outlive the strategy.
  static Result<std::unique_ptr<PsSync>> Create(model::ParamBuffer* params, Transport* transport,
                                                const PsSyncOptions& options, int64_t slice_bytes);
  // The same, owning the transport.
  static Result<std::unique_ptr<PsSync>> Create(model::ParamBuffer* params,
                                                std::unique_ptr<Transport> transport,
                                                const PsSyncOptions& options, int64_t slice_bytes);
  ~PsSync() override;

  std::string_view name() const override { return "ps"; }
  Status BeforeForward(int unit) override;
  Status GradientsReady(int unit) override;
  Status Step(int64_t step) override;
  Result<float> AverageLoss(float loss) override;
  // Checkpoints (header comment). LocalParams and LocalMoments are called between steps;
  // every worker of the DP group reads the whole key space.
  Result<std::vector<float>> LocalParams(const model::ParamBuffer& params) override;
  Result<Moments> LocalMoments(const model::ParamBuffer& params) override;
  // Restores at moments.step, else options.resume_step (InvalidArgument naming --resume
  // when neither is set).
  Status Restore(const std::vector<float>& params, const Moments& moments) override;
  // Collective over the DP group: the state after `steps` (>= 1) steps, this TP rank's
  // key space in the ParamBuffer's layout; on fresh servers (or ones at most at `steps`).
  Status RestoreAt(const std::vector<float>& params, const Moments& moments, int64_t steps);

  // Waits for everything in flight and refreshes what is stale in the bf16 copy: the
  // parameters are then final (only needed with overlap_pulls_with_forward).
  Status Flush();
  // Fails the current and every later wait with `why` (thread-safe).
  void Abort(const Status& why);

  // Gradient bytes pushed and parameter bytes pulled (payloads) in the last step; the
  // totals include the initial pull.
  SyncTraffic last_step_traffic() const override {
    return {bytes_sent_last_step(), bytes_received_last_step()};
  }
  SyncTraffic total_traffic() const override {
    return {bytes_sent_total(), bytes_received_total()};
  }
  int64_t bytes_sent_last_step() const { return sent_last_step_; }
  int64_t bytes_received_last_step() const { return received_last_step_; }
  int64_t bytes_sent_total() const { return client_->stats().push_bytes + init_bytes_; }
  int64_t bytes_received_total() const { return client_->stats().pull_bytes; }
  // Model-state bytes this strategy holds besides the ParamBuffer: none.
  int64_t optimizer_state_bytes() const { return 0; }
  // Whether the parameters go through host mirrors (device parameters, or
  // stage_through_host), and the bytes those mirrors take (0 when not staged).
  bool staged() const { return host_params_.defined(); }
  int64_t staging_bytes() const {
    return staged() ? static_cast<int64_t>(host_params_.nbytes() + host_grads_.nbytes()) : 0;
  }

  // Every server's counters (bytes pushed to / pulled from it, memory it holds), asked over
  // the data plane: for the run report's "servers" entries. Any worker may ask, at any
  // point between steps; index s is server s.
  Result<std::vector<ps::ServerCounters>> ServerStats();

  const ps::SliceMap& slice_map() const { return client_->map(); }
  int64_t clock() const { return client_->clock(); }

 private:
  PsSync(model::ParamBuffer* params, const PsSyncOptions& options)
      : params_(params), options_(options) {}
  // Pulled parameters [begin, end) become the model's: copied host→device from the mirror
  // when staged, then cast into the bf16 copy (kernels::Cast on options_.kernels).
  Status ApplyParams(int64_t begin, int64_t end);
  // Gradients [begin, end) are final: when staged, each slice's part is copied into the
  // mirror and pushed as soon as its slice is complete; else pushed in place.
  Status PushGradients(int64_t begin, int64_t end);
  // The parameters on the host as the client sees them (param_dtype()): the mirror when
  // staged.
  const void* host_params() const;
  // Whether the resident parameters are `master` (bf16-only storage: its rounding).
  bool MatchesResident(const std::vector<float>& master) const;
  // With device parameters: waits for the compute stream (what it computes: `what`).
  Status WaitForCompute(const char* what);
  Status Progress();

  model::ParamBuffer* params_;
  PsSyncOptions options_;
  std::unique_ptr<Transport> owned_transport_;  // declared before the client: outlives it
  Transport* transport_ = nullptr;
  std::unique_ptr<ps::PsClient> client_;
  // Per unit, overlap mode: pulled but not yet applied (ApplyParams).
  std::vector<bool> stale_;
  // Staged mode: the host mirrors the client works on (undefined otherwise).
  Tensor host_params_;
  Tensor host_grads_;
  int64_t init_bytes_ = 0;
  int64_t sent_at_step_start_ = 0;
  int64_t received_at_step_start_ = 0;
  int64_t sent_last_step_ = 0;
  int64_t received_last_step_ = 0;
};

// The factory pszero-worker uses: a UCX transport of its own to the servers (world S + W:
// servers are ranks 0..S-1, worker w is rank S + w; addresses under "pszero/ps" in
// `store`, normally the RendezvousClient), the slice size and consistency read from the
// configuration every pszero-server publishes in `store` (ps::ServerConfigKey), then
// Create. InvalidArgument naming --servers when S < 1; InvalidArgument when the servers
// disagree on their slice size. `store` must outlive the strategy.
Result<std::unique_ptr<PsSync>> MakePsSync(model::ParamBuffer* params, const PsSyncOptions& options,
                                           KeyValueStore* store);

}  // namespace pszero::train
