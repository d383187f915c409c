// pszero-bench: measures what pszero is made of. Subcommands: stream, kernels, rendezvous,
// p2p, collective, ps, train, report-table, simulate, checkpoint, soak, sweep.
#include <iostream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "common/logging.h"
#include "launch/bench/command.h"

namespace {

int Main(int argc, char** argv) {
  pszero::InitLogging(argv[0], "bench");
  auto app = pszero::MakeApp("pszero-bench", "pszero-bench: benchmarks for pszero");
  app->require_subcommand(1, 1);
  std::vector<pszero::bench::BenchCommand> commands = {
      pszero::bench::AddStreamCommand(*app),   pszero::bench::AddRendezvousCommand(*app),
      pszero::bench::AddP2pCommand(*app),      pszero::bench::AddCollectiveCommand(*app),
      pszero::bench::AddKernelsCommand(*app),  pszero::bench::AddTrainCommand(*app),
      pszero::bench::AddPsCommand(*app),       pszero::bench::AddReportTableCommand(*app),
      pszero::bench::AddSimulateCommand(*app), pszero::bench::AddCheckpointCommand(*app),
      pszero::bench::AddSoakCommand(*app),     pszero::bench::AddSweepCommand(*app),
  };
  // A flag before the subcommand is not one of the root's (--help, --version): name it,
  // rather than CLI11's "A subcommand is required".
  if (argc > 1 && argv[1][0] == '-') {
    const std::string first = argv[1];
    if (first != "-h" && first != "--help" && first != "--version") {
      std::cerr << "pszero-bench: error: " << first
                << ": not a flag of pszero-bench itself (flags go after the subcommand)\n";
      return pszero::kExitUsage;
    }
  }
  if (auto code = pszero::ParseFlags(*app, argc, argv)) return *code;
  for (const auto& command : commands) {
    if (command.app->parsed()) return command.run();
  }
  return pszero::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  return pszero::GuardedMain("pszero-bench", [&] { return Main(argc, argv); });
}
