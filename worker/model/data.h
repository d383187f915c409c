// DataSource: the batches one data-parallel rank trains on.
//
// GPT: a byte corpus, either the bytes of --data FILE or, without one, 64 KiB of seeded
// random bytes. The corpus is cut into D contiguous, disjoint parts; DP rank r reads only
// part r. Row b of step s starts at an offset drawn from (seed, s, r, b) and reads seq + 1
// bytes cyclically within the part (so short files repeat), tokens = bytes % vocab; the
// targets are the inputs shifted by one. MLP: inputs [batch, d] ~ N(0, 1) drawn from
// (seed, s, r). The order is a function of the seed only; the global batch is the
// per-replica batch times D (times K with gradient accumulation).
//
// Gradient accumulation (--grad-accum K): micro-batch m of step s is rows m·batch ..
// (m+1)·batch−1 of that step's stream (GPT: row index m·batch + b; MLP: element index
// offset by m·batch·d, and Batch::first_row = m·batch picks the target rows), so K
// micro-batches of `batch` see exactly the samples of one batch of K·batch, and
// micro-batch 0 is the batch of K = 1. Not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model/config.h"
#include "worker/model/model.h"

namespace pszero::model {

struct DataOptions {
  uint64_t seed = 0;
  std::string path;  // empty: synthetic
  int dp_rank = 0;
  int dp_size = 1;
};

class DataSource {
 public:
  // InvalidArgument("--data FILE: why") for a missing, unreadable or empty file, or one
  // with fewer bytes than data-parallel ranks.
  static Result<std::unique_ptr<DataSource>> Create(const ModelConfig& config,
                                                    const DataOptions& options);

  // The batch of step `step` (0-based) for this rank: micro-batch `micro` (0-based) of
  // that step when it accumulates gradients over several.
  Status Next(int64_t step, Batch* batch) const { return Next(step, 0, batch); }
  Status Next(int64_t step, int64_t micro, Batch* batch) const;
  int64_t part_bytes() const { return part_end_ - part_begin_; }

 private:
  DataSource(const ModelConfig& config, const DataOptions& options)
      : config_(config), options_(options) {}

  ModelConfig config_;
  DataOptions options_;
  std::vector<uint8_t> corpus_;
  int64_t part_begin_ = 0;
  int64_t part_end_ = 0;
};

// Reads a whole file; InvalidArgument naming --data when it is missing, unreadable or empty.
Result<std::vector<uint8_t>> ReadDataFile(const std::string& path);

}  // namespace pszero::model
