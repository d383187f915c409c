// The launcher's progress display of a training job: worker 0 prints one plain line per
// step on stdout ("step k/K loss L time_ms T tokens_per_s S", worker/train/train_worker.cc);
// ProgressDisplay turns those lines into what the launcher writes to its own stdout.
//
// On a terminal the step lines become one updating line,
//   "\r\033[Kstep 3/10  loss 5.1235  step 412.3 ms  9942 tok/s  ETA 00:03"
// which is finished with a newline at the last step or before any other output line, so
// that other lines never overwrite it or get glued to it. Elsewhere (a pipe, a file) each
// step line is printed as before, with the child's tag and " eta_s E" appended.
//
// ETA = (K − k) × the mean of the step times reported so far (the workers' own time_ms,
// so the display is a pure function of the lines it was given). Plain value; not
// thread-safe (the launcher uses it from its one io_context thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pszero {

struct StepLine {
  int64_t step = 0;   // k, 1-based
  int64_t steps = 0;  // K
  double loss = 0;
  double time_ms = 0;
  double tokens_per_s = 0;
};

// The fields of one step line, or nullopt when `line` is anything else (extra or missing
// fields, k outside [1, K]).
std::optional<StepLine> ParseStepLine(std::string_view line);

// "mm:ss" (seconds rounded to the nearest), "h:mm:ss" from one hour on; "--:--" for a
// negative or non-finite value.
std::string FormatEta(double seconds);

class ProgressDisplay {
 public:
  // `tag`: the child whose step lines these are ("w0"); `terminal`: whether the launcher's
  // stdout is a terminal (isatty).
  ProgressDisplay(std::string tag, bool terminal) : tag_(std::move(tag)), terminal_(terminal) {}

  // A line the tagged child wrote to stdout (without its newline). Returns what to write to
  // stdout for it, or nullopt when it is not a step line (print it as other output, after
  // BeforeOtherOutput()).
  std::optional<std::string> OnLine(std::string_view line);

  // What to write to stdout before any other line (of any child or of the launcher, on
  // stdout or on a terminal's stderr): "\n" while the terminal's progress line is open,
  // else "". Closes the line; the next step line starts a new one.
  std::string BeforeOtherOutput();

  bool terminal() const { return terminal_; }
  bool line_open() const { return open_; }

 private:
  std::string tag_;
  bool terminal_;
  bool open_ = false;  // a progress line without its newline is on the terminal
  double sum_ms_ = 0;  // of the step lines seen so far
  int64_t count_ = 0;
};

}  // namespace pszero
