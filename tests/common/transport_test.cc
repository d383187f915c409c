// Transport tests with ranks as threads of this process (UcxTransport, in-memory store).
#include <gtest/gtest.h>

#include <chrono>
#include <list>
#include <map>
#include <numeric>

#include "common/file_kv_store.h"
#include "common/transport.h"
#include "tests/common/transport_test_util.h"

namespace pszero {
namespace {

using std::chrono::milliseconds;
using testing::FillPattern;
using testing::FirstMismatch;
using testing::PatternBuffer;
using testing::ThreadRanks;
constexpr milliseconds kTimeout(60000);  // generous: 2 shared cores; never reached when ok

Status Expect(bool ok, const std::string& what) {
  return ok ? Status::Ok() : Status::Internal(what);
}

Status CheckPattern(const std::vector<std::byte>& got, size_t bytes, uint64_t seed) {
  const size_t bad = FirstMismatch(got.data(), bytes, seed);
  return Expect(bad == bytes, "byte " + std::to_string(bad) + " of " + std::to_string(bytes) +
                                  " differs (seed " + std::to_string(seed) + ")");
}

TEST(TagTest, FieldsDoNotOverlap) {
  EXPECT_EQ(MakeTag(0, 0, 1), 1u);
  EXPECT_EQ(MakeTag(0, 1, 0), uint64_t{1} << kTagSegmentBits);
  EXPECT_EQ(MakeTag(1, 0, 0), uint64_t{1} << (kTagSegmentBits + kTagSeqBits));
  EXPECT_EQ(MakeTag(0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF), kTagMask);
  EXPECT_NE(MakeTag(1, 2, 3), MakeTag(1, 3, 2));
}

TEST(UcxTransportTest, RejectsBadArguments) {
  InMemoryKeyValueStore store;
  ucx::UcxTransportOptions o;
  o.rank = 2;
  o.world_size = 2;
  EXPECT_EQ(ucx::UcxTransport::Create(o, &store).status().code(), StatusCode::kInvalidArgument);
  o.rank = 0;
  auto t = ucx::UcxTransport::Create(o, &store);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  std::byte b{};
  EXPECT_EQ((*t)->Send(5, 0, &b, 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->Send(1, kTagMask + 1, &b, 1).status().code(), StatusCode::kInvalidArgument);
  std::vector<std::byte> big(kMaxAmHeaderBytes + 1);
  EXPECT_EQ((*t)->SendAm(0, 1, big, nullptr, 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(UcxTransportTest, PeerThatNeverPublishesIsUnavailable) {
  InMemoryKeyValueStore store;
  ucx::UcxTransportOptions o;
  o.world_size = 2;
  o.connect_timeout = milliseconds(50);
  auto t = ucx::UcxTransport::Create(o, &store);
  ASSERT_TRUE(t.ok());
  std::byte b{};
  Status s = (*t)->Send(1, 0, &b, 1).status();
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("peer rank 1"), std::string::npos) << s.ToString();
}

TEST(UcxTransportTest, SelfSendAndRecv) {
  ThreadRanks world(1);
  ASSERT_EQ(world.ranks.size(), 1u);
  auto& t = *world.ranks[0];
  auto src = PatternBuffer(100000, 1);
  std::vector<std::byte> dst(src.size());
  auto recv = t.Recv(0, 5, dst.data(), dst.size());
  auto send = t.Send(0, 5, src.data(), src.size());
  ASSERT_TRUE(recv.ok() && send.ok());
  ASSERT_TRUE(recv->Wait(kTimeout).ok());
  ASSERT_TRUE(send->Wait(kTimeout).ok());
  EXPECT_EQ(dst, src);
  EXPECT_EQ(recv->bytes(), src.size());
}

TEST(UcxTransportTest, TestAndPollWithoutBlockingForever) {
  ThreadRanks world(1);
  ASSERT_EQ(world.ranks.size(), 1u);
  auto& t = *world.ranks[0];
  auto idle = t.Poll(milliseconds(50));
  ASSERT_TRUE(idle.ok());
  EXPECT_EQ(*idle, 0);
  uint64_t in = 0, out = 0x1234;
  auto recv = t.Recv(0, 3, &in, sizeof(in));
  ASSERT_TRUE(recv.ok());
  EXPECT_FALSE(recv->Test());
  EXPECT_EQ(recv->status().code(), StatusCode::kInternal);  // still pending
  auto send = t.Send(0, 3, &out, sizeof(out));
  ASSERT_TRUE(send.ok());
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (!recv->Test() && std::chrono::steady_clock::now() < deadline) {
  }
  ASSERT_TRUE(recv->done());
  EXPECT_TRUE(recv->status().ok());
  EXPECT_EQ(in, 0x1234u);
  EXPECT_EQ(t.RegisterMemory(nullptr, 8).status().code(), StatusCode::kInvalidArgument);
}

// Every size class from 1 B to 256 MiB, both directions, checked byte for byte, and the
// per-peer counters equal the exact bytes moved.
TEST(UcxTransportTest, SizesOneByteTo256MiBByteForByte) {
  const std::vector<size_t> sizes = {
      1, 7, 8, 64, 1000, 8192, 65536 + 3, 1 << 20, (4 << 20) + 1, 16 << 20, size_t{256} << 20};
  const uint64_t total = std::accumulate(sizes.begin(), sizes.end(), uint64_t{0});
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    const int peer = 1 - t.rank();
    for (size_t i = 0; i < sizes.size(); ++i) {
      const size_t n = sizes[i];
      auto src = PatternBuffer(n, 100 * t.rank() + i);
      std::vector<std::byte> dst(n);
      PSZERO_ASSIGN_OR_RETURN(Request recv, t.Recv(peer, MakeTag(0, 1, i), dst.data(), n));
      PSZERO_ASSIGN_OR_RETURN(Request send, t.Send(peer, MakeTag(0, 1, i), src.data(), n));
      std::vector<Request> both;
      both.push_back(std::move(recv));
      both.push_back(std::move(send));
      PSZERO_RETURN_IF_ERROR(t.WaitAll(both, kTimeout));
      PSZERO_RETURN_IF_ERROR(Expect(
          both[0].bytes() == n,
          "received length " + std::to_string(both[0].bytes()) + " != " + std::to_string(n)));
      PSZERO_RETURN_IF_ERROR(CheckPattern(dst, n, 100 * peer + i));
    }
    PeerByteCounters c = t.Counters(peer);
    PSZERO_RETURN_IF_ERROR(Expect(c.bytes_sent == total && c.bytes_received == total,
                                  "counters " + std::to_string(c.bytes_sent) + "/" +
                                      std::to_string(c.bytes_received) +
                                      " != " + std::to_string(total)));
    return Expect(c.messages_sent == sizes.size() && t.Counters(t.rank()).bytes_sent == 0,
                  "message counters");
  });
  EXPECT_ALL_OK(statuses);
}

// Hundreds of messages in flight at once, receives posted in the reverse order of the
// sends, mixed eager and rendezvous sizes.
TEST(UcxTransportTest, ManyOutstandingOutOfOrderTags) {
  constexpr int kMessages = 600;
  auto size_of = [](int i) -> size_t { return i % 50 == 0 ? (1 << 20) + i : 1 + (i * 37) % 9000; };
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    std::vector<std::vector<std::byte>> buffers(kMessages);
    std::vector<Request> requests;
    if (t.rank() == 0) {
      for (int i = 0; i < kMessages; ++i) {
        buffers[i] = PatternBuffer(size_of(i), i);
        PSZERO_ASSIGN_OR_RETURN(Request r,
                                t.Send(1, MakeTag(3, i, i % 7), buffers[i].data(), size_of(i)));
        requests.push_back(std::move(r));
      }
      return t.WaitAll(requests, kTimeout);
    }
    for (int i = kMessages - 1; i >= 0; --i) {
      buffers[i].resize(size_of(i));
      PSZERO_ASSIGN_OR_RETURN(Request r,
                              t.Recv(0, MakeTag(3, i, i % 7), buffers[i].data(), size_of(i)));
      requests.push_back(std::move(r));
    }
    PSZERO_RETURN_IF_ERROR(t.WaitAll(requests, kTimeout));
    for (int i = 0; i < kMessages; ++i)
      PSZERO_RETURN_IF_ERROR(CheckPattern(buffers[i], size_of(i), i));
    return Expect(t.Counters(0).messages_received == kMessages, "message count");
  });
  EXPECT_ALL_OK(statuses);
}

// Messages with the same tag from one peer match receives in the order they were sent.
TEST(UcxTransportTest, SameTagKeepsOrder) {
  constexpr int kMessages = 64;
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    std::vector<uint32_t> values(kMessages);
    std::vector<Request> requests;
    for (int i = 0; i < kMessages; ++i) {
      values[i] = static_cast<uint32_t>(i);
      PSZERO_ASSIGN_OR_RETURN(
          Request r, t.rank() == 0 ? t.Send(1, 9, &values[i], 4) : t.Recv(0, 9, &values[i], 4));
      requests.push_back(std::move(r));
    }
    PSZERO_RETURN_IF_ERROR(t.WaitAll(requests, kTimeout));
    if (t.rank() == 0) return Status::Ok();
    for (int i = 0; i < kMessages; ++i) {
      PSZERO_RETURN_IF_ERROR(Expect(values[i] == static_cast<uint32_t>(i), "order"));
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(statuses);
}

// Four ranks on two cores, each sending to every rank (itself included) at once: needs
// progress that yields the CPU, and completes with exact per-peer counters.
TEST(UcxTransportTest, FourRanksAllToAll) {
  constexpr int kWorld = 4;
  constexpr size_t kBytes = (2 << 20) + 5;
  ThreadRanks world(kWorld);
  ASSERT_EQ(world.ranks.size(), size_t{kWorld});
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    std::vector<std::vector<std::byte>> out(kWorld), in(kWorld);
    std::vector<Request> requests;
    for (int p = 0; p < kWorld; ++p) {
      out[p] = PatternBuffer(kBytes, 10 * t.rank() + p);
      in[p].resize(kBytes);
      PSZERO_ASSIGN_OR_RETURN(Request r, t.Recv(p, MakeTag(1, 0, 0), in[p].data(), kBytes));
      requests.push_back(std::move(r));
    }
    for (int k = 0; k < kWorld; ++k) {
      const int p = (t.rank() + k) % kWorld;
      PSZERO_ASSIGN_OR_RETURN(Request r, t.Send(p, MakeTag(1, 0, 0), out[p].data(), kBytes));
      requests.push_back(std::move(r));
    }
    PSZERO_RETURN_IF_ERROR(t.WaitAll(requests, kTimeout));
    for (int p = 0; p < kWorld; ++p) {
      PSZERO_RETURN_IF_ERROR(CheckPattern(in[p], kBytes, 10 * p + t.rank()));
      PeerByteCounters c = t.Counters(p);
      PSZERO_RETURN_IF_ERROR(
          Expect(c.bytes_sent == kBytes && c.bytes_received == kBytes, "per-peer counters"));
    }
    return Expect(t.TotalCounters().bytes_sent == kWorld * kBytes, "total counters");
  });
  EXPECT_ALL_OK(statuses);
}

TEST(UcxTransportTest, WaitPastDeadlineNamesPeerAndTag) {
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  auto& t = *world.ranks[0];
  std::vector<std::byte> buf(16);
  auto recv = t.Recv(1, MakeTag(2, 3, 4), buf.data(), buf.size());
  ASSERT_TRUE(recv.ok());
  const auto start = std::chrono::steady_clock::now();
  Status s = recv->Wait(milliseconds(200));
  EXPECT_GE(std::chrono::steady_clock::now() - start, milliseconds(200));
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("comm 2 seq 3 seg 4"), std::string::npos) << s.ToString();
  EXPECT_FALSE(recv->done());
}

TEST(UcxTransportTest, TruncatedReceiveIsAnError) {
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    std::vector<std::byte> buf(t.rank() == 0 ? 100 : 50);
    if (t.rank() == 0) {
      PSZERO_ASSIGN_OR_RETURN(Request r, t.Send(1, 1, buf.data(), buf.size()));
      return r.Wait(kTimeout);
    }
    PSZERO_ASSIGN_OR_RETURN(Request r, t.Recv(0, 1, buf.data(), buf.size()));
    Status s = r.Wait(kTimeout);
    return Expect(s.code() == StatusCode::kInvalidArgument &&
                      s.message().find("from rank 0") != std::string::npos,
                  "expected truncation, got " + s.ToString());
  });
  EXPECT_ALL_OK(statuses);
}

TEST(UcxTransportTest, RegistrationCacheReusesCoveringRange) {
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  constexpr size_t kBytes = 8 << 20;
  std::vector<std::byte> send_buf = PatternBuffer(kBytes, 42), recv_buf(kBytes);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    std::vector<std::byte>& buf = t.rank() == 0 ? send_buf : recv_buf;
    PSZERO_ASSIGN_OR_RETURN(auto reg, t.RegisterMemory(buf.data(), buf.size()));
    PSZERO_ASSIGN_OR_RETURN(auto inner, t.RegisterMemory(buf.data() + 4096, 1 << 20));
    PSZERO_RETURN_IF_ERROR(Expect(reg.get() == inner.get(), "covering registration reused"));
    PSZERO_RETURN_IF_ERROR(Expect(reg->data() == buf.data() && reg->bytes() == kBytes, "range"));
    for (int round = 0; round < 3; ++round) {
      PSZERO_ASSIGN_OR_RETURN(Request r, t.rank() == 0 ? t.Send(1, round, buf.data(), kBytes)
                                                       : t.Recv(0, round, buf.data(), kBytes));
      PSZERO_RETURN_IF_ERROR(r.Wait(kTimeout));
    }
    return Status::Ok();
  });
  EXPECT_ALL_OK(statuses);
  EXPECT_EQ(FirstMismatch(recv_buf.data(), kBytes, 42), kBytes);
}

// PS-style request/response over active messages, with payloads in every size class:
// empty, eager-short, eager-bcopy, eager-zcopy and rendezvous; with the payload landing in
// the handler's own buffer or in the transport's.
TEST(UcxTransportTest, ActiveMessagesEverySizeClass) {
  const std::vector<size_t> sizes = {0, 1, 100, 4000, 8192, 65536, 1 << 20, 32 << 20};
  constexpr uint16_t kRequest = 1, kResponse = 2;
  ThreadRanks world(2);
  ASSERT_EQ(world.ranks.size(), 2u);
  auto statuses = world.Run([&](ucx::UcxTransport& t) -> Status {
    if (t.rank() == 1) {
      // Server: echo every request back with the header incremented; odd requests land in
      // a buffer the handler chooses.
      std::list<std::vector<std::byte>> replies;  // alive until each reply completes
      std::vector<Request> sends;
      std::map<uint32_t, std::vector<std::byte>> landing;  // one buffer per request
      size_t served = 0;
      Status handler_status;
      PSZERO_RETURN_IF_ERROR(t.SetAmHandler(
          kRequest, {.payload_destination = [&](const AmInfo& info) -> void* {
                       uint32_t index;
                       std::memcpy(&index, info.header.data(), 4);
                       if (index % 2 == 0) return nullptr;
                       landing[index].resize(info.payload_bytes);
                       return landing[index].data();
                     },
                     .on_message =
                         [&](const AmInfo& info, std::span<const std::byte> payload) {
                           uint32_t index;
                           std::memcpy(&index, info.header.data(), 4);
                           replies.emplace_back(payload.begin(), payload.end());
                           uint32_t reply_header = index + 1000;
                           auto r = t.SendAm(info.peer, kResponse,
                                             std::as_bytes(std::span(&reply_header, 1)),
                                             replies.back().data(), replies.back().size());
                           if (!r.ok())
                             handler_status = r.status();
                           else
                             sends.push_back(std::move(r).value());
                           ++served;
                         }}));
      const auto deadline = std::chrono::steady_clock::now() + kTimeout;
      while (served < sizes.size() && std::chrono::steady_clock::now() < deadline) {
        PSZERO_RETURN_IF_ERROR(t.Poll(milliseconds(1000)).status());
      }
      PSZERO_RETURN_IF_ERROR(handler_status);
      PSZERO_RETURN_IF_ERROR(Expect(served == sizes.size(), "server saw every request"));
      return t.WaitAll(sends, kTimeout);
    }
    // Client.
    std::vector<std::vector<std::byte>> responses(sizes.size());
    std::vector<bool> got(sizes.size(), false);
    Status handler_status;
    PSZERO_RETURN_IF_ERROR(t.SetAmHandler(
        kResponse, {.payload_destination = nullptr,
                    .on_message = [&](const AmInfo& info, std::span<const std::byte> payload) {
                      uint32_t index;
                      std::memcpy(&index, info.header.data(), 4);
                      index -= 1000;
                      if (info.peer != 1 || index >= sizes.size() ||
                          info.payload_bytes != payload.size()) {
                        handler_status = Status::Internal("bad response header");
                        return;
                      }
                      responses[index].assign(payload.begin(), payload.end());
                      got[index] = true;
                    }}));
    std::vector<std::vector<std::byte>> payloads;
    std::vector<Request> sends;
    for (uint32_t i = 0; i < sizes.size(); ++i) {
      payloads.push_back(PatternBuffer(sizes[i], 7000 + i));
      PSZERO_ASSIGN_OR_RETURN(Request r, t.SendAm(1, kRequest, std::as_bytes(std::span(&i, 1)),
                                                  payloads[i].data(), sizes[i]));
      sends.push_back(std::move(r));
    }
    PSZERO_RETURN_IF_ERROR(t.WaitAll(sends, kTimeout));
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::count(got.begin(), got.end(), true) < static_cast<long>(sizes.size()) &&
           std::chrono::steady_clock::now() < deadline) {
      PSZERO_RETURN_IF_ERROR(t.Poll(milliseconds(1000)).status());
    }
    PSZERO_RETURN_IF_ERROR(handler_status);
    for (size_t i = 0; i < sizes.size(); ++i) {
      PSZERO_RETURN_IF_ERROR(Expect(got[i], "response " + std::to_string(i)));
      PSZERO_RETURN_IF_ERROR(Expect(responses[i].size() == sizes[i], "response size"));
      PSZERO_RETURN_IF_ERROR(CheckPattern(responses[i], sizes[i], 7000 + i));
    }
    const uint64_t payload_total = std::accumulate(sizes.begin(), sizes.end(), uint64_t{0});
    return Expect(t.Counters(1).bytes_sent == payload_total + 4 * sizes.size(), "AM counters");
  });
  EXPECT_ALL_OK(statuses);
}

TEST(FileKeyValueStoreTest, SetGetAndDeadline) {
  auto dir =
      std::filesystem::temp_directory_path() / ("pszero_kv_test_" + std::to_string(::getpid()));
  auto store = FileKeyValueStore::Create(dir);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE(store->Set("job/ucx-address/0", std::string("\0\x01zz", 4)).ok());
  auto v = store->Get("job/ucx-address/0", milliseconds(0));
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, std::string("\0\x01zz", 4));
  auto missing = store->Get("job/ucx-address/1", milliseconds(30));
  EXPECT_EQ(missing.status().code(), StatusCode::kDeadlineExceeded);
  std::thread late([&] { ASSERT_TRUE(store->Set("late", "x").ok()); });
  auto waited = store->Get("late", milliseconds(10000));
  late.join();
  EXPECT_TRUE(waited.ok());
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pszero
