// Fault test: a peer process killed with SIGKILL mid-transfer, by pid (see
// process_transport_fixture.h).
#include <signal.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "tests/common/process_transport_fixture.h"
#include "tests/common/transport_test_util.h"

namespace pszero {
namespace {

using std::chrono::milliseconds;
using testing::FirstMismatch;
using testing::PatternBuffer;
using testing::ProcessTransportTest;
constexpr milliseconds kTimeout(60000);

// Rank 1 receives the first messages of a stream, then stops posting receives; rank 0
// keeps sends (rendezvous, waiting for a match) and a receive pending when rank 1 is
// killed. Every one must fail with Unavailable naming rank 1 within 5 s; an active message
// sent just before the kill must have completed or failed the same way.
TEST_F(ProcessTransportTest, PeerKilledMidTransferFailsPendingOpsWithin5s) {
  constexpr size_t kBytes = 4 << 20;
  constexpr int kDelivered = 3, kStream = 8;
  auto peer = SpawnPeer({"--role", "hold", "--hold-bytes", std::to_string(kBytes), "--hold-recvs",
                         std::to_string(kDelivered)});
  ASSERT_TRUE(peer);
  ucx::UcxTransport& t = *transport_;
  auto data = PatternBuffer(kBytes, 1);
  std::vector<Request> sends;
  for (int i = 0; i < kStream; ++i) {
    auto r = t.Send(1, MakeTag(0, 0, i), data.data(), kBytes);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    sends.push_back(std::move(r).value());
  }
  // The first kDelivered arrive; then the peer says so.
  std::span<Request> delivered(sends.data(), kDelivered);
  Status s = t.WaitAll(delivered, kTimeout);
  ASSERT_TRUE(s.ok()) << s.ToString();
  ASSERT_TRUE(store_->Get("job/ready", kTimeout).ok());
  std::vector<std::byte> in(64);
  auto recv = t.Recv(1, MakeTag(5, 5, 5), in.data(), in.size());
  ASSERT_TRUE(recv.ok());
  auto am = t.SendAm(1, 1, {}, data.data(), kBytes);
  ASSERT_TRUE(am.ok());
  for (int i = kDelivered; i < kStream; ++i) EXPECT_FALSE(sends[i].done());

  peer->Signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  auto result = peer->Finish(kTimeout);
  EXPECT_TRUE(result.signaled);

  std::vector<Request> pending;
  for (int i = kDelivered; i < kStream; ++i) pending.push_back(std::move(sends[i]));
  pending.push_back(std::move(recv).value());
  // Waits past the bound on purpose: the check is that failure, not the deadline, ends it.
  s = t.WaitAll(pending, milliseconds(15000));
  const auto elapsed = std::chrono::steady_clock::now() - killed_at;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s.ToString();
  EXPECT_LT(elapsed, std::chrono::seconds(5))
      << std::chrono::duration_cast<milliseconds>(elapsed).count() << " ms";
  for (const Request& r : pending) {
    ASSERT_TRUE(r.done());
    EXPECT_EQ(r.status().code(), StatusCode::kUnavailable) << r.status().ToString();
    EXPECT_NE(r.status().message().find("rank 1"), std::string::npos) << r.status().ToString();
  }
  // The AM may have gone through before the kill (the peer progresses and drops it, and a
  // deep shared-memory FIFO can hold all of it); if not, it failed the same way.
  Status am_status = am->Wait(milliseconds(5000));
  if (!am_status.ok()) {
    EXPECT_EQ(am_status.code(), StatusCode::kUnavailable) << am_status.ToString();
    EXPECT_NE(am_status.message().find("rank 1"), std::string::npos) << am_status.ToString();
  }
  // The peer stays failed: new operations fail at once, naming it.
  Status again = t.Send(1, 0, data.data(), 8).status();
  EXPECT_EQ(again.code(), StatusCode::kUnavailable);
  EXPECT_NE(again.message().find("rank 1"), std::string::npos);
  std::printf("dead peer detected after %lld ms\n",
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(elapsed).count()));
}

}  // namespace
}  // namespace pszero
