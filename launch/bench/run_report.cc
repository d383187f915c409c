#include "launch/bench/run_report.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/file_util.h"

namespace pszero::bench {

namespace {

using nlohmann::json;

// The value at a dotted path ("summary.final_loss") of the expected JSON kind.
enum class Kind { kNumber, kInteger, kString, kArray, kObject };

Result<const json*> Field(const json& doc, const std::string& path, Kind kind) {
  const json* at = &doc;
  size_t start = 0;
  while (start <= path.size()) {
    const size_t dot = std::min(path.find('.', start), path.size());
    const std::string key = path.substr(start, dot - start);
    if (!at->is_object() || !at->contains(key)) {
      return Status::InvalidArgument(path + ": missing");
    }
    at = &(*at)[key];
    start = dot + 1;
  }
  bool ok = false;
  switch (kind) {
    case Kind::kNumber:
      ok = at->is_number();
      break;
    case Kind::kInteger:
      ok = at->is_number_integer();
      break;
    case Kind::kString:
      ok = at->is_string();
      break;
    case Kind::kArray:
      ok = at->is_array();
      break;
    case Kind::kObject:
      ok = at->is_object();
      break;
  }
  if (!ok) return Status::InvalidArgument(path + ": wrong type (" + at->type_name() + ")");
  return at;
}

Result<double> Number(const json& doc, const std::string& path) {
  PSZERO_ASSIGN_OR_RETURN(const json* v, Field(doc, path, Kind::kNumber));
  return v->get<double>();
}

Result<int64_t> Integer(const json& doc, const std::string& path) {
  PSZERO_ASSIGN_OR_RETURN(const json* v, Field(doc, path, Kind::kInteger));
  return v->get<int64_t>();
}

Result<std::string> String(const json& doc, const std::string& path) {
  PSZERO_ASSIGN_OR_RETURN(const json* v, Field(doc, path, Kind::kString));
  return v->get<std::string>();
}

double Ratio(int64_t num, int64_t den) {
  return den == 0 ? 0.0 : static_cast<double>(num) / static_cast<double>(den);
}

std::string RatioText(int64_t num, int64_t den) {
  if (den == 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3f", Ratio(num, den));
  return buf;
}

constexpr double kMiB = 1024.0 * 1024.0;

}  // namespace

Result<RunSummary> SummarizeRunReport(const json& report) {
  PSZERO_ASSIGN_OR_RETURN(std::string schema, String(report, "schema"));
  if (schema != "pszero.run/1") {
    return Status::InvalidArgument("schema: '" + schema + "', expected 'pszero.run/1'");
  }
  RunSummary r;
  PSZERO_ASSIGN_OR_RETURN(r.sync, String(report, "flags.sync"));
  PSZERO_ASSIGN_OR_RETURN(r.model, String(report, "flags.model"));
  PSZERO_ASSIGN_OR_RETURN(int64_t workers, Integer(report, "flags.workers"));
  r.workers = static_cast<int>(workers);
  // servers and tp default to 0 and 1 when a report leaves them out.
  if (report["flags"].contains("servers")) {
    PSZERO_ASSIGN_OR_RETURN(int64_t servers, Integer(report, "flags.servers"));
    r.servers = static_cast<int>(servers);
  }
  if (report["flags"].contains("tp")) {
    PSZERO_ASSIGN_OR_RETURN(int64_t tp, Integer(report, "flags.tp"));
    r.tp = static_cast<int>(tp);
  }
  PSZERO_ASSIGN_OR_RETURN(r.steps, Integer(report, "flags.steps"));
  PSZERO_ASSIGN_OR_RETURN(r.median_step_s, Number(report, "summary.median_step_s"));
  PSZERO_ASSIGN_OR_RETURN(r.tokens_per_s, Number(report, "summary.tokens_per_s"));
  PSZERO_ASSIGN_OR_RETURN(r.final_loss, Number(report, "summary.final_loss"));
  PSZERO_ASSIGN_OR_RETURN(r.sha256, String(report, "final_params_sha256"));
  PSZERO_ASSIGN_OR_RETURN(const json* ranks, Field(report, "ranks", Kind::kArray));
  if (ranks->empty()) return Status::InvalidArgument("ranks: empty");
  bool first = true;
  for (size_t i = 0; i < ranks->size(); ++i) {
    const json& rank = (*ranks)[i];
    const std::string at = "ranks[" + std::to_string(i) + "].";
    auto named = [&](Status s) { return Status::InvalidArgument(at + s.message()); };
    Result<int64_t> measured = Integer(rank, "memory.model_state.measured_peak");
    Result<int64_t> predicted = Integer(rank, "memory.model_state.predicted");
    Result<std::string> formula = String(rank, "memory.model_state.formula");
    Result<int64_t> sent = Integer(rank, "bytes_per_step.sent");
    Result<int64_t> theory = Integer(rank, "bytes_per_step.theory");
    for (const Status& s : {measured.status(), predicted.status(), formula.status(), sent.status(),
                            theory.status()}) {
      if (!s.ok()) return named(s);
    }
    if (first || *measured > r.state_measured_bytes) {
      r.state_measured_bytes = *measured;
      r.state_predicted_bytes = *predicted;
      r.state_formula = *formula;
    }
    if (first || *sent > r.sent_bytes_per_step) {
      r.sent_bytes_per_step = *sent;
      r.theory_bytes_per_step = *theory;
    }
    first = false;
  }
  return r;
}

Result<RunSummary> ReadRunReport(const std::filesystem::path& path) {
  // A regular file only: a FIFO would block the table forever, a device never end.
  PSZERO_ASSIGN_OR_RETURN(std::string text, ReadInputFile(path));
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Status::InvalidArgument(path.string() + ": not JSON");
  Result<RunSummary> run = SummarizeRunReport(doc);
  if (!run.ok()) return Status::InvalidArgument(path.string() + ": " + run.status().message());
  run->source = path.string();
  return run;
}

std::string ModeLabel(const RunSummary& run) {
  if (run.sync == "ps") return "ps/" + std::to_string(run.servers);
  return run.sync;
}

json ToJson(const RunSummary& run) {
  auto ratio = [](int64_t num, int64_t den) -> json {
    if (den == 0) return nullptr;
    return Ratio(num, den);
  };
  return {
      {"source", run.source},
      {"sync", run.sync},
      {"model", run.model},
      {"workers", run.workers},
      {"servers", run.servers},
      {"tp", run.tp},
      {"steps", run.steps},
      {"median_step_s", run.median_step_s},
      {"tokens_per_s", run.tokens_per_s},
      {"final_loss", run.final_loss},
      {"model_state_bytes",
       {{"measured_peak", run.state_measured_bytes},
        {"predicted", run.state_predicted_bytes},
        {"formula", run.state_formula},
        {"ratio", ratio(run.state_measured_bytes, run.state_predicted_bytes)}}},
      {"bytes_per_step",
       {{"sent", run.sent_bytes_per_step},
        {"theory", run.theory_bytes_per_step},
        {"ratio", ratio(run.sent_bytes_per_step, run.theory_bytes_per_step)}}},
      {"final_params_sha256", run.sha256},
  };
}

std::string RunTableHeader() {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "# per rank (the largest): model state = params + grads + optimizer, peak; "
                "sent = the sync mode's bytes in one step\n"
                "# %-9s %-9s %7s %3s %9s %10s %10s %10s %6s %10s %10s %6s %10s  %s\n",
                "mode", "model", "workers", "tp", "step ms", "tokens/s", "state MiB", "predicted",
                "ratio", "sent MiB", "theory", "ratio", "final loss", "sha256");
  return buf;
}

std::string RunTableRow(const RunSummary& run) {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "  %-9s %-9s %7d %3d %9.1f %10.1f %10.2f %10.2f %6s %10.2f %10.2f %6s %10.4f  %s\n",
                ModeLabel(run).c_str(), run.model.c_str(), run.workers, run.tp,
                run.median_step_s * 1e3, run.tokens_per_s,
                static_cast<double>(run.state_measured_bytes) / kMiB,
                static_cast<double>(run.state_predicted_bytes) / kMiB,
                RatioText(run.state_measured_bytes, run.state_predicted_bytes).c_str(),
                static_cast<double>(run.sent_bytes_per_step) / kMiB,
                static_cast<double>(run.theory_bytes_per_step) / kMiB,
                RatioText(run.sent_bytes_per_step, run.theory_bytes_per_step).c_str(),
                run.final_loss, run.sha256.substr(0, 12).c_str());
  return buf;
}

}  // namespace pszero::bench
