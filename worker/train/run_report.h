// The run report (docs/report.md, schema pszero.run/1): each rank describes itself
// (RankReport), worker 0 assembles the document and writes it atomically.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/memory.h"
#include "worker/model/config.h"
#include "worker/train/sync_strategy.h"
#include "worker/train/train_flags.h"

namespace pszero::train {

struct StepRecord {
  int64_t step = 0;  // 1-based
  double loss = 0.0;
  double seconds = 0.0;
};

struct RankFacts {
  int rank = 0;
  int tp_rank = 0;
  int dp_rank = 0;
  int dp_size = 1;
  int64_t psi = 0;  // parameters of this TP rank (without padding)
  SyncTraffic last_step;
  SyncTraffic total;
  int64_t rss_after_first_step = 0;  // resident set size, bytes
  int64_t rss_end = 0;
  nlohmann::json checkpoint;  // CheckpointStats, or null
};

// One entry of "ranks": traffic beside theory, memory per category, model state measured
// beside the ZeRO formula for the mode and precision in use.
nlohmann::json RankReport(const TrainFlags& flags, const RankFacts& facts,
                          const MemoryTracker& tracker);

// The whole document. `ranks` in rank order.
nlohmann::json RunReport(const TrainFlags& flags, const model::ModelConfig& config, int workers,
                         int servers, int64_t params_per_tp_rank,
                         const std::vector<StepRecord>& steps, const std::string& sha256,
                         std::vector<nlohmann::json> ranks,
                         nlohmann::json server_stats = nlohmann::json());

// "step k/K loss L time_ms T tokens_per_s S", what worker 0 prints per step (the
// launcher's progress line parses it).
std::string StepLine(const StepRecord& step, int64_t steps, double tokens_per_s);

}  // namespace pszero::train
