// The training flags, shared by pszero-launch (which checks them and passes them on to
// every worker), pszero-worker and `pszero-bench train`: one definition, one set of names.
//
// --model mlp|gpt-tiny|gpt-small|custom; the shape flags (--layers --d-model --heads --seq
// --batch --ffn-mult --vocab) are read with --model custom only (unset ones take
// gpt-tiny's values) and refused with a preset. Not thread-safe (flag parsing).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model/config.h"

namespace pszero::train {

struct TrainFlags {
  std::string model;  // empty: no training (the control-plane rounds only)
  int tp = 1;
  int64_t steps = 10;
  uint64_t seed = 0;
  int64_t layers = 0;  // 0: unset (custom shape flags)
  int64_t d_model = 0;
  int64_t heads = 0;
  int64_t seq = 0;
  int64_t batch = 0;
  int64_t ffn_mult = 0;
  int64_t vocab = 0;
  std::string data;
  std::string precision = "fp32";
  std::string device = "cpu";
  // Activation recompute (model::Recompute): none, selective (the attention probabilities)
  // or full (every block from its input); the same results, less activation memory.
  std::string recompute = "none";
  // --recompute full only: recompute the first N blocks, keep the others' activations
  // (Megatron's --recompute-num-layers, --recompute-method block). -1: unset, all blocks.
  int64_t recompute_layers = -1;
  int threads = 1;  // kernel threads per worker
  // How the D replicas stay in step (sync_strategy.h): allreduce, zero1, zero2, zero3, ps.
  std::string sync = "allreduce";
  double bucket_mb = 25.0;              // gradient bucket of allreduce / zero1 / zero2
  int grad_accum = 1;                   // micro-batches (of --batch) per optimizer step
  bool deterministic = false;           // ascending-rank fp32 sums: bit-identical across modes
  std::string report;                   // run.json path (docs/report.md); written by worker 0
  std::string checkpoint_dir;           // checkpoints (docs/checkpoints.md)
  int64_t checkpoint_every = 0;         // steps between checkpoints (0: only at the end)
  std::string resume;                   // a checkpoint (or checkpoint directory) to start from
  double collective_timeout_s = 120.0;  // deadline of one collective op
  std::string trace;  // Chrome trace-event JSON of every worker, merged by worker 0
};

void AddTrainFlags(CLI::App& app, TrainFlags& flags);

// The model the flags describe; InvalidArgument whose message starts with the flag.
Result<model::ModelConfig> ResolveModel(const TrainFlags& flags);

// Everything that can be checked before any process starts, for `workers` workers (0: not
// known yet):
// --device cuda only in a CUDA build (whether this machine has a GPU is the worker's to find
// out), the model shape against --tp, --workers a multiple of --tp, a readable non-empty
// --data file, the checkpoint flags. InvalidArgument naming the flag.
Status CheckTrainFlags(const TrainFlags& flags, int workers);
// What depends on the machine the workers run on, checked where they run (the launcher
// only when it starts workers itself, and every worker): a model that fits this machine's
// memory (the floor per mode, CheckTrainFlags's `workers`), a --trace path that can be
// written here. InvalidArgument naming the flag.
Status CheckLocalTrainFlags(const TrainFlags& flags, int workers);

// Whether --report can be written (common/file_util.h CheckOutputFilePath), checked only
// where worker 0 runs (node 0's launcher; worker 0 after the join): other machines need
// not have its directory. InvalidArgument naming --report.
Status CheckReportFlag(const TrainFlags& flags);

// The flags as arguments for a pszero-worker command line (only what is set).
std::vector<std::string> TrainArgs(const TrainFlags& flags);

}  // namespace pszero::train
