#include "launch/bench/simulate.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "common/file_util.h"

namespace pszero::bench::sim {

namespace {

// One step as two streams, the way a rank runs it: compute tasks in order on the model's
// thread, collectives in issue order on the strategy's stream. A collective is issued
// when compute task `after` ends (-1: at the step's start); a compute task may wait for
// collectives (zero3's gathers). Returns when both streams are done.
struct CommOp {
  double seconds = 0;
  int after = -1;
};
struct ComputeTask {
  double seconds = 0;
  std::vector<int> waits;  // CommOp indices
};

struct StepTimes {
  double end = 0;
  double compute_busy = 0;
  double comm_busy = 0;
};

StepTimes RunStreams(const std::vector<ComputeTask>& tasks, const std::vector<CommOp>& ops,
                     bool overlap) {
  StepTimes t;
  for (const auto& c : tasks) t.compute_busy += c.seconds;
  for (const auto& o : ops) t.comm_busy += o.seconds;
  if (!overlap) {  // one resource: times add
    t.end = t.compute_busy + t.comm_busy;
    return t;
  }
  // Dependencies only point backwards in issue order (a task waits for collectives issued
  // before it; a collective waits for a task that ends before it is issued), so walking
  // both streams in order, taking whichever next item is ready, resolves every time.
  std::vector<double> task_end(tasks.size()), op_end(ops.size());
  size_t i = 0, j = 0;
  while (i < tasks.size() || j < ops.size()) {
    const bool task_ready =
        i < tasks.size() && std::all_of(tasks[i].waits.begin(), tasks[i].waits.end(),
                                        [&](int w) { return static_cast<size_t>(w) < j; });
    if (task_ready) {
      double start = i > 0 ? task_end[i - 1] : 0.0;
      for (int w : tasks[i].waits) start = std::max(start, op_end[w]);
      task_end[i] = start + tasks[i].seconds;
      ++i;
      continue;
    }
    assert(j < ops.size() && ops[j].after < static_cast<int>(i));
    const double issued = ops[j].after >= 0 ? task_end[ops[j].after] : 0.0;
    op_end[j] = std::max(j > 0 ? op_end[j - 1] : 0.0, issued) + ops[j].seconds;
    ++j;
  }
  t.end = std::max(tasks.empty() ? 0.0 : task_end.back(), ops.empty() ? 0.0 : op_end.back());
  return t;
}

// pszero's bucket plan (DataParallelSync::PlanBuckets): whole units from the last one
// backwards, a bucket closed once it reaches the limit. Returns [first, end) unit ranges,
// last units first (the order backward fills them).
std::vector<std::pair<int, int>> PlanBuckets(const std::vector<Unit>& units, double bucket_mb) {
  const int64_t limit =
      std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024.0 * 1024.0 / sizeof(float)));
  std::vector<int64_t> begin(units.size() + 1, 0);
  for (size_t i = 0; i < units.size(); ++i) begin[i + 1] = begin[i] + units[i].params;
  std::vector<std::pair<int, int>> out;
  int end = static_cast<int>(units.size());
  while (end > 0) {
    int first = end - 1;
    while (first > 0 && begin[end] - begin[first] < limit) --first;
    out.emplace_back(first, end);
    end = first;
  }
  return out;
}

}  // namespace

Result<CollOp> ParseCollOp(std::string_view name) {
  if (name == "allreduce") return CollOp::kAllReduce;
  if (name == "reduce_scatter") return CollOp::kReduceScatter;
  if (name == "allgather") return CollOp::kAllGather;
  return Status::InvalidArgument("collective op '" + std::string(name) +
                                 "' is not allreduce, reduce_scatter or allgather");
}

CollCost CollectiveCost(CollOp op, int n, double bytes, double small_bytes) {
  if (n <= 1 || bytes <= 0) return {};
  const double m = n - 1;
  if (bytes <= small_bytes) {
    return {1.0, op == CollOp::kAllReduce ? m * bytes : m * bytes / n};
  }
  const double steps = op == CollOp::kAllReduce ? 2.0 * m : m;
  return {steps, steps * bytes / n};
}

const Link& SimOptions::LinkFor(int ranks) const {
  auto it = link_by_ranks.find(ranks);
  return it == link_by_ranks.end() ? link : it->second;
}

double SimOptions::FlopsFor(std::string_view mode) const {
  auto it = flops_by_mode.find(mode);
  return it == flops_by_mode.end() ? flops_per_s : it->second;
}

Result<Workload> WorkloadForModel(const model::ModelConfig& c, int tp) {
  PSZERO_RETURN_IF_ERROR(model::ValidateConfig(c, tp));
  Workload w;
  w.name = c.name;
  w.params = model::ParamCount(c);
  w.tp = tp;
  w.tokens_per_replica = c.tokens_per_step();
  const int64_t d = c.d_model;
  const int64_t h = d * c.ffn_mult;
  const double tok = static_cast<double>(c.tokens_per_step());
  // Column-parallel weights and biases split by T; row-parallel weights split, their bias
  // and the layer norms replicated (model/layers.h).
  const int64_t mlp_block = 2 * d + (d * h + h) / tp + (h * d) / tp + d;
  const int64_t mlp_block_full = 2 * d + (d * h + h) + (h * d + d);
  // Recompute (weights like the units' flops, scaled below): --recompute full re-runs a
  // block's forward (2 flops per weight and token, attention 4·B·S²·d) without the MLP's
  // output projection (h·d + d weights: a third of the block's weight GEMMs), for the
  // blocks ReRunsBlock picks; the GPT's re-run repeats the attention's row-parallel
  // all-reduce, the MLP model's none (its only forward all-reduce is the skipped
  // projection's).
  // --recompute selective re-runs the scores GEMM q·kᵀ, 2·B·S²·d, in every block.
  const double mlp_out_proj = 2.0 * (h * d + d) * tok;
  if (c.kind == model::ModelKind::kMlp) {
    for (int64_t l = 0; l < c.layers; ++l) {
      w.units.push_back({"h." + std::to_string(l), mlp_block, 6.0 * mlp_block_full * tok,
                         tp > 1 ? 2 : 0, 2.0 * mlp_block_full * tok - mlp_out_proj, 0, 0.0,
                         static_cast<int>(l)});
    }
  } else {
    const int64_t attn_block = 2 * d + (d * 3 * d + 3 * d) / tp + (d * d) / tp + d;
    const int64_t attn_block_full = 2 * d + (d * 3 * d + 3 * d) + (d * d + d);
    const double attention = 12.0 * c.batch * static_cast<double>(c.seq) * c.seq * d;
    w.units.push_back(
        {"embed", c.vocab * d / tp + c.seq * d, 6.0 * c.vocab * d * tok, 0, 0.0, 0, 0.0});
    for (int64_t l = 0; l < c.layers; ++l) {
      const double block_fwd = 2.0 * (attn_block_full + mlp_block_full) * tok + attention / 3.0;
      w.units.push_back({"h." + std::to_string(l), attn_block + mlp_block,
                         6.0 * (attn_block_full + mlp_block_full) * tok + attention, tp > 1 ? 4 : 0,
                         block_fwd - mlp_out_proj, tp > 1 ? 1 : 0, attention / 6.0,
                         static_cast<int>(l)});
    }
    w.units.push_back({"ln_f", 2 * d, 6.0 * 2 * d * tok, 0, 0.0, 0, 0.0});
  }
  // Share out the step's flops (TrainFlopsPerStep, what `bench train` reports) by weight.
  w.flops_per_rank = model::TrainFlopsPerStep(c) / tp;
  double weight = 0;
  for (const Unit& u : w.units) weight += u.flops;
  for (Unit& u : w.units) {
    u.flops = w.flops_per_rank * u.flops / weight;
    u.recompute_full_flops = w.flops_per_rank * u.recompute_full_flops / weight;
    u.attention_probs_flops = w.flops_per_rank * u.attention_probs_flops / weight;
    w.psi += u.params;
  }
  w.tp_activation_elements = tok * d;
  w.layers = c.layers;
  return w;
}

Workload WorkloadForParams(int64_t params, int layers, int64_t tokens_per_replica, int tp) {
  Workload w;
  w.name = "params";
  w.params = params;
  w.tp = tp;
  w.tokens_per_replica = tokens_per_replica;
  w.psi = params / tp;
  w.flops_per_rank = 6.0 * static_cast<double>(params) * tokens_per_replica / tp;
  const double hidden = std::sqrt(static_cast<double>(params) / (12.0 * layers));
  w.tp_activation_elements = hidden * tokens_per_replica;
  w.layers = layers;
  for (int l = 0; l < layers; ++l) {
    const int64_t p = w.psi / layers + (l < w.psi % layers ? 1 : 0);
    const double flops = w.flops_per_rank / layers;
    // Full recompute: the forward (a third of the flops) less a third of it.
    w.units.push_back({"h." + std::to_string(l), p, flops, tp > 1 ? 4 : 0, flops / 3.0 * 2.0 / 3.0,
                       tp > 1 ? 1 : 0, 0.0, l});
  }
  return w;
}

bool ReRunsBlock(const Workload& w, const Unit& u, const SimOptions& opt) {
  return u.block >= 0 &&
         u.block + 1 < model::RecomputedBlocks(opt.recompute, opt.recompute_layers, w.layers);
}

double StepFlops(const Workload& w, const SimOptions& opt) {
  double per_micro_batch = w.flops_per_rank;
  for (const Unit& u : w.units) {
    if (ReRunsBlock(w, u, opt)) per_micro_batch += u.recompute_full_flops;
    if (opt.recompute == model::Recompute::kSelective) {
      per_micro_batch += u.attention_probs_flops;
    }
  }
  return opt.grad_accum * per_micro_batch;
}

Result<ModePrediction> Simulate(const Workload& w, std::string_view mode, const SimOptions& opt) {
  if (std::find(AllModes().begin(), AllModes().end(), mode) == AllModes().end()) {
    return Status::InvalidArgument("--sync: unknown mode '" + std::string(mode) + "'");
  }
  if (opt.workers < 1 || opt.workers % w.tp != 0) {
    return Status::InvalidArgument("--workers: must be a positive multiple of --tp");
  }
  if (opt.grad_accum < 1) return Status::InvalidArgument("--grad-accum: must be >= 1");
  const int micro_batches = opt.grad_accum;
  const int dp = opt.workers / w.tp;
  const double elem = opt.bf16 ? 2.0 : 4.0;  // gradient/parameter bytes on the wire
  const bool overlap = opt.host_cores == 0 || opt.workers < opt.host_cores;
  const double stretch =
      opt.host_cores > 0 ? std::max(1.0, static_cast<double>(opt.workers) / opt.host_cores) : 1.0;
  const Link& dp_link = opt.LinkFor(dp);
  const Link& tp_link = opt.LinkFor(w.tp);
  auto coll = [&](CollOp op, double bytes) {
    return CollectiveCost(op, dp, bytes, opt.small_bytes).Seconds(dp_link);
  };
  auto sent = [&](CollOp op, double bytes) {
    return CollectiveCost(op, dp, bytes, opt.small_bytes).bytes_on_link;
  };

  // Per unit: forward 1/3, backward 2/3 of its flops, plus its blocking TP all-reduces; the
  // backward task also holds what --recompute re-runs in it (right before it, after
  // zero3's gather).
  const int n = static_cast<int>(w.units.size());
  std::vector<double> fwd(n), bwd(n);
  const double tp_ar =
      CollectiveCost(CollOp::kAllReduce, w.tp, w.tp_activation_elements * elem, opt.small_bytes)
          .Seconds(tp_link);
  for (int i = 0; i < n; ++i) {
    const Unit& u = w.units[i];
    const double t = u.flops / opt.FlopsFor(mode) * stretch;
    fwd[i] = t / 3.0 + tp_ar * u.tp_allreduces / 2.0;
    bwd[i] = 2.0 * t / 3.0 + tp_ar * u.tp_allreduces / 2.0;
    if (ReRunsBlock(w, u, opt)) {
      bwd[i] +=
          u.recompute_full_flops / opt.FlopsFor(mode) * stretch + tp_ar * u.recompute_tp_allreduces;
    } else if (opt.recompute == model::Recompute::kSelective) {
      bwd[i] += u.attention_probs_flops / opt.FlopsFor(mode) * stretch;
    }
  }

  ModePrediction p;
  p.mode = std::string(mode);
  p.memory = train::PredictModelState(mode, w.psi, dp, opt.bf16);
  std::vector<ComputeTask> tasks;
  std::vector<CommOp> ops;
  if (mode == "zero3") {
    // Tasks, per micro-batch: forward of units 0..n-1, then backward of n-1..0. Each
    // task's unit is gathered before it runs; within a micro-batch the gather for task k+1
    // is issued when task k starts (the prefetch along the recorded order; at most two
    // units gathered), a unit's reduce-scatter when its backward ends. The recorded order
    // is one micro-batch's and ends with it (Zero3Sync::NextUse): the first gather of a
    // micro-batch is issued when the one before has ended, after its last reduce-scatter
    // (Zero3Sync::BeginMicroBatch), and the step's first after the last optimizer step
    // (Zero3Sync::Step): both exposed. A steady-state step: in the run's first step the
    // order is being recorded and its first micro-batch does not prefetch at all.
    const int per_micro = 2 * n;
    const int total = per_micro * micro_batches;
    auto is_fwd = [&](int k) { return k % per_micro < n; };
    std::vector<int> unit_of(total);
    for (int k = 0; k < total; ++k) {
      const int m = k % per_micro;
      unit_of[k] = m < n ? m : 2 * n - 1 - m;
    }
    std::vector<int> gather_of(total);
    for (int k = 0; k < total; ++k) {
      tasks.push_back({is_fwd(k) ? fwd[unit_of[k]] : bwd[unit_of[k]], {}});
    }
    auto gather = [&](int k, int after) {
      const double bytes = w.units[unit_of[k]].params * elem;
      gather_of[k] = static_cast<int>(ops.size());
      ops.push_back({coll(CollOp::kAllGather, bytes), after});
      p.bytes_sent_per_rank += sent(CollOp::kAllGather, bytes);
    };
    gather(0, -1);
    for (int k = 0; k < total; ++k) {
      const bool next_begins_micro = k + 1 < total && (k + 1) % per_micro == 0;
      if (k + 1 < total && !next_begins_micro) gather(k + 1, k - 1);  // as task k starts
      if (!is_fwd(k)) {
        const double bytes = w.units[unit_of[k]].params * elem;
        ops.push_back({coll(CollOp::kReduceScatter, bytes), k});
        p.bytes_sent_per_rank += sent(CollOp::kReduceScatter, bytes);
      }
      if (next_begins_micro) gather(k + 1, k);  // BeginMicroBatch, once task k has ended
    }
    for (int k = 0; k < total; ++k) tasks[k].waits.push_back(gather_of[k]);
  } else {
    // Per micro-batch one forward task, then backward per unit from the last; a bucket's
    // collective is issued when backward of its first (lowest) unit ends: in every
    // micro-batch for zero2, in the last one only for the modes that keep the full
    // gradient (allreduce, zero1, ps).
    double f = 0;
    for (double x : fwd) f += x;
    for (int m = 0; m < micro_batches; ++m) {
      tasks.push_back({f, {}});
      for (int i = n - 1; i >= 0; --i) tasks.push_back({bwd[i], {}});
    }
    const auto buckets = PlanBuckets(w.units, opt.bucket_mb);
    const int servers = std::max(opt.servers, 1);
    std::vector<double> bucket_bytes;
    for (const auto& [first, end] : buckets) {
      double elems = 0;
      for (int u = first; u < end; ++u) elems += w.units[u].params;
      bucket_bytes.push_back(elems * elem);
    }
    const int first_micro = mode == "zero2" ? 0 : micro_batches - 1;
    for (int m = first_micro; m < micro_batches; ++m) {
      for (size_t b = 0; b < buckets.size(); ++b) {
        const int first = buckets[b].first;
        const double bytes = bucket_bytes[b];
        const int after = m * (n + 1) + n - first;  // task index of unit `first`'s backward
        if (mode == "allreduce") {
          ops.push_back({coll(CollOp::kAllReduce, bytes), after});
          p.bytes_sent_per_rank += sent(CollOp::kAllReduce, bytes);
        } else if (mode == "ps") {
          // Push the bucket, pull it back: every server link carries the D workers' slices
          // of it (D * bytes / S) each way.
          const Link& l = opt.link;  // the per-rank-count fits are ring figures
          const double t = 2.0 * (l.alpha_s + dp * bytes / servers / l.bytes_per_s);
          ops.push_back({t, after});
          p.bytes_sent_per_rank += bytes;
        } else {  // zero1, zero2: reduce-scatter now, all-gather after the optimizer
          ops.push_back({coll(CollOp::kReduceScatter, bytes), after});
          p.bytes_sent_per_rank += sent(CollOp::kReduceScatter, bytes);
        }
      }
    }
    if (mode == "zero1" || mode == "zero2") {
      for (double bytes : bucket_bytes) {
        ops.push_back({coll(CollOp::kAllGather, bytes), static_cast<int>(tasks.size()) - 1});
        p.bytes_sent_per_rank += sent(CollOp::kAllGather, bytes);
      }
    }
  }
  const StepTimes t = RunStreams(tasks, ops, overlap);
  p.step_s = t.end;
  p.compute_s = t.compute_busy;
  p.comm_s = t.comm_busy;
  p.exposed_comm_s = t.end - t.compute_busy;
  return p;
}

std::string PaperGB(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", bytes / 1e9);
  return buf;
}

// ---- calibration ----

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t k = v.size();
  if (k == 0) return 0.0;
  return k % 2 ? v[k / 2] : 0.5 * (v[k / 2 - 1] + v[k / 2]);
}

}  // namespace

Status AddCalibrationJson(const nlohmann::json& doc, const std::string& name,
                          CalibrationData* data) {
  try {
    if (doc.value("schema", "") == "pszero.run/1") {
      RunSample r;
      r.file = name;
      const auto& f = doc.at("flags");
      r.sync = f.at("sync").get<std::string>();
      r.model = f.at("model").get<std::string>();
      r.workers = f.at("workers").get<int>();
      r.tp = f.value("tp", 1);
      r.servers = f.value("servers", 0);
      r.precision = f.value("precision", "fp32");
      r.bucket_mb = f.value("bucket_mb", 25.0);
      r.grad_accum = f.value("grad_accum", 1);
      if (r.grad_accum < 1) return Status::Corruption(name + ": flags.grad_accum below 1");
      Result<model::Recompute> recompute = model::ParseRecompute(f.value("recompute", "none"));
      if (!recompute.ok())
        return Status::Corruption(name + ": flags." + recompute.status().message().substr(2));
      r.recompute = *recompute;
      if (f.contains("recompute_layers") && !f.at("recompute_layers").is_number_integer()) {
        return Status::Corruption(name + ": flags.recompute_layers is not an integer");
      }
      r.recompute_layers = f.value("recompute_layers", int64_t{-1});
      if (r.recompute_layers < -1) {
        return Status::Corruption(name + ": flags.recompute_layers below -1");
      }
      std::vector<double> times;
      for (const auto& s : doc.at("steps")) {
        if (s.at("step").get<int64_t>() > 1 || doc.at("steps").size() < 3) {
          times.push_back(s.at("time_s").get<double>());
        }
      }
      if (times.empty()) return Status::Corruption(name + ": no steps");
      r.round_s = {Median(times)};
      const auto& ranks = doc.at("ranks");
      if (!ranks.empty()) {
        r.bytes_sent_per_rank = ranks[0].at("bytes_per_step").at("sent").get<double>();
      }
      RunSample* same = nullptr;
      for (RunSample& o : data->runs) {
        if (o.sync == r.sync && o.model == r.model && o.workers == r.workers && o.tp == r.tp &&
            o.servers == r.servers && o.precision == r.precision && o.bucket_mb == r.bucket_mb &&
            o.grad_accum == r.grad_accum && o.recompute == r.recompute &&
            o.recompute_layers == r.recompute_layers) {
          same = &o;
        }
      }
      if (same == nullptr) {
        data->runs.push_back(r);
        same = &data->runs.back();
      } else {
        same->file += "," + name;
        same->round_s.push_back(r.round_s.front());
      }
      same->step_s = *std::min_element(same->round_s.begin(), same->round_s.end());
      return Status::Ok();
    }
    if (doc.value("benchmark", "") == "collective") {
      PSZERO_ASSIGN_OR_RETURN(CollOp op, ParseCollOp(doc.at("op").get<std::string>()));
      const int ranks = doc.at("ranks").get<int>();
      for (const auto& row : doc.at("rows")) {
        CollectiveSample s;
        s.op = op;
        s.ranks = ranks;
        s.bytes = row.at("bytes").get<double>();
        s.seconds = row.at("time_us").get<double>() * 1e-6;
        if (s.seconds > 0) data->collectives.push_back(s);
      }
      return Status::Ok();
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(name + ": " + e.what());
  }
  return Status::Corruption(name +
                            ": neither a run report (schema pszero.run/1) nor a collective "
                            "benchmark (pszero-bench collective --json)");
}

Status LoadCalibrationFile(const std::string& path, CalibrationData* data) {
  // A regular file only: a FIFO would block, a device never end.
  PSZERO_ASSIGN_OR_RETURN(std::string text, ReadInputFile(path));
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded()) return Status::Corruption(path + ": not JSON");
  return AddCalibrationJson(doc, path, data);
}

Result<LinkFit> FitLink(const std::vector<CollectiveSample>& samples, double small_bytes) {
  // Minimize sum(((a * s + b * x) - t) / t)^2 over a = alpha, b = 1/B.
  double ss = 0, sx = 0, xx = 0, st = 0, xt = 0;
  int used = 0;
  for (const auto& s : samples) {
    const CollCost c = CollectiveCost(s.op, s.ranks, s.bytes, small_bytes);
    if (c.steps == 0) continue;
    const double w = 1.0 / s.seconds;
    const double a = c.steps * w, x = c.bytes_on_link * w;
    ss += a * a;
    sx += a * x;
    xx += x * x;
    st += a;  // t * w == 1
    xt += x;
    ++used;
  }
  if (used < 2) return Status::InvalidArgument("--calibrate: fewer than 2 collective rows");
  double alpha = 0, beta = 0;
  const double det = ss * xx - sx * sx;
  if (det > 0) {
    alpha = (st * xx - xt * sx) / det;
    beta = (ss * xt - sx * st) / det;
  }
  if (det <= 0 || alpha < 0) {
    alpha = 0;
    beta = xt / xx;
  }
  if (beta <= 0) {
    beta = 0;
    alpha = st / ss;
  }
  LinkFit fit;
  fit.link.alpha_s = alpha;
  fit.link.bytes_per_s = beta > 0 ? 1.0 / beta : 1e30;
  fit.samples = used;
  double sq = 0;
  for (const auto& s : samples) {
    const CollCost c = CollectiveCost(s.op, s.ranks, s.bytes, small_bytes);
    if (c.steps == 0) continue;
    const double e = c.Seconds(fit.link) / s.seconds - 1.0;
    sq += e * e;
  }
  fit.rms_rel_error = std::sqrt(sq / used);
  return fit;
}

namespace {

Result<Workload> WorkloadForRun(const RunSample& r) {
  PSZERO_ASSIGN_OR_RETURN(model::ModelConfig c, model::PresetConfig(r.model));
  return WorkloadForModel(c, r.tp);
}

SimOptions OptionsForRun(const RunSample& r, SimOptions o) {
  o.workers = r.workers;
  o.servers = std::max(r.servers, 1);
  o.bucket_mb = r.bucket_mb;
  o.grad_accum = r.grad_accum;
  o.recompute = r.recompute;
  o.recompute_layers = r.recompute_layers;
  // pszero's bf16 still reduces fp32 gradients (docs/sync.md): 4-byte wire elements.
  o.bf16 = false;
  return o;
}

}  // namespace

Result<Calibration> Calibrate(const CalibrationData& data, const SimOptions& base,
                              bool fit_host_cores) {
  Calibration c;
  if (!data.collectives.empty()) {
    PSZERO_ASSIGN_OR_RETURN(c.global, FitLink(data.collectives, base.small_bytes));
    c.has_link = true;
    std::map<int, std::vector<CollectiveSample>> by;
    for (const auto& s : data.collectives) by[s.ranks].push_back(s);
    for (const auto& [ranks, samples] : by) {
      Result<LinkFit> f = FitLink(samples, base.small_bytes);
      if (f.ok()) c.by_ranks[ranks] = *f;
    }
  }
  SimOptions linked = Apply(c, base);
  // Compute rate: single-worker runs have no communication, so flops / step time (the
  // run's flops: K micro-batches and what its --recompute re-runs).
  std::vector<double> rates;
  for (const RunSample& r : data.runs) {
    if (r.workers != r.tp || r.sync == "ps") continue;
    Result<Workload> w = WorkloadForRun(r);
    if (!w.ok()) continue;
    double stretch = base.host_cores > 0 ? std::max(1.0, 1.0 * r.workers / base.host_cores) : 1.0;
    rates.push_back(StepFlops(*w, OptionsForRun(r, base)) * stretch / r.step_s);
    c.flops_by_mode[r.sync] = rates.back();
  }
  c.flops_source = "single-worker runs";
  if (rates.empty()) {
    // Otherwise: every run's step time minus its predicted communication.
    for (const RunSample& r : data.runs) {
      Result<Workload> w = WorkloadForRun(r);
      if (!w.ok()) continue;
      SimOptions o = OptionsForRun(r, linked);
      o.flops_per_s = 1e30;  // communication alone
      Result<ModePrediction> p = Simulate(*w, r.sync, o);
      if (!p.ok()) continue;
      const double compute = r.step_s - p->step_s;
      if (compute <= 0) continue;
      const double stretch =
          base.host_cores > 0 ? std::max(1.0, 1.0 * r.workers / base.host_cores) : 1.0;
      rates.push_back(StepFlops(*w, o) * stretch / compute);
    }
    c.flops_source = "step time minus predicted communication";
  }
  if (!rates.empty()) {
    c.flops_per_s = Median(rates);
    c.has_flops = true;
  }
  if (!c.has_link && !c.has_flops) {
    return Status::InvalidArgument(
        "--calibrate: nothing to fit (need collective rows or run reports of a preset model)");
  }
  if (fit_host_cores) {
    // Stretch at one worker is 1 for every C >= 1, so the compute rate does not depend on
    // C: a 1-D search over a log grid (0.7% steps) is enough.
    CalibrationData multi;
    for (const RunSample& r : data.runs) {
      if (r.workers > r.tp) multi.runs.push_back(r);
    }
    if (multi.runs.empty()) {
      return Status::InvalidArgument(
          "--fit-host-cores: needs run reports with more than one worker");
    }
    double best = -1, best_cost = 0;
    for (int k = 0; k <= 600; ++k) {
      SimOptions o = Apply(c, base);
      o.host_cores = std::pow(64.0, k / 600.0);
      PSZERO_ASSIGN_OR_RETURN(std::vector<CheckRow> rows, CheckRuns(multi, o));
      double cost = 0;
      for (const CheckRow& r : rows) cost += r.error * r.error;
      if (best < 0 || cost < best_cost) {
        best = o.host_cores;
        best_cost = cost;
      }
    }
    c.has_host_cores = true;
    c.host_cores = best;
  }
  return c;
}

SimOptions Apply(const Calibration& c, SimOptions base) {
  if (c.has_link) {
    base.link = c.global.link;
    for (const auto& [ranks, fit] : c.by_ranks) base.link_by_ranks[ranks] = fit.link;
  }
  if (c.has_flops) {
    base.flops_per_s = c.flops_per_s;
    for (const auto& [mode, rate] : c.flops_by_mode) base.flops_by_mode[mode] = rate;
  }
  if (c.has_host_cores) base.host_cores = c.host_cores;
  return base;
}

Result<std::vector<CheckRow>> CheckRuns(const CalibrationData& data, const SimOptions& opt) {
  std::vector<CheckRow> rows;
  for (const RunSample& r : data.runs) {
    PSZERO_ASSIGN_OR_RETURN(Workload w, WorkloadForRun(r));
    PSZERO_ASSIGN_OR_RETURN(ModePrediction p, Simulate(w, r.sync, OptionsForRun(r, opt)));
    rows.push_back({r, p.step_s, p.step_s / r.step_s - 1.0});
  }
  std::sort(rows.begin(), rows.end(), [](const CheckRow& a, const CheckRow& b) {
    return a.run.sync != b.run.sync ? a.run.sync < b.run.sync : a.run.workers < b.run.workers;
  });
  return rows;
}

}  // namespace pszero::bench::sim
