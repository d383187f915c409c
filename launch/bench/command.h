// One pszero-bench subcommand: its CLI11 sub-app (flags bound to the command's own
// options) and the function that runs it once flags are parsed. Each subcommand lives
// in its own file and is added to the root app by bench_main.cc.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace pszero::bench {

struct BenchCommand {
  CLI::App* app = nullptr;
  std::function<int()> run;  // returns the process exit code
  // The checks `run` makes of its parsed flags before it starts anything (null: none
  // beyond the parser's): what `sweep --dry-run` runs for each item. InvalidArgument with
  // the one line `run` would print after "error: ".
  std::function<Status()> check = nullptr;
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
