// `pszero-bench stream`: prints the STREAM table, or JSON with --json.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/flags.h"
#include "common/report.h"
#include "launch/bench/command.h"
#include "launch/bench/stream.h"

namespace pszero::bench {

namespace {

struct StreamFlags {
  std::vector<int> threads;
  int iters = 10;
  double array_mb = 0;
  bool json = false;
  std::string output;
};

int RunStreamCommand(const StreamFlags& flags) {
  nlohmann::json runs = nlohmann::json::array();
  std::vector<StreamResult> results;
  for (int threads : flags.threads) {
    StreamOptions options;
    options.threads = threads;
    options.iters = flags.iters;
    options.array_bytes = static_cast<int64_t>(flags.array_mb * (1 << 20));
    Result<StreamResult> r = RunStream(options);
    if (!r.ok()) {
      std::cerr << "pszero-bench stream: " << r.status().ToString() << "\n";
      return 1;
    }
    runs.push_back(ToJson(*r));
    results.push_back(std::move(r).value());
  }
  bool all_valid = true;
  for (const auto& r : results) all_valid = all_valid && r.valid;

  nlohmann::json doc = {{"benchmark", "stream"},
                        {"llc_bytes", LastLevelCacheBytes()},
                        {"unit", "GB/s = 1e9 bytes per second"},
                        {"runs", runs},
                        {"valid", all_valid}};
  if (flags.json) {
    std::cout << doc.dump(2) << "\n";
  } else {
    const auto& first = results.front().options;
    std::printf(
        "# pszero-bench stream: 3 arrays of %lld bytes (last-level cache %lld bytes), "
        "%d timed iterations\n",
        static_cast<long long>(first.array_bytes), static_cast<long long>(LastLevelCacheBytes()),
        first.iters);
    std::printf("# %7s  %-6s  %12s  %12s  %12s\n", "threads", "kernel", "best GB/s", "median GB/s",
                "best ms");
    for (const auto& r : results) {
      for (const auto& k : r.kernels) {
        std::printf("  %7d  %-6s  %12.2f  %12.2f  %12.3f\n", r.options.threads, k.name.c_str(),
                    k.best_gbps, k.median_gbps, k.seconds.min * 1e3);
      }
    }
    std::printf("# validation: %s\n", all_valid ? "passed" : "FAILED");
  }
  if (!flags.output.empty()) {
    Status s = WriteJsonAtomic(flags.output, doc);
    if (!s.ok()) {
      std::cerr << "pszero-bench stream: " << s.ToString() << "\n";
      return 1;
    }
  }
  return all_valid ? 0 : 1;
}

// "1,2,8": thread counts in [1, 4096]; an empty item or anything else is refused.
Result<std::vector<int>> ParseThreadCounts(const std::string& text) {
  std::vector<int> counts;
  size_t start = 0;
  while (true) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    if (item.empty()) return Status::InvalidArgument("empty item in '" + text + "'");
    const std::optional<uint64_t> n = ParseDecimal(item);
    if (!n || *n < 1 || *n > 4096) {
      return Status::InvalidArgument("'" + item + "' is not a thread count in [1, 4096]");
    }
    counts.push_back(static_cast<int>(*n));
    if (comma == text.size()) return counts;
    start = comma + 1;
  }
}

}  // namespace

BenchCommand AddStreamCommand(CLI::App& root) {
  auto flags = std::make_shared<StreamFlags>();
  flags->threads = {static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))};
  CLI::App* app =
      root.add_subcommand("stream", "STREAM copy/scale/add/triad host memory bandwidth");
  // A string parsed here rather than CLI11's delimiter, which drops empty items ("1,,2").
  app->add_option_function<std::string>(
         "--threads",
         [flags](const std::string& text) { flags->threads = *ParseThreadCounts(text); },
         "Thread counts to measure, comma-separated (default: all cores)")
      ->type_name("INT:INT in [1 - 4096] ...")
      ->check(CLI::Validator(
          [](std::string& text) {
            Result<std::vector<int>> counts = ParseThreadCounts(text);
            return counts.ok() ? std::string() : counts.status().message();
          },
          ""));
  app->add_option("--iters", flags->iters, "Timed iterations per kernel")
      ->check(CLI::Range(1, 100000));
  app->add_option("--array-mb", flags->array_mb, "MiB per array (0: 4x the last-level cache)")
      ->check(pszero::FiniteRange(0.0, 65536.0));
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  app->add_option("--output", flags->output, "Also write the JSON to this file (atomically)");
  return {app, [flags] { return RunStreamCommand(*flags); }};
}

}  // namespace pszero::bench
