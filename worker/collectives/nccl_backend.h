// NcclBackend: the communicator's path for device (CUDA) tensors, on NCCL.
//
// One NCCL communicator over the same group of ranks as its Communicator. Group rank 0
// creates the NCCL unique id and publishes it in the job's KeyValueStore; the others look
// it up (the rendezvous swaps it, like UCX addresses). Ops run on the backend's own CUDA
// stream and are waited for with a deadline: while waiting, NCCL's asynchronous error is
// polled, and on an error or an expired deadline the NCCL communicator is aborted so that
// no rank hangs (Unavailable / DeadlineExceeded naming the op). ncclCommInitRank itself
// blocks without a deadline; the id lookup (and, in EnableNccl, DistinctGpus) first waits
// with one for every rank to get there, so only a peer dying inside NCCL's init can hang
// it, and the launcher's teardown ends that. In a build without CUDA,
// Create returns InvalidArgument and the class has no other use.
// Used by the thread that uses its Communicator.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "common/kv_store.h"
#include "common/tensor.h"
#include "worker/collectives/local_reduce.h"

namespace pszero::collectives {

class NcclBackend {
 public:
  // `key` must be the same on every rank of the group and unique in the job.
  static Result<std::unique_ptr<NcclBackend>> Create(KeyValueStore* store, const std::string& key,
                                                     int rank, int size, int cuda_device,
                                                     std::chrono::milliseconds timeout);
  // Collective over the same group: whether every rank has a GPU of its own. Each publishes
  // "<host>/<PCI bus id>" of `cuda_device` under `key` and reads the others'; NCCL refuses
  // a communicator with two ranks on one GPU ("Duplicate GPU detected"), so ranks that share
  // one keep their device tensors on the staged path. Every rank gets the same answer.
  // <host> is NCCL_HOSTID when set (as NCCL's own check takes it), else the host name.
  static Result<bool> DistinctGpus(KeyValueStore* store, const std::string& key, int rank, int size,
                                   int cuda_device, std::chrono::milliseconds timeout);
  // Gives this process a NCCL host of its own: NCCL_HOSTID becomes the current one (or
  // "pszero") + "-" + `name`, and NCCL's socket transport stays on loopback unless
  // NCCL_SOCKET_IFNAME says otherwise. NCCL then accepts ranks that share a GPU (a check
  // for one-GPU machines, docs/collectives.md). Before any NCCL call: NCCL hashes its host
  // once per process.
  static void UseOwnHostId(const std::string& name);
  ~NcclBackend();
  NcclBackend(const NcclBackend&) = delete;
  NcclBackend& operator=(const NcclBackend&) = delete;

  // Polled while an op waits: a failure (the communicator aborted by the control plane's
  // news of a lost peer) aborts the NCCL communicator and ends the op with it, instead of
  // waiting for the deadline.
  void set_health(std::function<Status()> health);

  // Same contracts as the Communicator ops, on device tensors.
  Status AllReduce(const Tensor& data, ReduceOp op, std::chrono::milliseconds timeout);
  Status ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op,
                       std::chrono::milliseconds timeout);
  Status AllGather(const Tensor& input, const Tensor& output, std::chrono::milliseconds timeout);
  Status Broadcast(const Tensor& data, int root, std::chrono::milliseconds timeout);
  Status AllToAllV(const Tensor& input, std::span<const int64_t> send_counts, const Tensor& output,
                   std::span<const int64_t> recv_counts, std::chrono::milliseconds timeout);

  struct Impl;

 private:
  explicit NcclBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pszero::collectives
