// `pszero-bench report-table RUN.json [RUN.json ...]`: one table row per run report
// (docs/report.md), the comparison run_report.h prints, for reports written by
// `pszero-launch --report` (scripts/demo.sh gathers one per model and mode).
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "launch/bench/command.h"
#include "launch/bench/run_report.h"

namespace pszero::bench {

namespace {

struct ReportTableFlags {
  std::vector<std::string> reports;
  bool json = false;
};

int RunReportTable(const ReportTableFlags& f) {
  std::vector<RunSummary> runs;
  for (const std::string& path : f.reports) {
    Result<RunSummary> run = ReadRunReport(path);
    if (!run.ok()) {
      std::cerr << "pszero-bench report-table: error: " << run.status().message() << "\n";
      return 2;
    }
    runs.push_back(std::move(run).value());
  }
  if (f.json) {
    nlohmann::json doc = {{"runs", nlohmann::json::array()}};
    for (const RunSummary& r : runs) doc["runs"].push_back(ToJson(r));
    std::cout << doc.dump(2) << "\n";
    return 0;
  }
  std::fputs(RunTableHeader().c_str(), stdout);
  for (const RunSummary& r : runs) std::fputs(RunTableRow(r).c_str(), stdout);
  return 0;
}

}  // namespace

BenchCommand AddReportTableCommand(CLI::App& root) {
  auto flags = std::make_shared<ReportTableFlags>();
  CLI::App* app = root.add_subcommand(
      "report-table", "One table row per run report (pszero-launch --report RUN.json)");
  app->add_option("reports", flags->reports, "Run reports (JSON, schema pszero.run/1)")
      ->required()
      ->check(CLI::ExistingFile);
  app->add_flag("--json", flags->json, "Print the rows as JSON instead of the table");
  return {app, [flags] { return RunReportTable(*flags); }};
}

}  // namespace pszero::bench
