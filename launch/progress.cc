#include "launch/progress.h"

#include <cmath>
#include <cstdio>
#include <string>

namespace pszero {

std::optional<StepLine> ParseStepLine(std::string_view line) {
  // sscanf needs a terminated string; step lines are short.
  if (line.size() > 256 || line.substr(0, 5) != "step ") return std::nullopt;
  const std::string text(line);
  StepLine s;
  long long step = 0, steps = 0;
  int consumed = -1;
  const int n = std::sscanf(text.c_str(), "step %lld/%lld loss %lf time_ms %lf tokens_per_s %lf%n",
                            &step, &steps, &s.loss, &s.time_ms, &s.tokens_per_s, &consumed);
  if (n != 5 || consumed != static_cast<int>(text.size())) return std::nullopt;
  if (steps < 1 || step < 1 || step > steps) return std::nullopt;
  s.step = step;
  s.steps = steps;
  return s;
}

std::string FormatEta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long long total = std::llround(seconds);
  const long long h = total / 3600, m = (total % 3600) / 60, s = total % 60;
  char buf[48];
  if (h > 0) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", h, m, s);
  } else {
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", m, s);
  }
  return buf;
}

std::optional<std::string> ProgressDisplay::OnLine(std::string_view line) {
  const std::optional<StepLine> step = ParseStepLine(line);
  if (!step) return std::nullopt;
  sum_ms_ += step->time_ms;
  ++count_;
  const double eta_s =
      static_cast<double>(step->steps - step->step) * (sum_ms_ / static_cast<double>(count_)) / 1e3;
  char buf[256];
  if (!terminal_) {
    std::snprintf(buf, sizeof(buf), " eta_s %.1f\n", eta_s);
    return "[" + tag_ + "] " + std::string(line) + buf;
  }
  std::snprintf(buf, sizeof(buf),
                "\r\033[Kstep %lld/%lld  loss %.4f  step %.1f ms  %.0f tok/s  ETA %s",
                static_cast<long long>(step->step), static_cast<long long>(step->steps), step->loss,
                step->time_ms, step->tokens_per_s, FormatEta(eta_s).c_str());
  std::string out = buf;
  open_ = step->step < step->steps;
  if (!open_) out.push_back('\n');
  return out;
}

std::string ProgressDisplay::BeforeOtherOutput() {
  if (!open_) return "";
  open_ = false;
  return "\n";
}

}  // namespace pszero
