// The control-plane wire protocol: every byte the rendezvous service and its clients
// exchange is encoded and decoded here, and nowhere else.
//
// A frame is a 12-byte header followed by a payload:
//   magic "PSZ0" (4 bytes) | version u8 | type u8 | flags u16 (0) | payload length u32
// All integers are little-endian. Strings and byte blobs inside payloads are a u32 length
// followed by the bytes, each with its own upper bound. Decoding never trusts a length
// before checking it against the bytes actually present and the bound, so malformed
// input (truncated, oversize, unknown type, wrong version, garbage) yields a Status,
// never a crash and never an allocation larger than the input or the bound.
// Pure functions on values; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/status.h"

namespace pszero {

// The two kinds of processes that join a job. Ranks are per role: servers 0..S-1,
// workers 0..W-1. A node launcher of a multi-node job (docs/cluster.md) joins too, as
// kLauncher with its node rank as rank: it is no member of the world (no rank, no
// barriers), but reports the deaths of the processes it started and hears of losses.
enum class Role : uint8_t { kServer = 0, kWorker = 1, kLauncher = 2 };

// "server" / "worker".
std::string_view RoleName(Role role);
// "worker 3": how messages name a peer.
std::string PeerName(Role role, int rank);
// "w3" / "s0": the output prefix of a process.
std::string PeerTag(Role role, int rank);

namespace wire {

inline constexpr char kMagic[4] = {'P', 'S', 'Z', '0'};
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 12;
inline constexpr uint32_t kDefaultMaxPayloadBytes = 1u << 20;

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kMacBytes = 32;  // HMAC-SHA256
inline constexpr size_t kMaxHostBytes = 255;
inline constexpr size_t kMaxKeyBytes = 1024;  // keys and barrier names
inline constexpr size_t kMaxBlobBytes = 64u << 10;
inline constexpr size_t kMaxMessageBytes = 4096;  // error messages, reasons
inline constexpr uint32_t kMaxMembers = 1u << 16;

// Values are the variant index of Message plus one; 0 is never valid.
enum class MessageType : uint8_t {
  kChallenge = 1,
  kJoin,
  kWelcome,
  kError,
  kSet,
  kGet,
  kBarrier,
  kCancel,
  kReply,
  kHeartbeat,
  kPeerLost,
  kLeave,
};

// service → client, first frame on every connection.
struct Challenge {
  std::string nonce;  // kNonceBytes random bytes
  friend bool operator==(const Challenge&, const Challenge&) = default;
};

// client → service, answers the Challenge. mac = HMAC-SHA256(token, nonce ‖ role ‖
// requested_rank) (common/auth.h).
struct Join {
  Role role = Role::kWorker;
  uint32_t node_rank = 0;
  uint32_t local_rank = 0;
  int32_t requested_rank = -1;  // -1: let the service choose
  std::string host;
  std::string blob;  // published under BlobKey(role, rank) once ranks are assigned
  std::string mac;   // kMacBytes
  friend bool operator==(const Join&, const Join&) = default;
};

struct MemberInfo {
  Role role = Role::kWorker;
  uint32_t rank = 0;
  uint32_t node_rank = 0;
  uint32_t local_rank = 0;
  std::string host;
  friend bool operator==(const MemberInfo&, const MemberInfo&) = default;
};

// service → client, once the whole world has joined. The same frame goes to every
// member (encoded once, whatever the job's size); a member finds its own rank in
// `members` by its role, node rank and local rank, which the service keeps unique.
struct Welcome {
  uint32_t num_servers = 0;
  uint32_t num_workers = 0;
  uint32_t heartbeat_timeout_ms = 0;
  std::vector<MemberInfo> members;
  friend bool operator==(const Welcome&, const Welcome&) = default;
};

// service → client: the join was refused or the client broke the protocol. The service
// closes the connection after sending it.
struct Error {
  StatusCode code = StatusCode::kInternal;
  std::string message;
  friend bool operator==(const Error&, const Error&) = default;
};

// client → service requests; each is answered by one Reply with the same request_id.
struct Set {
  uint64_t request_id = 0;
  std::string key;
  std::string value;  // up to kMaxBlobBytes
  friend bool operator==(const Set&, const Set&) = default;
};
struct Get {
  uint64_t request_id = 0;
  std::string key;
  friend bool operator==(const Get&, const Get&) = default;
};
struct Barrier {
  uint64_t request_id = 0;
  std::string name;
  friend bool operator==(const Barrier&, const Barrier&) = default;
};
// client → service: the client gave up waiting on request_id (its deadline passed).
struct Cancel {
  uint64_t request_id = 0;
  friend bool operator==(const Cancel&, const Cancel&) = default;
};

struct Reply {
  uint64_t request_id = 0;
  StatusCode code = StatusCode::kOk;
  std::string message;  // when code != ok
  std::string value;    // Get's value
  friend bool operator==(const Reply&, const Reply&) = default;
};

struct Heartbeat {
  friend bool operator==(const Heartbeat&, const Heartbeat&) = default;
};

// service → every surviving client: a process of the job is gone. Also node launcher →
// service: a process that launcher started has died (the service then fails the job).
struct PeerLost {
  Role role = Role::kWorker;
  uint32_t rank = 0;
  std::string reason;
  friend bool operator==(const PeerLost&, const PeerLost&) = default;
};

// client → service: a clean goodbye; the connection closing afterwards is no failure.
struct Leave {
  friend bool operator==(const Leave&, const Leave&) = default;
};

using Message = std::variant<Challenge, Join, Welcome, Error, Set, Get, Barrier, Cancel, Reply,
                             Heartbeat, PeerLost, Leave>;

MessageType TypeOf(const Message& message);
std::string_view MessageTypeName(MessageType type);

struct FrameHeader {
  MessageType type = MessageType::kHeartbeat;
  uint32_t payload_bytes = 0;
};

// Decodes and checks the first kHeaderBytes of `bytes` (Corruption when fewer): magic,
// version, known type, zero flags, and payload_bytes <= max_payload_bytes.
Result<FrameHeader> DecodeHeader(std::string_view bytes,
                                 uint32_t max_payload_bytes = kDefaultMaxPayloadBytes);

// Decodes the payload of a frame of type `type`; every byte must be used.
Result<Message> DecodePayload(MessageType type, std::string_view payload);

// Header and payload of one frame at the front of `bytes`; *consumed is set to the
// frame's size on success.
Result<Message> DecodeFrame(std::string_view bytes, size_t* consumed,
                            uint32_t max_payload_bytes = kDefaultMaxPayloadBytes);

// The complete frame (header + payload) of `message`. Error messages and reasons are
// clamped to kMaxMessageBytes; other fields longer than their bound are the caller's
// error, which Validate() reports before sending.
std::string EncodeFrame(const Message& message);

// Checks the field bounds that decoding enforces, so a sender learns of an oversize
// key or blob as a Status instead of the peer dropping the connection.
Status Validate(const Message& message);

// The key-value key under which the service publishes a member's join blob.
std::string BlobKey(Role role, int rank);

}  // namespace wire
}  // namespace pszero
