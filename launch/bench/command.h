// One pszero-bench subcommand: its CLI11 sub-app (flags bound to the command's own
// options) and the function that runs it once flags are parsed. Each subcommand lives
// in its own file and is added to the root app by bench_main.cc.
#pragma once

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

namespace pszero::bench {

// A number CLI::Range alone lets through: NaN compares false with both bounds. Add beside
// the range check of every floating-point flag.
inline CLI::Validator FiniteNumber() {
  return CLI::Validator(
      [](std::string& text) {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        return std::isfinite(v) ? std::string() : "not a finite number: " + text;
      },
      "FINITE");
}

struct BenchCommand {
  CLI::App* app = nullptr;
  std::function<int()> run;  // returns the process exit code
};

BenchCommand AddStreamCommand(CLI::App& root);
BenchCommand AddRendezvousCommand(CLI::App& root);
BenchCommand AddP2pCommand(CLI::App& root);
BenchCommand AddCollectiveCommand(CLI::App& root);
BenchCommand AddKernelsCommand(CLI::App& root);
BenchCommand AddTrainCommand(CLI::App& root);
BenchCommand AddPsCommand(CLI::App& root);
BenchCommand AddReportTableCommand(CLI::App& root);
BenchCommand AddSimulateCommand(CLI::App& root);
BenchCommand AddCheckpointCommand(CLI::App& root);
BenchCommand AddSoakCommand(CLI::App& root);
BenchCommand AddSweepCommand(CLI::App& root);

}  // namespace pszero::bench
