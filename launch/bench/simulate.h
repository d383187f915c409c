// The cost model behind `pszero-bench simulate`: predicted step time, communication time,
// compute time, bytes and ZeRO model-state memory per rank for every sync mode, from an
// alpha-beta link, a compute rate and the model's shape; and the calibration that fits
// the link and the compute rate to measured JSON (run reports, collective benchmarks).
//
// Everything here is pure arithmetic on values (no I/O except LoadCalibrationFile, no
// globals), so tests call it directly. docs/benchmarks.md ("Simulator") states the model
// and its assumptions; the comments below say how each formula maps to pszero's code.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "worker/model/config.h"
#include "worker/model/layers.h"
#include "worker/train/data_parallel.h"

namespace pszero::bench::sim {

// A message of b bytes over one link takes alpha_s + b / bytes_per_s.
struct Link {
  double alpha_s = 5e-6;
  double bytes_per_s = 12.5e9;  // 100 Gbit/s
};

enum class CollOp : uint8_t { kAllReduce, kReduceScatter, kAllGather };
Result<CollOp> ParseCollOp(std::string_view name);  // allreduce|reduce_scatter|allgather

// t = steps * alpha + bytes_on_link / B for one collective whose full array is `bytes`
// (all-reduce buffer, reduce-scatter input, all-gather output) on n ranks. Ring (above
// small_bytes): all-reduce 2(n-1) steps of S/n bytes, reduce-scatter and all-gather n-1
// steps of S/n. Direct (at or below small_bytes, as the communicator switches): one step
// in which a rank sends its array to the n-1 others (all-reduce: (n-1)S; the others
// (n-1)S/n). n = 1 costs nothing.
struct CollCost {
  double steps = 0;
  double bytes_on_link = 0;
  double Seconds(const Link& link) const {
    return steps * link.alpha_s + bytes_on_link / link.bytes_per_s;
  }
};
CollCost CollectiveCost(CollOp op, int n, double bytes, double small_bytes);

// One unit (a layer: what zero3 gathers and buckets are made of) of one TP rank's shard.
struct Unit {
  std::string name;
  int64_t params = 0;     // per TP rank
  double flops = 0;       // share of the step's compute (forward + backward), per TP rank
  int tp_allreduces = 0;  // Megatron all-reduces of the activations per step (fwd + bwd)
  // Flops one micro-batch re-runs in this unit's backward, per TP rank (docs/benchmarks.md,
  // "Gradient accumulation and activation recompute"). recompute_full_flops: what --recompute
  // full re-runs when it re-runs this block: its forward less its MLP output projection (0
  // for embed and ln_f); it repeats recompute_tp_allreduces of the block's TP all-reduces
  // (the attention's). Which blocks it re-runs: ReRunsBlock. attention_probs_flops:
  // --recompute selective re-runs the attention scores GEMM (the softmax's elementwise work
  // is not counted, as in the model FLOP count); 0 where the workload does not know the
  // attention's shape.
  double recompute_full_flops = 0;
  int recompute_tp_allreduces = 0;
  double attention_probs_flops = 0;
  int block = -1;  // the transformer block (h.block) this unit is; -1: embed, ln_f
};

// What one rank computes and holds: the model's units in forward order.
struct Workload {
  std::string name;
  int64_t params = 0;  // whole model (T = 1)
  int64_t psi = 0;     // per TP rank: the Ψ of the ZeRO formulas
  int tp = 1;
  int64_t tokens_per_replica = 0;
  double flops_per_rank = 0;          // one step, per TP rank
  double tp_activation_elements = 0;  // elements of one TP all-reduce (tokens x d)
  int64_t layers = 0;                 // transformer blocks (units with block >= 0)
  std::vector<Unit> units;
};
// A preset or custom model: units embed (token + position), h.0 … h.L-1, ln_f for GPT,
// h.0 … h.L-1 for the MLP. Flops: model::TrainFlopsPerStep / T, shared out by each unit's
// matrix work (the tied head's product counts to embed; attention to its block).
Result<Workload> WorkloadForModel(const model::ModelConfig& config, int tp);
// A bare parameter count: `layers` equal units, 6 * P * tokens flops, no TP traffic model
// beyond 4 all-reduces of tokens x hidden per layer when tp > 1 (hidden = sqrt(P / 12L)).
// Recompute takes each layer as a GPT block of 12 hidden^2 weights: full re-runs 2/3 of
// its forward (all weight GEMMs but the 4 hidden^2 of the MLP output projection) and one
// TP all-reduce; selective is free (the sequence length, hence the scores GEMM, is unknown).
Workload WorkloadForParams(int64_t params, int layers, int64_t tokens_per_replica, int tp);

struct SimOptions {
  int workers = 1;    // world = T x D
  int servers = 1;    // --sync ps only
  bool bf16 = false;  // paper's mixed precision: 2-byte gradients on the wire, 16Ψ memory
  double bucket_mb = 25.0;
  double small_bytes = 32768;
  Link link;                          // any rank count without a calibrated link of its own
  std::map<int, Link> link_by_ranks;  // calibrated per rank count (collective benchmarks)
  double flops_per_s = 100e12;        // per worker
  // Calibrated per mode (each mode's single-worker run includes its own local work: the
  // gathers' copies, the optimizer over its shard); modes not in it use flops_per_s.
  std::map<std::string, double, std::less<>> flops_by_mode;
  // 0: every worker has its own device. C > 0: the workers share C cores (one host):
  // compute stretches by max(1, world / C), and communication cannot overlap compute once
  // world >= C (the ring's thread takes cycles from another rank's compute). C may be
  // fractional: on a loaded host it is the share of the cores the job gets (fitted by
  // Calibrate with fit_host_cores).
  double host_cores = 0;
  // --grad-accum K: a step is K micro-batches of the workload (docs/sync.md, "Gradient
  // accumulation"): allreduce, zero1 and ps communicate during the last micro-batch's
  // backward only, zero2 reduce-scatters every micro-batch and all-gathers once, zero3
  // gathers and reduce-scatters every micro-batch.
  int grad_accum = 1;
  model::Recompute recompute = model::Recompute::kNone;  // --recompute
  // --recompute-layers N with full: the first N blocks share the saved set; -1: all.
  int64_t recompute_layers = -1;

  const Link& LinkFor(int ranks) const;
  double FlopsFor(std::string_view mode) const;
};

struct ModePrediction {
  std::string mode;
  double step_s = 0;
  double comm_s = 0;          // sum of the sync mode's collectives (busy time of its stream)
  double exposed_comm_s = 0;  // step_s - compute_s: what overlap did not hide
  double compute_s = 0;       // K x (forward + recompute + backward + TP all-reduces) of one rank
  double bytes_sent_per_rank = 0;  // the sync mode's traffic per step
  train::ModelStateBytes memory;
};

// Whether --recompute full re-runs unit u's forward in its backward, as the model does
// (model.h, Model::RecomputeBlock): a block among the first opt.recompute_layers (all by
// default) but the last of them, whose saved set nothing overwrites before its backward.
bool ReRunsBlock(const Workload& w, const Unit& u, const SimOptions& opt);

// Flops one rank computes per step: K micro-batches of w.flops_per_rank plus what
// opt.recompute re-runs in their backward.
double StepFlops(const Workload& w, const SimOptions& opt);

// One mode (allreduce, zero1, zero2, zero3, ps) at opt.workers.
Result<ModePrediction> Simulate(const Workload& w, std::string_view mode, const SimOptions& opt);
inline const std::vector<std::string>& AllModes() {
  static const std::vector<std::string> modes = {"allreduce", "zero1", "zero2", "zero3", "ps"};
  return modes;
}

// Bytes as the ZeRO paper prints them: GB = 1e9 bytes, three significant digits
// (120, 31.4, 16.6, 1.88).
std::string PaperGB(double bytes);

// ---- calibration ----
struct CollectiveSample {
  CollOp op = CollOp::kAllReduce;
  int ranks = 2;
  double bytes = 0;
  double seconds = 0;
};
struct RunSample {
  std::string file;
  std::string sync;
  std::string model;
  int workers = 1;
  int tp = 1;
  int servers = 0;
  std::string precision = "fp32";
  double bucket_mb = 25.0;
  int grad_accum = 1;                                    // flags.grad_accum (absent: 1)
  model::Recompute recompute = model::Recompute::kNone;  // flags.recompute (absent: none)
  int64_t recompute_layers = -1;  // flags.recompute_layers (absent or -1: all blocks)
  std::vector<double> round_s;    // per file with these flags: median of steps 2..
  double step_s = 0;              // the least disturbed round: the lowest of round_s
  double bytes_sent_per_rank = 0;
};
struct CalibrationData {
  std::vector<CollectiveSample> collectives;
  std::vector<RunSample> runs;
};
// A `pszero-launch --report` file (schema pszero.run/1) or a `pszero-bench collective
// --json` document; Corruption naming the file otherwise. Reports of the same flags (sync,
// model, workers, tp, servers, precision, bucket, grad_accum, recompute, recompute_layers)
// are rounds of one run; its
// step time is the lowest round median (step 1 warms up and is left out): on a shared host
// interference only ever adds time, so the best of several rounds is the least disturbed
// estimate (timeit's and the benchmark tools' best-of practice).
Status LoadCalibrationFile(const std::string& path, CalibrationData* data);
Status AddCalibrationJson(const nlohmann::json& doc, const std::string& name,
                          CalibrationData* data);

struct LinkFit {
  Link link;
  int samples = 0;
  double rms_rel_error = 0;
};
// Least squares of t = steps * alpha + bytes_on_link / B over the samples, each residual
// relative to its time (so 1 KiB and 16 MiB rows count alike); alpha >= 0.
Result<LinkFit> FitLink(const std::vector<CollectiveSample>& samples, double small_bytes);

struct Calibration {
  bool has_link = false;
  LinkFit global;
  std::map<int, LinkFit> by_ranks;
  bool has_flops = false;
  double flops_per_s = 0;  // median over the runs it was fitted to
  std::map<std::string, double, std::less<>> flops_by_mode;  // from single-worker runs
  std::string flops_source;  // "single-worker runs" or "step time minus predicted comm"
  bool has_host_cores = false;
  double host_cores = 0;  // fitted effective cores (fit_host_cores)
};
// Link from the collective samples (global and per rank count); compute rate from the
// single-worker runs (no communication; per mode, and their median for other modes), else
// from every run's step time minus its predicted communication; a run's flops are
// StepFlops at its own grad_accum and recompute. `base` supplies
// everything not calibrated. fit_host_cores: also choose the effective core count C in
// [1, 64] that minimizes the relative error over the multi-worker runs (one parameter
// fitted to the runs it is then checked on; CheckRuns on held-out runs is the honest test).
Result<Calibration> Calibrate(const CalibrationData& data, const SimOptions& base,
                              bool fit_host_cores = false);
// base with the calibrated link(s) and rate applied.
SimOptions Apply(const Calibration& c, SimOptions base);

// Predicted vs measured for one recorded run.
struct CheckRow {
  RunSample run;
  double predicted_s = 0;
  double error = 0;  // predicted / measured - 1
};
Result<std::vector<CheckRow>> CheckRuns(const CalibrationData& data, const SimOptions& opt);

}  // namespace pszero::bench::sim
