// pszero-bench: measures what pszero is made of. Subcommands: stream, kernels, rendezvous,
// p2p, collective, ps, train, report-table, simulate, checkpoint, soak, sweep.
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
