// Faults of the control plane: wrong and missing tokens, malformed frames from a raw
// socket, a worker process killed with SIGKILL in a barrier, a hung (silent) process,
// and the service itself going away. Every survivor must hear of the loss, by role and
// rank, within 5 s, and every pending wait must fail naming the lost peer.
#include <signal.h>
#include <sys/wait.h>

#include <gtest/gtest.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <thread>

#include "tests/launch/rendezvous_test_util.h"
#include "tests/support/child_process.h"
#include "tests/support/subprocess.h"

namespace pszero::testing {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr auto kNewsBound = std::chrono::seconds(5);

TEST(RendezvousFaultTest, WrongOrMissingTokenIsRefusedAndNothingRegisters) {
  TestService ts(0, 1);
  for (const std::string bad : {"not-the-token", ""}) {
    RendezvousOptions o = ts.Client(Role::kWorker, 0);
    o.token = bad;
    Result<std::unique_ptr<RendezvousClient>> c = RendezvousClient::Join(o, kWait);
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.status().code(), StatusCode::kUnauthenticated) << c.status().ToString();
    EXPECT_NE(c.status().message().find("authentication failed"), std::string::npos);
  }
  // The service counts a refusal right after sending it: wait for the count.
  ASSERT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.auth_failures == 2; }, kWait));
  RendezvousSnapshot s = ts.service().Snapshot();
  EXPECT_EQ(s.joined, 0);
  EXPECT_FALSE(s.world_complete);
  // The one slot is still free for the right token.
  auto good = RendezvousClient::Join(ts.Client(Role::kWorker, 0), kWait);
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  EXPECT_EQ((*good)->rank(), 0);
}

// Connects a raw socket, reads the challenge, sends `bytes`, and returns what the service
// answers before it closes the connection.
std::string SendRaw(uint16_t port, const std::string& bytes) {
  asio::io_context io;
  tcp::socket socket(io);
  boost::system::error_code ec;
  socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  EXPECT_FALSE(ec) << ec.message();
  std::string challenge(wire::kHeaderBytes + wire::kNonceBytes, '\0');
  asio::read(socket, asio::buffer(challenge), ec);
  EXPECT_FALSE(ec) << ec.message();
  asio::write(socket, asio::buffer(bytes), ec);
  std::string answer;
  char buf[4096];
  for (;;) {  // until the service closes; its handshake timeout bounds this
    const size_t n = socket.read_some(asio::buffer(buf), ec);
    answer.append(buf, n);
    if (ec) break;
  }
  return answer;
}

TEST(RendezvousFaultTest, MalformedFramesAreRejectedWhileOthersAreServed) {
  TestService ts(0, 2);
  // One honest worker joins first and waits for the world.
  std::unique_ptr<RendezvousClient> first;
  std::thread t([&] {
    auto c = RendezvousClient::Join(ts.Client(Role::kWorker, 0), kWait);
    if (c.ok()) first = std::move(c).value();
  });
  ASSERT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.joined == 1; }, kWait));

  const std::string good = wire::EncodeFrame(wire::Heartbeat{});
  auto with = [&](size_t at, char c) {
    std::string f = good;
    f[at] = c;
    return f;
  };
  std::string oversize = good;
  oversize[10] = 0x10;  // 1 MiB + ... > the limit before a join
  std::string bad_join = wire::EncodeFrame(wire::Join{});
  bad_join.resize(bad_join.size() - 5);
  bad_join[8] = static_cast<char>(bad_join.size() - wire::kHeaderBytes);  // consistent length
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"garbage", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
      {"wrong version", with(4, 9)},
      {"unknown type", with(5, 99)},
      {"oversize", oversize},
      {"truncated join", bad_join},
      {"not a join first", wire::EncodeFrame(wire::Barrier{1, "b"})},
  };
  for (const auto& [name, bytes] : cases) {
    const std::string answer = SendRaw(ts.port(), bytes);
    size_t consumed = 0;
    Result<wire::Message> m = wire::DecodeFrame(answer, &consumed);
    ASSERT_TRUE(m.ok()) << name << ": " << m.status().ToString();
    ASSERT_TRUE(std::holds_alternative<wire::Error>(*m)) << name;
    EXPECT_EQ(std::get<wire::Error>(*m).code, StatusCode::kCorruption) << name;
  }
  // A connection that sends half a header and hangs up.
  {
    asio::io_context io;
    tcp::socket socket(io);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), ts.port()));
    asio::write(socket, asio::buffer(good.substr(0, 5)));
  }
  EXPECT_TRUE(ts.service().WaitUntil(
      [&](const auto& s) { return s.protocol_errors == static_cast<int>(cases.size()); }, kWait));
  EXPECT_EQ(ts.service().Snapshot().joined, 1);

  // The service still serves: the second worker completes the world.
  auto second = RendezvousClient::Join(ts.Client(Role::kWorker, 1), kWait);
  t.join();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_TRUE(first);
  std::thread other([&] { EXPECT_TRUE(first->Barrier("after", kWait).ok()); });
  EXPECT_TRUE((*second)->Barrier("after", kWait).ok());
  other.join();
  EXPECT_TRUE(ts.service().Snapshot().lost.empty());
}

// One worker is a real pszero-worker process; the other four members are threads. The
// process reaches barrier "published" (see common/control_plane_main.h) and is killed
// with SIGKILL there; three survivors wait in the same barrier, the server in a lookup.
TEST(RendezvousFaultTest, KilledWorkerInABarrierIsReportedToEverySurvivorWithin5s) {
  TestService ts(1, 4);
  auto child = ChildProcess::Spawn(
      {BinaryPath("pszero-worker"), "--master-port", std::to_string(ts.port()), "--local-rank", "2",
       "--heartbeat-ms", "100"},
      {"PSZERO_TOKEN=" + ts.token}, {"PSZERO_FAULT_INJECT", "PSZERO_MASTER_PORT"});
  ASSERT_TRUE(child);
  std::vector<RendezvousOptions> opts = {ts.Client(Role::kServer, 0), ts.Client(Role::kWorker, 0),
                                         ts.Client(Role::kWorker, 1), ts.Client(Role::kWorker, 3)};
  std::vector<std::unique_ptr<RendezvousClient>> clients(opts.size());
  std::vector<Status> results(opts.size());
  std::vector<Clock::time_point> returned(opts.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < opts.size(); ++i) {
    threads.emplace_back([&, i] {
      auto c = RendezvousClient::Join(opts[i], kWait);
      if (!c.ok()) {
        results[i] = c.status();
        return;
      }
      clients[i] = std::move(c).value();
      results[i] = clients[i]->Barrier("joined", kWait);
      if (!results[i].ok()) return;
      if (i == 0) {
        results[i] = clients[i]->Get("never/published", kWait).status();
      } else {
        results[i] = clients[i]->Barrier("published", kWait);
      }
      returned[i] = Clock::now();
    });
  }
  // The child and the three worker threads are in the barrier: 4 of 5 arrived.
  ASSERT_TRUE(ts.service().WaitUntil(
      [](const auto& s) {
        auto it = s.barrier_arrivals.find("published");
        return it != s.barrier_arrivals.end() && it->second == 4;
      },
      kWait))
      << child->Output();
  const auto killed_at = Clock::now();
  child->Signal(SIGKILL);
  ASSERT_TRUE(child->Wait(kWait));
  for (auto& t : threads) t.join();
  ASSERT_TRUE(WIFSIGNALED(child->wait_status()));

  for (size_t i = 0; i < opts.size(); ++i) {
    SCOPED_TRACE("survivor " + std::to_string(i));
    EXPECT_EQ(results[i].code(), StatusCode::kUnavailable) << results[i].ToString();
    EXPECT_NE(results[i].message().find("worker 2"), std::string::npos) << results[i].ToString();
    EXPECT_LT(returned[i] - killed_at, kNewsBound);
    ASSERT_TRUE(clients[i]);
    Result<PeerLost> news = clients[i]->WaitForPeerLost(kWait);
    ASSERT_TRUE(news.ok());
    EXPECT_EQ(news->role, Role::kWorker);
    EXPECT_EQ(news->rank, 2);
    // Later waits fail at once, naming the same peer.
    Status later = clients[i]->Barrier("later", kWait);
    EXPECT_EQ(later.code(), StatusCode::kUnavailable);
    EXPECT_NE(later.message().find("worker 2"), std::string::npos);
  }
  ASSERT_TRUE(ts.service().WaitUntil([](const auto& s) { return !s.lost.empty(); }, kWait));
  RendezvousSnapshot s = ts.service().Snapshot();
  ASSERT_EQ(s.lost.size(), 1u);
  EXPECT_EQ(s.lost[0].rank, 2);
}

TEST(RendezvousFaultTest, SilentProcessIsLostAfterTheHeartbeatTimeout) {
  TestService ts(0, 3, milliseconds(600));
  std::vector<std::unique_ptr<RendezvousClient>> clients(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      auto c = RendezvousClient::Join(ts.Client(Role::kWorker, i), kWait);
      if (c.ok()) clients[static_cast<size_t>(i)] = std::move(c).value();
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(clients[0] && clients[1] && clients[2]);
  clients[1]->StopHeartbeatsForTesting();  // as a hung (SIGSTOPped) process would
  const auto stopped_at = Clock::now();
  std::vector<Status> results(3);
  std::thread a([&] { results[0] = clients[0]->Barrier("b", kWait); });
  std::thread b([&] { results[2] = clients[2]->Barrier("b", kWait); });
  a.join();
  b.join();
  EXPECT_LT(Clock::now() - stopped_at, kNewsBound);
  for (size_t i : {0u, 2u}) {
    EXPECT_EQ(results[i].code(), StatusCode::kUnavailable);
    EXPECT_NE(results[i].message().find("worker 1"), std::string::npos) << results[i].ToString();
    EXPECT_NE(results[i].message().find("no heartbeat"), std::string::npos);
  }
}

TEST(RendezvousFaultTest, LosingTheServiceFailsPendingWaits) {
  auto ts = std::make_unique<TestService>(0, 2);
  std::vector<std::unique_ptr<RendezvousClient>> clients(2);
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      auto c = RendezvousClient::Join(ts->Client(Role::kWorker, i), kWait);
      if (c.ok()) clients[static_cast<size_t>(i)] = std::move(c).value();
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(clients[0] && clients[1]);
  Status result;
  std::thread waiter([&] { result = clients[0]->Barrier("never", kWait); });
  ASSERT_TRUE(ts->service().WaitUntil(
      [](const auto& s) { return s.barrier_arrivals.count("never") == 1; }, kWait));
  ts.reset();  // the launcher died
  waiter.join();
  EXPECT_EQ(result.code(), StatusCode::kUnavailable) << result.ToString();
  EXPECT_NE(result.message().find("rendezvous service"), std::string::npos);
}

}  // namespace
}  // namespace pszero::testing
