// Checkpoints (docs/checkpoints.md): a directory per saved step, written by all workers
// together, readable in any sync mode, data-parallel degree and TP degree.
//
//   <dir>/step-00000012/model.safetensors        full (T = 1) parameters, one tensor per
//                                                 parameter name, any safetensors reader
//   <dir>/step-00000012/optimizer-00003-of-00004.safetensors
//                       AdamW exp_avg / exp_avg_sq over a key range [range_begin, range_end)
//                       of the canonical flat order (metadata), one file per worker
//   <dir>/step-00000012/manifest.json            step, data position, seed, mode, world,
//                                                 TP, model, sha256 of every file
//   <dir>/latest                                  "step-00000012"
//
// Atomic: every file goes to <dir>/.tmp-step-…/ first; worker 0 writes the manifest last,
// renames the directory into place and only then rewrites `latest` (itself atomically),
// so a kill at any moment leaves the previous checkpoint loadable. Loading verifies every
// file's sha256 and shape and names the file that is wrong.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "common/status.h"
#include "worker/collectives/communicator.h"
#include "worker/model/config.h"
#include "worker/model/param_buffer.h"
#include "worker/model/tensor_parallel.h"
#include "worker/train/sync_strategy.h"
#include "worker/train/train_flags.h"

namespace pszero::train {

struct CheckpointContext {
  const TrainFlags* flags = nullptr;
  const model::ModelConfig* config = nullptr;
  model::ParamBuffer* params = nullptr;
  SyncStrategy* sync = nullptr;
  model::TensorParallel* tp = nullptr;
  // Every worker of the job (barriers), driven by the calling thread.
  collectives::Communicator* world = nullptr;
  int keep = 2;  // checkpoints kept in the directory (older ones are removed)
};

// What one worker's checkpoint writes and loads cost (for the run report and
// `pszero-bench checkpoint`).
struct CheckpointStats {
  int64_t writes = 0;
  int64_t bytes_written = 0;  // by this worker (its files)
  double write_seconds = 0;   // all writes, gathering and barriers included
  int64_t bytes_read = 0;     // by this worker when loading
  double load_seconds = 0;
};

// Collective over all workers: saves the state after `steps_done` steps into `dir`.
// `stats` (may be null) accumulates this worker's share.
Status WriteCheckpoint(const CheckpointContext& c, const std::filesystem::path& dir,
                       int64_t steps_done, CheckpointStats* stats = nullptr);

// Collective: restores parameters and optimizer state from `path` (a step directory, or a
// checkpoint directory holding `latest`); returns the number of steps already done.
Result<int64_t> LoadCheckpoint(const CheckpointContext& c, const std::filesystem::path& path,
                               CheckpointStats* stats = nullptr);

// The step directory `path` designates (following `latest`); NotFound naming it.
Result<std::filesystem::path> ResolveCheckpoint(const std::filesystem::path& path);

// Resolves `path` and checks the manifest (every field's type and range, file names inside
// the directory), every file's sha256, every safetensors header (not the data) and that
// the optimizer shards tile the parameters (what pszero-launch does before starting
// anything): Corruption / NotFound naming the file that is wrong.
Result<std::filesystem::path> VerifyCheckpoint(const std::filesystem::path& path);
// InvalidArgument naming --grad-accum when the checkpoint in `dir` (a resolved step
// directory) was trained with another number of micro-batches per step, and naming
// --resume when it holds another model than `config` (when given).
Status CheckResumeFlags(const std::filesystem::path& dir, int grad_accum,
                        const model::ModelConfig* config = nullptr);

}  // namespace pszero::train
