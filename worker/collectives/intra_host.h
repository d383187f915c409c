// Shared-memory collectives among the processes of one host (docs/collectives.md,
// "Intra-host path").
//
// When every member of a communicator runs on this host (same boot, same network, pid and
// mount view), the ranks share one memfd made by rank 0 and opened by the others through
// /proc: a control slot per rank (futex words: rounds staged, reduced, drained) and a
// staging window per rank. An op is cut into rounds; in each round every rank copies the
// pieces its peers need into its window once, each rank reduces its own piece reading
// the N contributions straight from the peers' windows in ascending rank order (the
// deterministic order: this path is bit-identical to the deterministic algorithms on
// every rank, whatever the cut), and every rank copies the reduced pieces into place.
// Windows are double-buffered (round t+1 is staged while the peers reduce round t);
// DeepSpeed's CPU shm all-reduce and Open MPI's coll/sm work this way. Ops of 8 MiB and
// more stage with streaming stores (through DRAM, not the writer's cache).
//
// Single copy: when every rank's buffer lies in shared host memory (Tensor::EmptyShared,
// common/shared_host_memory.h), an op of at least IntraHostOp::single_copy_min_bytes
// maps the peers' buffers read-only and reads them in place, with no staging: the
// registered buffers of NCCL on a host. Each rank serves its peers, and reads from them, exactly
// the ring's bound: 2(N-1)/N * S for an all-reduce, (N-1)/N * S for reduce-scatter and all-gather.
// All-to-all(v) reads the peers' inputs with cross-memory attach (process_vm_readv) where the
// kernel allows it.
//
// Waiting: pause-spinning (~50 µs when every rank has a core of its own, a few µs when
// ranks share cores), then a sleep on the futex (four ranks on two cores must not spin). Counters
// are running totals over all ops, so nothing is reset between ops and an op returns as soon as its
// own last round is done.
//
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "common/dtype.h"
#include "common/status.h"
#include "worker/collectives/local_reduce.h"

namespace pszero::collectives {

// Where a process runs, as the intra-host path tells hosts apart: two processes are on one
// host when the kernel's boot id and their network, pid and mount namespaces all match (an
// emulated host -- a network namespace of its own -- is another host). The hierarchical
// all-reduce (communicator.h) groups a communicator's members by it.
struct HostIdentity {
  uint64_t boot = 0;  // hash of /proc/sys/kernel/random/boot_id
  uint64_t net_ns = 0;
  uint64_t pid_ns = 0;
  uint64_t mnt_ns = 0;
  bool operator==(const HostIdentity&) const = default;
};
HostIdentity ThisHost();

// What an op needs from its communicator while it waits.
struct IntraHostOp {
  std::string where;  // "allreduce #3 on comm 1 (rank 0 of 4)"
  std::chrono::steady_clock::time_point deadline;
  std::function<Status()> health;
  // Scratch memory of at least `bytes`, valid until the op returns.
  std::function<Result<std::byte*>(size_t bytes)> scratch;
  // Ops of at least this many bytes read the peers' buffers in place when every rank's
  // lies in shared memory (every rank passes the same value).
  size_t single_copy_min_bytes = size_t{64} << 10;
};

// Bytes this rank pulled from its peers and served to them in one op.
struct IntraHostBytes {
  int64_t pulled = 0;
  int64_t served = 0;
  bool single_copy = false;  // read the peers' buffers in place
};

class IntraHostGroup {
 public:
  // Exchanges `record` (the same size on every rank) with every rank of the group:
  // `out` receives rank p's record at p * record.size().
  using AllGatherFn =
      std::function<Status(std::span<const std::byte> record, std::span<std::byte> out)>;

  // Collective over the n ranks of a communicator. Returns nullptr with `why_not` set
  // when the path cannot be used by every rank (another host, no cross-memory attach, a
  // /proc that does not show the peers); an error Status only when the exchange failed.
  // `global_ranks` name the ranks in messages.
  // `segment_bytes`: the piece of a round each rank reduces (rounded to 64 bytes and
  // capped so that a rank's window stays within 16 MiB).
  static Result<std::unique_ptr<IntraHostGroup>> Create(int rank, int n,
                                                        std::span<const int> global_ranks,
                                                        size_t segment_bytes,
                                                        const AllGatherFn& allgather,
                                                        std::string* why_not);

  ~IntraHostGroup();
  IntraHostGroup(const IntraHostGroup&) = delete;
  IntraHostGroup& operator=(const IntraHostGroup&) = delete;

  // In place on data (count elements).
  Result<IntraHostBytes> AllReduce(void* data, int64_t count, DType dtype, ReduceOp op,
                                   const IntraHostOp& ctx);
  // input holds n blocks of block_count; output (which may be block rank() of input)
  // receives block rank().
  Result<IntraHostBytes> ReduceScatter(const void* input, void* output, int64_t block_count,
                                       DType dtype, ReduceOp op, const IntraHostOp& ctx);
  // output holds n blocks of block_bytes; input is this rank's block (it may be block
  // rank() of output).
  Result<IntraHostBytes> AllGather(const void* input, void* output, size_t block_bytes,
                                   const IntraHostOp& ctx);
  Result<IntraHostBytes> Broadcast(void* data, size_t bytes, int root, const IntraHostOp& ctx);
  // Whether AllToAllV may be used: it reads the peers' inputs with cross-memory attach
  // (process_vm_readv), which a seccomp profile or Yama may forbid.
  bool can_alltoall() const { return cma_; }
  // Shared memory this rank's part of the group takes (its control slot and window).
  size_t own_bytes() const { return slot_bytes_ + window_bytes_; }
  // Packed blocks, byte counts per peer; the block to self is copied by the caller.
  Result<IntraHostBytes> AllToAllV(const void* input, std::span<const int64_t> send_bytes,
                                   void* output, std::span<const int64_t> recv_bytes,
                                   const IntraHostOp& ctx);

  // After an op failed here: tells the peers (who stop waiting for this rank and report
  // `reason`); the group is unusable from then on.
  void Abandon(const Status& reason);

 private:
  struct Peer;
  struct Slot;
  class OpScope;

  IntraHostGroup(int rank, int n);

  Slot* slot(int p) const;
  // Stores `value` in this rank's `word` and wakes its waiters (in any process), with a
  // system call only when a peer sleeps on this rank's slot (its sleeper count).
  // Sequentially consistent against the waiter's increment-then-recheck: either the
  // waiter sees the value or this rank sees the sleeper.
  void Publish(uint32_t Slot::*word, uint32_t value) const;
  // After rank p published its buffer: maps it (cached) when it lies in shared memory.
  Status MapPeerBuffer(int p, const IntraHostOp& ctx);
  // An all-reduce reading every rank's buffer in place (all published and mapped).
  Result<IntraHostBytes> SingleCopyAllReduce(OpScope& scope, void* data, int64_t count, DType dtype,
                                             ReduceOp op, const IntraHostOp& ctx);
  // Copies `bytes` at `remote` in rank p's memory to `local`.
  Status Pull(int p, uint64_t remote, void* local, size_t bytes, const IntraHostOp& ctx) const;
  // Waits until rank p's futex word at `word` reaches `target` (wrap-around compare).
  Status WaitFor(int p, const uint32_t* word, uint32_t target, const char* what,
                 const IntraHostOp& ctx) const;
  Status PeerAlive(int p) const;
  // Ok, or the first dead peer, or the first peer that gave up.
  Status PeersHealthy() const;
  // Rank p's window slot for round `round` (n input pieces, then the result piece).
  std::byte* window(int p, uint32_t round) const;
  // Waits until every peer's `counter` reaches `target`.
  Status WaitAll(uint32_t Slot::*counter, uint32_t target, const char* what,
                 const IntraHostOp& ctx) const;
  // Waits until round t may overwrite its window slot (every peer drained round t - 2).
  Status BeginRound(uint32_t t, const IntraHostOp& ctx) const;
  // The round loop of every windowed op: `stage(i, window)` fills our window slot for
  // round i (when `stages`; round i+1 is staged before round i is consumed),
  // `consume(i, t)` does round i (global round number t), then the round is drained.
  Status RunRounds(int64_t rounds, bool stages,
                   const std::function<void(int64_t, std::byte*)>& stage,
                   const std::function<Status(int64_t, uint32_t)>& consume, const IntraHostOp& ctx);

  int rank_;
  int n_;
  std::byte* base_ = nullptr;  // the shared block: control slots, then one window per rank
  size_t map_bytes_ = 0;
  size_t slot_bytes_ = 0;
  size_t piece_bytes_ = 0;
  size_t window_bytes_ = 0;
  size_t windows_offset_ = 0;
  uint32_t op_ = 0;        // ops on published buffers run so far; every rank runs the same sequence
  uint64_t map_uses_ = 0;  // clock of the peer mappings' least-recently-used order
  uint32_t round_ = 0;     // rounds run so far, all ops; every rank runs the same sequence
  bool cma_ = true;
  // Spinning before a futex sleep (longer with a core per rank).
  std::chrono::nanoseconds spin_{2000};
  std::unique_ptr<Peer[]> peers_;
  uint64_t cookie_ = 0;  // read by peers through cross-memory attach at set-up
};

}  // namespace pszero::collectives
