#include "common/wire.h"

#include <cstring>
#include <type_traits>

namespace pszero {

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kServer:
      return "server";
    case Role::kWorker:
      return "worker";
    case Role::kLauncher:
      return "node launcher";
  }
  return "unknown";
}

std::string PeerName(Role role, int rank) {
  return std::string(RoleName(role)) + " " + std::to_string(rank);
}

std::string PeerTag(Role role, int rank) {
  std::string tag(1, role == Role::kServer ? 's' : role == Role::kWorker ? 'w' : 'n');
  tag += std::to_string(rank);
  return tag;
}

namespace wire {

namespace {

// Diagnostic text is clamped to what the decoder accepts rather than refused.
std::string_view Clamp(std::string_view text) { return text.substr(0, kMaxMessageBytes); }

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void Bytes(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void Fixed(std::string_view s) { out_.append(s); }
  std::string Take() { return std::move(out_); }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

// Bounds-checked reader over one payload. Every failure names the field.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  Status U8(const char* field, uint8_t* v) {
    uint64_t x = 0;
    PSZERO_RETURN_IF_ERROR(Le(field, 1, &x));
    *v = static_cast<uint8_t>(x);
    return Status::Ok();
  }
  Status U32(const char* field, uint32_t* v) {
    uint64_t x = 0;
    PSZERO_RETURN_IF_ERROR(Le(field, 4, &x));
    *v = static_cast<uint32_t>(x);
    return Status::Ok();
  }
  Status I32(const char* field, int32_t* v) {
    uint32_t x = 0;
    PSZERO_RETURN_IF_ERROR(U32(field, &x));
    *v = static_cast<int32_t>(x);
    return Status::Ok();
  }
  Status U64(const char* field, uint64_t* v) { return Le(field, 8, v); }

  // A u32 length then that many bytes, at most max_bytes.
  Status Bytes(const char* field, size_t max_bytes, std::string* v) {
    uint32_t n = 0;
    PSZERO_RETURN_IF_ERROR(U32(field, &n));
    if (n > max_bytes) {
      return Status::Corruption(std::string(field) + " of " + std::to_string(n) +
                                " bytes exceeds the limit of " + std::to_string(max_bytes));
    }
    return Fixed(field, n, v);
  }
  Status Fixed(const char* field, size_t n, std::string* v) {
    if (in_.size() < n) return Truncated(field);
    v->assign(in_.data(), n);
    in_.remove_prefix(n);
    return Status::Ok();
  }
  Status RoleField(const char* field, Role* role) {
    uint8_t x = 0;
    PSZERO_RETURN_IF_ERROR(U8(field, &x));
    if (x > static_cast<uint8_t>(Role::kLauncher)) {
      return Status::Corruption(std::string("unknown ") + field + " " + std::to_string(x));
    }
    *role = static_cast<Role>(x);
    return Status::Ok();
  }
  Status Code(const char* field, StatusCode* code) {
    uint8_t x = 0;
    PSZERO_RETURN_IF_ERROR(U8(field, &x));
    if (x > static_cast<uint8_t>(StatusCode::kResourceExhausted)) {
      return Status::Corruption(std::string("unknown ") + field + " " + std::to_string(x));
    }
    *code = static_cast<StatusCode>(x);
    return Status::Ok();
  }
  Status Done() const {
    if (!in_.empty()) {
      return Status::Corruption(std::to_string(in_.size()) + " trailing bytes after the payload");
    }
    return Status::Ok();
  }
  size_t remaining() const { return in_.size(); }

 private:
  Status Le(const char* field, int n, uint64_t* v) {
    if (in_.size() < static_cast<size_t>(n)) return Truncated(field);
    uint64_t x = 0;
    for (int i = 0; i < n; ++i) x |= static_cast<uint64_t>(static_cast<uint8_t>(in_[i])) << (8 * i);
    in_.remove_prefix(static_cast<size_t>(n));
    *v = x;
    return Status::Ok();
  }
  static Status Truncated(const char* field) {
    return Status::Corruption(std::string("payload truncated in ") + field);
  }
  std::string_view in_;
};

// ---- per-message encoding ------------------------------------------------------------

void EncodeBody(const Challenge& m, Writer& w) { w.Fixed(m.nonce); }
void EncodeBody(const Join& m, Writer& w) {
  w.U8(static_cast<uint8_t>(m.role));
  w.U32(m.node_rank);
  w.U32(m.local_rank);
  w.U32(static_cast<uint32_t>(m.requested_rank));
  w.Bytes(m.host);
  w.Bytes(m.blob);
  w.Fixed(m.mac);
}
void EncodeBody(const Welcome& m, Writer& w) {
  w.U32(m.num_servers);
  w.U32(m.num_workers);
  w.U32(m.heartbeat_timeout_ms);
  w.U32(static_cast<uint32_t>(m.members.size()));
  for (const MemberInfo& x : m.members) {
    w.U8(static_cast<uint8_t>(x.role));
    w.U32(x.rank);
    w.U32(x.node_rank);
    w.U32(x.local_rank);
    w.Bytes(x.host);
  }
}
void EncodeBody(const Error& m, Writer& w) {
  w.U8(static_cast<uint8_t>(m.code));
  w.Bytes(Clamp(m.message));
}
void EncodeBody(const Set& m, Writer& w) {
  w.U64(m.request_id);
  w.Bytes(m.key);
  w.Bytes(m.value);
}
void EncodeBody(const Get& m, Writer& w) {
  w.U64(m.request_id);
  w.Bytes(m.key);
}
void EncodeBody(const Barrier& m, Writer& w) {
  w.U64(m.request_id);
  w.Bytes(m.name);
}
void EncodeBody(const Cancel& m, Writer& w) { w.U64(m.request_id); }
void EncodeBody(const Reply& m, Writer& w) {
  w.U64(m.request_id);
  w.U8(static_cast<uint8_t>(m.code));
  w.Bytes(Clamp(m.message));
  w.Bytes(m.value);
}
void EncodeBody(const Heartbeat&, Writer&) {}
void EncodeBody(const PeerLost& m, Writer& w) {
  w.U8(static_cast<uint8_t>(m.role));
  w.U32(m.rank);
  w.Bytes(Clamp(m.reason));
}
void EncodeBody(const Leave&, Writer&) {}

// ---- per-message decoding ------------------------------------------------------------

Status DecodeBody(Reader& r, Challenge* m) {
  return r.Fixed("challenge nonce", kNonceBytes, &m->nonce);
}
Status DecodeBody(Reader& r, Join* m) {
  PSZERO_RETURN_IF_ERROR(r.RoleField("join role", &m->role));
  PSZERO_RETURN_IF_ERROR(r.U32("join node rank", &m->node_rank));
  PSZERO_RETURN_IF_ERROR(r.U32("join local rank", &m->local_rank));
  PSZERO_RETURN_IF_ERROR(r.I32("join requested rank", &m->requested_rank));
  PSZERO_RETURN_IF_ERROR(r.Bytes("join host", kMaxHostBytes, &m->host));
  PSZERO_RETURN_IF_ERROR(r.Bytes("join blob", kMaxBlobBytes, &m->blob));
  return r.Fixed("join mac", kMacBytes, &m->mac);
}
Status DecodeBody(Reader& r, Welcome* m) {
  PSZERO_RETURN_IF_ERROR(r.U32("welcome servers", &m->num_servers));
  PSZERO_RETURN_IF_ERROR(r.U32("welcome workers", &m->num_workers));
  PSZERO_RETURN_IF_ERROR(r.U32("welcome heartbeat timeout", &m->heartbeat_timeout_ms));
  uint32_t count = 0;
  PSZERO_RETURN_IF_ERROR(r.U32("welcome member count", &count));
  // Each member takes at least 17 bytes, so the count is checked against what is there
  // before anything is reserved.
  constexpr size_t kMinMemberBytes = 1 + 4 + 4 + 4 + 4;
  if (count > kMaxMembers || count > r.remaining() / kMinMemberBytes) {
    return Status::Corruption("welcome member count " + std::to_string(count) +
                              " does not fit the payload");
  }
  m->members.resize(count);
  for (MemberInfo& x : m->members) {
    PSZERO_RETURN_IF_ERROR(r.RoleField("member role", &x.role));
    PSZERO_RETURN_IF_ERROR(r.U32("member rank", &x.rank));
    PSZERO_RETURN_IF_ERROR(r.U32("member node rank", &x.node_rank));
    PSZERO_RETURN_IF_ERROR(r.U32("member local rank", &x.local_rank));
    PSZERO_RETURN_IF_ERROR(r.Bytes("member host", kMaxHostBytes, &x.host));
  }
  return Status::Ok();
}
Status DecodeBody(Reader& r, Error* m) {
  PSZERO_RETURN_IF_ERROR(r.Code("error code", &m->code));
  return r.Bytes("error message", kMaxMessageBytes, &m->message);
}
Status DecodeBody(Reader& r, Set* m) {
  PSZERO_RETURN_IF_ERROR(r.U64("set request id", &m->request_id));
  PSZERO_RETURN_IF_ERROR(r.Bytes("set key", kMaxKeyBytes, &m->key));
  return r.Bytes("set value", kMaxBlobBytes, &m->value);
}
Status DecodeBody(Reader& r, Get* m) {
  PSZERO_RETURN_IF_ERROR(r.U64("get request id", &m->request_id));
  return r.Bytes("get key", kMaxKeyBytes, &m->key);
}
Status DecodeBody(Reader& r, Barrier* m) {
  PSZERO_RETURN_IF_ERROR(r.U64("barrier request id", &m->request_id));
  return r.Bytes("barrier name", kMaxKeyBytes, &m->name);
}
Status DecodeBody(Reader& r, Cancel* m) { return r.U64("cancel request id", &m->request_id); }
Status DecodeBody(Reader& r, Reply* m) {
  PSZERO_RETURN_IF_ERROR(r.U64("reply request id", &m->request_id));
  PSZERO_RETURN_IF_ERROR(r.Code("reply code", &m->code));
  PSZERO_RETURN_IF_ERROR(r.Bytes("reply message", kMaxMessageBytes, &m->message));
  return r.Bytes("reply value", kMaxBlobBytes, &m->value);
}
Status DecodeBody(Reader&, Heartbeat*) { return Status::Ok(); }
Status DecodeBody(Reader& r, PeerLost* m) {
  PSZERO_RETURN_IF_ERROR(r.RoleField("peer-lost role", &m->role));
  PSZERO_RETURN_IF_ERROR(r.U32("peer-lost rank", &m->rank));
  return r.Bytes("peer-lost reason", kMaxMessageBytes, &m->reason);
}
Status DecodeBody(Reader&, Leave*) { return Status::Ok(); }

template <size_t I>
Result<Message> DecodeAlternative(size_t index, std::string_view payload) {
  if constexpr (I == std::variant_size_v<Message>) {
    return Status::Corruption("unknown message type " + std::to_string(index + 1));
  } else {
    if (index != I) return DecodeAlternative<I + 1>(index, payload);
    std::variant_alternative_t<I, Message> m;
    Reader r(payload);
    Status s = DecodeBody(r, &m);
    if (s.ok()) s = r.Done();
    if (!s.ok()) {
      return s.WithContext(std::string(MessageTypeName(static_cast<MessageType>(I + 1))) +
                           " frame");
    }
    return Message(std::move(m));
  }
}

Status CheckBound(const char* field, size_t size, size_t max_bytes) {
  if (size > max_bytes) {
    return Status::InvalidArgument(std::string(field) + " of " + std::to_string(size) +
                                   " bytes exceeds the limit of " + std::to_string(max_bytes));
  }
  return Status::Ok();
}

}  // namespace

MessageType TypeOf(const Message& message) { return static_cast<MessageType>(message.index() + 1); }

std::string_view MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kChallenge:
      return "challenge";
    case MessageType::kJoin:
      return "join";
    case MessageType::kWelcome:
      return "welcome";
    case MessageType::kError:
      return "error";
    case MessageType::kSet:
      return "set";
    case MessageType::kGet:
      return "get";
    case MessageType::kBarrier:
      return "barrier";
    case MessageType::kCancel:
      return "cancel";
    case MessageType::kReply:
      return "reply";
    case MessageType::kHeartbeat:
      return "heartbeat";
    case MessageType::kPeerLost:
      return "peer-lost";
    case MessageType::kLeave:
      return "leave";
  }
  return "unknown";
}

Result<FrameHeader> DecodeHeader(std::string_view bytes, uint32_t max_payload_bytes) {
  if (bytes.size() < kHeaderBytes) {
    return Status::Corruption("frame header truncated: " + std::to_string(bytes.size()) + " of " +
                              std::to_string(kHeaderBytes) + " bytes");
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return Status::Corruption("bad magic: not a pszero control-plane frame");
  }
  const auto version = static_cast<uint8_t>(bytes[4]);
  if (version != kVersion) {
    return Status::Corruption("unsupported protocol version " + std::to_string(version) +
                              " (this build speaks " + std::to_string(kVersion) + ")");
  }
  const auto type = static_cast<uint8_t>(bytes[5]);
  if (type == 0 || type > std::variant_size_v<Message>) {
    return Status::Corruption("unknown message type " + std::to_string(type));
  }
  if (bytes[6] != 0 || bytes[7] != 0) return Status::Corruption("reserved header flags not zero");
  uint32_t length = 0;
  for (int i = 0; i < 4; ++i) {
    length |= static_cast<uint32_t>(static_cast<uint8_t>(bytes[8 + i])) << (8 * i);
  }
  if (length > max_payload_bytes) {
    return Status::Corruption("frame payload of " + std::to_string(length) +
                              " bytes exceeds the limit of " + std::to_string(max_payload_bytes));
  }
  return FrameHeader{static_cast<MessageType>(type), length};
}

Result<Message> DecodePayload(MessageType type, std::string_view payload) {
  return DecodeAlternative<0>(static_cast<size_t>(type) - 1, payload);
}

Result<Message> DecodeFrame(std::string_view bytes, size_t* consumed, uint32_t max_payload_bytes) {
  PSZERO_ASSIGN_OR_RETURN(FrameHeader header, DecodeHeader(bytes, max_payload_bytes));
  if (bytes.size() - kHeaderBytes < header.payload_bytes) {
    return Status::Corruption("frame truncated: payload of " +
                              std::to_string(header.payload_bytes) + " bytes, " +
                              std::to_string(bytes.size() - kHeaderBytes) + " present");
  }
  PSZERO_ASSIGN_OR_RETURN(
      Message m, DecodePayload(header.type, bytes.substr(kHeaderBytes, header.payload_bytes)));
  *consumed = kHeaderBytes + header.payload_bytes;
  return m;
}

std::string EncodeFrame(const Message& message) {
  Writer body;
  std::visit([&](const auto& m) { EncodeBody(m, body); }, message);
  const std::string payload = body.Take();
  Writer frame;
  frame.Fixed(std::string_view(kMagic, sizeof kMagic));
  frame.U8(kVersion);
  frame.U8(static_cast<uint8_t>(TypeOf(message)));
  frame.U16(0);
  frame.U32(static_cast<uint32_t>(payload.size()));
  frame.Fixed(payload);
  return frame.Take();
}

Status Validate(const Message& message) {
  return std::visit(
      [](const auto& m) -> Status {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, Join>) {
          PSZERO_RETURN_IF_ERROR(CheckBound("host name", m.host.size(), kMaxHostBytes));
          PSZERO_RETURN_IF_ERROR(CheckBound("join blob", m.blob.size(), kMaxBlobBytes));
        } else if constexpr (std::is_same_v<T, Set>) {
          PSZERO_RETURN_IF_ERROR(CheckBound("key", m.key.size(), kMaxKeyBytes));
          PSZERO_RETURN_IF_ERROR(CheckBound("value", m.value.size(), kMaxBlobBytes));
        } else if constexpr (std::is_same_v<T, Get>) {
          PSZERO_RETURN_IF_ERROR(CheckBound("key", m.key.size(), kMaxKeyBytes));
        } else if constexpr (std::is_same_v<T, Barrier>) {
          PSZERO_RETURN_IF_ERROR(CheckBound("barrier name", m.name.size(), kMaxKeyBytes));
        }
        return Status::Ok();
      },
      message);
}

std::string BlobKey(Role role, int rank) { return "pszero/blob/" + PeerTag(role, rank); }

}  // namespace wire
}  // namespace pszero
