// Communicator: collectives over a group of ranks (the world, or a subgroup made by
// Split, as MPI_Comm_split), written only against the Transport interface.
//
// Ops: AllReduce (in place), ReduceScatter, AllGather, Broadcast, AllToAll(V), Barrier,
// on tensors of fp32, bf16, fp16 (fp32 arithmetic), int32, int64 with sum, avg, max.
// Host tensors take the UCX algorithms below. Device (CUDA) tensors go through NCCL once
// EnableNccl was called, and are otherwise staged through host memory (as they are under
// `deterministic`, which NCCL cannot honour).
// Algorithms (docs/collectives.md):
//  * ring for large messages: the array is cut into N chunks and each chunk into segments;
//    every segment travels its own ring, several segments are in flight at once, and the
//    reduction of one segment overlaps the transfer of the others. Each rank sends
//    2(N-1)/N * S bytes for an all-reduce of S bytes, (N-1)/N * S for reduce-scatter and
//    all-gather.
//  * direct (one round, latency-optimal on a host) at or below small_message_bytes.
//  * deterministic: every element summed in ascending rank order in fp32 (reduce-scatter
//    by direct exchange, then the ring all-gather): bit-identical on every rank and for
//    every segment size, at the ring's byte count.
//  * hierarchical all-reduce, reduce-scatter and all-gather, for a group whose members sit
//    L >= 2 to a host on H >= 2 hosts. All-reduce: intra-host reduce-scatter, L inter-host
//    all-reduces of S/L bytes in parallel (one sub-communicator per local index),
//    intra-host all-gather; a host's link carries 2(H-1)/H * S bytes out instead of the
//    flat ring's 2(N-1)/N * S. Reduce-scatter (S the input) is the intra-host then the
//    inter-host reduce-scatter, all-gather (S the output) the inter-host then the
//    intra-host all-gather, each (H-1)/H * S per host link instead of (N-1)/N * S. Not
//    under `deterministic` (it changes the summation order).
//
// Threading: a Communicator is used by the thread that uses its Transport (one at a
// time). Every rank of the group must call the same ops in the same order (as in MPI and
// NCCL); communicators made from one World share a comm-id allocator so their messages
// never match each other's. Every op has a deadline; a failure names the op, the step and
// the peer (Unavailable when a peer died, DeadlineExceeded when one is stuck).
//
// Failure of any member, not only of a ring neighbour, ends every op of the group: a
// communicator connects to all its members when it is made (so the transport watches
// each of them), checks their health whenever it waits, and Abort() lets the control
// plane's failure news end a pending op from another thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "common/kv_store.h"
#include "common/memory.h"
#include "common/tensor.h"
#include "common/transport.h"
#include "worker/collectives/local_reduce.h"

namespace pszero::collectives {

class NcclBackend;
class IntraHostGroup;
struct IntraHostOp;
struct IntraHostBytes;

struct CommunicatorOptions {
  // Deadline of one whole op.
  std::chrono::milliseconds timeout{120000};
  // Pipelining unit of the ring and of broadcast.
  size_t segment_bytes = size_t{512} << 10;
  // Segment rings (or broadcast segments) in flight at once.
  int segments_in_flight = 4;
  // Messages of at most this many bytes (the whole array) use the direct algorithms.
  size_t small_message_bytes = size_t{32} << 10;
  // Sums in ascending rank order (see above).
  bool deterministic = false;
  // Where scratch (comm buffer) memory is accounted; may be null.
  MemoryTracker* tracker = nullptr;
  // Host arrays above intra_host_min_bytes take the shared-memory intra-host path
  // (intra_host.h) when every member runs on this host; PSZERO_INTRA_HOST=0 in the
  // environment turns it off for every communicator. Measured faster than the direct
  // algorithm over UCX from 1 KiB up (docs/collectives.md), hence the 0 switch point.
  bool intra_host = true;
  size_t intra_host_min_bytes = 0;
  // The piece of an intra-host round each rank reduces; a round stages N pieces per rank
  // (double-buffered windows of 2(N+1) pieces per rank, meant to stay in the LLC).
  size_t intra_host_segment_bytes = size_t{512} << 10;
  // Intra-host ops of at least this many bytes first exchange where each rank's buffer
  // lies; when every buffer is shared host memory (Tensor::EmptyShared) the op reads the
  // peers' buffers in place (single copy) instead of staging them.
  size_t intra_host_single_copy_min_bytes = size_t{64} << 10;
  // Host all-reduces, reduce-scatters and all-gathers above hierarchical_min_bytes (the
  // whole array: the reduce-scatter's input, the all-gather's output) of a group spanning
  // H >= 2 hosts with the same number L >= 2 of members on each take the hierarchical
  // algorithms (above), unless `deterministic`; PSZERO_HIERARCHICAL=0 in the environment
  // turns them off for every communicator. Irregular layouts keep the flat algorithms.
  // Measured no slower than the flat ones from 1 KiB up on emulated hosts
  // (docs/collectives.md), hence the 0.
  bool hierarchical = true;
  size_t hierarchical_min_bytes = 0;
  // Tests only (never set in production): when >= 0 on every rank, the host this rank
  // claims to be on, in place of its boot id and namespaces (intra_host.h, HostIdentity),
  // for both the intra-host and the hierarchical decisions; lets ranks of one process pose
  // as several hosts.
  int64_t test_host_id = -1;
};

class Communicator {
 public:
  // The group of all transport ranks, comm id 0. Create one World per transport.
  static Result<std::unique_ptr<Communicator>> World(Transport* transport,
                                                     const CommunicatorOptions& options = {});

  // Collective over this communicator: ranks passing the same color form a new
  // communicator, ordered by (key, rank here). A negative color takes part but gets
  // nullptr (MPI_UNDEFINED).
  Result<std::unique_ptr<Communicator>> Split(int color, int key);

  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return static_cast<int>(ranks_.size()); }
  // Transport rank of group rank `r`.
  int global_rank(int r) const { return ranks_[r]; }
  uint32_t id() const { return id_; }
  const CommunicatorOptions& options() const { return options_; }
  void set_options(const CommunicatorOptions& options) { options_ = options; }
  Transport* transport() const { return transport_; }

  // Collective: creates the NCCL communicator for this group on `cuda_device`, swapping
  // NCCL's unique id through `store` under a key made of `job_key`, this comm's id and its
  // members' transport ranks (distinct groups of one split share an id). Communicators of
  // different worlds (transports) need different `job_key`s.
  // When two ranks share one GPU (more workers than GPUs on a host), which NCCL refuses,
  // it leaves NCCL off (logged; nccl_enabled() false, device tensors staged).
  // InvalidArgument in a build without CUDA.
  Status EnableNccl(KeyValueStore* store, const std::string& job_key, int cuda_device);
  bool nccl_enabled() const { return nccl_ != nullptr; }

  // In place on `data`.
  Status AllReduce(const Tensor& data, ReduceOp op);
  // input.numel() == size() * output.numel(); rank r gets block r of the reduction.
  Status ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op);
  // output.numel() == size() * input.numel(); block r of output is rank r's input. The
  // input may be block rank() of output (in place).
  Status AllGather(const Tensor& input, const Tensor& output);
  // data of `root` to everyone.
  Status Broadcast(const Tensor& data, int root);
  // Block p of input goes to rank p and arrives as block rank() of its output; both
  // numel divisible by size().
  Status AllToAll(const Tensor& input, const Tensor& output);
  // Packed blocks: send_counts[p] elements to rank p, recv_counts[p] from rank p.
  Status AllToAllV(const Tensor& input, std::span<const int64_t> send_counts, const Tensor& output,
                   std::span<const int64_t> recv_counts);
  Status Barrier();

  // Whether host ops above small_message_bytes take the intra-host path: set up by the
  // first such op (collective), so false before it. `intra_host_why_not()` says why not.
  bool intra_host_active() const { return intra_host_ != nullptr; }
  const std::string& intra_host_why_not() const { return intra_host_why_not_; }
  // Whether host all-reduces, reduce-scatters and all-gathers above hierarchical_min_bytes
  // take the hierarchical path: set up by the first such op (collective), so false before
  // it; `hierarchical_why_not()` says why not. hierarchical_hosts() is H (0 when not active).
  bool hierarchical_active() const { return hier_ != nullptr; }
  const std::string& hierarchical_why_not() const { return hier_why_not_; }
  int hierarchical_hosts() const;
  // Intra-host ops that read the peers' shared buffers in place, since this was made.
  int64_t single_copy_ops() const { return single_copy_ops_.load(std::memory_order_relaxed); }

  // Payload bytes this communicator's ops have posted to send and to receive, all ops
  // together since it was made (thread-safe to read; take differences around ops).
  int64_t bytes_sent() const { return bytes_sent_.load(std::memory_order_relaxed); }
  int64_t bytes_received() const { return bytes_received_.load(std::memory_order_relaxed); }

  // Ends every pending and later op with `reason` (thread-safe; e.g. from the control
  // plane's PeerLost news).
  void Abort(const Status& reason);

 private:
  struct IdAllocator;
  struct OpContext;
  struct Hierarchy;

  Communicator(Transport* transport, std::vector<int> ranks, int rank, uint32_t id,
               std::shared_ptr<IdAllocator> ids, const CommunicatorOptions& options);

  OpContext BeginOp(const char* name);
  // Connects to every member (collective only in the sense that all must exist).
  Status ConnectMembers();
  // Ok, or why the group cannot go on (an aborted communicator, a failed member).
  Status Health() const;
  // Scratch memory of at least `bytes`, reused across ops.
  Result<std::byte*> Scratch(size_t bytes);
  // transport_->Send / Recv, counted.
  Result<Request> PostSend(int peer, uint64_t tag, const void* data, size_t bytes);
  Result<Request> PostRecv(int peer, uint64_t tag, void* data, size_t bytes);

  // The intra-host group when an op of `bytes` should take it (sets it up on first use;
  // every rank decides alike), else nullptr.
  Result<IntraHostGroup*> IntraHost(size_t bytes);
  // Each member's host (dense indices in order of first appearance), exchanged once
  // (collective): HostIdentity, or test_host_id when set.
  Result<const std::vector<int>*> MemberHosts();
  // The hierarchy when an all-reduce, reduce-scatter or all-gather of `bytes` should take
  // it (sets it up on first use: collective, every rank decides alike), else nullptr.
  Result<Hierarchy*> Hierarchical(size_t bytes);
  Status HierarchicalAllReduce(OpContext& op, Hierarchy& h, std::byte* data, int64_t count,
                               DType dtype, ReduceOp reduce);
  // `block` elements per rank; the output may alias the input (in place). Both regroup
  // the blocks through this communicator's Scratch (the sub-communicators have their own).
  Status HierarchicalReduceScatter(OpContext& op, Hierarchy& h, const std::byte* input,
                                   std::byte* output, int64_t block, DType dtype, ReduceOp reduce);
  Status HierarchicalAllGather(OpContext& op, Hierarchy& h, const std::byte* input,
                               std::byte* output, int64_t block, DType dtype);
  // Runs the steps of one hierarchical op on h's sub-communicators (configured from this
  // one's options), adds their bytes to this communicator's and marks a failure in the
  // flight recorder.
  Status RunHierarchical(OpContext& op, Hierarchy& h, const std::function<Status()>& steps);
  // Gives `sub` what is left of op's deadline for its next step.
  static Status StepDeadline(const OpContext& op, Communicator& sub);
  // Runs one intra-host op with this communicator's deadline, health and scratch, and
  // counts its bytes.
  Status RunIntraHost(OpContext& op,
                      const std::function<Result<IntraHostBytes>(const IntraHostOp&)>& body);

  Status RingReduceScatterAllGather(OpContext& op, const std::byte* input, std::byte* rs_out,
                                    std::byte* ag_buf, int64_t count, DType dtype, ReduceOp reduce,
                                    bool do_rs, bool do_ag);
  Status DirectAllReduce(OpContext& op, std::byte* data, int64_t count, DType dtype,
                         ReduceOp reduce);
  Status DirectAllGather(OpContext& op, const std::byte* input, std::byte* output,
                         int64_t block_count, DType dtype);
  Status DirectReduceScatter(OpContext& op, const std::byte* input, std::byte* output,
                             int64_t count, DType dtype, ReduceOp reduce);
  Status Exchange(OpContext& op, const std::byte* input, std::span<const int64_t> send_bytes,
                  std::byte* output, std::span<const int64_t> recv_bytes);

  // Device tensors without NCCL (or under `deterministic`): host copies, the host op,
  // copies back.
  bool UseNccl(const Tensor& t) const;
  // Runs one NCCL op as an op of this communicator (flight recorder, deadline) and counts
  // the bytes NCCL's ring moves for it (NCCL does not report its traffic): `sent` and
  // `received` per rank.
  Status RunNccl(const char* name, int64_t sent, int64_t received,
                 const std::function<Status()>& body);
  // A device op of a group of one: output = input (nothing when they are the same).
  static Status CopyUnlessSame(const Tensor& input, const Tensor& output);
  Status StagedAllReduce(const Tensor& data, ReduceOp op);
  Status StagedReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op);
  Status StagedAllGather(const Tensor& input, const Tensor& output);
  Status StagedBroadcast(const Tensor& data, int root);
  Status StagedAllToAllV(const Tensor& input, std::span<const int64_t> send_counts,
                         const Tensor& output, std::span<const int64_t> recv_counts);
  Result<Tensor> HostCopy(const Tensor& t);
  Result<Tensor> HostBuffer(const Tensor& like);

  Transport* transport_;
  std::unique_ptr<NcclBackend> nccl_;
  std::unique_ptr<IntraHostGroup> intra_host_;
  bool intra_host_decided_ = false;
  MemoryTracker* intra_host_tracker_ = nullptr;
  std::string intra_host_why_not_;
  std::atomic<int64_t> single_copy_ops_{0};
  std::vector<int> member_hosts_;  // empty until MemberHosts() ran
  std::unique_ptr<Hierarchy> hier_;
  bool hier_decided_ = false;
  std::string hier_why_not_;
  // A sub-communicator of a hierarchy: its waits also check the parent's health (every
  // member of the whole group, and the parent's Abort).
  const Communicator* health_parent_ = nullptr;
  std::vector<int> ranks_;  // transport rank of each group rank
  int rank_;
  uint32_t id_;
  uint32_t op_seq_ = 0;
  std::shared_ptr<IdAllocator> ids_;
  CommunicatorOptions options_;
  Tensor scratch_;
  mutable std::mutex abort_mu_;
  std::atomic<bool> aborted_{false};
  std::atomic<int64_t> bytes_sent_{0};
  std::atomic<int64_t> bytes_received_{0};
  Status abort_reason_;
};

}  // namespace pszero::collectives
