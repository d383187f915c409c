#include "worker/collectives/flight_recorder.h"

#include <algorithm>
#include <sstream>
#include <utility>

#include "common/trace.h"

namespace pszero::collectives {

namespace {

thread_local std::string t_label;

// The trace's clock (wall clock, µs), so recorder and timeline line up.
int64_t NowUs() { return Tracer::NowUs(); }

}  // namespace

std::string OpRecord::Describe() const {
  std::string s = op + " #" + std::to_string(seq) + " on comm " + std::to_string(comm);
  if (!label.empty()) s += " (" + label + ")";
  return s;
}

FlightRecorder& FlightRecorder::Get() {
  static FlightRecorder* recorder = new FlightRecorder();  // lives on: used from any thread
  return *recorder;
}

void FlightRecorder::SetThreadLabel(std::string label) { t_label = std::move(label); }

uint64_t FlightRecorder::Begin(uint32_t comm, uint32_t seq, int comm_rank, int comm_size,
                               const char* op) {
  OpRecord r;
  r.comm = comm;
  r.seq = seq;
  r.comm_rank = comm_rank;
  r.comm_size = comm_size;
  r.op = op;
  r.label = t_label;
  r.start_us = NowUs();
  std::lock_guard lock(mu_);
  r.id = next_id_++;
  ops_.push_back(std::move(r));
  if (ops_.size() > kCapacity) ops_.pop_front();
  return ops_.back().id;
}

void FlightRecorder::End(uint64_t id, int64_t bytes, bool ok) {
  std::lock_guard lock(mu_);
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    if (it->id == id) {
      it->end_us = NowUs();
      it->bytes = bytes;
      it->ok = ok;
      return;
    }
  }
}

std::vector<OpRecord> FlightRecorder::Snapshot() const {
  std::lock_guard lock(mu_);
  return {ops_.begin(), ops_.end()};
}

OpRecord FlightRecorder::Latest() const {
  std::lock_guard lock(mu_);
  return ops_.empty() ? OpRecord() : ops_.back();
}

std::string FlightRecorder::Dump() const {
  std::ostringstream out;
  for (const OpRecord& r : Snapshot()) {
    out << "  " << r.Describe() << " rank " << r.comm_rank << "/" << r.comm_size << ", ";
    if (r.end_us == 0) {
      out << "RUNNING for " << (NowUs() - r.start_us) / 1000 << " ms";
    } else {
      out << (r.ok ? "ok" : "FAILED") << " in " << (r.end_us - r.start_us) / 1000 << " ms, "
          << r.bytes << " B sent";
    }
    out << "\n";
  }
  return out.str();
}

nlohmann::json ToJson(const OpRecord& r) {
  return {{"id", r.id},
          {"comm", r.comm},
          {"seq", r.seq},
          {"comm_rank", r.comm_rank},
          {"comm_size", r.comm_size},
          {"op", r.op},
          {"label", r.label},
          {"start_us", r.start_us},
          {"end_us", r.end_us}};
}

OpRecord OpRecordFromJson(const nlohmann::json& j) {
  OpRecord r;
  r.id = j.value("id", uint64_t{0});
  r.comm = j.value("comm", 0u);
  r.seq = j.value("seq", 0u);
  r.comm_rank = j.value("comm_rank", 0);
  r.comm_size = j.value("comm_size", 0);
  r.op = j.value("op", "");
  r.label = j.value("label", "");
  r.start_us = j.value("start_us", int64_t{0});
  r.end_us = j.value("end_us", int64_t{0});
  return r;
}

namespace {

// An op that ended is behind its rank (a report of an op that failed clears end_us: that
// is where the rank waited).
bool Finished(const OpRecord& r) { return r.end_us != 0; }

// Where one report says its rank is: "waits in allreduce #3 on comm 1 (bucket 0)".
std::string Whereabouts(const OpRecord& r, bool plural) {
  if (r.id == 0) return "sent no report";
  if (Finished(r)) return std::string(plural ? "are" : "is") + " past " + r.Describe();
  return std::string(plural ? "wait" : "waits") + " in " + r.Describe();
}

// "0", "0-3", "0,2,5-7"
std::string RankList(const std::vector<int>& ranks) {
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    if (!out.empty()) out += ",";
    out += std::to_string(ranks[i]);
    if (j > i) {
      out += j == i + 1 ? ',' : '-';
      out += std::to_string(ranks[j]);
    }
    i = j + 1;
  }
  return out;
}

}  // namespace

std::string DiagnoseHang(const std::vector<OpRecord>& latest) {
  bool same = !latest.empty();
  for (const OpRecord& r : latest) {
    const OpRecord& a = latest[0];
    if (r.id == 0 || a.id == 0 || r.comm != a.comm || r.seq != a.seq || r.op != a.op) {
      same = false;
    }
  }
  if (same) return "";
  // Ranks whose reports read the same, in order of their lowest rank.
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (size_t r = 0; r < latest.size(); ++r) {
    const std::string where =
        latest[r].id == 0 ? "" : latest[r].Describe() + (Finished(latest[r]) ? "|past" : "");
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const auto& entry) { return entry.first == where; });
    if (g == groups.end()) {
      groups.push_back({where, {static_cast<int>(r)}});
    } else {
      g->second.push_back(static_cast<int>(r));
    }
  }
  std::string out;
  for (const auto& [where, ranks] : groups) {
    if (!out.empty()) out += "; ";
    const bool plural = ranks.size() > 1;
    out += plural ? "ranks " : "rank ";
    out += RankList(ranks);
    out += ' ';
    out += Whereabouts(latest[static_cast<size_t>(ranks[0])], plural);
  }
  return out;
}

std::string DescribeAgreement(const std::vector<OpRecord>& latest) {
  if (latest.empty()) return "no worker reported";
  return "every worker " + Whereabouts(latest[0], false);
}

}  // namespace pszero::collectives
