// Checked collective iterations shared by the multi-process tests (test process and
// collective_peer): every rank runs the same sequence, and every result is compared
// exactly with the value it must have (all inputs are small integers in fp32).
#pragma once

#include <string>

#include "common/kv_store.h"
#include "common/tensor.h"
#include "worker/collectives/communicator.h"

namespace pszero::testing {

// Value rank r holds at element j in iteration i.
inline float CheckInput(int r, int i, int64_t j) {
  return static_cast<float>((r + 1) * (i + 1) + j % 7);
}

// Where the iterations' buffers live: private memory (the intra-host path stages them),
// shared memory (it reads them in place), or fresh shared buffers every iteration (the
// peers map more allocations than they keep mapped).
enum class CheckBuffers { kPrivate, kShared, kFreshShared };

inline Result<Tensor> CheckTensor(int64_t count, CheckBuffers buffers) {
  if (buffers == CheckBuffers::kPrivate) {
    return Tensor::Empty({count}, DType::kFloat32, MemoryCategory::kOther, nullptr);
  }
  return Tensor::EmptyShared({count}, DType::kFloat32, MemoryCategory::kOther, nullptr);
}

// Runs `iterations` rounds (0: until an op fails) of allreduce, reduce_scatter,
// allgather and broadcast on `count` floats; after the first round the rank publishes
// "job/progress/<rank>" in `store` (may be null).
inline Status RunCheckedIterations(collectives::Communicator& comm, int iterations, int64_t count,
                                   KeyValueStore* store,
                                   CheckBuffers buffers = CheckBuffers::kPrivate) {
  const int n = comm.size(), r = comm.rank();
  count = count / n * n;
  PSZERO_ASSIGN_OR_RETURN(Tensor data, CheckTensor(count, buffers));
  PSZERO_ASSIGN_OR_RETURN(Tensor block, CheckTensor(count / n, buffers));
  for (int i = 0; iterations == 0 || i < iterations; ++i) {
    if (i > 0 && buffers == CheckBuffers::kFreshShared) {
      PSZERO_ASSIGN_OR_RETURN(data, CheckTensor(count, buffers));
      PSZERO_ASSIGN_OR_RETURN(block, CheckTensor(count / n, buffers));
    }
    float* d = data.data<float>();
    float* b = block.data<float>();
    auto expected = [&](int64_t j) {
      return static_cast<float>(n * (n + 1) / 2 * (i + 1) + n * (j % 7));
    };
    for (int64_t j = 0; j < count; ++j) d[j] = CheckInput(r, i, j);
    PSZERO_RETURN_IF_ERROR(comm.AllReduce(data, collectives::ReduceOp::kSum));
    for (int64_t j = 0; j < count; ++j) {
      if (d[j] != expected(j)) {
        return Status::Internal("allreduce iteration " + std::to_string(i) + " element " +
                                std::to_string(j) + " wrong");
      }
    }
    for (int64_t j = 0; j < count; ++j) d[j] = CheckInput(r, i, j);
    PSZERO_RETURN_IF_ERROR(comm.ReduceScatter(data, block, collectives::ReduceOp::kSum));
    for (int64_t j = 0; j < count / n; ++j) {
      if (b[j] != expected(r * (count / n) + j)) {
        return Status::Internal("reduce_scatter iteration " + std::to_string(i) + " wrong");
      }
    }
    PSZERO_RETURN_IF_ERROR(comm.AllGather(block, data));
    for (int64_t j = 0; j < count; ++j) {
      if (d[j] != expected(j)) {
        return Status::Internal("allgather iteration " + std::to_string(i) + " wrong");
      }
    }
    const int root = i % n;
    for (int64_t j = 0; j < count; ++j) d[j] = CheckInput(r, i, j);
    PSZERO_RETURN_IF_ERROR(comm.Broadcast(data, root));
    for (int64_t j = 0; j < count; ++j) {
      if (d[j] != CheckInput(root, i, j)) {
        return Status::Internal("broadcast iteration " + std::to_string(i) + " wrong");
      }
    }
    if (i == 0 && store != nullptr) {
      PSZERO_RETURN_IF_ERROR(store->Set("job/progress/" + std::to_string(r), "1"));
    }
  }
  return Status::Ok();
}

}  // namespace pszero::testing
