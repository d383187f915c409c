#include "worker/collectives/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <tuple>
#include <utility>

#include <glog/logging.h>

#include "worker/collectives/flight_recorder.h"
#include "worker/collectives/intra_host.h"
#include "worker/collectives/nccl_backend.h"

namespace pszero::collectives {

// Comm ids of every communicator made from one World, shared by them (one rank's view).
// A new communicator takes the largest next id of its members, so its id differs from
// every id any of its members already uses.
struct Communicator::IdAllocator {
  uint32_t next = 1;  // 0 is the World
};

// The two-level view of a group spanning hosts (docs/collectives.md, "Hierarchical").
struct Communicator::Hierarchy {
  int hosts = 0;       // H
  int local_size = 0;  // L, members on every host
  int local_rank = 0;  // this rank's index among its host's members (ascending group rank)
  std::unique_ptr<Communicator> intra;  // the L members on this host; rank = local_rank
  std::unique_ptr<Communicator> inter;  // the H members with this local index
  // slot[p] = l * H + i for group rank p of local index l and inter rank i: where p's block
  // lies in the (local index, inter rank) order the reduce-scatter and all-gather work in.
  std::vector<int> slot;
};

namespace {

using Clock = std::chrono::steady_clock;

int Mod(int a, int n) { return ((a % n) + n) % n; }

// Elements [begin, begin + count) of a host array of `dtype` at `base`, as a tensor.
Tensor HostSpan(const std::byte* base, int64_t begin, int64_t count, DType dtype) {
  return Tensor::Wrap(const_cast<std::byte*>(base) + begin * static_cast<int64_t>(DTypeSize(dtype)),
                      {count}, dtype, Device::kHost);
}

// N chunks of a count, each cut into `segments` segments; balanced (sizes differ by at
// most one element, larger ones first).
struct Layout {
  int64_t count;
  int n;
  int segments;

  int64_t ChunkBegin(int c) const {
    const int64_t q = count / n, rem = count % n;
    return c * q + std::min<int64_t>(c, rem);
  }
  int64_t ChunkSize(int c) const { return ChunkBegin(c + 1) - ChunkBegin(c); }
  int64_t SegBegin(int c, int g) const {
    const int64_t cs = ChunkSize(c), q = cs / segments, rem = cs % segments;
    return ChunkBegin(c) + g * q + std::min<int64_t>(g, rem);
  }
  int64_t SegSize(int c, int g) const { return SegBegin(c, g + 1) - SegBegin(c, g); }
};

int SegmentsFor(int64_t largest_piece_bytes, size_t segment_bytes) {
  const int64_t seg = std::max<int64_t>(1, static_cast<int64_t>(segment_bytes));
  return static_cast<int>(std::max<int64_t>(1, (largest_piece_bytes + seg - 1) / seg));
}

Status CheckTensor(const Tensor& t, const char* what) {
  if (t.device() != Device::kHost) {
    return Status::Internal(std::string(what) + ": device tensor on the host path");
  }
  if (!t.is_contiguous()) return Status::InvalidArgument(std::string(what) + " must be contiguous");
  return Status::Ok();
}

bool OnDevice(const Tensor& t) { return t.device() == Device::kCuda; }

}  // namespace

// One op in progress: its name, tag sequence and deadline, and how it names itself.
// The flight recorder's entry of one op: ended (with the bytes this communicator sent
// meanwhile) when the op's context goes away, whatever way the op returns.
class OpRecordHandle {
 public:
  OpRecordHandle(uint64_t id, const std::atomic<int64_t>* sent)
      : id_(id), sent_(sent), sent_at_start_(sent->load(std::memory_order_relaxed)) {}
  OpRecordHandle(OpRecordHandle&& o) noexcept
      : id_(std::exchange(o.id_, 0)),
        sent_(o.sent_),
        sent_at_start_(o.sent_at_start_),
        failed_(o.failed_) {}
  OpRecordHandle(const OpRecordHandle&) = delete;
  OpRecordHandle& operator=(const OpRecordHandle&) = delete;
  OpRecordHandle& operator=(OpRecordHandle&&) = delete;
  ~OpRecordHandle() {
    if (id_ != 0) {
      FlightRecorder::Get().End(id_, sent_->load(std::memory_order_relaxed) - sent_at_start_,
                                !failed_ && std::uncaught_exceptions() == 0);
    }
  }
  void Fail() { failed_ = true; }

 private:
  uint64_t id_;
  const std::atomic<int64_t>* sent_;
  int64_t sent_at_start_;
  bool failed_ = false;
};

struct Communicator::OpContext {
  const char* name;
  uint32_t seq;
  Clock::time_point deadline;
  std::string where;  // "allreduce #12 on comm 0 (rank 1 of 4)"
  OpRecordHandle record;

  uint64_t Tag(uint32_t comm_id, uint32_t segment) const { return MakeTag(comm_id, seq, segment); }
  // Passes `s` on; a failure marks the op FAILED in the flight recorder.
  Status Finish(Status s) {
    if (!s.ok()) record.Fail();
    return s;
  }
};

Communicator::OpContext Communicator::BeginOp(const char* name) {
  const uint32_t seq = op_seq_++;
  OpContext op{
      name,
      seq,
      Clock::now() + options_.timeout,
      {},
      OpRecordHandle(FlightRecorder::Get().Begin(id_, seq, rank_, size(), name), &bytes_sent_)};
  op.where = std::string(name) + " #" + std::to_string(op.seq) + " on comm " + std::to_string(id_) +
             " (rank " + std::to_string(rank_) + " of " + std::to_string(size()) + ")";
  return op;
}

Communicator::Communicator(Transport* transport, std::vector<int> ranks, int rank, uint32_t id,
                           std::shared_ptr<IdAllocator> ids, const CommunicatorOptions& options)
    : transport_(transport),
      ranks_(std::move(ranks)),
      rank_(rank),
      id_(id),
      ids_(std::move(ids)),
      options_(options) {}

Communicator::~Communicator() {
  if (intra_host_ != nullptr && intra_host_tracker_ != nullptr) {
    intra_host_tracker_->OnFree(MemoryCategory::kCommBuffers, Device::kHost,
                                static_cast<int64_t>(intra_host_->own_bytes()));
  }
}

Result<std::unique_ptr<Communicator>> Communicator::World(Transport* transport,
                                                          const CommunicatorOptions& options) {
  if (transport == nullptr) return Status::InvalidArgument("Communicator::World without transport");
  std::vector<int> ranks(transport->world_size());
  std::iota(ranks.begin(), ranks.end(), 0);
  std::unique_ptr<Communicator> comm(new Communicator(
      transport, std::move(ranks), transport->rank(), 0, std::make_shared<IdAllocator>(), options));
  PSZERO_RETURN_IF_ERROR(comm->ConnectMembers());
  return comm;
}

Status Communicator::ConnectMembers() {
  for (int p = 0; p < size(); ++p) {
    if (p == rank_) continue;
    PSZERO_RETURN_IF_ERROR(transport_->Connect(ranks_[p]).WithContext(
        "communicator " + std::to_string(id_) + ": connecting to rank " + std::to_string(p)));
  }
  return Status::Ok();
}

void Communicator::Abort(const Status& reason) {
  std::lock_guard lock(abort_mu_);
  if (aborted_) return;
  abort_reason_ = reason.ok() ? Status::Unavailable("communicator aborted") : reason;
  aborted_ = true;
}

int Communicator::hierarchical_hosts() const { return hier_ != nullptr ? hier_->hosts : 0; }

Status Communicator::Health() const {
  if (aborted_) {
    std::lock_guard lock(abort_mu_);
    return abort_reason_;
  }
  if (health_parent_ != nullptr) PSZERO_RETURN_IF_ERROR(health_parent_->Health());
  for (int p = 0; p < size(); ++p) {
    if (p == rank_) continue;
    PSZERO_RETURN_IF_ERROR(transport_->PeerStatus(ranks_[p]));
  }
  return Status::Ok();
}

Result<Request> Communicator::PostSend(int peer, uint64_t tag, const void* data, size_t bytes) {
  bytes_sent_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  return transport_->Send(peer, tag, data, bytes);
}

Result<Request> Communicator::PostRecv(int peer, uint64_t tag, void* data, size_t bytes) {
  bytes_received_.fetch_add(static_cast<int64_t>(bytes), std::memory_order_relaxed);
  return transport_->Recv(peer, tag, data, bytes);
}

Result<IntraHostGroup*> Communicator::IntraHost(size_t bytes) {
  if (!options_.intra_host || size() == 1 || bytes <= options_.intra_host_min_bytes) {
    return nullptr;
  }
  if (!intra_host_decided_) {
    const char* env = std::getenv("PSZERO_INTRA_HOST");
    const bool off = env != nullptr && std::string(env) == "0";
    // Ranks posing as hosts (tests): their claim decides, before the real check.
    const std::vector<int>* hosts = nullptr;
    if (!off && options_.test_host_id >= 0) {
      PSZERO_ASSIGN_OR_RETURN(hosts, MemberHosts());
    }
    if (off) {
      intra_host_why_not_ = "PSZERO_INTRA_HOST=0";
    } else if (hosts != nullptr && *std::max_element(hosts->begin(), hosts->end()) > 0) {
      const int p = static_cast<int>(std::find(hosts->begin(), hosts->end(), 1) - hosts->begin());
      intra_host_why_not_ = "rank " + std::to_string(global_rank(p)) + " is on another host";
    } else {
      auto allgather = [this](std::span<const std::byte> record,
                              std::span<std::byte> out) -> Status {
        OpContext op = BeginOp("intra-host setup");
        std::memcpy(out.data() + static_cast<size_t>(rank_) * record.size(), record.data(),
                    record.size());
        return DirectAllGather(op, out.data() + static_cast<size_t>(rank_) * record.size(),
                               out.data(), static_cast<int64_t>(record.size()), DType::kUInt8);
      };
      PSZERO_ASSIGN_OR_RETURN(intra_host_, IntraHostGroup::Create(rank_, size(), ranks_,
                                                                  options_.intra_host_segment_bytes,
                                                                  allgather, &intra_host_why_not_));
      if (intra_host_ != nullptr && options_.tracker != nullptr) {
        intra_host_tracker_ = options_.tracker;  // its shared window is a comm buffer
        intra_host_tracker_->OnAllocate(MemoryCategory::kCommBuffers, Device::kHost,
                                        static_cast<int64_t>(intra_host_->own_bytes()));
      }
      if (intra_host_ == nullptr) {
        LOG_IF(INFO, rank_ == 0) << "communicator " << id_ << ": no intra-host path ("
                                 << intra_host_why_not_ << "); ring over the transport";
      }
    }
    intra_host_decided_ = true;
  }
  return intra_host_.get();
}

Result<const std::vector<int>*> Communicator::MemberHosts() {
  if (!member_hosts_.empty()) return &member_hosts_;
  struct HostRecord {
    HostIdentity host;
    int64_t test_host_id;
  };
  HostRecord mine{};
  if (options_.test_host_id >= 0) {
    mine.test_host_id = options_.test_host_id;
  } else {
    mine.host = ThisHost();
    mine.test_host_id = -1;
  }
  std::vector<HostRecord> all(static_cast<size_t>(size()));
  all[rank_] = mine;
  if (size() > 1) {
    OpContext op = BeginOp("host layout");
    auto* out = reinterpret_cast<std::byte*>(all.data());
    PSZERO_RETURN_IF_ERROR(DirectAllGather(op, out + rank_ * sizeof(HostRecord), out,
                                           sizeof(HostRecord), DType::kUInt8));
  }
  std::vector<int> hosts(static_cast<size_t>(size()));
  int distinct = 0;
  for (int p = 0; p < size(); ++p) {
    hosts[p] = distinct;
    for (int q = 0; q < p; ++q) {
      if (all[q].host == all[p].host && all[q].test_host_id == all[p].test_host_id) {
        hosts[p] = hosts[q];
        break;
      }
    }
    if (hosts[p] == distinct) ++distinct;
  }
  member_hosts_ = std::move(hosts);
  return &member_hosts_;
}

Result<Communicator::Hierarchy*> Communicator::Hierarchical(size_t bytes) {
  if (!options_.hierarchical || options_.deterministic || size() < 4 ||
      bytes <= options_.hierarchical_min_bytes) {
    return nullptr;
  }
  if (!hier_decided_) {
    // Decided once, even if a step below fails; and the all-gathers of the Splits below
    // must take the flat path (they find hier_ still null), not come back here.
    hier_decided_ = true;
    const char* env = std::getenv("PSZERO_HIERARCHICAL");
    if (env != nullptr && std::string(env) == "0") {
      hier_why_not_ = "PSZERO_HIERARCHICAL=0";
    } else {
      PSZERO_ASSIGN_OR_RETURN(const std::vector<int>* hosts, MemberHosts());
      const int h = *std::max_element(hosts->begin(), hosts->end()) + 1;
      std::vector<int> members(static_cast<size_t>(h), 0);
      for (int host : *hosts) ++members[host];
      const int l = members[0];
      if (h == 1) {
        hier_why_not_ = "every member on one host";
      } else if (std::any_of(members.begin(), members.end(), [&](int m) { return m != l; })) {
        hier_why_not_ = "hosts with different numbers of members";
      } else if (l == 1) {
        hier_why_not_ = "one member per host";
      } else {
        auto hier = std::make_unique<Hierarchy>();
        hier->hosts = h;
        hier->local_size = l;
        const int host = (*hosts)[rank_];
        hier->local_rank =
            static_cast<int>(std::count(hosts->begin(), hosts->begin() + rank_, host));
        // Local index of each member, then its inter rank (inter groups ordered by group rank).
        std::vector<int> local_index(hosts->size()), seen_on_host(static_cast<size_t>(h), 0),
            seen_with_index(static_cast<size_t>(l), 0);
        hier->slot.resize(hosts->size());
        for (size_t p = 0; p < hosts->size(); ++p) {
          local_index[p] = seen_on_host[(*hosts)[p]]++;
          hier->slot[p] = local_index[p] * h + seen_with_index[local_index[p]]++;
        }
        // Ordered by group rank: intra rank == local rank.
        PSZERO_ASSIGN_OR_RETURN(hier->intra, Split(host, rank_));
        PSZERO_ASSIGN_OR_RETURN(hier->inter, Split(hier->local_rank, rank_));
        hier->intra->health_parent_ = this;
        hier->inter->health_parent_ = this;
        hier_ = std::move(hier);
        LOG_IF(INFO, rank_ == 0) << "communicator " << id_ << ": hierarchical collectives over "
                                 << h << " hosts x " << l << " ranks";
      }
    }
    if (hier_ == nullptr && hier_why_not_ != "every member on one host") {  // news only then
      LOG_IF(INFO, rank_ == 0) << "communicator " << id_ << ": no hierarchical collectives ("
                               << hier_why_not_ << ")";
    }
  }
  return hier_.get();
}

// Intra-host reduce-scatter of the first L * (count / L) elements (local rank l gets block
// l), then the H-rank all-reduce of block l among the ranks with local index l on every
// host, then the intra-host all-gather of the blocks. The count % L elements left over
// (fewer than L) are all-reduced on the host, then all-reduced across hosts together
// with the last local rank's block (they follow it), then broadcast from that rank on
// the host.
Status Communicator::HierarchicalAllReduce(OpContext& op, Hierarchy& h, std::byte* data,
                                           int64_t count, DType dtype, ReduceOp reduce) {
  const int l = h.local_rank, local = h.local_size;
  const int64_t es = static_cast<int64_t>(DTypeSize(dtype));
  const int64_t block = count / local, tail = count - block * local;
  auto view = [&](int64_t begin, int64_t n) { return HostSpan(data, begin, n, dtype); };
  // An average sums on both levels and divides once by the whole group's size (dividing
  // on each level would round twice in bf16 and fp16).
  const ReduceOp level = reduce == ReduceOp::kAvg ? ReduceOp::kSum : reduce;
  return RunHierarchical(op, h, [&]() -> Status {
    if (block > 0) {
      PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.intra));
      PSZERO_RETURN_IF_ERROR(
          h.intra->ReduceScatter(view(0, block * local), view(l * block, block), level));
    }
    if (tail > 0) {
      PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.intra));
      PSZERO_RETURN_IF_ERROR(h.intra->AllReduce(view(block * local, tail), level));
    }
    PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.inter));
    const int64_t mine = block + (l == local - 1 ? tail : 0);
    PSZERO_RETURN_IF_ERROR(h.inter->AllReduce(view(l * block, mine), level));
    if (reduce == ReduceOp::kAvg && mine > 0) {
      ScaleInPlace(data + l * block * es, mine, dtype, 1.0 / size());
    }
    if (block > 0) {
      PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.intra));
      PSZERO_RETURN_IF_ERROR(h.intra->AllGather(view(l * block, block), view(0, block * local)));
    }
    if (tail > 0) {
      PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.intra));
      PSZERO_RETURN_IF_ERROR(h.intra->Broadcast(view(block * local, tail), local - 1));
    }
    return Status::Ok();
  });
}

// The input's blocks are permuted into scratch in slot order, so that chunk l (H blocks)
// holds the blocks of the ranks of local index l in inter-rank order; the intra-host
// reduce-scatter of the L chunks leaves chunk l summed over this host, and the inter-host
// reduce-scatter of chunk l among the H ranks of local index l leaves each its own block.
// The input is only read before the output is written, so the output may alias it.
Status Communicator::HierarchicalReduceScatter(OpContext& op, Hierarchy& h, const std::byte* input,
                                               std::byte* output, int64_t block, DType dtype,
                                               ReduceOp reduce) {
  const int n = size();
  const int64_t es = static_cast<int64_t>(DTypeSize(dtype));
  const int64_t block_bytes = block * es, chunk = h.hosts * block;
  const ReduceOp level = reduce == ReduceOp::kAvg ? ReduceOp::kSum : reduce;  // as all-reduce
  return RunHierarchical(op, h, [&]() -> Status {
    PSZERO_ASSIGN_OR_RETURN(std::byte * perm, Scratch(static_cast<size_t>(n * block_bytes)));
    for (int p = 0; p < n; ++p) {
      std::memcpy(perm + h.slot[p] * block_bytes, input + p * block_bytes,
                  static_cast<size_t>(block_bytes));
    }
    const int64_t mine = h.local_rank * chunk;
    PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.intra));
    PSZERO_RETURN_IF_ERROR(h.intra->ReduceScatter(HostSpan(perm, 0, n * block, dtype),
                                                  HostSpan(perm, mine, chunk, dtype), level));
    PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.inter));
    PSZERO_RETURN_IF_ERROR(h.inter->ReduceScatter(HostSpan(perm, mine, chunk, dtype),
                                                  HostSpan(output, 0, block, dtype), level));
    if (reduce == ReduceOp::kAvg) ScaleInPlace(output, block, dtype, 1.0 / n);
    return Status::Ok();
  });
}

// The reverse: the inter-host all-gather among the ranks of local index l fills chunk l of
// a scratch in slot order, the intra-host all-gather (in place) the other chunks, and the
// blocks go back to group-rank order. The input is read by the first step, before the
// output is written, so it may be block rank() of the output.
Status Communicator::HierarchicalAllGather(OpContext& op, Hierarchy& h, const std::byte* input,
                                           std::byte* output, int64_t block, DType dtype) {
  const int n = size();
  const int64_t es = static_cast<int64_t>(DTypeSize(dtype));
  const int64_t block_bytes = block * es, chunk = h.hosts * block;
  return RunHierarchical(op, h, [&]() -> Status {
    PSZERO_ASSIGN_OR_RETURN(std::byte * perm, Scratch(static_cast<size_t>(n * block_bytes)));
    const int64_t mine = h.local_rank * chunk;
    PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.inter));
    PSZERO_RETURN_IF_ERROR(
        h.inter->AllGather(HostSpan(input, 0, block, dtype), HostSpan(perm, mine, chunk, dtype)));
    PSZERO_RETURN_IF_ERROR(StepDeadline(op, *h.intra));
    PSZERO_RETURN_IF_ERROR(h.intra->AllGather(HostSpan(perm, mine, chunk, dtype),
                                              HostSpan(perm, 0, n * block, dtype)));
    for (int p = 0; p < n; ++p) {
      std::memcpy(output + p * block_bytes, perm + h.slot[p] * block_bytes,
                  static_cast<size_t>(block_bytes));
    }
    return Status::Ok();
  });
}

Status Communicator::StepDeadline(const OpContext& op, Communicator& sub) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(op.deadline - Clock::now());
  if (ms <= std::chrono::milliseconds(0)) {
    return Status::DeadlineExceeded(op.where + ": deadline passed between its steps");
  }
  sub.options_.timeout = ms;
  return Status::Ok();
}

Status Communicator::RunHierarchical(OpContext& op, Hierarchy& h,
                                     const std::function<Status()>& steps) {
  // The sub-communicators run with this one's options (set_options included), never
  // hierarchically again, and the inter-host one never on the intra-host path.
  h.intra->options_ = options_;
  h.intra->options_.hierarchical = false;
  h.inter->options_ = h.intra->options_;
  h.inter->options_.intra_host = false;  // its members are on different hosts by construction
  const int64_t sent = h.intra->bytes_sent() + h.inter->bytes_sent();
  const int64_t received = h.intra->bytes_received() + h.inter->bytes_received();
  const Status s = steps();
  bytes_sent_.fetch_add(h.intra->bytes_sent() + h.inter->bytes_sent() - sent,
                        std::memory_order_relaxed);
  bytes_received_.fetch_add(h.intra->bytes_received() + h.inter->bytes_received() - received,
                            std::memory_order_relaxed);
  return op.Finish(s.WithContext(op.where));
}

Status Communicator::RunIntraHost(
    OpContext& op, const std::function<Result<IntraHostBytes>(const IntraHostOp&)>& body) {
  IntraHostOp ctx;
  ctx.where = op.where;
  ctx.deadline = op.deadline;
  ctx.health = [this]() -> Status {
    PSZERO_RETURN_IF_ERROR(transport_->Progress().status());
    return Health();
  };
  ctx.scratch = [this](size_t bytes) { return Scratch(bytes); };
  // PSZERO_SINGLE_COPY=0 stages every op, as with private buffers.
  static const bool single_copy_off = [] {
    const char* env = std::getenv("PSZERO_SINGLE_COPY");
    return env != nullptr && std::string(env) == "0";
  }();
  ctx.single_copy_min_bytes = single_copy_off ? std::numeric_limits<size_t>::max()
                                              : options_.intra_host_single_copy_min_bytes;
  Result<IntraHostBytes> result = body(ctx);
  if (!result.ok()) {
    intra_host_->Abandon(result.status());
    return op.Finish(result.status());
  }
  const IntraHostBytes bytes = result.value();
  bytes_sent_.fetch_add(bytes.served, std::memory_order_relaxed);
  bytes_received_.fetch_add(bytes.pulled, std::memory_order_relaxed);
  if (bytes.single_copy) single_copy_ops_.fetch_add(1, std::memory_order_relaxed);
  return Status::Ok();
}

Result<std::byte*> Communicator::Scratch(size_t bytes) {
  if (scratch_.data() == nullptr || scratch_.nbytes() < bytes) {  // a default Tensor has 4 bytes
    scratch_ = Tensor();  // release before allocating the larger one
    PSZERO_ASSIGN_OR_RETURN(scratch_,
                            Tensor::Empty({static_cast<int64_t>(bytes)}, DType::kUInt8,
                                          MemoryCategory::kCommBuffers, options_.tracker));
  }
  return static_cast<std::byte*>(scratch_.data());
}

// ---------------------------------------------------------------------------------------
// The segment pipeline every algorithm runs on: `segments` independent segments, each a
// sequence of `rounds`; a round posts some requests and, once all of them completed,
// finishes (e.g. reduces what arrived). At most `lanes` segments are in flight.

namespace {

struct PipelineSpec {
  int segments = 1;
  int rounds = 1;
  int lanes = 1;
  // Posts round `round` of segment `g` (running on lane `lane`) into `requests`.
  std::function<Status(int lane, int g, int round, std::vector<Request>& requests)> post;
  // Called after every request of the round completed successfully.
  std::function<Status(int lane, int g, int round)> finish;
};

struct Lane {
  int g = -1;  // -1: idle
  int round = 0;
  std::vector<Request> requests;
};

std::string PendingDescription(const std::vector<Lane>& lanes) {
  std::string out;
  for (const Lane& lane : lanes) {
    if (lane.g < 0) continue;
    for (const Request& r : lane.requests) {
      if (!r.valid() || r.done()) continue;
      if (!out.empty()) out += "; ";
      out += "segment " + std::to_string(lane.g) + " round " + std::to_string(lane.round) +
             " waiting on " + r.completion()->kind + " with rank " + std::to_string(r.peer());
    }
  }
  return out;
}

Status RunPipeline(Transport* transport, const std::string& where, Clock::time_point deadline,
                   const std::function<Status()>& health, const PipelineSpec& spec) {
  PSZERO_RETURN_IF_ERROR(health().WithContext(where));
  std::vector<Lane> lanes(std::max(1, std::min(spec.lanes, spec.segments)));
  int next = 0, finished = 0;
  auto post = [&](Lane& lane) -> Status {
    lane.requests.clear();
    return spec.post(static_cast<int>(&lane - lanes.data()), lane.g, lane.round, lane.requests)
        .WithContext(where);
  };
  while (finished < spec.segments) {
    bool advanced = false;
    for (Lane& lane : lanes) {
      if (lane.g < 0) {
        if (next >= spec.segments) continue;
        lane.g = next++;
        lane.round = 0;
        PSZERO_RETURN_IF_ERROR(post(lane));
        advanced = true;
      }
      bool all_done = true;
      for (const Request& r : lane.requests) {
        if (!r.valid()) continue;
        if (!r.done()) {
          all_done = false;
          continue;
        }
        Status s = r.status();
        if (!s.ok()) {
          return s.WithContext(where + ", segment " + std::to_string(lane.g) + " round " +
                               std::to_string(lane.round));
        }
      }
      if (!all_done) continue;
      const int lane_index = static_cast<int>(&lane - lanes.data());
      PSZERO_RETURN_IF_ERROR(spec.finish(lane_index, lane.g, lane.round).WithContext(where));
      advanced = true;
      if (++lane.round == spec.rounds) {
        lane.g = -1;
        lane.requests.clear();
        ++finished;
        // The lane picks up the next segment on the next pass.
      } else {
        PSZERO_RETURN_IF_ERROR(post(lane));
      }
    }
    if (advanced || finished == spec.segments) continue;
    PSZERO_RETURN_IF_ERROR(health().WithContext(where));
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) {
      return Status::DeadlineExceeded(where + ": no progress before the deadline; " +
                                      PendingDescription(lanes));
    }
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(left);
    PSZERO_ASSIGN_OR_RETURN(int events,
                            transport->Poll(std::max(wait, std::chrono::milliseconds(1))));
    (void)events;
  }
  return Status::Ok();
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Ring reduce-scatter and/or all-gather, segment by segment.
//
// Reduce-scatter step k (0..N-2): send chunk r-k-1, receive chunk r-k-2 from the left;
// after the last step rank r holds chunk r fully reduced. The partial sums travel in two
// scratch slots per lane, so the input is never written. All-gather step j (0..N-2):
// send chunk r-j, receive chunk r-j-1 into place.

Status Communicator::RingReduceScatterAllGather(OpContext& op, const std::byte* input,
                                                std::byte* rs_out, std::byte* ag_buf, int64_t count,
                                                DType dtype, ReduceOp reduce, bool do_rs,
                                                bool do_ag) {
  const int n = size();
  const int r = rank_;
  const size_t es = DTypeSize(dtype);
  Layout layout{count, n, 1};
  layout.segments =
      SegmentsFor(layout.ChunkSize(0) * static_cast<int64_t>(es), options_.segment_bytes);
  const int rs_steps = do_rs ? n - 1 : 0;
  const int ag_steps = do_ag ? n - 1 : 0;
  const int lanes = std::max(1, options_.segments_in_flight);
  const int64_t max_seg_bytes = layout.SegSize(0, 0) * static_cast<int64_t>(es);
  std::byte* slots = nullptr;
  if (do_rs) {
    PSZERO_ASSIGN_OR_RETURN(slots, Scratch(static_cast<size_t>(2 * lanes * max_seg_bytes)));
  }
  auto slot = [&](int lane, int k) { return slots + (2 * lane + (k % 2)) * max_seg_bytes; };
  const double scale = reduce == ReduceOp::kAvg ? 1.0 / n : 1.0;
  const int left = global_rank(Mod(r - 1, n));
  const int right = global_rank(Mod(r + 1, n));
  auto at = [&](const std::byte* base, int c, int g) {
    return base + layout.SegBegin(c, g) * static_cast<int64_t>(es);
  };
  auto bytes = [&](int c, int g) { return static_cast<size_t>(layout.SegSize(c, g)) * es; };

  PipelineSpec spec;
  spec.segments = layout.segments;
  spec.rounds = rs_steps + ag_steps;
  spec.lanes = lanes;
  spec.post = [&](int lane, int g, int k, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, static_cast<uint32_t>(g));
    const void* send_ptr;
    void* recv_ptr;
    int sc, rc;
    if (k < rs_steps) {
      sc = Mod(r - k - 1, n);
      rc = Mod(r - k - 2, n);
      send_ptr = k == 0 ? at(input, sc, g) : slot(lane, k - 1);
      recv_ptr = slot(lane, k);
    } else {
      const int j = k - rs_steps;
      sc = Mod(r - j, n);
      rc = Mod(r - j - 1, n);
      send_ptr = at(ag_buf, sc, g);
      recv_ptr = const_cast<std::byte*>(at(ag_buf, rc, g));
    }
    PSZERO_ASSIGN_OR_RETURN(Request recv, PostRecv(left, tag, recv_ptr, bytes(rc, g)));
    reqs.push_back(std::move(recv));
    PSZERO_ASSIGN_OR_RETURN(Request send, PostSend(right, tag, send_ptr, bytes(sc, g)));
    reqs.push_back(std::move(send));
    return Status::Ok();
  };
  spec.finish = [&](int lane, int g, int k) -> Status {
    if (k >= rs_steps) return Status::Ok();
    const int rc = Mod(r - k - 2, n);
    std::byte* partial = slot(lane, k);
    if (k < rs_steps - 1) {
      ReduceInto(partial, at(input, rc, g), layout.SegSize(rc, g), dtype, reduce);
    } else {  // rc == r: the chunk this rank owns
      const void* inputs[2] = {partial, at(input, r, g)};
      std::byte* out = rs_out + (layout.SegBegin(r, g) - layout.ChunkBegin(r)) * es;
      ReduceOrdered(out, inputs, 2, layout.SegSize(r, g), dtype, reduce, scale);
    }
    return Status::Ok();
  };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

// Everyone sends its whole array to everyone and reduces all N in rank order: one round,
// so latency-optimal for small arrays, and deterministic.
Status Communicator::DirectAllReduce(OpContext& op, std::byte* data, int64_t count, DType dtype,
                                     ReduceOp reduce) {
  const int n = size();
  const size_t bytes = static_cast<size_t>(count) * DTypeSize(dtype);
  PSZERO_ASSIGN_OR_RETURN(std::byte * scratch, Scratch(bytes * static_cast<size_t>(n)));
  PipelineSpec spec;
  spec.post = [&](int, int, int, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, 0);
    for (int p = 0; p < n; ++p) {
      if (p == rank_) continue;
      PSZERO_ASSIGN_OR_RETURN(Request recv,
                              PostRecv(global_rank(p), tag, scratch + p * bytes, bytes));
      reqs.push_back(std::move(recv));
    }
    for (int i = 1; i < n; ++i) {  // staggered, so that not everyone hits rank 0 first
      const int p = Mod(rank_ + i, n);
      PSZERO_ASSIGN_OR_RETURN(Request send, PostSend(global_rank(p), tag, data, bytes));
      reqs.push_back(std::move(send));
    }
    return Status::Ok();
  };
  spec.finish = [&](int, int, int) -> Status {
    std::vector<const void*> inputs(n);
    for (int p = 0; p < n; ++p) inputs[p] = p == rank_ ? data : scratch + p * bytes;
    ReduceOrdered(data, inputs.data(), n, count, dtype, reduce,
                  reduce == ReduceOp::kAvg ? 1.0 / n : 1.0);
    return Status::Ok();
  };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

// Segment g of chunk p goes straight to rank p, which sums the N contributions in rank
// order into its chunk of `output`: the deterministic reduce-scatter, (N-1)/N * S bytes
// per rank like the ring. Chunks are the balanced split of `count`.
Status Communicator::DirectReduceScatter(OpContext& op, const std::byte* input, std::byte* output,
                                         int64_t count, DType dtype, ReduceOp reduce) {
  const int n = size();
  const size_t es = DTypeSize(dtype);
  Layout layout{count, n, 1};
  layout.segments =
      SegmentsFor(layout.ChunkSize(0) * static_cast<int64_t>(es), options_.segment_bytes);
  const int lanes = std::max(1, options_.segments_in_flight);
  const int64_t max_seg_bytes = layout.SegSize(0, 0) * static_cast<int64_t>(es);
  PSZERO_ASSIGN_OR_RETURN(std::byte * slots,
                          Scratch(static_cast<size_t>(lanes * n * max_seg_bytes)));
  auto slot = [&](int lane, int p) { return slots + (lane * n + p) * max_seg_bytes; };
  auto at = [&](const std::byte* base, int c, int g) {
    return base + layout.SegBegin(c, g) * static_cast<int64_t>(es);
  };
  PipelineSpec spec;
  spec.segments = layout.segments;
  spec.lanes = lanes;
  spec.post = [&](int lane, int g, int, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, static_cast<uint32_t>(g));
    const size_t mine = static_cast<size_t>(layout.SegSize(rank_, g)) * es;
    for (int p = 0; p < n; ++p) {
      if (p == rank_) continue;
      PSZERO_ASSIGN_OR_RETURN(Request recv, PostRecv(global_rank(p), tag, slot(lane, p), mine));
      reqs.push_back(std::move(recv));
    }
    for (int i = 1; i < n; ++i) {
      const int p = Mod(rank_ + i, n);
      const size_t theirs = static_cast<size_t>(layout.SegSize(p, g)) * es;
      PSZERO_ASSIGN_OR_RETURN(Request send, PostSend(global_rank(p), tag, at(input, p, g), theirs));
      reqs.push_back(std::move(send));
    }
    return Status::Ok();
  };
  spec.finish = [&](int lane, int g, int) -> Status {
    std::vector<const void*> inputs(n);
    for (int p = 0; p < n; ++p) inputs[p] = p == rank_ ? at(input, rank_, g) : slot(lane, p);
    std::byte* out = output + (layout.SegBegin(rank_, g) - layout.ChunkBegin(rank_)) * es;
    ReduceOrdered(out, inputs.data(), n, layout.SegSize(rank_, g), dtype, reduce,
                  reduce == ReduceOp::kAvg ? 1.0 / n : 1.0);
    return Status::Ok();
  };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

Status Communicator::DirectAllGather(OpContext& op, const std::byte* input, std::byte* output,
                                     int64_t block_count, DType dtype) {
  const int n = size();
  const size_t bytes = static_cast<size_t>(block_count) * DTypeSize(dtype);
  PipelineSpec spec;
  spec.post = [&](int, int, int, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, 0);
    for (int p = 0; p < n; ++p) {
      if (p == rank_) continue;
      PSZERO_ASSIGN_OR_RETURN(Request r, PostRecv(global_rank(p), tag, output + p * bytes, bytes));
      reqs.push_back(std::move(r));
    }
    for (int i = 1; i < n; ++i) {
      const int p = Mod(rank_ + i, n);
      PSZERO_ASSIGN_OR_RETURN(Request s, PostSend(global_rank(p), tag, input, bytes));
      reqs.push_back(std::move(s));
    }
    return Status::Ok();
  };
  spec.finish = [](int, int, int) { return Status::Ok(); };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

// Packed blocks: send_bytes[p] from input to rank p, recv_bytes[p] from rank p.
Status Communicator::Exchange(OpContext& op, const std::byte* input,
                              std::span<const int64_t> send_bytes, std::byte* output,
                              std::span<const int64_t> recv_bytes) {
  const int n = size();
  std::vector<int64_t> send_off(n + 1, 0), recv_off(n + 1, 0);
  for (int p = 0; p < n; ++p) {
    send_off[p + 1] = send_off[p] + send_bytes[p];
    recv_off[p + 1] = recv_off[p] + recv_bytes[p];
  }
  std::memcpy(output + recv_off[rank_], input + send_off[rank_],
              static_cast<size_t>(std::min(send_bytes[rank_], recv_bytes[rank_])));
  PipelineSpec spec;
  spec.post = [&](int, int, int, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, 0);
    for (int i = 1; i < n; ++i) {
      const int p = Mod(rank_ - i, n);
      PSZERO_ASSIGN_OR_RETURN(Request r, PostRecv(global_rank(p), tag, output + recv_off[p],
                                                  static_cast<size_t>(recv_bytes[p])));
      reqs.push_back(std::move(r));
    }
    for (int i = 1; i < n; ++i) {
      const int p = Mod(rank_ + i, n);
      PSZERO_ASSIGN_OR_RETURN(Request s, PostSend(global_rank(p), tag, input + send_off[p],
                                                  static_cast<size_t>(send_bytes[p])));
      reqs.push_back(std::move(s));
    }
    return Status::Ok();
  };
  spec.finish = [](int, int, int) { return Status::Ok(); };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

// ---------------------------------------------------------------------------------------
// Public ops

Status Communicator::AllReduce(const Tensor& data, ReduceOp reduce) {
  if (OnDevice(data)) {
    PSZERO_RETURN_IF_ERROR(CheckReduce(data.dtype(), reduce));
    if (size() == 1) return Status::Ok();  // nothing to stage through the host
    if (UseNccl(data)) {
      const int64_t ring = 2 * (size() - 1) * static_cast<int64_t>(data.nbytes()) / size();
      return RunNccl("allreduce", ring, ring,
                     [&] { return nccl_->AllReduce(data, reduce, options_.timeout); });
    }
    return StagedAllReduce(data, reduce);
  }
  PSZERO_RETURN_IF_ERROR(CheckTensor(data, "allreduce data"));
  PSZERO_RETURN_IF_ERROR(CheckReduce(data.dtype(), reduce));
  PSZERO_ASSIGN_OR_RETURN(Hierarchy * hier, Hierarchical(data.nbytes()));
  IntraHostGroup* shm = nullptr;
  if (hier == nullptr) {
    PSZERO_ASSIGN_OR_RETURN(shm, IntraHost(data.nbytes()));
  }
  OpContext op = BeginOp("allreduce");
  const int n = size();
  const int64_t count = data.numel();
  auto* buf = static_cast<std::byte*>(data.data());
  if (n == 1 || count == 0) return Status::Ok();
  if (hier != nullptr) return HierarchicalAllReduce(op, *hier, buf, count, data.dtype(), reduce);
  if (shm != nullptr) {
    return RunIntraHost(op, [&](const IntraHostOp& ctx) {
      return shm->AllReduce(buf, count, data.dtype(), reduce, ctx);
    });
  }
  if (data.nbytes() <= options_.small_message_bytes) {
    return DirectAllReduce(op, buf, count, data.dtype(), reduce);
  }
  Layout layout{count, n, 1};
  std::byte* own = buf + layout.ChunkBegin(rank_) * static_cast<int64_t>(data.element_size());
  if (options_.deterministic) {
    PSZERO_RETURN_IF_ERROR(DirectReduceScatter(op, buf, own, count, data.dtype(), reduce));
    return RingReduceScatterAllGather(op, buf, own, buf, count, data.dtype(), reduce,
                                      /*do_rs=*/false, /*do_ag=*/true);
  }
  return RingReduceScatterAllGather(op, buf, own, buf, count, data.dtype(), reduce,
                                    /*do_rs=*/true, /*do_ag=*/true);
}

Status Communicator::ReduceScatter(const Tensor& input, const Tensor& output, ReduceOp reduce) {
  if (OnDevice(input) || OnDevice(output)) {
    PSZERO_RETURN_IF_ERROR(CheckReduce(input.dtype(), reduce));
    if (size() == 1) return CopyUnlessSame(input, output);
    if (UseNccl(input) && UseNccl(output) && input.numel() == output.numel() * size()) {
      const int64_t ring = (size() - 1) * static_cast<int64_t>(output.nbytes());
      return RunNccl("reduce_scatter", ring, ring,
                     [&] { return nccl_->ReduceScatter(input, output, reduce, options_.timeout); });
    }
    return StagedReduceScatter(input, output, reduce);
  }
  PSZERO_RETURN_IF_ERROR(CheckTensor(input, "reduce_scatter input"));
  PSZERO_RETURN_IF_ERROR(CheckTensor(output, "reduce_scatter output"));
  PSZERO_RETURN_IF_ERROR(CheckReduce(input.dtype(), reduce));
  if (input.dtype() != output.dtype() || input.numel() != output.numel() * size()) {
    return Status::InvalidArgument("reduce_scatter: input " + input.ToString() +
                                   " must hold size() x output " + output.ToString());
  }
  const size_t bytes = output.numel() == 0 ? 0 : input.nbytes();
  PSZERO_ASSIGN_OR_RETURN(Hierarchy * hier, Hierarchical(bytes));
  IntraHostGroup* shm = nullptr;
  if (hier == nullptr) {
    PSZERO_ASSIGN_OR_RETURN(shm, IntraHost(bytes));
  }
  OpContext op = BeginOp("reduce_scatter");
  const int64_t block = output.numel();
  auto* in = static_cast<const std::byte*>(input.data());
  auto* out = static_cast<std::byte*>(output.data());
  if (size() == 1) {
    if (in != out) std::memcpy(out, in, output.nbytes());
    return Status::Ok();
  }
  if (block == 0) return Status::Ok();
  if (hier != nullptr) {
    return HierarchicalReduceScatter(op, *hier, in, out, block, input.dtype(), reduce);
  }
  if (shm != nullptr) {
    return RunIntraHost(op, [&](const IntraHostOp& ctx) {
      return shm->ReduceScatter(in, out, block, input.dtype(), reduce, ctx);
    });
  }
  if (options_.deterministic || input.nbytes() <= options_.small_message_bytes) {
    return DirectReduceScatter(op, in, out, input.numel(), input.dtype(), reduce);
  }
  return RingReduceScatterAllGather(op, in, out, nullptr, input.numel(), input.dtype(), reduce,
                                    /*do_rs=*/true, /*do_ag=*/false);
}

Status Communicator::AllGather(const Tensor& input, const Tensor& output) {
  if (OnDevice(input) || OnDevice(output)) {
    if (size() == 1) return CopyUnlessSame(input, output);
    if (UseNccl(input) && UseNccl(output) && output.numel() == input.numel() * size()) {
      const int64_t ring = (size() - 1) * static_cast<int64_t>(input.nbytes());
      return RunNccl("allgather", ring, ring,
                     [&] { return nccl_->AllGather(input, output, options_.timeout); });
    }
    return StagedAllGather(input, output);
  }
  PSZERO_RETURN_IF_ERROR(CheckTensor(input, "allgather input"));
  PSZERO_RETURN_IF_ERROR(CheckTensor(output, "allgather output"));
  if (input.dtype() != output.dtype() || output.numel() != input.numel() * size()) {
    return Status::InvalidArgument("allgather: output " + output.ToString() +
                                   " must hold size() x input " + input.ToString());
  }
  PSZERO_ASSIGN_OR_RETURN(Hierarchy * hier, Hierarchical(output.nbytes()));
  IntraHostGroup* shm = nullptr;
  if (hier == nullptr) {
    PSZERO_ASSIGN_OR_RETURN(shm, IntraHost(output.nbytes()));
  }
  OpContext op = BeginOp("allgather");
  const size_t block_bytes = input.nbytes();
  auto* out = static_cast<std::byte*>(output.data());
  std::byte* own = out + rank_ * block_bytes;
  if (hier != nullptr && size() > 1 && block_bytes > 0) {
    return HierarchicalAllGather(op, *hier, static_cast<const std::byte*>(input.data()), out,
                                 input.numel(), input.dtype());
  }
  if (shm != nullptr && size() > 1 && block_bytes > 0) {  // it places our block itself
    return RunIntraHost(op, [&](const IntraHostOp& ctx) {
      return shm->AllGather(input.data(), out, block_bytes, ctx);
    });
  }
  if (input.data() != own && block_bytes > 0) std::memcpy(own, input.data(), block_bytes);
  if (size() == 1 || block_bytes == 0) return Status::Ok();
  if (output.nbytes() <= options_.small_message_bytes) {
    return DirectAllGather(op, own, out, input.numel(), input.dtype());
  }
  return RingReduceScatterAllGather(op, nullptr, nullptr, out, output.numel(), input.dtype(),
                                    ReduceOp::kSum, /*do_rs=*/false, /*do_ag=*/true);
}

Status Communicator::Broadcast(const Tensor& data, int root) {
  if (root < 0 || root >= size()) {
    return Status::InvalidArgument("broadcast root " + std::to_string(root) + " out of range");
  }
  if (OnDevice(data)) {
    if (size() == 1) return root == 0 ? Status::Ok() : Status::InvalidArgument("broadcast root");
    if (UseNccl(data)) {
      // A chain from the root in rank order: all but the last rank forward the array.
      const int64_t bytes = static_cast<int64_t>(data.nbytes());
      const bool last = rank_ == (root + size() - 1) % size();
      return RunNccl("broadcast", last ? 0 : bytes, rank_ == root ? 0 : bytes,
                     [&] { return nccl_->Broadcast(data, root, options_.timeout); });
    }
    return StagedBroadcast(data, root);
  }
  PSZERO_RETURN_IF_ERROR(CheckTensor(data, "broadcast data"));
  PSZERO_ASSIGN_OR_RETURN(IntraHostGroup * shm, IntraHost(data.nbytes()));
  OpContext op = BeginOp("broadcast");
  const int n = size();
  if (n == 1 || data.nbytes() == 0) return Status::Ok();
  auto* buf = static_cast<std::byte*>(data.data());
  const size_t bytes = data.nbytes();
  if (shm != nullptr) {
    return RunIntraHost(
        op, [&](const IntraHostOp& ctx) { return shm->Broadcast(buf, bytes, root, ctx); });
  }
  PipelineSpec spec;
  if (bytes <= options_.small_message_bytes) {
    // Root sends to everyone directly.
    spec.post = [&](int, int, int, std::vector<Request>& reqs) -> Status {
      const uint64_t tag = op.Tag(id_, 0);
      if (rank_ == root) {
        for (int i = 1; i < n; ++i) {
          PSZERO_ASSIGN_OR_RETURN(Request s,
                                  PostSend(global_rank(Mod(root + i, n)), tag, buf, bytes));
          reqs.push_back(std::move(s));
        }
      } else {
        PSZERO_ASSIGN_OR_RETURN(Request r, PostRecv(global_rank(root), tag, buf, bytes));
        reqs.push_back(std::move(r));
      }
      return Status::Ok();
    };
    spec.finish = [](int, int, int) { return Status::Ok(); };
    return op.Finish(RunPipeline(
        transport_, op.where, op.deadline, [this] { return Health(); }, spec));
  }
  // Pipelined chain root → root+1 → ... : each rank receives a segment and forwards it.
  const int pos = Mod(rank_ - root, n);
  const int prev = global_rank(Mod(rank_ - 1, n));
  const int next = global_rank(Mod(rank_ + 1, n));
  const bool receives = pos != 0, forwards = pos != n - 1;
  Layout layout{data.numel(), 1, 1};
  const size_t es = data.element_size();
  layout.segments = SegmentsFor(static_cast<int64_t>(bytes), options_.segment_bytes);
  spec.segments = layout.segments;
  spec.lanes = std::max(1, options_.segments_in_flight);
  spec.rounds = (receives ? 1 : 0) + (forwards ? 1 : 0);
  spec.post = [&](int, int g, int round, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, static_cast<uint32_t>(g));
    std::byte* ptr = buf + layout.SegBegin(0, g) * static_cast<int64_t>(es);
    const size_t len = static_cast<size_t>(layout.SegSize(0, g)) * es;
    if (receives && round == 0) {
      PSZERO_ASSIGN_OR_RETURN(Request r, PostRecv(prev, tag, ptr, len));
      reqs.push_back(std::move(r));
    } else {
      PSZERO_ASSIGN_OR_RETURN(Request s, PostSend(next, tag, ptr, len));
      reqs.push_back(std::move(s));
    }
    return Status::Ok();
  };
  spec.finish = [](int, int, int) { return Status::Ok(); };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

Status Communicator::AllToAll(const Tensor& input, const Tensor& output) {
  const bool device = OnDevice(input) || OnDevice(output);
  if (!device) {
    PSZERO_RETURN_IF_ERROR(CheckTensor(input, "alltoall input"));
    PSZERO_RETURN_IF_ERROR(CheckTensor(output, "alltoall output"));
  }
  const int n = size();
  if (input.dtype() != output.dtype() || input.numel() != output.numel() ||
      input.numel() % n != 0) {
    return Status::InvalidArgument("alltoall: input " + input.ToString() + " and output " +
                                   output.ToString() + " must match and divide by " +
                                   std::to_string(n));
  }
  std::vector<int64_t> counts(n, input.numel() / n);
  if (!device) PSZERO_RETURN_IF_ERROR(IntraHost(input.nbytes()).status());
  return AllToAllV(input, counts, output, counts);
}

Status Communicator::AllToAllV(const Tensor& input, std::span<const int64_t> send_counts,
                               const Tensor& output, std::span<const int64_t> recv_counts) {
  const int n = size();
  // Counts first, whatever the path: on a device a count beyond the tensors would have
  // NCCL write out of bounds.
  if (static_cast<int>(send_counts.size()) != n || static_cast<int>(recv_counts.size()) != n ||
      input.dtype() != output.dtype()) {
    return Status::InvalidArgument("alltoallv: one count per rank and matching dtypes needed");
  }
  const int64_t es = static_cast<int64_t>(input.element_size());
  std::vector<int64_t> send_bytes(n), recv_bytes(n);
  int64_t send_total = 0, recv_total = 0;
  for (int p = 0; p < n; ++p) {
    if (send_counts[p] < 0 || recv_counts[p] < 0) {
      return Status::InvalidArgument("alltoallv: negative count");
    }
    send_bytes[p] = send_counts[p] * es;
    recv_bytes[p] = recv_counts[p] * es;
    send_total += send_counts[p];
    recv_total += recv_counts[p];
  }
  if (send_total > input.numel() || recv_total > output.numel()) {
    return Status::InvalidArgument("alltoallv: counts exceed the tensors");
  }
  if (send_counts[rank_] != recv_counts[rank_]) {
    return Status::InvalidArgument("alltoallv: send and receive counts to self differ");
  }
  if (OnDevice(input) || OnDevice(output)) {
    if (UseNccl(input) && UseNccl(output)) {
      const int64_t self = send_bytes[rank_];
      return RunNccl("alltoall", send_total * es - self, recv_total * es - self, [&] {
        return nccl_->AllToAllV(input, send_counts, output, recv_counts, options_.timeout);
      });
    }
    return StagedAllToAllV(input, send_counts, output, recv_counts);
  }
  PSZERO_RETURN_IF_ERROR(CheckTensor(input, "alltoallv input"));
  PSZERO_RETURN_IF_ERROR(CheckTensor(output, "alltoallv output"));
  // Sizes differ between ranks here, so the path is the one an earlier op chose (AllToAll
  // and the other ops choose by size, alike on every rank).
  IntraHostGroup* shm =
      intra_host_ != nullptr && intra_host_->can_alltoall() ? intra_host_.get() : nullptr;
  OpContext op = BeginOp("alltoall");
  if (shm != nullptr) {
    auto* in = static_cast<const std::byte*>(input.data());
    auto* out = static_cast<std::byte*>(output.data());
    int64_t send_off = 0, recv_off = 0;
    for (int p = 0; p < rank_; ++p) {
      send_off += send_bytes[p];
      recv_off += recv_bytes[p];
    }
    if (send_bytes[rank_] > 0) {
      std::memcpy(out + recv_off, in + send_off, static_cast<size_t>(send_bytes[rank_]));
    }
    return RunIntraHost(op, [&](const IntraHostOp& ctx) {
      return shm->AllToAllV(in, send_bytes, out, recv_bytes, ctx);
    });
  }
  return Exchange(op, static_cast<const std::byte*>(input.data()), send_bytes,
                  static_cast<std::byte*>(output.data()), recv_bytes);
}

Status Communicator::Barrier() {
  OpContext op = BeginOp("barrier");
  const int n = size();
  if (n == 1) return Status::Ok();
  // Dissemination: round k talks to ranks ±2^k; ceil(log2 n) rounds of one-byte messages.
  int rounds = 0;
  while ((1 << rounds) < n) ++rounds;
  std::byte out{1}, in{0};
  PipelineSpec spec;
  spec.rounds = rounds;
  spec.post = [&](int, int, int k, std::vector<Request>& reqs) -> Status {
    const uint64_t tag = op.Tag(id_, static_cast<uint32_t>(k));
    PSZERO_ASSIGN_OR_RETURN(Request r,
                            PostRecv(global_rank(Mod(rank_ - (1 << k), n)), tag, &in, 1));
    reqs.push_back(std::move(r));
    PSZERO_ASSIGN_OR_RETURN(Request s,
                            PostSend(global_rank(Mod(rank_ + (1 << k), n)), tag, &out, 1));
    reqs.push_back(std::move(s));
    return Status::Ok();
  };
  spec.finish = [](int, int, int) { return Status::Ok(); };
  return op.Finish(RunPipeline(
      transport_, op.where, op.deadline, [this] { return Health(); }, spec));
}

// ---------------------------------------------------------------------------------------
// Device tensors

Status Communicator::EnableNccl(KeyValueStore* store, const std::string& job_key, int cuda_device) {
  if (store == nullptr) return Status::InvalidArgument("EnableNccl without a key-value store");
  // Comm ids repeat across the groups of one split (every TP group is comm 1 of its
  // world): the members' transport ranks make the key unique in the job.
  std::string key = job_key + "/comm" + std::to_string(id_) + "/ranks";
  for (int r : ranks_) key.append(1, '-').append(std::to_string(r));
  bool distinct = true;  // a group of one has its GPU to itself
  if (size() > 1) {
    PSZERO_ASSIGN_OR_RETURN(distinct, NcclBackend::DistinctGpus(store, key, rank_, size(),
                                                                cuda_device, options_.timeout));
  }
  if (!distinct) {
    LOG_IF(WARNING, rank_ == 0) << "communicator " << id_ << ": some of its " << size()
                                << " ranks share a GPU, which NCCL refuses; their device tensors "
                                   "are staged through host memory";
    return Status::Ok();
  }
  PSZERO_ASSIGN_OR_RETURN(
      nccl_, NcclBackend::Create(store, key, rank_, size(), cuda_device, options_.timeout));
  nccl_->set_health([this] { return Health(); });
  return Status::Ok();
}

Status Communicator::RunNccl(const char* name, int64_t sent, int64_t received,
                             const std::function<Status()>& body) {
  OpContext op = BeginOp(name);
  Status s = body();
  if (s.ok()) {
    bytes_sent_.fetch_add(sent, std::memory_order_relaxed);
    bytes_received_.fetch_add(received, std::memory_order_relaxed);
  }
  return op.Finish(s.WithContext(op.where));
}

bool Communicator::UseNccl(const Tensor& t) const {
  return nccl_ != nullptr && OnDevice(t) && t.is_contiguous() && !options_.deterministic;
}

Status Communicator::CopyUnlessSame(const Tensor& input, const Tensor& output) {
  if (input.dtype() != output.dtype() || input.numel() != output.numel()) {
    return Status::InvalidArgument("a group of one: input " + input.ToString() + " and output " +
                                   output.ToString() + " must match");
  }
  if (input.data() == output.data()) return Status::Ok();
  return Tensor(output).CopyFrom(input);
}

Result<Tensor> Communicator::HostCopy(const Tensor& t) {
  return t.Clone(MemoryCategory::kCommBuffers, options_.tracker, Device::kHost);
}

Result<Tensor> Communicator::HostBuffer(const Tensor& like) {
  return Tensor::Empty(like.shape(), like.dtype(), MemoryCategory::kCommBuffers, options_.tracker,
                       Device::kHost);
}

Status Communicator::StagedAllReduce(const Tensor& data, ReduceOp op) {
  PSZERO_ASSIGN_OR_RETURN(Tensor host, HostCopy(data));
  PSZERO_RETURN_IF_ERROR(AllReduce(host, op));
  return Tensor(data).CopyFrom(host);
}

Status Communicator::StagedReduceScatter(const Tensor& input, const Tensor& output, ReduceOp op) {
  PSZERO_ASSIGN_OR_RETURN(Tensor in, HostCopy(input));
  PSZERO_ASSIGN_OR_RETURN(Tensor out, HostBuffer(output));
  PSZERO_RETURN_IF_ERROR(ReduceScatter(in, out, op));
  return Tensor(output).CopyFrom(out);
}

Status Communicator::StagedAllGather(const Tensor& input, const Tensor& output) {
  PSZERO_ASSIGN_OR_RETURN(Tensor in, HostCopy(input));
  PSZERO_ASSIGN_OR_RETURN(Tensor out, HostBuffer(output));
  PSZERO_RETURN_IF_ERROR(AllGather(in, out));
  return Tensor(output).CopyFrom(out);
}

Status Communicator::StagedBroadcast(const Tensor& data, int root) {
  PSZERO_ASSIGN_OR_RETURN(Tensor host, HostCopy(data));
  PSZERO_RETURN_IF_ERROR(Broadcast(host, root));
  return Tensor(data).CopyFrom(host);
}

Status Communicator::StagedAllToAllV(const Tensor& input, std::span<const int64_t> send_counts,
                                     const Tensor& output, std::span<const int64_t> recv_counts) {
  PSZERO_ASSIGN_OR_RETURN(Tensor in, HostCopy(input));
  PSZERO_ASSIGN_OR_RETURN(Tensor out, HostBuffer(output));
  PSZERO_RETURN_IF_ERROR(AllToAllV(in, send_counts, out, recv_counts));
  return Tensor(output).CopyFrom(out);
}

Result<std::unique_ptr<Communicator>> Communicator::Split(int color, int key) {
  const int n = size();
  PSZERO_ASSIGN_OR_RETURN(Tensor mine,
                          Tensor::Empty({3}, DType::kInt64, MemoryCategory::kOther, nullptr));
  PSZERO_ASSIGN_OR_RETURN(Tensor all,
                          Tensor::Empty({3 * n}, DType::kInt64, MemoryCategory::kOther, nullptr));
  mine.data<int64_t>()[0] = color;
  mine.data<int64_t>()[1] = key;
  mine.data<int64_t>()[2] = ids_->next;
  PSZERO_RETURN_IF_ERROR(AllGather(mine, all).WithContext("split"));
  const int64_t* v = all.data<int64_t>();
  // The new id is above every id any member of the new group has used.
  std::vector<std::tuple<int64_t, int, int>> members;  // (key, rank here, global rank)
  uint32_t id = 0;
  for (int p = 0; p < n; ++p) {
    if (v[3 * p] != color) continue;
    members.emplace_back(v[3 * p + 1], p, global_rank(p));
    id = std::max(id, static_cast<uint32_t>(v[3 * p + 2]));
  }
  // Every rank's allocator moves past the largest id handed out in this split, so later
  // splits of any group never reuse it.
  uint32_t top = ids_->next;
  for (int p = 0; p < n; ++p) top = std::max(top, static_cast<uint32_t>(v[3 * p + 2]));
  ids_->next = top + 1;
  if (color < 0) return std::unique_ptr<Communicator>();
  if (id >= (1u << kTagCommBits)) {
    return Status::Internal("split: out of communicator ids (" + std::to_string(id) + ")");
  }
  std::sort(members.begin(), members.end());
  std::vector<int> ranks;
  int my_rank = -1;
  for (const auto& [k, here, global] : members) {
    if (here == rank_) my_rank = static_cast<int>(ranks.size());
    ranks.push_back(global);
  }
  std::unique_ptr<Communicator> comm(
      new Communicator(transport_, std::move(ranks), my_rank, id, ids_, options_));
  PSZERO_RETURN_IF_ERROR(comm->ConnectMembers());
  return comm;
}

}  // namespace pszero::collectives
