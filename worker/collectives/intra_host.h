// Single-copy collectives among the processes of one host (docs/collectives.md,
// "Intra-host path").
//
// When every member of a communicator runs on this host (same boot, same network, pid and
// mount view), ranks read each other's buffers directly with cross-memory attach
// (process_vm_readv: one copy, kernel to kernel, no staging through a FIFO) and order
// themselves through a small shared control block (a memfd made by rank 0 and opened by
// the others through /proc): per rank an op counter, the addresses of its buffers, a
// progress counter of reduced segments and a "done" counter, each a futex word, so a rank
// that waits sleeps in the kernel instead of spinning (four ranks on two cores must not
// spin).
//
// All-reduce: rank r reduces chunk r, segment by segment, pulling the segment of every
// peer into a cache-sized scratch slot and summing the N contributions in ascending rank
// order (the deterministic order, so this path is bit-identical to the deterministic
// algorithms on every rank, whatever the cut); then it pulls every other chunk from its
// owner as soon as the owner's progress counter says the segment is reduced. Each rank
// reads 2(N-1)/N * S bytes and serves the same, the ring's bound. Reduce-scatter,
// all-gather, broadcast and all-to-all(v) are the obvious halves and variants.
//
// An op ends when every rank has finished reading every other rank's buffers (the "done"
// counters), so a caller may reuse its buffers as soon as its op returns.
//
// Failure: a waiting rank checks every 20 ms whether a peer exited (pidfd), gave up on its
// op (a flag and a reason in its control slot, set by Abandon), or the communicator
// reported a failure (`health`), and gives up at the op's deadline naming the peer and
// what it waited for.
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

// What an op needs from its communicator while it waits.
struct IntraHostOp {
  std::string where;  // "allreduce #3 on comm 1 (rank 0 of 4)"
  std::chrono::steady_clock::time_point deadline;
  std::function<Status()> health;
  // Scratch memory of at least `bytes`, valid until the op returns.
  std::function<Result<std::byte*>(size_t bytes)> scratch;
};

// Bytes this rank pulled from its peers and served to them in one op.
struct IntraHostBytes {
  int64_t pulled = 0;
  int64_t served = 0;
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
  static Result<std::unique_ptr<IntraHostGroup>> Create(int rank, int n,
                                                        std::span<const int> global_ranks,
                                                        const AllGatherFn& allgather,
                                                        std::string* why_not);

  ~IntraHostGroup();
  IntraHostGroup(const IntraHostGroup&) = delete;
  IntraHostGroup& operator=(const IntraHostGroup&) = delete;

  // In place on data (count elements).
  Result<IntraHostBytes> AllReduce(void* data, int64_t count, DType dtype, ReduceOp op,
                                   size_t segment_bytes, const IntraHostOp& ctx);
  // input holds n blocks of block_count; output receives block rank().
  Result<IntraHostBytes> ReduceScatter(const void* input, void* output, int64_t block_count,
                                       DType dtype, ReduceOp op, size_t segment_bytes,
                                       const IntraHostOp& ctx);
  // output holds n blocks of block_bytes; block rank() is already in place.
  Result<IntraHostBytes> AllGather(const void* input, void* output, size_t block_bytes,
                                   const IntraHostOp& ctx);
  Result<IntraHostBytes> Broadcast(void* data, size_t bytes, int root, const IntraHostOp& ctx);
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
  // Copies `bytes` at `remote` in rank p's memory to `local`.
  Status Pull(int p, uint64_t remote, void* local, size_t bytes, const IntraHostOp& ctx) const;
  // Waits until rank p's futex word at `word` reaches `target` (wrap-around compare).
  Status WaitFor(int p, const uint32_t* word, uint32_t target, const char* what,
                 const IntraHostOp& ctx) const;
  Status PeerAlive(int p) const;
  // Ok, or the first dead peer, or the first peer that gave up.
  Status PeersHealthy() const;
  // The reduce half: chunk `chunk` of every rank's `input` (element offsets from
  // `chunk_begin`, `chunk_count` elements), summed in rank order into `out`, publishing
  // progress per segment when `publish` is set.
  Status ReduceChunk(const void* input, int64_t chunk_begin, int64_t chunk_count, void* out,
                     DType dtype, ReduceOp op, size_t segment_bytes, bool publish,
                     const IntraHostOp& ctx, IntraHostBytes& bytes);

  int rank_;
  int n_;
  std::byte* base_ = nullptr;  // the shared control block
  size_t map_bytes_ = 0;
  size_t slot_bytes_ = 0;
  uint32_t op_ = 0;        // ops run so far; every rank runs the same sequence
  uint32_t progress_ = 0;  // segments this rank has reduced and published, all ops
  std::unique_ptr<Peer[]> peers_;
  uint64_t cookie_ = 0;  // read by peers through cross-memory attach at set-up
};

}  // namespace pszero::collectives
