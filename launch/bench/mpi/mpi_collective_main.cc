// pszero-bench-mpi: the Open MPI yardstick for `pszero-bench collective --peer mpi`.
//
// Run under mpirun; times one MPI collective over a range of sizes exactly as
// nccl-tests does (warm-up, barrier, K timed iterations, mean per iteration, max over
// ranks) and prints, on rank 0, one JSON document with a row per size. Sizes are the full
// array S in bytes: the allreduce/broadcast buffer, the reduce-scatter input, the
// all-gather output, the all-to-all send buffer. fp32 only (MPI has no bf16).
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/flags.h"

namespace {

struct Flags {
  std::string op = "allreduce";
  int64_t min_bytes = 8;
  int64_t max_bytes = 64 << 20;
  double step_factor = 2;
  int iters = 20;
  int warmup = 5;
};

// busbw / algbw, as nccl-tests defines it.
double BusFactor(const std::string& op, int n) {
  if (op == "allreduce") return 2.0 * (n - 1) / n;
  if (op == "broadcast") return 1.0;
  return static_cast<double>(n - 1) / n;  // reduce_scatter, allgather, alltoall
}

// Runs one iteration of the op on `count` floats (the full array).
void RunOnce(const std::string& op, std::vector<float>& in, std::vector<float>& out, int64_t count,
             int n) {
  const int64_t per_rank = count / n;
  if (op == "allreduce") {
    MPI_Allreduce(in.data(), out.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  } else if (op == "reduce_scatter") {
    MPI_Reduce_scatter_block(in.data(), out.data(), static_cast<int>(per_rank), MPI_FLOAT, MPI_SUM,
                             MPI_COMM_WORLD);
  } else if (op == "allgather") {
    MPI_Allgather(in.data(), static_cast<int>(per_rank), MPI_FLOAT, out.data(),
                  static_cast<int>(per_rank), MPI_FLOAT, MPI_COMM_WORLD);
  } else if (op == "broadcast") {
    MPI_Bcast(in.data(), static_cast<int>(count), MPI_FLOAT, 0, MPI_COMM_WORLD);
  } else {  // alltoall
    MPI_Alltoall(in.data(), static_cast<int>(per_rank), MPI_FLOAT, out.data(),
                 static_cast<int>(per_rank), MPI_FLOAT, MPI_COMM_WORLD);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  auto app = pszero::MakeApp("pszero-bench-mpi", "Open MPI collective timings (run under mpirun)");
  app->add_option("--op", flags.op, "Collective")
      ->check(CLI::IsMember({"allreduce", "reduce_scatter", "allgather", "broadcast", "alltoall"}));
  app->add_option("--min-bytes", flags.min_bytes, "Smallest size (K/M/G suffixes)")
      ->transform(CLI::AsSizeValue(false));
  app->add_option("--max-bytes", flags.max_bytes, "Largest size (K/M/G suffixes)")
      ->transform(CLI::AsSizeValue(false));
  app->add_option("--step-factor", flags.step_factor, "Size multiplier between rows")
      ->check(pszero::FiniteRange(1.01, 1024.0));
  app->add_option("--iters", flags.iters, "Timed iterations per size")
      ->check(CLI::Range(1, 1000000));
  app->add_option("--warmup", flags.warmup, "Untimed iterations per size")
      ->check(CLI::Range(0, 1000000));
  if (auto code = pszero::ParseFlags(*app, argc, argv)) return *code;
  if (flags.min_bytes < 4 || flags.max_bytes < flags.min_bytes) {
    std::cerr << "pszero-bench-mpi: error: --min-bytes must be >= 4 and <= --max-bytes\n";
    return pszero::kExitUsage;
  }

  MPI_Init(&argc, &argv);
  int rank = 0, n = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &n);

  nlohmann::json rows = nlohmann::json::array();
  for (double size = static_cast<double>(flags.min_bytes);
       size <= static_cast<double>(flags.max_bytes); size *= flags.step_factor) {
    // Whole floats, divisible by the rank count (as nccl-tests rounds).
    int64_t count = static_cast<int64_t>(size) / 4;
    count = std::max<int64_t>(n, count / n * n);
    std::vector<float> in(count, 1.0f + static_cast<float>(rank)), out(count, 0.0f);
    for (int i = 0; i < flags.warmup; ++i) RunOnce(flags.op, in, out, count, n);
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = MPI_Wtime();
    for (int i = 0; i < flags.iters; ++i) RunOnce(flags.op, in, out, count, n);
    const double local = (MPI_Wtime() - t0) / flags.iters;
    double seconds = 0;
    MPI_Reduce(&local, &seconds, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      const double bytes = static_cast<double>(count) * 4;
      const double algbw = bytes / seconds / 1e9;
      rows.push_back({{"bytes", count * 4},
                      {"count", count},
                      {"time_us", seconds * 1e6},
                      {"algbw_gbps", algbw},
                      {"busbw_gbps", algbw * BusFactor(flags.op, n)}});
    }
  }
  if (rank == 0) {
    nlohmann::json doc = {
        {"peer", "mpi"}, {"op", flags.op}, {"ranks", n}, {"dtype", "fp32"}, {"rows", rows}};
    std::cout << doc.dump(2) << std::endl;
  }
  MPI_Finalize();
  return 0;
}
