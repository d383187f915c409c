#include "worker/train/run_report.h"

#include <algorithm>
#include <cstdio>

#include "common/stats.h"
#include "worker/train/data_parallel.h"

namespace pszero::train {

nlohmann::json RankReport(const TrainFlags& flags, const RankFacts& f,
                          const MemoryTracker& tracker) {
  // Where the model lives (--device): its memory is what the ZeRO formulas predict.
  const Device device = flags.device == "cuda" ? Device::kCuda : Device::kHost;
  nlohmann::json categories = nlohmann::json::object();
  for (int c = 0; c < kNumMemoryCategories; ++c) {
    const auto category = static_cast<MemoryCategory>(c);
    const MemoryUsage u = tracker.Usage(category, device);
    categories[std::string(MemoryCategoryName(category))] = {{"live", u.live_bytes},
                                                             {"peak", u.peak_bytes}};
  }
  // On a GPU, what stays in host memory (ps's pinned mirrors, staged collectives).
  nlohmann::json host_categories;
  if (device != Device::kHost) {
    host_categories = nlohmann::json::object();
    for (int c = 0; c < kNumMemoryCategories; ++c) {
      const auto category = static_cast<MemoryCategory>(c);
      const MemoryUsage u = tracker.Usage(category, Device::kHost);
      host_categories[std::string(MemoryCategoryName(category))] = {{"live", u.live_bytes},
                                                                    {"peak", u.peak_bytes}};
    }
  }
  const bool bf16 = flags.precision == "bf16";
  const ModelStateBytes want = PredictModelState(flags.sync, f.psi, f.dp_size, bf16);
  const int64_t measured = tracker.Usage(MemoryCategory::kParams, device).peak_bytes +
                           tracker.Usage(MemoryCategory::kGrads, device).peak_bytes +
                           tracker.Usage(MemoryCategory::kOptimizer, device).peak_bytes;
  const double theory = TheoryElementsPerStep(flags.sync, f.psi, f.dp_size, flags.grad_accum) *
                        static_cast<double>(TrafficElementBytes(flags.sync, bf16));
  auto ratio = [](double a, double b) { return b > 0 ? nlohmann::json(a / b) : nlohmann::json(); };
  return {
      {"rank", f.rank},
      {"tp_rank", f.tp_rank},
      {"dp_rank", f.dp_rank},
      {"bytes_per_step",
       {{"sent", f.last_step.sent},
        {"received", f.last_step.received},
        {"theory", static_cast<int64_t>(theory)},
        {"ratio", ratio(static_cast<double>(f.last_step.sent), theory)}}},
      {"bytes_total", {{"sent", f.total.sent}, {"received", f.total.received}}},
      {"rss_bytes", {{"after_first_step", f.rss_after_first_step}, {"end", f.rss_end}}},
      {"checkpoint", f.checkpoint},
      {"memory",
       {{"device", flags.device},
        {"categories", categories},
        {"host_categories", host_categories},
        {"model_state",
         {{"measured_peak", measured},
          {"predicted", want.total()},
          {"formula", want.formula},
          {"ratio", ratio(static_cast<double>(measured), static_cast<double>(want.total()))},
          {"predicted_by_category",
           {{"params", want.params}, {"grads", want.grads}, {"optimizer", want.optimizer}}}}}}}};
}

nlohmann::json RunReport(const TrainFlags& flags, const model::ModelConfig& config, int workers,
                         int servers, int64_t params_per_tp_rank,
                         const std::vector<StepRecord>& steps, const std::string& sha256,
                         std::vector<nlohmann::json> ranks, nlohmann::json server_stats) {
  const int dp = workers / std::max(flags.tp, 1);
  // Every micro-batch of every replica (--grad-accum K).
  const int64_t tokens = config.tokens_per_step() * dp * flags.grad_accum;
  nlohmann::json step_list = nlohmann::json::array();
  std::vector<double> times;
  for (const StepRecord& s : steps) {
    step_list.push_back({{"step", s.step},
                         {"loss", s.loss},
                         {"time_s", s.seconds},
                         {"tokens_per_s", s.seconds > 0 ? tokens / s.seconds : 0.0}});
    times.push_back(s.seconds);
  }
  const double median = Summarize(times).median;
  int64_t peak_max = 0;
  for (const nlohmann::json& r : ranks) {
    peak_max = std::max(peak_max, r["memory"]["model_state"]["measured_peak"].get<int64_t>());
  }
  nlohmann::json doc = {{"schema", "pszero.run/1"},
                        {"flags",
                         {{"sync", flags.sync},
                          {"model", flags.model},
                          {"workers", workers},
                          {"servers", servers},
                          {"tp", flags.tp},
                          {"dp", dp},
                          {"steps", flags.steps},
                          {"seed", flags.seed},
                          {"precision", flags.precision},
                          {"device", flags.device},
                          {"recompute", flags.recompute},
                          {"recompute_layers", flags.recompute_layers},
                          {"deterministic", flags.deterministic},
                          {"bucket_mb", flags.bucket_mb},
                          {"grad_accum", flags.grad_accum},
                          {"threads", flags.threads}}},
                        {"model",
                         {{"name", config.name},
                          {"params", model::ParamCount(config)},
                          {"params_per_tp_rank", params_per_tp_rank},
                          {"tokens_per_step", tokens}}},
                        {"steps", step_list},
                        {"summary",
                         {{"median_step_s", median},
                          {"tokens_per_s", median > 0 ? tokens / median : 0.0},
                          {"final_loss", steps.empty() ? 0.0 : steps.back().loss},
                          {"peak_model_state_bytes_max", peak_max}}},
                        {"final_params_sha256", sha256},
                        {"ranks", std::move(ranks)}};
  if (!server_stats.is_null()) doc["servers"] = std::move(server_stats);
  return doc;
}

std::string StepLine(const StepRecord& s, int64_t steps, double tokens_per_s) {
  char line[160];
  std::snprintf(line, sizeof(line), "step %lld/%lld loss %.6f time_ms %.3f tokens_per_s %.1f",
                static_cast<long long>(s.step), static_cast<long long>(steps), s.loss,
                s.seconds * 1e3, tokens_per_s);
  return line;
}

}  // namespace pszero::train
