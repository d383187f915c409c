// `pszero-bench collective`: an nccl-tests style table for one collective over N local
// processes. The command starts the ranks itself (it re-executes this binary with the
// hidden --rank-dir and --rank flags); they swap UCX worker addresses through a
// FileKeyValueStore in a fresh temporary directory, run the sweep, and rank 0 publishes
// the rows. With --peer mpi the same op and sizes run under Open MPI (pszero-bench-mpi)
// in the same invocation, and every row shows our busbw over MPI's. With --emulate-hosts H
// [--link-gbit G] the ranks run on H hosts of an emulated cluster (emulated_cluster.h), in
// blocks (host h gets ranks h*N/H on): the command runs itself again on host 0 (hidden
// --host-netns names every host's namespace), which starts one process per host in that
// host's namespace (hidden --host-ranks), which starts the host's ranks, so that the ranks
// of one host share its network and mount namespaces, as processes of one machine do.
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>

#include "common/atomic_file.h"
#include "common/file_kv_store.h"
#include "common/flags.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "common/ucx/ucx_transport.h"
#include "kernels/cuda_resources.h"
#include "launch/bench/collective.h"
#include "launch/bench/command.h"
#include "launch/bench/emulated_cluster.h"
#include "launch/bench/p2p.h"
#include "worker/collectives/nccl_backend.h"

namespace pszero::bench {

namespace {

struct CollectiveFlags {
  std::string op = "allreduce";
  int ranks = 2;
  std::string min_bytes = "8";
  std::string max_bytes = "64M";
  double step_factor = 2;
  std::string dtype = "fp32";
  std::string redop = "sum";
  int iters = 20;
  int warmup = 5;
  std::string backend = "ucx";
  bool nccl_host_per_rank = false;
  bool check = false;
  bool deterministic = false;
  int segment_kb = 512;
  int in_flight = 4;
  int small_kb = 32;
  std::string intra_host = "on";
  int intra_host_segment_kb = 512;
  int intra_host_min_kb = 0;
  std::string hierarchical = "auto";
  int hierarchical_min_kb = 0;
  std::string buffers = "shared";
  bool in_place = false;
  std::string progress = "block";
  std::string peer;
  bool json = false;
  std::string output;
  int emulate_hosts = 0;
  double link_gbit = 0;
  std::string rank_dir;    // hidden: set in rank and host processes
  int rank = -1;           // hidden
  std::string host_netns;  // hidden: every emulated host's namespace (the driver on host 0)
  std::string host_ranks;  // hidden: the ranks a host process starts
};

int Fail(const Status& s) {
  std::cerr << "pszero-bench collective: " << s.ToString() << "\n";
  return 1;
}

Result<size_t> ParseOneSize(const std::string& text, const char* flag) {
  Result<std::vector<size_t>> v = ParseSizeList(text);
  if (!v.ok() || v->size() != 1) {
    return Status::InvalidArgument(std::string(flag) + ": not a size: '" + text + "'");
  }
  return v->front();
}

Result<CollectiveSweep> MakeSweep(const CollectiveFlags& f) {
  CollectiveSweep s;
  s.op = f.op;
  PSZERO_ASSIGN_OR_RETURN(s.dtype, ParseDType(f.dtype));
  PSZERO_ASSIGN_OR_RETURN(s.reduce, collectives::ParseReduceOp(f.redop));
  PSZERO_ASSIGN_OR_RETURN(size_t lo, ParseOneSize(f.min_bytes, "--min-bytes"));
  PSZERO_ASSIGN_OR_RETURN(size_t hi, ParseOneSize(f.max_bytes, "--max-bytes"));
  if (lo == 0 || hi < lo)
    return Status::InvalidArgument("--min-bytes must be > 0 and <= --max-bytes");
  for (double size = static_cast<double>(lo); size <= static_cast<double>(hi) * 1.0000001;
       size *= f.step_factor) {
    s.sizes.push_back(static_cast<size_t>(size));
  }
  s.iters = f.iters;
  s.warmup = f.warmup;
  s.check = f.check;
  s.shared_buffers = f.buffers == "shared";
  s.in_place = f.in_place;
  return s;
}

collectives::CommunicatorOptions CommOptions(const CollectiveFlags& f) {
  collectives::CommunicatorOptions o;
  o.segment_bytes = static_cast<size_t>(f.segment_kb) << 10;
  o.segments_in_flight = f.in_flight;
  o.small_message_bytes = static_cast<size_t>(f.small_kb) << 10;
  o.deterministic = f.deterministic;
  o.intra_host = f.intra_host == "on";
  o.intra_host_segment_bytes = static_cast<size_t>(f.intra_host_segment_kb) << 10;
  o.intra_host_min_bytes = static_cast<size_t>(f.intra_host_min_kb) << 10;
  // on: every all-reduce of a group spread evenly over hosts; auto: above the switch point.
  o.hierarchical = f.hierarchical != "off";
  o.hierarchical_min_bytes =
      f.hierarchical == "on" ? 0 : static_cast<size_t>(f.hierarchical_min_kb) << 10;
  return o;
}

// One rank process.
int RunRank(const CollectiveFlags& f) {
  Result<CollectiveSweep> sweep = MakeSweep(f);
  if (!sweep.ok()) return Fail(sweep.status());
  if (f.backend == "nccl" && kernels::CudaDeviceCount() == 0) {
    return Fail(Status::Unavailable("--backend nccl: no CUDA device visible"));
  }
  FileKeyValueStore store(f.rank_dir);
  ucx::UcxTransportOptions o;
  o.rank = f.rank;
  o.world_size = f.ranks;
  o.key_prefix = "coll";
  o.progress_mode =
      f.progress == "spin" ? ucx::ProgressMode::kSpin : ucx::ProgressMode::kSpinThenBlock;
  auto transport = ucx::UcxTransport::Create(o, &store);
  if (!transport.ok()) return Fail(transport.status());
  auto comm = collectives::Communicator::World(transport->get(), CommOptions(f));
  if (!comm.ok()) return Fail(comm.status());
  if (f.backend == "nccl") {
    // GPU = rank mod the visible GPUs, as the worker picks it. NCCL refuses two ranks on
    // one device: ranks that share one stage their device tensors through host memory,
    // and the table says so ("lanes").
    if (f.nccl_host_per_rank) {
      collectives::NcclBackend::UseOwnHostId("bench-rank-" + std::to_string(f.rank));
    }
    const int gpus = kernels::CudaDeviceCount();
    sweep->device = Device::kCuda;
    Status s = (*comm)->EnableNccl(&store, "coll", f.rank % gpus);
    if (!s.ok()) return Fail(s);
  }
  Result<std::vector<CollectiveRow>> rows = RunCollectiveSweep(**comm, *sweep);
  if (!rows.ok()) return Fail(rows.status());
  if (f.rank == 0) {
    // The path host arrays took: intra-host (reading shared buffers in place, or staged
    // through the windows) or the UCX algorithms.
    std::string path =
        f.backend == "nccl"
            ? ((*comm)->nccl_enabled() ? "nccl" : "device tensors staged through host memory")
        : !(*comm)->intra_host_active()
            ? "ucx " + (*transport)->EndpointTransports(f.ranks > 1 ? 1 : 0)
        : (*comm)->single_copy_ops() > 0 ? "intra-host single-copy"
                                         : "intra-host staged";
    if ((*comm)->hierarchical_active()) {
      path = "hierarchical " + std::to_string((*comm)->hierarchical_hosts()) + " hosts x " +
             std::to_string(f.ranks / (*comm)->hierarchical_hosts()) + " (other ops: " + path + ")";
    }
    nlohmann::json doc = {{"rows", ToJson(*rows)}, {"lanes", path}};
    Status s = store.Set("coll/result", doc.dump());
    if (!s.ok()) return Fail(s);
  }
  return 0;
}

// This command's flags for a rank or host process (`extra`: its hidden flags).
std::vector<std::string> ChildArgv(const std::string& self, const CollectiveFlags& f,
                                   const std::vector<std::string>& extra) {
  std::vector<std::string> argv = {self,
                                   "collective",
                                   "--ranks",
                                   std::to_string(f.ranks),
                                   "--op",
                                   f.op,
                                   "--min-bytes",
                                   f.min_bytes,
                                   "--max-bytes",
                                   f.max_bytes,
                                   "--step-factor",
                                   std::to_string(f.step_factor),
                                   "--dtype",
                                   f.dtype,
                                   "--redop",
                                   f.redop,
                                   "--iters",
                                   std::to_string(f.iters),
                                   "--warmup",
                                   std::to_string(f.warmup),
                                   "--segment-kb",
                                   std::to_string(f.segment_kb),
                                   "--in-flight",
                                   std::to_string(f.in_flight),
                                   "--small-kb",
                                   std::to_string(f.small_kb),
                                   "--intra-host",
                                   f.intra_host,
                                   "--intra-host-segment-kb",
                                   std::to_string(f.intra_host_segment_kb),
                                   "--intra-host-min-kb",
                                   std::to_string(f.intra_host_min_kb),
                                   "--hierarchical",
                                   f.hierarchical,
                                   "--hierarchical-min-kb",
                                   std::to_string(f.hierarchical_min_kb),
                                   "--buffers",
                                   f.buffers,
                                   "--progress",
                                   f.progress,
                                   "--backend",
                                   f.backend};
  if (f.check) argv.push_back("--check");
  if (f.nccl_host_per_rank) argv.push_back("--nccl-host-per-rank");
  if (f.deterministic) argv.push_back("--deterministic");
  if (f.in_place) argv.push_back("--in-place");
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Rank r's host when the ranks run on `hosts` emulated hosts: in blocks, as pszero-launch
// spreads workers over nodes.
int HostOfRank(int rank, int ranks, int hosts) {
  int first = 0;
  for (int h = 0; h < hosts; ++h) {
    first += ranks / hosts + (h < ranks % hosts ? 1 : 0);
    if (rank < first) return h;
  }
  return hosts - 1;
}

std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string item; std::getline(in, item, ',');) out.push_back(item);
  return out;
}

// A host process (--host-ranks): starts its ranks (they inherit its namespaces) and waits.
int RunHost(const CollectiveFlags& f) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Fail(Status::IoError("cannot find /proc/self/exe: " + ec.message()));
  std::vector<BenchChild> children;
  for (const std::string& r : SplitList(f.host_ranks)) {
    Result<BenchChild> child =
        BenchChild::Spawn(ChildArgv(self.string(), f, {"--rank-dir", f.rank_dir, "--rank", r}));
    if (!child.ok()) return Fail(child.status());
    children.push_back(std::move(child).value());
  }
  int code = 0;
  for (BenchChild& c : children) {
    const int rc = c.Wait(std::chrono::minutes(30));
    if (rc != 0 && code == 0) code = rc;
  }
  return code;
}

std::string Number(double v) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.17g", v);
  return text;
}

// --emulate-hosts: this command again on host 0, with --host-netns naming every host.
int RunEmulated(const CollectiveFlags& f) {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Fail(Status::IoError("cannot find /proc/self/exe: " + ec.message()));
  EmulatedClusterOptions options;
  options.hosts = f.emulate_hosts;
  options.link_gbit = f.link_gbit;
  return RunOnEmulatedHostZero("collective", options, [&](const EmulatedCluster& cluster) {
    std::string netns;
    for (int h = 0; h < cluster.hosts(); ++h) {
      netns += (h == 0 ? "" : ",") + cluster.Namespace(h);
    }
    std::vector<std::string> extra = {"--emulate-hosts", std::to_string(f.emulate_hosts),
                                      "--host-netns", netns};
    if (f.link_gbit > 0) extra.insert(extra.end(), {"--link-gbit", Number(f.link_gbit)});
    if (!f.peer.empty()) extra.insert(extra.end(), {"--peer", f.peer});
    if (f.json) extra.push_back("--json");
    if (!f.output.empty()) {
      extra.insert(extra.end(), {"--output", std::filesystem::absolute(f.output).string()});
    }
    return ChildArgv(self.string(), f, extra);
  });
}

// Runs the same sweep under Open MPI; the rows, or why not.
Result<std::vector<CollectiveRow>> RunMpi(const std::string& self_dir, const CollectiveFlags& f) {
  const std::string mpi_bench = self_dir + "/pszero-bench-mpi";
  if (::access(mpi_bench.c_str(), X_OK) != 0) {
    return Status::NotFound("pszero-bench-mpi not built (install openmpi-bin libopenmpi-dev)");
  }
  if (f.dtype != "fp32" || f.redop != "sum") {
    return Status::InvalidArgument("--peer mpi compares fp32 sum only");
  }
  const std::string out = std::filesystem::temp_directory_path() /
                          ("pszero-mpi-" + std::to_string(::getpid()) + ".json");
  const std::string cmd =
      "mpirun --allow-run-as-root --oversubscribe -np " + std::to_string(f.ranks) + " '" +
      mpi_bench + "' --op " + f.op + " --min-bytes " + f.min_bytes + " --max-bytes " + f.max_bytes +
      " --step-factor " + std::to_string(f.step_factor) + " --iters " + std::to_string(f.iters) +
      " --warmup " + std::to_string(f.warmup) + " > '" + out + "' 2>/dev/null </dev/null";
  const int rc = std::system(cmd.c_str());
  Result<std::string> text = ReadFile(out);
  std::error_code ec;
  std::filesystem::remove(out, ec);
  if (rc != 0 || !text.ok()) {
    return Status::Internal("mpirun failed (exit " + std::to_string(rc) + ")");
  }
  try {
    return RowsFromJson(nlohmann::json::parse(*text).at("rows"));
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("pszero-bench-mpi output: ") + e.what());
  }
}

std::string HumanSize(int64_t bytes) {
  char buf[32];
  if (bytes >= (1 << 20) && bytes % (1 << 20) == 0) {
    std::snprintf(buf, sizeof buf, "%lldM", static_cast<long long>(bytes >> 20));
  } else if (bytes >= (1 << 10) && bytes % (1 << 10) == 0) {
    std::snprintf(buf, sizeof buf, "%lldK", static_cast<long long>(bytes >> 10));
  } else {
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(bytes));
  }
  return buf;
}

// The checks of the driver's flags, before anything starts: InvalidArgument naming the flag.
Status CheckCollectiveFlags(const CollectiveFlags& f) {
  if (f.link_gbit > 0 && f.emulate_hosts == 0) {
    return Status::InvalidArgument("--link-gbit: only with --emulate-hosts");
  }
  if (f.emulate_hosts > f.ranks) {
    return Status::InvalidArgument("--emulate-hosts: more hosts than --ranks");
  }
#ifndef PSZERO_HAVE_CUDA
  if (f.backend == "nccl") return Status::InvalidArgument("--backend nccl needs a CUDA build");
#endif
  PSZERO_ASSIGN_OR_RETURN(CollectiveSweep sweep, MakeSweep(f));
  // Every rank holds a send and a receive array of the largest size.
  PSZERO_RETURN_IF_ERROR(CheckFitsMemory("--max-bytes", 2 * uint64_t{sweep.sizes.back()}, f.ranks));
  // Checked here, once, rather than by every rank after its start.
  if (f.backend == "nccl" && kernels::CudaDeviceCount() == 0) {
    return Status::InvalidArgument("--backend nccl: no CUDA device");
  }
  return Status::Ok();
}

int RunCollectiveCommand(const CollectiveFlags& f) {
  if (!f.rank_dir.empty()) {
    // A host or rank process dies with the process that started it (a killed or timed-out
    // bench must not leave ranks holding ports and shared memory).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (!f.host_ranks.empty()) return RunHost(f);
    return RunRank(f);
  }
  if (Status s = CheckCollectiveFlags(f); !s.ok()) {
    std::cerr << "pszero-bench collective: error: " << s.message() << "\n";
    return 2;
  }
  if (f.emulate_hosts > 0 && f.host_netns.empty()) return RunEmulated(f);
  Result<CollectiveSweep> sweep = MakeSweep(f);
  if (!sweep.ok()) return Fail(sweep.status());
  Result<TempDir> temp = TempDir::Create("pszero-coll");
  if (!temp.ok()) return Fail(temp.status());
  const TempDir& dir = *temp;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Fail(Status::IoError("cannot find /proc/self/exe: " + ec.message()));

  std::vector<BenchChild> children;
  const std::vector<std::string> netns = SplitList(f.host_netns);
  if (netns.empty()) {
    for (int r = 0; r < f.ranks; ++r) {
      Result<BenchChild> child = BenchChild::Spawn(ChildArgv(
          self.string(), f, {"--rank-dir", dir.path().string(), "--rank", std::to_string(r)}));
      if (!child.ok()) return Fail(child.status());
      children.push_back(std::move(child).value());
    }
  } else {  // one process per emulated host, in its namespace, starting the host's ranks
    const std::string ip = IpProgram();
    for (int h = 0; h < static_cast<int>(netns.size()); ++h) {
      std::string ranks;
      for (int r = 0; r < f.ranks; ++r) {
        if (HostOfRank(r, f.ranks, static_cast<int>(netns.size())) != h) continue;
        ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
      }
      std::vector<std::string> argv = {ip, "netns", "exec", netns[h]};
      for (std::string& a : ChildArgv(self.string(), f,
                                      {"--rank-dir", dir.path().string(), "--host-ranks", ranks})) {
        argv.push_back(std::move(a));
      }
      Result<BenchChild> child = BenchChild::Spawn(argv);
      if (!child.ok()) return Fail(child.status());
      children.push_back(std::move(child).value());
    }
  }
  int failed = 0;
  for (size_t i = 0; i < children.size(); ++i) {
    const int code = children[i].Wait(std::chrono::minutes(30));
    if (code != 0) {
      std::cerr << "pszero-bench collective: " << (netns.empty() ? "rank " : "host ") << i
                << " exited with " << code << "\n";
      ++failed;
    }
  }
  if (failed) return 1;
  FileKeyValueStore store(dir.path());
  Result<std::string> result = store.Get("coll/result", std::chrono::milliseconds(1000));
  if (!result.ok()) return Fail(result.status());
  nlohmann::json doc = nlohmann::json::parse(*result, nullptr, false);
  if (doc.is_discarded()) return Fail(Status::Corruption("rank 0 result is not JSON"));
  Result<std::vector<CollectiveRow>> rows = RowsFromJson(doc["rows"]);
  if (!rows.ok()) return Fail(rows.status());

  std::optional<std::vector<CollectiveRow>> mpi;
  std::string mpi_note;
  if (f.peer == "mpi") {
    Result<std::vector<CollectiveRow>> m = RunMpi(self.parent_path().string(), f);
    if (m.ok()) {
      mpi = std::move(m).value();
    } else {
      mpi_note = m.status().ToString();
    }
  }

  nlohmann::json out = {
      {"benchmark", "collective"},
      {"op", f.op},
      {"ranks", f.ranks},
      {"dtype", f.dtype},
      {"redop", f.redop},
      {"iters", f.iters},
      {"warmup", f.warmup},
      {"deterministic", f.deterministic},
      {"segment_bytes", static_cast<int64_t>(f.segment_kb) << 10},
      {"small_message_bytes", static_cast<int64_t>(f.small_kb) << 10},
      {"intra_host_segment_bytes", static_cast<int64_t>(f.intra_host_segment_kb) << 10},
      {"buffers", f.buffers},
      {"in_place", f.in_place},
      {"hierarchical", f.hierarchical},
      {"emulate_hosts", f.emulate_hosts},
      {"link_gbit", f.link_gbit},
      {"lanes", doc.value("lanes", "")},
      {"rows", ToJson(*rows)}};
  if (mpi) {
    out["mpi_rows"] = ToJson(*mpi);
    nlohmann::json ratios = nlohmann::json::array();
    for (size_t i = 0; i < rows->size() && i < mpi->size(); ++i) {
      ratios.push_back((*rows)[i].busbw_gbps / (*mpi)[i].busbw_gbps);
    }
    out["busbw_ratio_vs_mpi"] = ratios;
  } else if (!f.peer.empty()) {
    out["mpi_note"] = mpi_note;
  }
  if (f.json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::printf("# pszero-bench collective: %s, %d ranks, %s, %s%s, path: %s\n", f.op.c_str(),
                f.ranks, f.dtype.c_str(), f.redop.c_str(), f.deterministic ? ", deterministic" : "",
                doc.value("lanes", "?").c_str());
    if (f.emulate_hosts > 0) {
      const std::string links =
          f.link_gbit > 0 ? "each host link " + Number(f.link_gbit) + " Gbit/s each way (tc tbf)"
                          : "links not limited";
      std::printf("# emulated hosts: %d network namespaces, ranks in blocks, %s\n", f.emulate_hosts,
                  links.c_str());
    }
    std::printf("# %10s %12s %6s %6s %12s %10s %10s %8s", "size", "count", "type", "redop",
                "time(us)", "algbw", "busbw", "#wrong");
    if (mpi) std::printf(" %10s %8s", "mpi_busbw", "ratio");
    std::printf("\n");
    for (size_t i = 0; i < rows->size(); ++i) {
      const CollectiveRow& r = (*rows)[i];
      std::printf("  %10s %12lld %6s %6s %12.1f %10.2f %10.2f %8s", HumanSize(r.bytes).c_str(),
                  static_cast<long long>(r.count), f.dtype.c_str(), f.redop.c_str(), r.time_us,
                  r.algbw_gbps, r.busbw_gbps,
                  r.wrong < 0 ? "N/A" : std::to_string(r.wrong).c_str());
      if (mpi && i < mpi->size()) {
        std::printf(" %10.2f %8.2f", (*mpi)[i].busbw_gbps, r.busbw_gbps / (*mpi)[i].busbw_gbps);
      }
      std::printf("\n");
    }
    if (!f.peer.empty() && !mpi) std::printf("# --peer mpi: %s\n", mpi_note.c_str());
    std::printf("# algbw, busbw in GB/s (1e9 B/s), nccl-tests definitions\n");
  }
  if (!f.output.empty()) {
    Status s = WriteJsonAtomic(f.output, out);
    if (!s.ok()) return Fail(s);
  }
  for (const CollectiveRow& r : *rows) {
    if (r.wrong > 0) return 1;
  }
  return 0;
}

}  // namespace

BenchCommand AddCollectiveCommand(CLI::App& root) {
  auto f = std::make_shared<CollectiveFlags>();
  CLI::App* app = root.add_subcommand(
      "collective", "nccl-tests style table for one collective over N local processes");
  app->add_option("--op", f->op, "Collective")
      ->check(CLI::IsMember({"allreduce", "reduce_scatter", "allgather", "broadcast", "alltoall"}));
  app->add_option("--ranks", f->ranks, "Processes")->check(CLI::Range(1, 256));
  auto size_check = CLI::Validator(
      [](std::string& s) {
        Result<std::vector<size_t>> v = ParseSizeList(s);
        if (!v.ok()) return v.status().message();
        return v->size() == 1 ? std::string() : "not a size like 8, 4K or 64M";
      },
      "SIZE");
  app->add_option("--min-bytes", f->min_bytes, "Smallest array (K/M/G are 2^10)")
      ->check(size_check);
  app->add_option("--max-bytes", f->max_bytes, "Largest array")->check(size_check);
  app->add_option("--step-factor", f->step_factor, "Size multiplier between rows")
      ->check(pszero::FiniteRange(1.01, 1024.0));
  app->add_option("--dtype", f->dtype, "Element type")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16", "int32", "int64"}));
  app->add_option("--redop", f->redop, "Reduction")->check(CLI::IsMember({"sum", "avg", "max"}));
  app->add_option("--iters", f->iters, "Timed iterations per size")->check(CLI::Range(1, 1000000));
  app->add_option("--warmup", f->warmup, "Untimed iterations per size")
      ->check(CLI::Range(0, 1000000));
  app->add_option("--backend", f->backend, "ucx (host tensors) or nccl")
      ->check(CLI::IsMember({"ucx", "nccl"}));
  app->add_flag("--nccl-host-per-rank", f->nccl_host_per_rank,
                "With --backend nccl: give each rank its own NCCL host id (NCCL_HOSTID), so "
                "NCCL runs several ranks on one GPU over its socket transport (a correctness "
                "check on a one-GPU machine, not a bandwidth figure)");
  app->add_flag("--check", f->check, "Check every result against the reference (#wrong)");
  app->add_flag("--deterministic", f->deterministic, "Ascending-rank-order sums");
  app->add_option("--segment-kb", f->segment_kb, "Ring segment (pipelining unit), KiB")
      ->check(CLI::Range(1, 1 << 20));
  app->add_option("--in-flight", f->in_flight, "Segments in flight")->check(CLI::Range(1, 64));
  app->add_option("--small-kb", f->small_kb, "Direct algorithm at or below this many KiB")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--intra-host", f->intra_host,
                  "Shared-memory path above --intra-host-min-kb when all ranks share a host")
      ->check(CLI::IsMember({"on", "off"}));
  app->add_option("--intra-host-min-kb", f->intra_host_min_kb,
                  "Arrays of at most this many KiB stay off the intra-host path")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--intra-host-segment-kb", f->intra_host_segment_kb,
                  "Intra-host reduction unit per peer, KiB")
      ->check(CLI::Range(1, 1 << 20));
  app->add_option(
         "--hierarchical", f->hierarchical,
         "All-reduce of a group spread evenly over hosts (L >= 2 ranks on each of H >= 2): "
         "intra-host reduce-scatter, inter-host all-reduce, intra-host all-gather; "
         "on: always, auto: above --hierarchical-min-kb, off: flat")
      ->check(CLI::IsMember({"on", "off", "auto"}));
  app->add_option("--hierarchical-min-kb", f->hierarchical_min_kb,
                  "With --hierarchical auto: arrays of at most this many KiB stay flat")
      ->check(CLI::Range(0, 1 << 20));
  AddEmulationFlags(app, &f->emulate_hosts, &f->link_gbit,
                    "Run the ranks on this many emulated hosts, in blocks");
  app->add_option("--buffers", f->buffers,
                  "Host buffers in shared memory (the intra-host path reads them in place, "
                  "as NCCL's registered buffers) or private (staged through windows)")
      ->check(CLI::IsMember({"shared", "private"}));
  app->add_flag("--in-place", f->in_place,
                "reduce_scatter into block rank of the input, allgather from block rank of the "
                "output (nccl-tests' in-place columns)");
  app->add_option("--progress", f->progress, "UCX progress: block (spin, then sleep) or spin")
      ->check(CLI::IsMember({"block", "spin"}));
  app->add_option("--peer", f->peer, "Also run the same sweep with this yardstick")
      ->check(CLI::IsMember({"mpi"}));
  app->add_flag("--json", f->json, "Print JSON instead of the table");
  app->add_option("--output", f->output, "Also write the JSON to this file (atomically)");
  app->add_option("--rank-dir", f->rank_dir)->group("");  // hidden: rank processes
  app->add_option("--rank", f->rank)->group("");
  app->add_option("--host-netns", f->host_netns)->group("");
  app->add_option("--host-ranks", f->host_ranks)->group("");
  return {app, [f] { return RunCollectiveCommand(*f); }, [f] { return CheckCollectiveFlags(*f); }};
}

}  // namespace pszero::bench
