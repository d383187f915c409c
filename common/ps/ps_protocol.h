// The parameter-server protocol that pszero-server (server/ps_server.h) and the worker's
// PsClient (worker/ps/ps_client.h) both speak: the slice map that cuts a flat parameter
// buffer into key ranges and assigns them to servers, the consistency modes, and the
// fixed-size active-message headers.
//
// Key spaces: every TP rank's flat parameter buffer is one key space (id = TP rank);
// its D data-parallel workers push to and pull from it. A key space of `numel` elements is
// cut into equal slices of about `slice_bytes` (at least one slice per server while there
// are elements, so small buffers still spread over every server), and slice i lives on
// server i mod S. Both sides compute the map from (numel, slice_bytes, S) alone, so it
// never travels; every request carries the slice's begin and numel and the server rejects
// a request whose geometry differs from its own map.
//
// Messages (AM ids below; headers are trivially copyable structs, payloads raw elements:
// pushes and pulls in the key space's dtype, fp32 or bf16; init and state in fp32):
//   init  worker → server: initial parameters of one slice (sent by DP worker 0 only)
//   push  worker → server: the gradient of one slice for step `clock`
//   pull  worker → server: "send me slice k once it satisfies my clock"
//   ack   server → worker: init / push accepted, or rejected (code != 0, message)
//   reply server → worker: the parameters of one slice (payload), or an error (no payload)
//   stats worker → server: "what have you done so far" (a RequestHeader, for reports)
//   stats-reply server → worker: its counters (a StatsReplyHeader, no payload)
//   state-read  worker → server: "send me slice k's params, m and v once the state is at
//               my clock" (checkpoints; no payload)
//   state-reply server → worker: a ReplyHeader and the slice's params, m and v one after
//               the other (3 × numel fp32), or an error (no payload)
//   state-write worker → server: overwrite slice k's params, m and v with the payload
//               (same layout) and set its step clock to `clock` (a resumed checkpoint);
//               answered by an ack
// The state messages are rare (checkpoints, restarts): they may allocate, push and pull
// never do.
// Plain values; thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace pszero::ps {

enum class Consistency : uint8_t {
  kBsp,  // apply once all D pushes of a step arrived (ascending-rank fp32 sum)
  kSsp,  // apply each push on arrival; a pull at clock c waits for every worker's c - s
  kAsp,  // apply each push on arrival; a pull never waits for other workers
};
std::string_view ConsistencyName(Consistency c);
Result<Consistency> ParseConsistency(std::string_view name);

// One slice: elements [begin, begin + numel) of the key space, owned by `server`.
struct Slice {
  int32_t index = 0;
  int64_t begin = 0;
  int64_t numel = 0;
  int32_t server = 0;
};

// The balanced, deterministic slice → server map of one key space.
class SliceMap {
 public:
  // numel >= 1, slice_bytes >= 4, num_servers >= 1.
  static Result<SliceMap> Create(int64_t numel, int64_t slice_bytes, int num_servers);

  int64_t numel() const { return numel_; }
  int num_servers() const { return num_servers_; }
  int num_slices() const { return static_cast<int>(slices_.size()); }
  const Slice& slice(int i) const { return slices_[static_cast<size_t>(i)]; }
  std::span<const Slice> slices() const { return slices_; }
  // Slices owned by `server`, ascending.
  std::vector<int> SlicesOf(int server) const;
  // Elements owned by `server`.
  int64_t ServerNumel(int server) const;
  // [first, last) slice indices whose ranges lie entirely inside [begin, end).
  std::pair<int, int> SlicesInside(int64_t begin, int64_t end) const;
  // [first, last) slice indices that intersect [begin, end).
  std::pair<int, int> SlicesTouching(int64_t begin, int64_t end) const;
  // One line per server: "server s: n slices, bytes B (mean M)", printed at start.
  std::string Describe() const;

 private:
  int64_t numel_ = 0;
  int num_servers_ = 1;
  int64_t slice_numel_ = 0;  // every slice but the last
  std::vector<Slice> slices_;
};

// ---- Server configuration --------------------------------------------------------------

// What a worker must agree on with the servers, published by every server in the job's
// key-value store under ServerConfigKey(index) before it serves: the slice size (the map
// depends on it) and, for logs and reports, the consistency mode. Workers read it instead
// of taking flags of their own, so the two sides cannot disagree.
struct ServerConfig {
  int64_t slice_bytes = 4 << 20;
  Consistency consistency = Consistency::kBsp;
  int staleness = 0;
  std::string optimizer = "adamw";
  int grad_accum = 1;  // micro-batches per push the update averages over (--grad-accum)
};
std::string ServerConfigKey(int server_index);
// "slice_bytes=4194304 consistency=bsp staleness=0 optimizer=adamw", then
// " grad_accum=K" when K is not 1.
std::string EncodeServerConfig(const ServerConfig& c);
// InvalidArgument naming what is malformed.
Result<ServerConfig> ParseServerConfig(std::string_view text);

// ---- Wire ------------------------------------------------------------------------------

inline constexpr uint16_t kAmInit = 0x5300;
inline constexpr uint16_t kAmPush = 0x5301;
inline constexpr uint16_t kAmPull = 0x5302;
inline constexpr uint16_t kAmAck = 0x5303;
inline constexpr uint16_t kAmReply = 0x5304;
inline constexpr uint16_t kAmStats = 0x5305;
inline constexpr uint16_t kAmStatsReply = 0x5306;
inline constexpr uint16_t kAmStateRead = 0x5307;
inline constexpr uint16_t kAmStateReply = 0x5308;
inline constexpr uint16_t kAmStateWrite = 0x5309;
// Arrays of a state-read reply and of a state-write payload, in this order, numel each.
inline constexpr int kStateArrays = 3;  // params, AdamW m (exp_avg), AdamW v (exp_avg_sq)

inline constexpr uint32_t kMagic = 0x50535a31;  // "PSZ1"

// Codes carried by ack / reply; 0 is success, the others map to StatusCode.
enum class WireCode : int32_t { kOk = 0, kInvalidArgument = 1, kFailedState = 2 };

// Worker → server (init, push, pull, state-read, state-write).
struct RequestHeader {
  uint32_t magic = kMagic;
  // The key space's DType, fp32 or bf16: the element type of push and pull payloads (init
  // and state payloads are the fp32 master either way). The first request naming a key
  // space fixes it; a request that differs is rejected.
  uint8_t dtype = 0;
  uint8_t pad[3] = {};
  uint32_t key_space = 0;
  int32_t slice = 0;
  int32_t worker = 0;       // data-parallel rank in the key space's group
  int32_t num_workers = 0;  // D
  int64_t total_numel = 0;  // of the key space
  int64_t slice_begin = 0;
  int64_t numel = 0;  // of the slice (and the payload, for init and push)
  // push: the step the gradient belongs to; pull, state-read: steps pushed so far;
  // state-write: the steps the written state has seen (the server's clock after it)
  int64_t clock = 0;
  uint64_t request = 0;
};

// Server → worker (ack, reply, state-reply).
struct ReplyHeader {
  uint32_t magic = kMagic;
  int32_t code = 0;  // WireCode
  uint32_t key_space = 0;
  int32_t slice = 0;
  int32_t server = 0;
  int32_t pad = 0;
  int64_t version = 0;  // reply: updates applied to the slice when it was sent
  uint64_t request = 0;
  char message[192] = {};  // NUL-terminated reason when code != 0
};

// What a server has done so far: the figures of a run report's "servers" entry.
struct ServerCounters {
  int64_t pushes = 0;
  int64_t pulls = 0;
  int64_t updates = 0;
  int64_t rejected = 0;
  int64_t push_bytes = 0;   // gradient payload received
  int64_t pull_bytes = 0;   // parameter payload sent
  int64_t model_bytes = 0;  // params + optimizer state + receive slots (+ reply copies) held
  // Largest c - min_w(pushes of w) seen when a pull was served (ssp/asp instrumentation).
  int64_t max_served_staleness = 0;
};

// Server → worker (stats-reply).
struct StatsReplyHeader {
  uint32_t magic = kMagic;
  int32_t server = 0;
  uint64_t request = 0;
  ServerCounters counters;
};

// Copies a header out of an AM header span; InvalidArgument when the size or magic is wrong.
template <typename H>
Result<H> DecodeHeader(std::span<const std::byte> bytes);

std::span<const std::byte> HeaderBytes(const RequestHeader& h);
std::span<const std::byte> HeaderBytes(const ReplyHeader& h);
std::span<const std::byte> HeaderBytes(const StatsReplyHeader& h);
void SetMessage(ReplyHeader& h, std::string_view message);

}  // namespace pszero::ps
