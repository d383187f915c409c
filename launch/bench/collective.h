// The measurement behind `pszero-bench collective`: one rank's side of an nccl-tests style
// sweep over sizes, run by every rank of a local job, and the table it prints.
//
// Sizes are the full array S in bytes (the all-reduce/broadcast buffer, the
// reduce-scatter input, the all-gather output, the all-to-all send buffer); the element
// count is S / element size rounded down to a multiple of the rank count. Time is the mean
// over the timed iterations, maximum over ranks; algbw = S / time, busbw = algbw times
// 2(n-1)/n for allreduce, (n-1)/n for reduce_scatter, allgather and alltoall, 1 for
// broadcast (nccl-tests' definitions).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/status.h"
#include "worker/collectives/communicator.h"

namespace pszero::bench {

struct CollectiveSweep {
  std::string op = "allreduce";  // allreduce|reduce_scatter|allgather|broadcast|alltoall
  std::vector<size_t> sizes;
  DType dtype = DType::kFloat32;
  collectives::ReduceOp reduce = collectives::ReduceOp::kSum;
  int iters = 20;
  int warmup = 5;
  bool check = false;
  Device device = Device::kHost;  // kCuda: device buffers (NCCL when the comm has it)
  bool shared_buffers = true;     // host buffers from Tensor::EmptyShared
  // reduce_scatter: the output is block rank of the input; allgather: the input is block
  // rank of the output (nccl-tests' in-place columns).
  bool in_place = false;
};

struct CollectiveRow {
  int64_t bytes = 0;
  int64_t count = 0;
  double time_us = 0;
  double algbw_gbps = 0;
  double busbw_gbps = 0;
  int64_t wrong = -1;       // elements off the reference; -1 when not checked
  uint64_t bytes_sent = 0;  // by rank 0 in one op, from the communicator counters
  // By rank 0 in one op over the transport (the intra-host path's bytes excluded): with
  // emulated hosts and the hierarchical all-reduce, what crosses the host link.
  uint64_t transport_bytes_sent = 0;
};

double BusFactor(const std::string& op, int n);

// Every rank calls this with the same sweep; all ranks get the same rows.
Result<std::vector<CollectiveRow>> RunCollectiveSweep(collectives::Communicator& comm,
                                                      const CollectiveSweep& sweep);

nlohmann::json ToJson(const std::vector<CollectiveRow>& rows);
Result<std::vector<CollectiveRow>> RowsFromJson(const nlohmann::json& rows);

}  // namespace pszero::bench
