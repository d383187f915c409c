// The control-plane wire protocol: every message round-trips, and malformed input of
// every kind (truncated, oversize, unknown type, wrong version, bad magic, garbage) is a
// Corruption status, never a crash. Also the HMAC join proof.
#include "common/wire.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>

#include "common/auth.h"

namespace pszero::wire {
namespace {

std::vector<Message> Samples() {
  Welcome welcome{1, 4, 2000, {}};
  welcome.members.push_back({Role::kServer, 0, 0, 0, "host-a"});
  welcome.members.push_back({Role::kWorker, 3, 1, 2, "host-b"});
  return {Challenge{std::string(kNonceBytes, 'n')},
          Join{Role::kServer, 2, 7, -1, "node7", std::string("\0blob\xff", 6),
               std::string(kMacBytes, 'm')},
          welcome,
          Error{StatusCode::kUnauthenticated, "authentication failed"},
          Set{42, "ucx/w3", std::string(1000, 'v')},
          Get{43, "ucx/w3"},
          Barrier{44, "step-1"},
          Cancel{45},
          Reply{46, StatusCode::kUnavailable, "worker 2 lost", "value"},
          Heartbeat{},
          PeerLost{Role::kWorker, 2, "connection closed"},
          Join{Role::kLauncher, 1, 0, -1, "node1", "", std::string(kMacBytes, 'm')},
          Leave{}};
}

TEST(WireTest, EveryMessageRoundTrips) {
  for (const Message& m : Samples()) {
    const std::string frame = EncodeFrame(m);
    size_t consumed = 0;
    Result<Message> back = DecodeFrame(frame, &consumed);
    ASSERT_TRUE(back.ok()) << MessageTypeName(TypeOf(m)) << ": " << back.status().ToString();
    EXPECT_EQ(consumed, frame.size());
    EXPECT_TRUE(*back == m) << MessageTypeName(TypeOf(m));
    EXPECT_TRUE(Validate(m).ok());
  }
}

TEST(WireTest, HeaderLayout) {
  const std::string frame = EncodeFrame(Cancel{0x0102030405060708});
  ASSERT_EQ(frame.size(), kHeaderBytes + 8);
  EXPECT_EQ(frame.substr(0, 4), "PSZ0");
  EXPECT_EQ(frame[4], 1);                                        // version
  EXPECT_EQ(frame[5], static_cast<char>(MessageType::kCancel));  // type
  EXPECT_EQ(frame[8], 8);                                        // length, little-endian
  EXPECT_EQ(frame[kHeaderBytes], 0x08);                          // request id, little-endian
}

TEST(WireTest, EveryTruncationIsCorruption) {
  for (const Message& m : Samples()) {
    const std::string frame = EncodeFrame(m);
    for (size_t n = 0; n < frame.size(); ++n) {
      size_t consumed = 0;
      Result<Message> r = DecodeFrame(std::string_view(frame).substr(0, n), &consumed);
      ASSERT_FALSE(r.ok()) << MessageTypeName(TypeOf(m)) << " cut at " << n;
      EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
    }
    // A payload cut short inside a correctly-sized frame is caught by the body decoder.
    const std::string_view payload = std::string_view(frame).substr(kHeaderBytes);
    for (size_t n = 0; n < payload.size(); ++n) {
      Result<Message> r = DecodePayload(TypeOf(m), payload.substr(0, n));
      EXPECT_FALSE(r.ok()) << MessageTypeName(TypeOf(m)) << " payload cut at " << n;
    }
  }
}

TEST(WireTest, TrailingBytesAreCorruption) {
  std::string payload = EncodeFrame(Cancel{1}).substr(kHeaderBytes) + "x";
  Result<Message> r = DecodePayload(MessageType::kCancel, payload);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trailing"), std::string::npos) << r.status().ToString();
}

TEST(WireTest, OversizeFrameIsRefusedFromTheHeaderAlone) {
  std::string frame = EncodeFrame(Heartbeat{});
  frame[8] = frame[9] = frame[10] = static_cast<char>(0xff);
  frame[11] = 0x7f;  // 2 GiB claimed; nothing is allocated for it
  size_t consumed = 0;
  Result<Message> r = DecodeFrame(frame, &consumed);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption);
  EXPECT_NE(r.status().message().find("exceeds the limit"), std::string::npos);
  // A smaller limit applies too.
  const std::string set = EncodeFrame(Set{1, "k", std::string(100, 'v')});
  EXPECT_FALSE(DecodeFrame(set, &consumed, 64).ok());
  EXPECT_TRUE(DecodeFrame(set, &consumed, 1024).ok());
}

TEST(WireTest, OversizeFieldIsRefused) {
  // A key longer than kMaxKeyBytes inside an otherwise well-formed frame.
  const std::string frame = EncodeFrame(Get{1, std::string(kMaxKeyBytes + 1, 'k')});
  size_t consumed = 0;
  Result<Message> r = DecodeFrame(frame, &consumed);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("get key"), std::string::npos) << r.status().ToString();
  EXPECT_FALSE(Validate(Get{1, std::string(kMaxKeyBytes + 1, 'k')}).ok());
  EXPECT_FALSE(Validate(Set{1, "k", std::string(kMaxBlobBytes + 1, 'v')}).ok());
}

TEST(WireTest, HugeMemberCountDoesNotAllocate) {
  std::string frame = EncodeFrame(Welcome{0, 1, 2000, {}});
  // The member count is the last field: claim 4 billion members with no bytes behind.
  for (int i = 1; i <= 4; ++i) frame[frame.size() - i] = static_cast<char>(0xff);
  size_t consumed = 0;
  Result<Message> r = DecodeFrame(frame, &consumed);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("member count"), std::string::npos);
}

TEST(WireTest, UnknownTypeWrongVersionBadMagicAndFlags) {
  const std::string good = EncodeFrame(Heartbeat{});
  size_t consumed = 0;
  for (int type : {0, 13, 200, 255}) {
    std::string f = good;
    f[5] = static_cast<char>(type);
    Result<Message> r = DecodeFrame(f, &consumed);
    ASSERT_FALSE(r.ok()) << type;
    EXPECT_NE(r.status().message().find("unknown message type"), std::string::npos);
  }
  std::string f = good;
  f[4] = 2;
  Result<Message> r = DecodeFrame(f, &consumed);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("version 2"), std::string::npos) << r.status().ToString();
  f = good;
  f[0] = 'X';
  EXPECT_NE(DecodeFrame(f, &consumed).status().message().find("magic"), std::string::npos);
  f = good;
  f[7] = 1;
  EXPECT_FALSE(DecodeFrame(f, &consumed).ok());
  // Bad enum values inside payloads.
  std::string lost = EncodeFrame(PeerLost{Role::kWorker, 1, "x"});
  lost[kHeaderBytes] = 9;  // role
  EXPECT_FALSE(DecodeFrame(lost, &consumed).ok());
  std::string error = EncodeFrame(Error{StatusCode::kInternal, "x"});
  error[kHeaderBytes] = 99;  // status code
  EXPECT_FALSE(DecodeFrame(error, &consumed).ok());
}

TEST(WireTest, GarbageNeverCrashes) {
  std::mt19937 rng(12345);
  const std::vector<Message> samples = Samples();
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes;
    if (i % 2 == 0) {
      bytes.resize(rng() % 64);
      for (char& c : bytes) c = static_cast<char>(rng());
    } else {  // mutate a valid frame: more interesting than pure noise
      bytes = EncodeFrame(samples[rng() % samples.size()]);
      for (int k = 0; k < 3; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    size_t consumed = 0;
    Result<Message> r = DecodeFrame(bytes, &consumed);
    if (r.ok()) {
      ++decoded;
      EXPECT_LE(consumed, bytes.size());
      // Whatever decodes re-encodes to a frame that decodes to the same message.
      size_t again = 0;
      Result<Message> back = DecodeFrame(EncodeFrame(*r), &again);
      ASSERT_TRUE(back.ok());
      EXPECT_TRUE(*back == *r);
    }
  }
  EXPECT_GT(decoded, 0);  // some mutations keep a frame valid (e.g. inside a string)
}

TEST(WireTest, ErrorTextIsClampedToWhatDecodes) {
  const std::string frame = EncodeFrame(Error{StatusCode::kInternal, std::string(10000, 'e')});
  size_t consumed = 0;
  Result<Message> r = DecodeFrame(frame, &consumed);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(std::get<Error>(*r).message.size(), kMaxMessageBytes);
}

TEST(WireTest, NamesAndKeys) {
  EXPECT_EQ(PeerName(Role::kWorker, 3), "worker 3");
  EXPECT_EQ(PeerTag(Role::kServer, 0), "s0");
  EXPECT_EQ(PeerName(Role::kLauncher, 1), "node launcher 1");
  EXPECT_EQ(BlobKey(Role::kWorker, 12), "pszero/blob/w12");
}

// The fuzzer's seeds (tests/fuzz/wire_seeds) are valid frames of every type, so that it
// starts from inputs that reach every decoder.
TEST(WireTest, FuzzSeedsAreValidFramesOfEveryType) {
  std::set<MessageType> types;
  for (const auto& entry : std::filesystem::directory_iterator(PSZERO_FUZZ_SEEDS_DIR)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string_view rest = ss.view();
    while (!rest.empty()) {
      size_t consumed = 0;
      Result<Message> m = DecodeFrame(rest, &consumed);
      ASSERT_TRUE(m.ok()) << entry.path() << ": " << m.status().ToString();
      types.insert(TypeOf(*m));
      rest.remove_prefix(consumed);
    }
  }
  EXPECT_EQ(types.size(), std::variant_size_v<Message>);
}

TEST(AuthTest, JoinMacBindsTokenNonceRoleAndRank) {
  const std::string nonce(kNonceBytes, 'n');
  const std::string mac = JoinMac("token", nonce, Role::kWorker, 3);
  EXPECT_EQ(mac.size(), kMacBytes);
  EXPECT_TRUE(MacEquals(mac, JoinMac("token", nonce, Role::kWorker, 3)));
  EXPECT_FALSE(MacEquals(mac, JoinMac("tokem", nonce, Role::kWorker, 3)));
  EXPECT_FALSE(MacEquals(mac, JoinMac("token", std::string(kNonceBytes, 'm'), Role::kWorker, 3)));
  EXPECT_FALSE(MacEquals(mac, JoinMac("token", nonce, Role::kServer, 3)));
  EXPECT_FALSE(MacEquals(mac, JoinMac("token", nonce, Role::kWorker, -1)));
  EXPECT_FALSE(MacEquals(mac, JoinMac("", nonce, Role::kWorker, 3)));
  EXPECT_FALSE(MacEquals(mac, mac.substr(1)));
}

TEST(AuthTest, RfcVectorOfHmacSha256) {
  // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?". JoinMac appends
  // role and rank, so check the primitive through a nonce that is the whole message
  // minus the last five bytes ("hing?") rebuilt as role byte 'h' and rank "ing?".
  const std::string data = "what do ya want for nothing?";
  const std::string nonce = data.substr(0, data.size() - 5);
  const int32_t rank = 'i' | ('n' << 8) | ('g' << 16) | ('?' << 24);
  const std::string mac = JoinMac("Jefe", nonce, static_cast<Role>('h'), rank);
  static const unsigned char kWant[] = {0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e,
                                        0x6a, 0x04, 0x24, 0x26, 0x08, 0x95, 0x75, 0xc7,
                                        0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83,
                                        0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
  EXPECT_EQ(mac, std::string(reinterpret_cast<const char*>(kWant), sizeof kWant));
}

TEST(AuthTest, GeneratedTokensAreFreshHex) {
  Result<std::string> a = GenerateClusterToken();
  Result<std::string> b = GenerateClusterToken();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 64u);
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->find_first_not_of("0123456789abcdef"), std::string::npos);
}

}  // namespace
}  // namespace pszero::wire
