// Timeline tracing in Chrome's trace-event format (what Perfetto and chrome://tracing
// open): complete events ("ph": "X") named after what ran — a layer's forward or
// backward, a collective, the optimizer, a wait — with microsecond timestamps on the
// machine's wall clock, so the traces of several processes line up when merged.
//
// Off unless Tracer::Enable was called; a TraceScope then costs one relaxed atomic load.
// Thread-safe: each thread records under its own track (named by NameThread).
// At most kMaxEvents are kept per process; later ones are counted as dropped.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace pszero {

class Tracer {
 public:
  static constexpr size_t kMaxEvents = 1 << 20;

  // Turns tracing on for this process: `pid` is its track group (the worker's rank),
  // `process_name` its label ("worker 3").
  static void Enable(int pid, std::string process_name);
  // The tracer, or null when tracing is off.
  static Tracer* Get() { return enabled_.load(std::memory_order_relaxed) ? instance_ : nullptr; }
  static int64_t NowUs();

  // Names the calling thread's track ("main", "sync stream").
  void NameThread(std::string name);
  void Complete(std::string_view name, std::string_view category, int64_t start_us,
                int64_t duration_us);
  // This process's events, with process and thread name metadata.
  nlohmann::json Events() const;
  int64_t dropped() const;

 private:
  Tracer(int pid, std::string process_name) : pid_(pid), process_name_(std::move(process_name)) {}
  int TidLocked();

  static std::atomic<bool> enabled_;
  static Tracer* instance_;

  const int pid_;
  const std::string process_name_;
  mutable std::mutex mu_;
  std::unordered_map<std::thread::id, int> tids_;
  std::unordered_map<int, std::string> thread_names_;
  struct Event {
    std::string name;
    std::string category;
    int64_t start_us;
    int64_t duration_us;
    int tid;
  };
  std::vector<Event> events_;
  int64_t dropped_ = 0;
};

// Records [construction, destruction) as one complete event when tracing is on.
class TraceScope {
 public:
  TraceScope(std::string_view name, std::string_view category)
      : tracer_(Tracer::Get()), start_(tracer_ != nullptr ? Tracer::NowUs() : 0) {
    if (tracer_ != nullptr) {
      name_ = name;
      category_ = category;
    }
  }
  ~TraceScope() {
    if (tracer_ != nullptr) tracer_->Complete(name_, category_, start_, Tracer::NowUs() - start_);
  }
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  Tracer* tracer_;
  int64_t start_;
  std::string name_;
  std::string category_;
};

// Merges per-process event arrays into one trace document {"traceEvents": [...]}.
nlohmann::json MergeTraces(const std::vector<nlohmann::json>& parts);

}  // namespace pszero
