#include "common/trace.h"

#include <chrono>

namespace pszero {

std::atomic<bool> Tracer::enabled_{false};
Tracer* Tracer::instance_ = nullptr;

void Tracer::Enable(int pid, std::string process_name) {
  if (instance_ == nullptr) instance_ = new Tracer(pid, std::move(process_name));  // lives on
  enabled_.store(true, std::memory_order_release);
}

int64_t Tracer::NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int Tracer::TidLocked() {
  auto [it, inserted] =
      tids_.try_emplace(std::this_thread::get_id(), static_cast<int>(tids_.size()));
  return it->second;
}

void Tracer::NameThread(std::string name) {
  std::lock_guard lock(mu_);
  thread_names_[TidLocked()] = std::move(name);
}

void Tracer::Complete(std::string_view name, std::string_view category, int64_t start_us,
                      int64_t duration_us) {
  std::lock_guard lock(mu_);
  if (events_.size() >= kMaxEvents) {
    ++dropped_;
    return;
  }
  events_.push_back({std::string(name), std::string(category), start_us, duration_us, TidLocked()});
}

int64_t Tracer::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

nlohmann::json Tracer::Events() const {
  std::lock_guard lock(mu_);
  nlohmann::json out = nlohmann::json::array();
  out.push_back({{"ph", "M"},
                 {"name", "process_name"},
                 {"pid", pid_},
                 {"tid", 0},
                 {"args", {{"name", process_name_}}}});
  out.push_back({{"ph", "M"},
                 {"name", "process_sort_index"},
                 {"pid", pid_},
                 {"tid", 0},
                 {"args", {{"sort_index", pid_}}}});
  for (const auto& [tid, name] : thread_names_) {
    out.push_back({{"ph", "M"},
                   {"name", "thread_name"},
                   {"pid", pid_},
                   {"tid", tid},
                   {"args", {{"name", name}}}});
  }
  for (const Event& e : events_) {
    out.push_back({{"ph", "X"},
                   {"name", e.name},
                   {"cat", e.category},
                   {"ts", e.start_us},
                   {"dur", e.duration_us},
                   {"pid", pid_},
                   {"tid", e.tid}});
  }
  if (dropped_ > 0) {
    out.push_back({{"ph", "M"},
                   {"name", "dropped_events"},
                   {"pid", pid_},
                   {"tid", 0},
                   {"args", {{"count", dropped_}}}});
  }
  return out;
}

nlohmann::json MergeTraces(const std::vector<nlohmann::json>& parts) {
  nlohmann::json events = nlohmann::json::array();
  for (const nlohmann::json& p : parts) {
    for (const nlohmann::json& e : p) events.push_back(e);
  }
  return {{"traceEvents", std::move(events)}, {"displayTimeUnit", "ms"}};
}

}  // namespace pszero
