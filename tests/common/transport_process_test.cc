// Transport tests with ranks as real processes (see process_transport_fixture.h).
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

TEST_F(ProcessTransportTest, EchoOneByteTo256MiBAndActiveMessages) {
  const std::vector<size_t> sizes = {1, 8, 4096, 65537, 1 << 20, 16 << 20, size_t{256} << 20};
  const std::vector<size_t> am_sizes = {0, 100, 8192, 65536, 4 << 20};
  std::string sizes_flag;
  for (size_t n : sizes) {
    if (!sizes_flag.empty()) sizes_flag += ',';
    sizes_flag += std::to_string(n);
  }
  auto peer = SpawnPeer(
      {"--role", "echo", "--sizes", sizes_flag, "--am-count", std::to_string(am_sizes.size())});
  ASSERT_TRUE(peer);
  ucx::UcxTransport& t = *transport_;
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto out = PatternBuffer(sizes[i], 500 + i);
    std::vector<std::byte> in(sizes[i]);
    auto recv = t.Recv(1, MakeTag(0, 0, i), in.data(), in.size());
    auto send = t.Send(1, MakeTag(0, 0, i), out.data(), out.size());
    ASSERT_TRUE(recv.ok() && send.ok());
    ASSERT_TRUE(send->Wait(kTimeout).ok());
    Status s = recv->Wait(kTimeout);
    ASSERT_TRUE(s.ok()) << s.ToString();
    EXPECT_EQ(FirstMismatch(in.data(), sizes[i], 500 + i), sizes[i]) << "size " << sizes[i];
  }
  std::vector<std::vector<std::byte>> replies(am_sizes.size());
  std::vector<bool> got(am_sizes.size(), false);
  ASSERT_TRUE(t.SetAmHandler(2, {.payload_destination = nullptr,
                                 .on_message =
                                     [&](const AmInfo& info, std::span<const std::byte> payload) {
                                       uint32_t i;
                                       std::memcpy(&i, info.header.data(), 4);
                                       replies[i].assign(payload.begin(), payload.end());
                                       got[i] = true;
                                     }})
                  .ok());
  std::vector<std::vector<std::byte>> payloads;
  std::vector<Request> sends;
  for (uint32_t i = 0; i < am_sizes.size(); ++i) {
    payloads.push_back(PatternBuffer(am_sizes[i], 900 + i));
    auto r = t.SendAm(1, 1, std::as_bytes(std::span(&i, 1)), payloads[i].data(), am_sizes[i]);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    sends.push_back(std::move(r).value());
  }
  ASSERT_TRUE(t.WaitAll(sends, kTimeout).ok());
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (std::count(got.begin(), got.end(), true) < static_cast<long>(am_sizes.size()) &&
         std::chrono::steady_clock::now() < deadline) {
    ASSERT_TRUE(t.Poll(milliseconds(1000)).ok());
  }
  for (size_t i = 0; i < am_sizes.size(); ++i) {
    ASSERT_TRUE(got[i]) << "AM reply " << i;
    ASSERT_EQ(replies[i].size(), am_sizes[i]);
    EXPECT_EQ(FirstMismatch(replies[i].data(), am_sizes[i], 900 + i), am_sizes[i]);
  }
  auto result = peer->Finish(kTimeout);
  EXPECT_FALSE(result.timed_out);
  EXPECT_EQ(result.exit_code, 0);
}

}  // namespace
}  // namespace pszero
