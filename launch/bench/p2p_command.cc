// `pszero-bench p2p`: latency and bandwidth between two processes over the UCX transport,
// next to ucx_perftest on the same sizes. The command starts its own peer: it re-executes
// this binary with the hidden --peer-dir flag; the two swap UCX worker addresses through a
// FileKeyValueStore in a fresh temporary directory. With --emulate-hosts 2 [--link-gbit G]
// the two run on two hosts of an emulated cluster (emulated_cluster.h): this process makes
// the namespaces and runs the measuring side in the first (hidden --peer-netns names the
// second, where that one starts its peer), UCX over tcp on the rate-limited links.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "common/file_kv_store.h"
#include "common/flags.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "common/ucx/ucx_transport.h"
#include "launch/bench/command.h"
#include "launch/bench/emulated_cluster.h"
#include "launch/bench/p2p.h"

#include <ucp/api/ucp.h>

namespace pszero::bench {

namespace {

struct P2pFlags {
  std::string sizes = "8:256M";
  double scale = 1.0;
  int window = 16;
  std::string progress = "block";
  int spin_us = 50;
  std::string err_mode = "peer";
  bool no_perftest = false;
  bool json = false;
  std::string output;
  std::string peer_dir;  // hidden: set in the peer process
  int emulate_hosts = 0;
  double link_gbit = 0;
  std::string peer_netns;  // hidden: the peer's namespace (the measuring side of --emulate-hosts)
};

ucx::UcxTransportOptions TransportOptions(const P2pFlags& f, int rank) {
  ucx::UcxTransportOptions o;
  o.rank = rank;
  o.world_size = 2;
  o.key_prefix = "p2p";
  o.progress_mode =
      f.progress == "spin" ? ucx::ProgressMode::kSpin : ucx::ProgressMode::kSpinThenBlock;
  o.spin_budget = std::chrono::microseconds(f.spin_us);
  o.peer_error_handling = f.err_mode == "peer";
  return o;
}

int Fail(const Status& s) {
  std::cerr << "pszero-bench p2p: " << s.ToString() << "\n";
  return 1;
}

int RunPeer(const P2pFlags& f, const std::vector<size_t>& sizes) {
  FileKeyValueStore store(f.peer_dir);
  auto t = ucx::UcxTransport::Create(TransportOptions(f, 1), &store);
  if (!t.ok()) return Fail(t.status());
  Status s = P2pServe(**t, sizes, f.scale, f.window);
  return s.ok() ? 0 : Fail(s);
}

std::string Number(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.17g", v);
  return text;
}

// --emulate-hosts: this command again on host 0, with --peer-netns naming host 1.
int RunEmulated(const P2pFlags& f) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Fail(Status::IoError("cannot find /proc/self/exe: " + ec.message()));
  EmulatedClusterOptions options;
  options.hosts = 2;
  options.link_gbit = f.link_gbit;
  return RunOnEmulatedHostZero("p2p", options, [&](const EmulatedCluster& cluster) {
    std::vector<std::string> argv = {
        self.string(), "p2p",           "--sizes",           f.sizes,
        "--scale",     Number(f.scale), "--window",          std::to_string(f.window),
        "--progress",  f.progress,      "--spin-us",         std::to_string(f.spin_us),
        "--err-mode",  f.err_mode,      "--no-perftest",     "--emulate-hosts",
        "2",           "--peer-netns",  cluster.Namespace(1)};
    if (f.link_gbit > 0) argv.insert(argv.end(), {"--link-gbit", Number(f.link_gbit)});
    if (f.json) argv.push_back("--json");
    if (!f.output.empty()) {
      argv.insert(argv.end(), {"--output", std::filesystem::absolute(f.output).string()});
    }
    return argv;
  });
}

// The checks of the driver's flags, before anything starts: InvalidArgument naming the flag.
Status CheckP2pFlags(const P2pFlags& f) {
  PSZERO_ASSIGN_OR_RETURN(std::vector<size_t> sizes, ParseSizeList(f.sizes));
  if (f.link_gbit > 0 && f.emulate_hosts == 0) {
    return Status::InvalidArgument("--link-gbit: only with --emulate-hosts");
  }
  if (f.emulate_hosts != 0 && f.emulate_hosts != 2) {
    return Status::InvalidArgument("--emulate-hosts: p2p runs on 2 hosts, not " +
                                   std::to_string(f.emulate_hosts));
  }
  // Each process holds a send and a receive buffer of the largest size.
  return CheckFitsMemory("--sizes", 2 * uint64_t{*std::max_element(sizes.begin(), sizes.end())}, 2);
}

int RunP2pCommand(const P2pFlags& f) {
  Result<std::vector<size_t>> sizes = ParseSizeList(f.sizes);  // validated by the flag
  if (!sizes.ok()) return Fail(sizes.status());
  if (!f.peer_dir.empty()) return RunPeer(f, *sizes);
  if (Status s = CheckP2pFlags(f); !s.ok()) {
    std::cerr << "pszero-bench p2p: error: " << s.message() << "\n";
    return 2;
  }
  if (f.emulate_hosts > 0 && f.peer_netns.empty()) return RunEmulated(f);

  Result<TempDir> temp = TempDir::Create("pszero-p2p");
  if (!temp.ok()) return Fail(temp.status());
  const TempDir& dir = *temp;
  FileKeyValueStore store(dir.path());

  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Fail(Status::IoError("cannot find /proc/self/exe: " + ec.message()));
  std::vector<std::string> argv = {self.string(), "p2p",
                                   "--peer-dir",  dir.path().string(),
                                   "--sizes",     f.sizes,
                                   "--scale",     std::to_string(f.scale),
                                   "--window",    std::to_string(f.window),
                                   "--progress",  f.progress,
                                   "--spin-us",   std::to_string(f.spin_us),
                                   "--err-mode",  f.err_mode};
  if (!f.peer_netns.empty()) {
    const std::string ip = IpProgram();
    if (ip.empty()) return Fail(Status::NotFound("--peer-netns: no 'ip' command"));
    argv.insert(argv.begin(), {ip, "netns", "exec", f.peer_netns});
  }
  Result<std::vector<P2pRow>> rows = Status::Internal("not measured");
  std::string lanes;
  {
    Result<BenchChild> peer = BenchChild::Spawn(argv);
    if (!peer.ok()) return Fail(peer.status());
    auto t = ucx::UcxTransport::Create(TransportOptions(f, 0), &store);
    if (!t.ok()) return Fail(t.status());
    rows = P2pMeasure(**t, *sizes, f.scale, f.window);
    lanes = (*t)->EndpointTransports(1);
    const int peer_code = peer->Wait(std::chrono::milliseconds(60000));
    if (rows.ok() && peer_code != 0) {
      rows = Status::Internal("peer process exited with " + std::to_string(peer_code));
    }
  }
  if (!rows.ok()) return Fail(rows.status());

  std::optional<std::string> perftest = f.no_perftest ? std::nullopt : FindUcxPerftest();
  std::vector<std::optional<PerftestRow>> pt(sizes->size());
  std::string perftest_note;
  if (f.no_perftest) {
    perftest_note = "not run (--no-perftest)";
  } else if (!perftest) {
    perftest_note = "not installed (Debian package ucx-utils): no comparison";
  } else {
    perftest_note = *perftest + " tag_lat/tag_bw, same sizes and iteration counts";
    // ucx_perftest runs in its defaults (error handling none): the yardstick users know.
    const std::vector<std::string> extra;
    for (size_t i = 0; i < sizes->size(); ++i) {
      Result<PerftestRow> r = RunUcxPerftest(*perftest, (*sizes)[i], f.scale, extra);
      if (r.ok()) {
        pt[i] = *r;
      } else {
        std::cerr << "pszero-bench p2p: ucx_perftest: " << r.status().ToString() << "\n";
      }
    }
  }

  nlohmann::json runs = nlohmann::json::array();
  for (size_t i = 0; i < rows->size(); ++i) {
    const P2pRow& r = (*rows)[i];
    nlohmann::json j = {{"bytes", r.bytes},
                        {"latency_us", r.latency_us},
                        {"bandwidth_gbps", r.bandwidth_gbps},
                        {"lat_iters", r.schedule.lat_iters},
                        {"bw_iters", r.schedule.bw_iters}};
    if (pt[i]) {
      j["perftest_latency_us"] = pt[i]->latency_us;
      j["perftest_bandwidth_gbps"] = pt[i]->bandwidth_gbps;
      j["latency_ratio"] = r.latency_us / pt[i]->latency_us;
      j["bandwidth_ratio"] = r.bandwidth_gbps / pt[i]->bandwidth_gbps;
    }
    runs.push_back(j);
  }
  nlohmann::json doc = {{"benchmark", "p2p"},
                        {"ucx_version", ucp_get_version_string()},
                        {"lanes", lanes},
                        {"progress", f.progress},
                        {"spin_us", f.spin_us},
                        {"err_mode", f.err_mode},
                        {"window", f.window},
                        {"perftest", perftest_note},
                        {"emulate_hosts", f.emulate_hosts},
                        {"link_gbit", f.link_gbit},
                        {"unit", "latency: one way (half round trip), us; GB/s = 1e9 B/s"},
                        {"runs", runs}};
  if (f.json) {
    std::cout << doc.dump(2) << "\n";
  } else {
    std::printf("# pszero-bench p2p: 2 processes, UCX %s, lanes rank0->rank1: %s\n",
                ucp_get_version_string(), lanes.c_str());
    std::printf("# progress %s (spin %d us), error handling %s, window %d\n",
                f.progress == "spin" ? "spin" : "spin-then-block", f.spin_us, f.err_mode.c_str(),
                f.window);
    std::printf("# ucx_perftest: %s\n", perftest_note.c_str());
    if (f.emulate_hosts > 0) {
      std::printf("# emulated hosts: 2 network namespaces, link %s each way (tc tbf)\n",
                  f.link_gbit > 0 ? (Number(f.link_gbit) + " Gbit/s").c_str() : "not limited");
    }
    std::printf("# %12s  %10s  %10s  %12s  %12s  %9s  %9s\n", "bytes", "lat_us", "bw_GB/s",
                "pt_lat_us", "pt_bw_GB/s", "lat_ratio", "bw_ratio");
    for (size_t i = 0; i < rows->size(); ++i) {
      const P2pRow& r = (*rows)[i];
      if (pt[i]) {
        std::printf("  %12zu  %10.2f  %10.3f  %12.2f  %12.3f  %9.2f  %9.2f\n", r.bytes,
                    r.latency_us, r.bandwidth_gbps, pt[i]->latency_us, pt[i]->bandwidth_gbps,
                    r.latency_us / pt[i]->latency_us, r.bandwidth_gbps / pt[i]->bandwidth_gbps);
      } else {
        std::printf("  %12zu  %10.2f  %10.3f  %12s  %12s  %9s  %9s\n", r.bytes, r.latency_us,
                    r.bandwidth_gbps, "-", "-", "-", "-");
      }
    }
  }
  if (!f.output.empty()) {
    Status s = WriteJsonAtomic(f.output, doc);
    if (!s.ok()) return Fail(s);
  }
  return 0;
}

}  // namespace

BenchCommand AddP2pCommand(CLI::App& root) {
  auto flags = std::make_shared<P2pFlags>();
  CLI::App* app = root.add_subcommand(
      "p2p", "Latency and bandwidth between two processes over UCX, beside ucx_perftest");
  app->add_option("--sizes", flags->sizes,
                  "Message sizes: A:B (powers of two), or a comma list; K/M/G suffixes")
      ->check(CLI::Validator(
          [](std::string& text) {
            Result<std::vector<size_t>> sizes = ParseSizeList(text);
            return sizes.ok() ? std::string() : sizes.status().message();
          },
          "SIZES"));
  app->add_option("--scale", flags->scale, "Multiplies every iteration count")
      ->check(pszero::FiniteRange(0.001, 1000.0));
  app->add_option("--window", flags->window, "Sends in flight in the bandwidth test")
      ->check(CLI::Range(1, 1024));
  app->add_option("--progress", flags->progress,
                  "Waiting: block (spin, then sleep on the UCX event fd) or spin")
      ->check(CLI::IsMember({"block", "spin"}));
  app->add_option("--spin-us", flags->spin_us, "Spin budget before blocking, microseconds")
      ->check(CLI::Range(0, 1000000));
  app->add_option("--err-mode", flags->err_mode,
                  "UCX endpoint error handling: peer (pszero's mode) or none (to measure it)")
      ->check(CLI::IsMember({"peer", "none"}));
  app->add_flag("--no-perftest", flags->no_perftest, "Do not run ucx_perftest beside");
  app->add_flag("--json", flags->json, "Print JSON instead of the table");
  app->add_option("--output", flags->output, "Also write the JSON to this file (atomically)");
  AddEmulationFlags(app, &flags->emulate_hosts, &flags->link_gbit,
                    "Run the two processes on 2 emulated hosts");
  app->add_option("--peer-dir", flags->peer_dir, "Internal: run as the peer process")->group("");
  app->add_option("--peer-netns", flags->peer_netns, "Internal: start the peer in this namespace")
      ->group("");
  return {app, [flags] { return RunP2pCommand(*flags); },
          [flags] { return CheckP2pFlags(*flags); }};
}

}  // namespace pszero::bench
