#include "launch/hang_report.h"

#include <nlohmann/json.hpp>

namespace pszero {

namespace {

// The rank after `prefix` in `key`, or -1.
int RankAfter(const std::string& key, const char* prefix) {
  const std::string p(prefix);
  if (key.compare(0, p.size(), p) != 0 || key.size() == p.size()) return -1;
  int rank = 0;
  for (size_t i = p.size(); i < key.size(); ++i) {
    if (key[i] < '0' || key[i] > '9' || rank > 1'000'000) return -1;
    rank = rank * 10 + (key[i] - '0');
  }
  return rank;
}

}  // namespace

void HangReport::Open() {
  open_ = true;
  reported_ = 0;
  latest_.assign(static_cast<size_t>(num_workers_), collectives::OpRecord());
  has_report_.assign(static_cast<size_t>(num_workers_), false);
}

void HangReport::BeginSignalRound() { Open(); }

bool HangReport::OnKeySet(const std::string& key, const std::string& value) {
  int rank = RankAfter(key, collectives::kHangTimeoutKeyPrefix);
  const bool timeout = rank >= 0;
  if (!timeout) rank = RankAfter(key, collectives::kHangSignalKeyPrefix);
  if (rank < 0 || rank >= num_workers_) return false;
  saw_timeout_ = saw_timeout_ || timeout;
  const bool began = !open_ && (timeout || open_on_signal_report_);
  if (began) Open();
  if (!open_) return false;  // a worker signalled by someone else: no round to add it to
  const nlohmann::json j = nlohmann::json::parse(value, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return began;
  try {
    latest_[static_cast<size_t>(rank)] = collectives::OpRecordFromJson(j);
  } catch (const nlohmann::json::exception&) {
    return began;  // a field of the wrong type: not a report (and no reason to die)
  }
  if (!has_report_[static_cast<size_t>(rank)]) {
    has_report_[static_cast<size_t>(rank)] = true;
    ++reported_;
  }
  return began;
}

std::string HangReport::TakeLine() {
  open_ = false;
  const std::string disagreement = collectives::DiagnoseHang(latest_);
  if (!disagreement.empty()) return "hang diagnosis: " + disagreement;
  return "hang diagnosis: no disagreement: " + collectives::DescribeAgreement(latest_);
}

}  // namespace pszero
