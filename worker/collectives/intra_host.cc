#include "worker/collectives/intra_host.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <vector>

#include "common/shared_host_memory.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace pszero::collectives {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMagic = 0x70737a65726f7368ull;  // "pszerosh"
constexpr size_t kHeaderBytes = 64;
// A rank's staging window: two round slots of (n inputs + 1 result) pieces; all the
// ranks' windows together stay within a last-level cache's worth.
constexpr size_t kMaxWindowBytes = size_t{16} << 20;
constexpr size_t kMaxWindowsBytes = size_t{32} << 20;
constexpr size_t kSlotFixedBytes = 512;
// Polling interval of a sleeping waiter for peer death, aborts and the deadline.
constexpr auto kWakeEvery = std::chrono::milliseconds(20);
// Spinning before sleeping on the futex. With a core per rank a peer is running and about
// to publish, so spinning a while saves a futex sleep and wake (tens of µs in a VM) per
// round; with more ranks than cores, a few µs only, so that four ranks on two cores do
// not burn the core a peer needs.
constexpr auto kSpinOwnCore = std::chrono::microseconds(20);
constexpr auto kSpinShared = std::chrono::microseconds(2);

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Ops at least this large write their results with streaming (non-temporal) stores: the
// result does not fit the cache anyway, and a streaming store skips the read-for-
// ownership of every destination line, a third of a cached copy's memory traffic.
constexpr size_t kStreamingBytes = size_t{8} << 20;

// Copies a result piece into the caller's buffer, streaming when `streaming`.
void CopyOut(void* dst, const void* src, size_t n, bool streaming) {
#if defined(__x86_64__)
  if (streaming && n >= 4096) {
    auto* d = static_cast<char*>(dst);
    const auto* s = static_cast<const char*>(src);
    const size_t head = std::min(n, (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15);
    std::memcpy(d, s, head);
    d += head;
    s += head;
    n -= head;
    const size_t body = n & ~size_t{63};
    for (size_t i = 0; i < body; i += 64) {
      const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i));
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 16));
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 32));
      const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + i + 48), e);
    }
    std::memcpy(d + body, s + body, n - body);
    _mm_sfence();
    return;
  }
#endif
  (void)streaming;
  std::memcpy(dst, src, n);
}

uint32_t Load(const uint32_t* word) {
  return std::atomic_ref<uint32_t>(*const_cast<uint32_t*>(word)).load(std::memory_order_acquire);
}

bool Reached(uint32_t value, uint32_t target) { return static_cast<int32_t>(value - target) >= 0; }

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

uint64_t NamespaceId(const char* path) {
  struct stat st {};
  if (stat(path, &st) != 0) return 0;
  return (static_cast<uint64_t>(st.st_dev) << 32) ^ static_cast<uint64_t>(st.st_ino);
}

std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

std::string Errno(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// What every rank tells the others at set-up.
struct Record {
  HostIdentity host;  // first: a test flips its bytes at 8 * field
  int32_t pid;
  int32_t fd;  // rank 0: the memfd of the control block
  uint64_t map_bytes;
  uint64_t cookie_addr;  // where this rank's cookie lies in its own memory
  uint64_t cookie;
};

// The set-up's verdict of one rank.
struct Verdict {
  uint8_t ok;
  uint8_t cma;  // cross-memory attach works with every peer
  char why[126];
};

}  // namespace

// A peer's shared allocation mapped into this process (read-only).
struct PeerMapping {
  uint64_t id = 0;  // the allocation's id in the peer's process
  const std::byte* base = nullptr;
  size_t bytes = 0;
  uint64_t last_use = 0;
};

// Mappings kept per peer; the least recently used one goes first.
constexpr size_t kMappingsPerPeer = 8;

struct IntraHostGroup::Peer {
  int pid = 0;
  int pidfd = -1;  // -1 for this process's own pid (ranks as threads)
  int global_rank = 0;
  uint64_t addr = 0;  // its published buffer, read from its slot once it published
  // Its published buffer readable here (a mapping of its shared allocation), or null.
  const std::byte* shared = nullptr;
  std::vector<PeerMapping> mappings;
};

// One rank's part of the control block; every futex word on a cache line of its own.
// Counters of rounds are running totals over all ops, so nothing is ever reset.
struct IntraHostGroup::Slot {
  uint32_t published;  // futex: the op (all-to-all, single-copy) this rank published its buffer for
  uint32_t aborted;    // futex: set once an op of this rank failed; the group is unusable
  uint64_t addr;       // the published buffer
  int32_t region_fd;   // its shared allocation's memfd in this rank's process, or -1
  uint32_t unused;
  uint64_t region_id;
  uint64_t region_inode;
  uint64_t region_bytes;
  uint64_t region_offset;
  alignas(64) uint32_t filled;    // futex: rounds whose input this rank staged
  alignas(64) uint32_t reduced;   // futex: rounds whose result piece this rank wrote
  alignas(64) uint32_t drained;   // futex: rounds this rank finished reading peers' windows of
  alignas(64) uint32_t done;      // futex: the op this rank finished reading peers' buffers for
  alignas(64) uint32_t written;   // futex: the single-copy op whose result piece this rank wrote
  alignas(64) char reason[64];    // why this rank abandoned its op, written before `aborted`
  alignas(64) uint32_t sleepers;  // peers asleep on a futex word of this slot
  // Followed by n send offsets and n send byte counts (all-to-all).
  int64_t* send_offsets() { return reinterpret_cast<int64_t*>(this + 1); }
};

// An op on the peers' buffers (all-to-all, single-copy): numbers it, publishes this
// rank's buffer and waits for the peers to finish with it.
class IntraHostGroup::OpScope {
 public:
  explicit OpScope(IntraHostGroup* g) : g_(g), op_(++g->op_) {}
  uint32_t op() const { return op_; }
  // Publishes that this rank's buffer [buffer, buffer + bytes) is ready, then waits for
  // every peer to do the same and records their buffers' addresses and, where a buffer
  // lies in shared memory, maps it (Peer::shared; this rank's own buffer too).
  Status Start(const void* buffer, size_t bytes, const IntraHostOp& ctx) {
    Slot* me = g_->slot(g_->rank_);
    me->addr = reinterpret_cast<uintptr_t>(buffer);
    const std::optional<SharedHostRef> ref =
        buffer == nullptr ? std::nullopt : FindSharedHost(buffer, bytes);
    me->region_fd = ref ? ref->fd : -1;
    me->region_id = ref ? ref->id : 0;
    me->region_inode = ref ? ref->inode : 0;
    me->region_bytes = ref ? ref->region_bytes : 0;
    me->region_offset = ref ? ref->offset : 0;
    g_->peers_[g_->rank_].shared = ref ? static_cast<const std::byte*>(buffer) : nullptr;
    g_->Publish(&Slot::published, op_);
    for (int p = 0; p < g_->n_; ++p) {
      if (p == g_->rank_) continue;
      PSZERO_RETURN_IF_ERROR(g_->WaitFor(p, &g_->slot(p)->published, op_, "start the op", ctx));
      g_->peers_[p].addr = g_->slot(p)->addr;
      PSZERO_RETURN_IF_ERROR(g_->MapPeerBuffer(p, ctx));
    }
    return Status::Ok();
  }
  // Whether every rank's buffer is readable here.
  bool AllShared() const {
    for (int p = 0; p < g_->n_; ++p) {
      if (g_->peers_[p].shared == nullptr) return false;
    }
    return true;
  }
  // This rank has read everything it needs; returns once every peer has too.
  Status Finish(const IntraHostOp& ctx) {
    g_->Publish(&Slot::done, op_);
    return g_->WaitAll(&Slot::done, op_, "finish reading its peers' buffers", ctx);
  }

 private:
  IntraHostGroup* g_;
  uint32_t op_;
};

HostIdentity ThisHost() {
  HostIdentity h;
  h.boot = Fnv1a(BootId());
  h.net_ns = NamespaceId("/proc/self/ns/net");
  h.pid_ns = NamespaceId("/proc/self/ns/pid");
  h.mnt_ns = NamespaceId("/proc/self/ns/mnt");
  return h;
}

IntraHostGroup::IntraHostGroup(int rank, int n)
    : rank_(rank), n_(n), peers_(std::make_unique<Peer[]>(static_cast<size_t>(n))) {}

IntraHostGroup::~IntraHostGroup() {
  if (base_ != nullptr) munmap(base_, map_bytes_);
  for (int p = 0; p < n_; ++p) {
    if (peers_[p].pidfd >= 0) close(peers_[p].pidfd);
    for (const PeerMapping& m : peers_[p].mappings) {
      munmap(const_cast<std::byte*>(m.base), m.bytes);
    }
  }
}

IntraHostGroup::Slot* IntraHostGroup::slot(int p) const {
  return reinterpret_cast<Slot*>(base_ + kHeaderBytes + static_cast<size_t>(p) * slot_bytes_);
}

void IntraHostGroup::Publish(uint32_t Slot::*word, uint32_t value) const {
  Slot* me = slot(rank_);
  std::atomic_ref<uint32_t>(me->*word).store(value, std::memory_order_seq_cst);
  if (std::atomic_ref<uint32_t>(me->sleepers).load(std::memory_order_seq_cst) != 0) {
    syscall(SYS_futex, &(me->*word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
  }
}

Result<std::unique_ptr<IntraHostGroup>> IntraHostGroup::Create(int rank, int n,
                                                               std::span<const int> global_ranks,
                                                               size_t segment_bytes,
                                                               const AllGatherFn& allgather,
                                                               std::string* why_not) {
  static_assert(sizeof(Slot) == kSlotFixedBytes);
  std::unique_ptr<IntraHostGroup> g(new IntraHostGroup(rank, n));
  for (int p = 0; p < n; ++p) g->peers_[p].global_rank = global_ranks[p];
  g->spin_ = n <= sysconf(_SC_NPROCESSORS_ONLN) ? kSpinOwnCore : kSpinShared;
  std::random_device rd;
  g->cookie_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ reinterpret_cast<uintptr_t>(g.get());
  g->slot_bytes_ = (kSlotFixedBytes + 16 * static_cast<size_t>(n) + 63) / 64 * 64;
  // Pieces are multiples of 64 bytes (every dtype divides them), and the windows stay
  // within kMaxWindowBytes each and kMaxWindowsBytes together however many ranks share
  // the host.
  const size_t cap = std::min(kMaxWindowBytes, kMaxWindowsBytes / static_cast<size_t>(n)) /
                     (2 * (static_cast<size_t>(n) + 1));
  g->piece_bytes_ = std::max<size_t>(64, std::min(segment_bytes, cap) / 64 * 64);
  g->window_bytes_ = (2 * (static_cast<size_t>(n) + 1) * g->piece_bytes_ + 4095) / 4096 * 4096;
  const size_t control =
      (kHeaderBytes + static_cast<size_t>(n) * g->slot_bytes_ + 4095) / 4096 * 4096;
  g->windows_offset_ = control;
  g->map_bytes_ = control + static_cast<size_t>(n) * g->window_bytes_;
  std::string local_why;
  int memfd = -1;
  if (rank == 0) {
    memfd = static_cast<int>(syscall(SYS_memfd_create, "pszero-intra-host", MFD_CLOEXEC));
    if (memfd < 0) {
      local_why = Errno("memfd_create");
    } else if (ftruncate(memfd, static_cast<off_t>(g->map_bytes_)) != 0) {
      local_why = Errno("ftruncate");
    } else {
      void* m = mmap(nullptr, g->map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
      if (m == MAP_FAILED) {
        local_why = Errno("mmap");
      } else {
        g->base_ = static_cast<std::byte*>(m);
        std::memcpy(g->base_, &kMagic, sizeof(kMagic));
        std::memcpy(g->base_ + 8, &g->cookie_, sizeof(g->cookie_));
      }
    }
  }
  struct FdCloser {
    int fd;
    ~FdCloser() {
      if (fd >= 0) close(fd);
    }
  } closer{memfd};

  Record mine{};
  mine.host = ThisHost();
  mine.pid = static_cast<int32_t>(getpid());
  mine.fd = memfd;
  mine.map_bytes = g->map_bytes_;
  mine.cookie_addr = reinterpret_cast<uintptr_t>(&g->cookie_);
  mine.cookie = g->cookie_;
  std::vector<Record> all(static_cast<size_t>(n));
  PSZERO_RETURN_IF_ERROR(
      allgather(std::as_bytes(std::span(&mine, 1)), std::as_writable_bytes(std::span(all))));
  for (int p = 0; p < n; ++p) {
    const Record& r = all[p];
    if (!(r.host == mine.host)) {
      *why_not = "rank " + std::to_string(global_ranks[p]) + " is on another host";
      return std::unique_ptr<IntraHostGroup>();
    }
  }
  // Same host: attach to rank 0's control block and check cross-memory attach works
  // with every peer by reading its cookie.
  if (local_why.empty() && rank != 0) {
    if (all[0].fd < 0) {
      local_why = "rank 0 has no control block";
    } else {
      const std::string path =
          "/proc/" + std::to_string(all[0].pid) + "/fd/" + std::to_string(all[0].fd);
      const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) {
        local_why = Errno(("open " + path).c_str());
      } else {
        struct stat st {};
        void* m = MAP_FAILED;
        if (fstat(fd, &st) == 0 && static_cast<size_t>(st.st_size) == g->map_bytes_) {
          m = mmap(nullptr, g->map_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        }
        close(fd);
        uint64_t magic = 0, cookie = 0;
        if (m != MAP_FAILED) {
          g->base_ = static_cast<std::byte*>(m);
          std::memcpy(&magic, g->base_, 8);
          std::memcpy(&cookie, g->base_ + 8, 8);
        }
        if (m == MAP_FAILED || magic != kMagic || cookie != all[0].cookie) {
          local_why = path + " is not rank 0's control block";
        }
      }
    }
  }
  bool cma = true;
  for (int p = 0; p < n && local_why.empty(); ++p) {
    g->peers_[p].pid = all[p].pid;
    if (all[p].pid == mine.pid) continue;
    g->peers_[p].pidfd = static_cast<int>(syscall(SYS_pidfd_open, all[p].pid, 0));
    if (g->peers_[p].pidfd < 0) {
      local_why = Errno("pidfd_open");
      break;
    }
    uint64_t cookie = 0;
    iovec local{&cookie, sizeof(cookie)};
    iovec remote{reinterpret_cast<void*>(all[p].cookie_addr), sizeof(cookie)};
    if (process_vm_readv(all[p].pid, &local, 1, &remote, 1, 0) !=
            static_cast<ssize_t>(sizeof(cookie)) ||
        cookie != all[p].cookie) {
      cma = false;  // all-to-all(v) then stays on the transport
    }
  }
  Verdict verdict{};
  verdict.ok = local_why.empty() ? 1 : 0;
  verdict.cma = cma ? 1 : 0;
  std::strncpy(verdict.why, local_why.c_str(), sizeof(verdict.why) - 1);
  std::vector<Verdict> verdicts(static_cast<size_t>(n));
  PSZERO_RETURN_IF_ERROR(allgather(std::as_bytes(std::span(&verdict, 1)),
                                   std::as_writable_bytes(std::span(verdicts))));
  for (int p = 0; p < n; ++p) {
    if (verdicts[p].ok == 0) {
      *why_not = "rank " + std::to_string(global_ranks[p]) + ": " +
                 std::string(verdicts[p].why, strnlen(verdicts[p].why, sizeof(verdicts[p].why)));
      return std::unique_ptr<IntraHostGroup>();
    }
    g->cma_ = g->cma_ && verdicts[p].cma != 0;
  }
  return g;
}

void IntraHostGroup::Abandon(const Status& reason) {
  Slot* me = slot(rank_);
  if (Load(&me->aborted) != 0) return;
  std::strncpy(me->reason, reason.message().c_str(), sizeof(me->reason) - 1);
  me->reason[sizeof(me->reason) - 1] = '\0';
  Publish(&Slot::aborted, 1);
}

Status IntraHostGroup::PeerAlive(int p) const {
  if (peers_[p].pidfd < 0) return Status::Ok();
  pollfd pfd{peers_[p].pidfd, POLLIN, 0};
  if (poll(&pfd, 1, 0) > 0) {
    return Status::Unavailable("rank " + std::to_string(peers_[p].global_rank) + " (pid " +
                               std::to_string(peers_[p].pid) + ") exited");
  }
  return Status::Ok();
}

Status IntraHostGroup::PeersHealthy() const {
  // Deaths first: the survivors that noticed one give up too, and the dead rank is the
  // news.
  for (int q = 0; q < n_; ++q) {
    if (q != rank_) PSZERO_RETURN_IF_ERROR(PeerAlive(q));
  }
  for (int q = 0; q < n_; ++q) {
    if (q == rank_ || Load(&slot(q)->aborted) == 0) continue;
    const char* reason = slot(q)->reason;
    return Status::Unavailable("rank " + std::to_string(peers_[q].global_rank) + " gave up: " +
                               std::string(reason, strnlen(reason, sizeof(slot(q)->reason))));
  }
  return Status::Ok();
}

Status IntraHostGroup::MapPeerBuffer(int p, const IntraHostOp& ctx) {
  Peer& peer = peers_[p];
  peer.shared = nullptr;
  const Slot* s = slot(p);
  if (s->region_fd < 0) return Status::Ok();
  // A rank of this process (ranks as threads) is mapped like any other: its buffer at a
  // second address, as the control block is (one code path; and ThreadSanitizer, which
  // cannot see the futex words' ordering through two mappings, sees no false races).
  ++map_uses_;
  auto it = std::find_if(peer.mappings.begin(), peer.mappings.end(),
                         [&](const PeerMapping& m) { return m.id == s->region_id; });
  if (it == peer.mappings.end() || it->bytes != s->region_bytes) {
    if (it != peer.mappings.end()) {
      munmap(const_cast<std::byte*>(it->base), it->bytes);
      peer.mappings.erase(it);
    }
    if (peer.mappings.size() >= kMappingsPerPeer) {
      auto lru = std::min_element(
          peer.mappings.begin(), peer.mappings.end(),
          [](const PeerMapping& a, const PeerMapping& b) { return a.last_use < b.last_use; });
      munmap(const_cast<std::byte*>(lru->base), lru->bytes);
      peer.mappings.erase(lru);
    }
    // The peer holds the allocation (and its fd) until every rank finished the op,
    // unless the op failed there: then it gave up first, and that is the news. The
    // inode tells a reused fd number from the file published.
    const std::string path =
        "/proc/" + std::to_string(peer.pid) + "/fd/" + std::to_string(s->region_fd);
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st {};
    void* m = MAP_FAILED;
    std::string what = fd < 0 ? Errno("open") : "not the file published";
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        static_cast<uint64_t>(st.st_ino) == s->region_inode &&
        static_cast<uint64_t>(st.st_size) == s->region_bytes) {
      m = mmap(nullptr, s->region_bytes, PROT_READ, MAP_SHARED, fd, 0);
      if (m == MAP_FAILED) what = Errno("mmap");
    }
    if (fd >= 0) close(fd);
    if (m == MAP_FAILED) {
      PSZERO_RETURN_IF_ERROR(PeersHealthy().WithContext(ctx.where));
      return Status::Internal(ctx.where + ": mapping rank " + std::to_string(peer.global_rank) +
                              "'s shared buffer " + path + ": " + what);
    }
    peer.mappings.push_back(
        PeerMapping{s->region_id, static_cast<const std::byte*>(m), s->region_bytes, 0});
    it = peer.mappings.end() - 1;
  }
  it->last_use = map_uses_;
  peer.shared = it->base + s->region_offset;
  return Status::Ok();
}

Status IntraHostGroup::WaitFor(int p, const uint32_t* word, uint32_t target, const char* what,
                               const IntraHostOp& ctx) const {
  const auto spin_until = Clock::now() + spin_;
  do {
    for (int i = 0; i < 32; ++i) {
      if (Reached(Load(word), target)) return Status::Ok();
      CpuRelax();
    }
  } while (Clock::now() < spin_until);
  while (true) {
    const uint32_t seen = Load(word);
    if (Reached(seen, target)) return Status::Ok();
    PSZERO_RETURN_IF_ERROR(PeersHealthy().WithContext(ctx.where));
    if (ctx.health) PSZERO_RETURN_IF_ERROR(ctx.health().WithContext(ctx.where));
    const auto left = ctx.deadline - Clock::now();
    if (left <= Clock::duration::zero()) {
      return Status::DeadlineExceeded(ctx.where + ": rank " +
                                      std::to_string(peers_[p].global_rank) + " did not " + what +
                                      " before the deadline");
    }
    const auto nap = std::min<Clock::duration>(left, kWakeEvery);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(nap).count();
    timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
    std::atomic_ref<uint32_t> sleepers(slot(p)->sleepers);
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t now =
        std::atomic_ref<uint32_t>(*const_cast<uint32_t*>(word)).load(std::memory_order_seq_cst);
    if (now == seen) syscall(SYS_futex, word, FUTEX_WAIT, seen, &ts, nullptr, 0);
    sleepers.fetch_sub(1, std::memory_order_seq_cst);
  }
}

Status IntraHostGroup::Pull(int p, uint64_t remote, void* local, size_t bytes,
                            const IntraHostOp& ctx) const {
  if (bytes == 0) return Status::Ok();
  if (peers_[p].pidfd < 0) {  // a rank of this process
    std::memcpy(local, reinterpret_cast<const void*>(remote), bytes);
    return Status::Ok();
  }
  auto* dst = static_cast<char*>(local);
  while (bytes > 0) {
    iovec l{dst, bytes};
    iovec r{reinterpret_cast<void*>(remote), bytes};
    const ssize_t got = process_vm_readv(peers_[p].pid, &l, 1, &r, 1, 0);
    if (got <= 0) {
      if (got < 0 && errno == EINTR) continue;
      const int err = errno;
      PSZERO_RETURN_IF_ERROR(PeersHealthy().WithContext(ctx.where));
      return Status::Internal(ctx.where + ": reading " + std::to_string(bytes) + " bytes of rank " +
                              std::to_string(peers_[p].global_rank) +
                              "'s buffer: " + std::strerror(err));
    }
    dst += got;
    remote += static_cast<uint64_t>(got);
    bytes -= static_cast<size_t>(got);
  }
  return Status::Ok();
}

std::byte* IntraHostGroup::window(int p, uint32_t round) const {
  return base_ + windows_offset_ + static_cast<size_t>(p) * window_bytes_ +
         (round % 2) * (static_cast<size_t>(n_) + 1) * piece_bytes_;
}

Status IntraHostGroup::WaitAll(uint32_t Slot::*counter, uint32_t target, const char* what,
                               const IntraHostOp& ctx) const {
  for (int i = 1; i < n_; ++i) {
    const int p = (rank_ + i) % n_;
    PSZERO_RETURN_IF_ERROR(WaitFor(p, &(slot(p)->*counter), target, what, ctx));
  }
  return Status::Ok();
}

Status IntraHostGroup::BeginRound(uint32_t t, const IntraHostOp& ctx) const {
  // Round t reuses the window slot of round t - 2: every peer must be done with it.
  return WaitAll(&Slot::drained, t - 1, "finish reading an earlier round", ctx);
}

namespace {

int64_t ChunkBegin(int64_t count, int n, int c) {
  const int64_t q = count / n, rem = count % n;
  return c * q + std::min<int64_t>(c, rem);
}

size_t Bytes(int64_t count, size_t es) { return static_cast<size_t>(count) * es; }

}  // namespace

Status IntraHostGroup::RunRounds(int64_t rounds, bool stages,
                                 const std::function<void(int64_t, std::byte*)>& stage,
                                 const std::function<Status(int64_t, uint32_t)>& consume,
                                 const IntraHostOp& ctx) {
  auto fill = [&](int64_t i) -> Status {
    const uint32_t t = round_ + static_cast<uint32_t>(i);
    PSZERO_RETURN_IF_ERROR(BeginRound(t, ctx));
    stage(i, window(rank_, t));
    Publish(&Slot::filled, t + 1);
    return Status::Ok();
  };
  if (stages && rounds > 0) PSZERO_RETURN_IF_ERROR(fill(0));
  for (int64_t i = 0; i < rounds; ++i) {
    const uint32_t t = round_ + static_cast<uint32_t>(i);
    // Round i+1 is staged while the peers still work on round i.
    if (stages && i + 1 < rounds) PSZERO_RETURN_IF_ERROR(fill(i + 1));
    PSZERO_RETURN_IF_ERROR(consume(i, t));
    Publish(&Slot::drained, t + 1);
  }
  round_ += static_cast<uint32_t>(rounds);
  return Status::Ok();
}

Result<IntraHostBytes> IntraHostGroup::AllReduce(void* data, int64_t count, DType dtype,
                                                 ReduceOp op, const IntraHostOp& ctx) {
  IntraHostBytes bytes;
  const size_t es = DTypeSize(dtype);
  if (Bytes(count, es) >= ctx.single_copy_min_bytes) {
    OpScope scope(this);
    PSZERO_RETURN_IF_ERROR(scope.Start(data, Bytes(count, es), ctx));
    if (scope.AllShared()) return SingleCopyAllReduce(scope, data, count, dtype, op, ctx);
  }
  const int64_t per_round = static_cast<int64_t>(piece_bytes_ / es) * n_;
  auto* buf = static_cast<std::byte*>(data);
  // Round i covers [i * per_round, ...), cut into n balanced pieces; rank q owns piece q.
  auto piece = [&](int64_t i, int q) -> std::pair<int64_t, int64_t> {
    const int64_t begin = i * per_round, len = std::min(per_round, count - begin);
    const int64_t b = ChunkBegin(len, n_, q);
    return {begin + b, ChunkBegin(len, n_, q + 1) - b};
  };
  const size_t result = static_cast<size_t>(n_) * piece_bytes_;  // offset in a slot
  const bool streaming = Bytes(count, es) >= kStreamingBytes;
  std::vector<const void*> inputs(static_cast<size_t>(n_));
  PSZERO_RETURN_IF_ERROR(RunRounds(
      (count + per_round - 1) / per_round, /*stages=*/true,
      [&](int64_t i, std::byte* w) {  // the pieces the peers reduce
        for (int q = 0; q < n_; ++q) {
          if (q == rank_) continue;
          const auto [b, len] = piece(i, q);
          CopyOut(w + static_cast<size_t>(q) * piece_bytes_, buf + Bytes(b, es), Bytes(len, es),
                  streaming);
          bytes.served += static_cast<int64_t>(Bytes(len, es));
        }
      },
      [&](int64_t i, uint32_t t) -> Status {
        PSZERO_RETURN_IF_ERROR(WaitAll(&Slot::filled, t + 1, "stage its input", ctx));
        // Our piece: every rank's contribution in ascending rank order, straight from
        // the peers' windows.
        const auto [b, len] = piece(i, rank_);
        for (int p = 0; p < n_; ++p) {
          inputs[p] = p == rank_ ? static_cast<const void*>(buf + Bytes(b, es))
                                 : window(p, t) + static_cast<size_t>(rank_) * piece_bytes_;
        }
        if (len > 0) {
          ReduceOrdered(window(rank_, t) + result, inputs.data(), n_, len, dtype, op,
                        op == ReduceOp::kAvg ? 1.0 / n_ : 1.0);
        }
        bytes.pulled += (n_ - 1) * static_cast<int64_t>(Bytes(len, es));
        Publish(&Slot::reduced, t + 1);
        // Every piece's result into place, ours first.
        for (int j = 0; j < n_; ++j) {
          const int q = (rank_ + j) % n_;
          if (q != rank_) {
            PSZERO_RETURN_IF_ERROR(WaitFor(q, &slot(q)->reduced, t + 1, "reduce its piece", ctx));
          }
          const auto [qb, qlen] = piece(i, q);
          CopyOut(buf + Bytes(qb, es), window(q, t) + result, Bytes(qlen, es), streaming);
          const int64_t moved = static_cast<int64_t>(Bytes(qlen, es));
          if (q == rank_) {
            bytes.served += (n_ - 1) * moved;  // every peer reads our result piece
          } else {
            bytes.pulled += moved;
          }
        }
        return Status::Ok();
      },
      ctx));
  return bytes;
}

Result<IntraHostBytes> IntraHostGroup::SingleCopyAllReduce(OpScope& scope, void* data,
                                                           int64_t count, DType dtype, ReduceOp op,
                                                           const IntraHostOp& ctx) {
  IntraHostBytes bytes;
  const size_t es = DTypeSize(dtype);
  auto* buf = static_cast<std::byte*>(data);
  // Rank q owns piece q: it reduces it from every rank's buffer in ascending rank order
  // into its own buffer (nobody else reads that piece there until it is written), then
  // every rank copies the other pieces' results from their owners.
  auto piece = [&](int q) -> std::pair<size_t, size_t> {
    const int64_t b = ChunkBegin(count, n_, q);
    return {Bytes(b, es), Bytes(ChunkBegin(count, n_, q + 1) - b, es)};
  };
  const auto [mine, mine_len] = piece(rank_);
  std::vector<const void*> inputs(static_cast<size_t>(n_));
  for (int p = 0; p < n_; ++p) inputs[p] = peers_[p].shared + mine;
  if (mine_len > 0) {
    ReduceOrdered(buf + mine, inputs.data(), n_, static_cast<int64_t>(mine_len / es), dtype, op,
                  op == ReduceOp::kAvg ? 1.0 / n_ : 1.0);
  }
  Publish(&Slot::written, scope.op());
  bytes.pulled += (n_ - 1) * static_cast<int64_t>(mine_len);
  bytes.served += (n_ - 1) * static_cast<int64_t>(mine_len);  // every peer reads our result
  const bool streaming = Bytes(count, es) >= kStreamingBytes;
  for (int j = 1; j < n_; ++j) {
    const int q = (rank_ + j) % n_;
    PSZERO_RETURN_IF_ERROR(WaitFor(q, &slot(q)->written, scope.op(), "reduce its piece", ctx));
    const auto [b, len] = piece(q);
    CopyOut(buf + b, peers_[q].shared + b, len, streaming);
    bytes.pulled += static_cast<int64_t>(len);
    bytes.served += static_cast<int64_t>(len);  // rank q read our piece q
  }
  PSZERO_RETURN_IF_ERROR(scope.Finish(ctx));
  bytes.single_copy = true;
  return bytes;
}

Result<IntraHostBytes> IntraHostGroup::ReduceScatter(const void* input, void* output,
                                                     int64_t block_count, DType dtype, ReduceOp op,
                                                     const IntraHostOp& ctx) {
  IntraHostBytes bytes;
  const size_t es = DTypeSize(dtype);
  if (Bytes(block_count, es) * static_cast<size_t>(n_) >= ctx.single_copy_min_bytes) {
    OpScope scope(this);
    PSZERO_RETURN_IF_ERROR(scope.Start(input, Bytes(block_count, es) * n_, ctx));
    if (scope.AllShared()) {
      // Our block: every rank's contribution in ascending rank order, in place.
      std::vector<const void*> inputs(static_cast<size_t>(n_));
      for (int p = 0; p < n_; ++p) inputs[p] = peers_[p].shared + Bytes(rank_ * block_count, es);
      ReduceOrdered(output, inputs.data(), n_, block_count, dtype, op,
                    op == ReduceOp::kAvg ? 1.0 / n_ : 1.0);
      bytes.pulled = bytes.served = (n_ - 1) * static_cast<int64_t>(Bytes(block_count, es));
      PSZERO_RETURN_IF_ERROR(scope.Finish(ctx));
      bytes.single_copy = true;
      return bytes;
    }
  }
  const int64_t per_round = static_cast<int64_t>(piece_bytes_ / es);
  const auto* in = static_cast<const std::byte*>(input);
  const bool streaming = Bytes(block_count, es) * static_cast<size_t>(n_) >= kStreamingBytes;
  // Round i covers elements [i * per_round, ...) of every block.
  auto span = [&](int64_t i) -> std::pair<int64_t, int64_t> {
    return {i * per_round, std::min(per_round, block_count - i * per_round)};
  };
  std::vector<const void*> inputs(static_cast<size_t>(n_));
  PSZERO_RETURN_IF_ERROR(RunRounds(
      (block_count + per_round - 1) / per_round, /*stages=*/true,
      [&](int64_t i, std::byte* w) {  // the peers' blocks' pieces
        const auto [b, len] = span(i);
        for (int q = 0; q < n_; ++q) {
          if (q == rank_) continue;
          CopyOut(w + static_cast<size_t>(q) * piece_bytes_, in + Bytes(q * block_count + b, es),
                  Bytes(len, es), streaming);
          bytes.served += static_cast<int64_t>(Bytes(len, es));
        }
      },
      [&](int64_t i, uint32_t t) -> Status {
        PSZERO_RETURN_IF_ERROR(WaitAll(&Slot::filled, t + 1, "stage its input", ctx));
        const auto [b, len] = span(i);
        for (int p = 0; p < n_; ++p) {
          inputs[p] = p == rank_ ? static_cast<const void*>(in + Bytes(rank_ * block_count + b, es))
                                 : window(p, t) + static_cast<size_t>(rank_) * piece_bytes_;
        }
        ReduceOrdered(static_cast<std::byte*>(output) + Bytes(b, es), inputs.data(), n_, len, dtype,
                      op, op == ReduceOp::kAvg ? 1.0 / n_ : 1.0);
        bytes.pulled += (n_ - 1) * static_cast<int64_t>(Bytes(len, es));
        return Status::Ok();
      },
      ctx));
  return bytes;
}

Result<IntraHostBytes> IntraHostGroup::AllGather(const void* input, void* output,
                                                 size_t block_bytes, const IntraHostOp& ctx) {
  IntraHostBytes bytes;
  const bool streaming = block_bytes * static_cast<size_t>(n_) >= kStreamingBytes;
  auto* out = static_cast<std::byte*>(output);
  std::byte* own = out + static_cast<size_t>(rank_) * block_bytes;
  if (block_bytes * static_cast<size_t>(n_) >= ctx.single_copy_min_bytes) {
    OpScope scope(this);
    PSZERO_RETURN_IF_ERROR(scope.Start(input, block_bytes, ctx));
    if (scope.AllShared()) {
      for (int j = 0; j < n_; ++j) {
        const int q = (rank_ + j) % n_;
        std::byte* dst = out + static_cast<size_t>(q) * block_bytes;
        if (dst != peers_[q].shared) CopyOut(dst, peers_[q].shared, block_bytes, streaming);
      }
      bytes.pulled = bytes.served = (n_ - 1) * static_cast<int64_t>(block_bytes);
      PSZERO_RETURN_IF_ERROR(scope.Finish(ctx));
      bytes.single_copy = true;
      return bytes;
    }
  }
  // Only our own block is staged, so a round may use a slot's whole input area.
  const size_t per_round = static_cast<size_t>(n_) * piece_bytes_;
  auto span = [&](int64_t i) -> std::pair<size_t, size_t> {
    const size_t b = static_cast<size_t>(i) * per_round;
    return {b, std::min(per_round, block_bytes - b)};
  };
  PSZERO_RETURN_IF_ERROR(RunRounds(
      static_cast<int64_t>((block_bytes + per_round - 1) / per_round), /*stages=*/true,
      [&](int64_t i, std::byte* w) {
        const auto [b, len] = span(i);
        const auto* src = static_cast<const std::byte*>(input) + b;
        CopyOut(w, src, len, streaming);
        if (input != own) CopyOut(own + b, src, len, streaming);
        bytes.served += (n_ - 1) * static_cast<int64_t>(len);
      },
      [&](int64_t i, uint32_t t) -> Status {
        const auto [b, len] = span(i);
        for (int j = 1; j < n_; ++j) {
          const int q = (rank_ + j) % n_;
          PSZERO_RETURN_IF_ERROR(WaitFor(q, &slot(q)->filled, t + 1, "stage its block", ctx));
          CopyOut(out + static_cast<size_t>(q) * block_bytes + b, window(q, t), len, streaming);
          bytes.pulled += static_cast<int64_t>(len);
        }
        return Status::Ok();
      },
      ctx));
  return bytes;
}

Result<IntraHostBytes> IntraHostGroup::Broadcast(void* data, size_t nbytes, int root,
                                                 const IntraHostOp& ctx) {
  IntraHostBytes bytes;
  if (nbytes >= ctx.single_copy_min_bytes) {
    OpScope scope(this);
    PSZERO_RETURN_IF_ERROR(scope.Start(data, nbytes, ctx));
    if (peers_[root].shared != nullptr) {  // only the root's buffer is read
      if (rank_ == root) {
        bytes.served = (n_ - 1) * static_cast<int64_t>(nbytes);
      } else {
        CopyOut(data, peers_[root].shared, nbytes, nbytes >= kStreamingBytes);
        bytes.pulled = static_cast<int64_t>(nbytes);
      }
      PSZERO_RETURN_IF_ERROR(scope.Finish(ctx));
      bytes.single_copy = true;
      return bytes;
    }
  }
  const size_t per_round = (static_cast<size_t>(n_) + 1) * piece_bytes_;  // the whole slot
  auto* buf = static_cast<std::byte*>(data);
  auto span = [&](int64_t i) -> std::pair<size_t, size_t> {
    const size_t b = static_cast<size_t>(i) * per_round;
    return {b, std::min(per_round, nbytes - b)};
  };
  PSZERO_RETURN_IF_ERROR(RunRounds(
      static_cast<int64_t>((nbytes + per_round - 1) / per_round), /*stages=*/rank_ == root,
      [&](int64_t i, std::byte* w) {
        const auto [b, len] = span(i);
        CopyOut(w, buf + b, len, nbytes >= kStreamingBytes);
        bytes.served += (n_ - 1) * static_cast<int64_t>(len);
      },
      [&](int64_t i, uint32_t t) -> Status {
        if (rank_ == root) return Status::Ok();
        const auto [b, len] = span(i);
        PSZERO_RETURN_IF_ERROR(WaitFor(root, &slot(root)->filled, t + 1, "stage its data", ctx));
        CopyOut(buf + b, window(root, t), len, nbytes >= kStreamingBytes);
        bytes.pulled += static_cast<int64_t>(len);
        return Status::Ok();
      },
      ctx));
  return bytes;
}

Result<IntraHostBytes> IntraHostGroup::AllToAllV(const void* input,
                                                 std::span<const int64_t> send_bytes, void* output,
                                                 std::span<const int64_t> recv_bytes,
                                                 const IntraHostOp& ctx) {
  OpScope scope(this);
  IntraHostBytes bytes;
  int64_t* offsets = slot(rank_)->send_offsets();
  int64_t off = 0;
  for (int p = 0; p < n_; ++p) {
    offsets[p] = off;
    offsets[n_ + p] = send_bytes[p];
    off += send_bytes[p];
    if (p != rank_) bytes.served += send_bytes[p];
  }
  PSZERO_RETURN_IF_ERROR(scope.Start(input, static_cast<size_t>(off), ctx));
  std::vector<int64_t> recv_off(static_cast<size_t>(n_) + 1, 0);
  for (int p = 0; p < n_; ++p) recv_off[p + 1] = recv_off[p] + recv_bytes[p];
  for (int i = 1; i < n_; ++i) {
    const int p = (rank_ + i) % n_;
    const int64_t* theirs = slot(p)->send_offsets();
    if (theirs[n_ + rank_] != recv_bytes[p]) {
      return Status::InvalidArgument(ctx.where + ": rank " + std::to_string(peers_[p].global_rank) +
                                     " sends " + std::to_string(theirs[n_ + rank_]) +
                                     " bytes here, " + std::to_string(recv_bytes[p]) + " expected");
    }
    auto* dst = static_cast<std::byte*>(output) + recv_off[p];
    if (peers_[p].shared != nullptr) {  // its input is mapped here: no system call
      std::memcpy(dst, peers_[p].shared + theirs[rank_], static_cast<size_t>(recv_bytes[p]));
    } else {
      PSZERO_RETURN_IF_ERROR(Pull(p, peers_[p].addr + static_cast<uint64_t>(theirs[rank_]), dst,
                                  static_cast<size_t>(recv_bytes[p]), ctx));
    }
    bytes.pulled += recv_bytes[p];
  }
  PSZERO_RETURN_IF_ERROR(scope.Finish(ctx));
  return bytes;
}

}  // namespace pszero::collectives
