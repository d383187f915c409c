// `pszero-bench collective`: an nccl-tests style table for one collective over N local
// processes. The command starts the ranks itself (it re-executes this binary with the
// hidden --rank-dir and --rank flags); they swap UCX worker addresses through a
// FileKeyValueStore in a fresh temporary directory, run the sweep, and rank 0 publishes
// the rows. With --peer mpi the same op and sizes run under Open MPI (pszero-bench-mpi)
// in the same invocation, and every row shows our busbw over MPI's.
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

#include "common/atomic_file.h"
#include "common/file_kv_store.h"
#include "common/report.h"
#include "common/temp_dir.h"
#include "common/ucx/ucx_transport.h"
#include "kernels/cuda_resources.h"
#include "launch/bench/collective.h"
#include "launch/bench/command.h"
#include "launch/bench/p2p.h"

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
  std::string buffers = "shared";
  bool in_place = false;
  std::string progress = "block";
  std::string peer;
  bool json = false;
  std::string output;
  std::string rank_dir;  // hidden: set in rank processes
  int rank = -1;         // hidden
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
      // Before any NCCL call: NCCL hashes its host identity once per process. Its own
      // duplicate-GPU check and ours (DistinctGpus) then see one host per rank, and the
      // ranks talk over NCCL's socket transport on loopback unless told otherwise.
      ::setenv("NCCL_HOSTID", ("pszero-bench-rank-" + std::to_string(f.rank)).c_str(), 1);
      ::setenv("NCCL_SOCKET_IFNAME", "lo", 0);
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
    const std::string path =
        f.backend == "nccl"
            ? ((*comm)->nccl_enabled() ? "nccl" : "device tensors staged through host memory")
        : !(*comm)->intra_host_active()
            ? "ucx " + (*transport)->EndpointTransports(f.ranks > 1 ? 1 : 0)
        : (*comm)->single_copy_ops() > 0 ? "intra-host single-copy"
                                         : "intra-host staged";
    nlohmann::json doc = {{"rows", ToJson(*rows)}, {"lanes", path}};
    Status s = store.Set("coll/result", doc.dump());
    if (!s.ok()) return Fail(s);
  }
  return 0;
}

std::vector<std::string> RankArgv(const std::string& self, const CollectiveFlags& f,
                                  const std::string& dir, int rank) {
  std::vector<std::string> argv = {self,
                                   "collective",
                                   "--rank-dir",
                                   dir,
                                   "--rank",
                                   std::to_string(rank),
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
  return argv;
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

int RunCollectiveCommand(const CollectiveFlags& f) {
  if (!f.rank_dir.empty()) return RunRank(f);
#ifndef PSZERO_HAVE_CUDA
  if (f.backend == "nccl") {
    std::cerr << "pszero-bench collective: error: --backend nccl needs a CUDA build\n";
    return 2;
  }
#endif
  Result<CollectiveSweep> sweep = MakeSweep(f);
  if (!sweep.ok()) {
    std::cerr << "pszero-bench collective: error: " << sweep.status().message() << "\n";
    return 2;
  }
  Result<TempDir> temp = TempDir::Create("pszero-coll");
  if (!temp.ok()) return Fail(temp.status());
  const TempDir& dir = *temp;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return Fail(Status::IoError("cannot find /proc/self/exe: " + ec.message()));

  std::vector<BenchChild> children;
  for (int r = 0; r < f.ranks; ++r) {
    Result<BenchChild> child =
        BenchChild::Spawn(RankArgv(self.string(), f, dir.path().string(), r));
    if (!child.ok()) return Fail(child.status());
    children.push_back(std::move(child).value());
  }
  int failed = 0;
  for (int r = 0; r < f.ranks; ++r) {
    const int code = children[r].Wait(std::chrono::minutes(30));
    if (code != 0) {
      std::cerr << "pszero-bench collective: rank " << r << " exited with " << code << "\n";
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
        return v.ok() && v->size() == 1 && v->front() > 0 ? std::string()
                                                          : "not a size like 8, 4K or 64M";
      },
      "SIZE");
  app->add_option("--min-bytes", f->min_bytes, "Smallest array (K/M/G are 2^10)")
      ->check(size_check);
  app->add_option("--max-bytes", f->max_bytes, "Largest array")->check(size_check);
  app->add_option("--step-factor", f->step_factor, "Size multiplier between rows")
      ->check(CLI::Range(1.01, 1024.0));
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
  return {app, [f] { return RunCollectiveCommand(*f); }};
}

}  // namespace pszero::bench
