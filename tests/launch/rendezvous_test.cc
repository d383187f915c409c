// The rendezvous service and client with processes as threads of this test: joining,
// rank assignment, blob exchange, key-value store, barriers, deadlines, 256 clients, and
// node launchers (admitted at once, reading the launch plan, reporting deaths).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <thread>

#include "tests/launch/rendezvous_test_util.h"

namespace pszero::testing {
namespace {

// Joins every option set concurrently (Join returns only once the world is complete).
std::vector<std::unique_ptr<RendezvousClient>> JoinAll(const std::vector<RendezvousOptions>& opts) {
  std::vector<std::unique_ptr<RendezvousClient>> clients(opts.size());
  std::vector<std::thread> threads;
  std::vector<Status> errors(opts.size());
  for (size_t i = 0; i < opts.size(); ++i) {
    threads.emplace_back([&, i] {
      auto c = RendezvousClient::Join(opts[i], kWait);
      if (c.ok()) {
        clients[i] = std::move(c).value();
      } else {
        errors[i] = c.status();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < opts.size(); ++i) {
    EXPECT_TRUE(errors[i].ok()) << "client " << i << ": " << errors[i].ToString();
  }
  return clients;
}

// Runs fn(i) on one thread per client and waits for all.
template <typename Fn>
void OnEach(size_t n, Fn fn) {
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) threads.emplace_back([&, i] { fn(i); });
  for (auto& t : threads) t.join();
}

TEST(RendezvousTest, OneServerFourWorkersExchangeBlobsAndPassThreeBarriers) {
  TestService ts(1, 4);
  std::vector<RendezvousOptions> opts = {ts.Client(Role::kServer, 0)};
  for (int i = 0; i < 4; ++i) opts.push_back(ts.Client(Role::kWorker, i));
  auto clients = JoinAll(opts);
  ASSERT_TRUE(std::all_of(clients.begin(), clients.end(), [](auto& c) { return c != nullptr; }));

  EXPECT_EQ(clients[0]->role(), Role::kServer);
  EXPECT_EQ(clients[0]->rank(), 0);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(clients[1 + i]->role(), Role::kWorker);
    EXPECT_EQ(clients[1 + i]->rank(), i);  // node 0, local rank i
    EXPECT_EQ(clients[1 + i]->num_workers(), 4);
    EXPECT_EQ(clients[1 + i]->num_servers(), 1);
    EXPECT_EQ(clients[1 + i]->members().size(), 5u);
  }
  std::vector<std::string> problems(clients.size());
  OnEach(clients.size(), [&](size_t i) {
    RendezvousClient& c = *clients[i];
    for (int round = 0; round < 3; ++round) {
      const std::string key = "round" + std::to_string(round) + "/" + PeerTag(c.role(), c.rank());
      Status s = c.Set(key, "value of " + key);
      if (s.ok()) s = c.Barrier("round" + std::to_string(round), kWait);
      if (!s.ok()) {
        problems[i] += s.ToString() + "; ";
        return;
      }
      // After the barrier everyone's value of this round is there: no waiting needed.
      for (const wire::MemberInfo& m : c.members()) {
        const std::string k =
            "round" + std::to_string(round) + "/" + PeerTag(m.role, static_cast<int>(m.rank));
        Result<std::string> v = c.Get(k, kWait);
        if (!v.ok() || *v != "value of " + k) problems[i] += "bad " + k + "; ";
      }
    }
    for (const wire::MemberInfo& m : c.members()) {
      Result<std::string> blob = c.PeerBlob(m.role, static_cast<int>(m.rank), kWait);
      const std::string want = "blob " + std::string(RoleName(m.role)) + " " +
                               std::to_string(m.node_rank) + "/" + std::to_string(m.local_rank);
      if (!blob.ok() || *blob != want) problems[i] += "bad blob of " + PeerTag(m.role, m.rank);
    }
  });
  for (size_t i = 0; i < clients.size(); ++i) EXPECT_EQ(problems[i], "") << "client " << i;
  EXPECT_TRUE(ts.service().WaitUntil(
      [](const auto& s) { return s.joined == 5 && s.world_complete; }, kWait));
  for (auto& c : clients) c->Leave();
  EXPECT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.left == 5; }, kWait));
  EXPECT_TRUE(ts.service().Snapshot().lost.empty());
}

TEST(RendezvousTest, RanksFollowNodeThenLocalRankAndHonourRequests) {
  TestService ts(0, 5);
  std::vector<RendezvousOptions> opts = {
      ts.Client(Role::kWorker, 1, 1), ts.Client(Role::kWorker, 0, 1),
      ts.Client(Role::kWorker, 1, 0), ts.Client(Role::kWorker, 0, 0),
      ts.Client(Role::kWorker, 0, 2)};
  opts[4].requested_rank = 0;  // node 2 asks for rank 0; the rest fill 1..4 in order
  auto clients = JoinAll(opts);
  ASSERT_TRUE(std::all_of(clients.begin(), clients.end(), [](auto& c) { return c != nullptr; }));
  EXPECT_EQ(clients[4]->rank(), 0);
  EXPECT_EQ(clients[3]->rank(), 1);  // node 0 local 0
  EXPECT_EQ(clients[2]->rank(), 2);  // node 0 local 1
  EXPECT_EQ(clients[1]->rank(), 3);  // node 1 local 0
  EXPECT_EQ(clients[0]->rank(), 4);  // node 1 local 1
}

TEST(RendezvousTest, GetWaitsForALaterSetAndHitsItsDeadlineNamingTheKey) {
  TestService ts(0, 2);
  auto clients = JoinAll({ts.Client(Role::kWorker, 0), ts.Client(Role::kWorker, 1)});
  ASSERT_TRUE(clients[0] && clients[1]);
  KeyValueStore& a = *clients[0];  // used through the transport's interface
  KeyValueStore& b = *clients[1];
  std::thread setter([&] { EXPECT_TRUE(b.Set("ucx/w1", std::string("\0addr", 5)).ok()); });
  Result<std::string> v = a.Get("ucx/w1", kWait);
  setter.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, std::string("\0addr", 5));
  ASSERT_TRUE(b.Set("ucx/w1", "replaced").ok());
  EXPECT_EQ(*a.Get("ucx/w1", kWait), "replaced");

  Result<std::string> missing = a.Get("nccl/id", milliseconds(50));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(missing.status().message().find("nccl/id"), std::string::npos);
  // Oversize keys are refused before they reach the wire.
  EXPECT_EQ(a.Set(std::string(wire::kMaxKeyBytes + 1, 'k'), "v").code(),
            StatusCode::kInvalidArgument);
}

TEST(RendezvousTest, BarrierDeadlineThenTheSameBarrierStillWorks) {
  TestService ts(0, 2);
  auto clients = JoinAll({ts.Client(Role::kWorker, 0), ts.Client(Role::kWorker, 1)});
  ASSERT_TRUE(clients[0] && clients[1]);
  Status alone = clients[0]->Barrier("sync", milliseconds(50));
  EXPECT_EQ(alone.code(), StatusCode::kDeadlineExceeded) << alone.ToString();
  EXPECT_NE(alone.message().find("sync"), std::string::npos);
  // The cancelled arrival must not count: both must arrive for the next one.
  ASSERT_TRUE(
      ts.service().WaitUntil([](const auto& s) { return s.barrier_arrivals.empty(); }, kWait));
  OnEach(2, [&](size_t i) { EXPECT_TRUE(clients[i]->Barrier("sync", kWait).ok()); });
  // Names are reusable once a barrier completed.
  OnEach(2, [&](size_t i) { EXPECT_TRUE(clients[i]->Barrier("sync", kWait).ok()); });
}

TEST(RendezvousTest, JoinDeadlineWhenTheJobIsIncompleteAndTheSlotIsFreedAgain) {
  TestService ts(0, 2);
  Result<std::unique_ptr<RendezvousClient>> c =
      RendezvousClient::Join(ts.Client(Role::kWorker, 0), milliseconds(100));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kDeadlineExceeded) << c.status().ToString();
  EXPECT_NE(c.status().message().find("not complete"), std::string::npos);
  EXPECT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.joined == 0; }, kWait));
  auto clients = JoinAll({ts.Client(Role::kWorker, 0), ts.Client(Role::kWorker, 1)});
  EXPECT_TRUE(clients[0] && clients[1]);
}

TEST(RendezvousTest, DuplicateAndSurplusJoinsAreRefused) {
  TestService ts(0, 2);
  std::unique_ptr<RendezvousClient> first;
  std::thread t([&] {
    auto c = RendezvousClient::Join(ts.Client(Role::kWorker, 0), kWait);
    if (c.ok()) first = std::move(c).value();
  });
  ASSERT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.joined == 1; }, kWait));
  auto dup = RendezvousClient::Join(ts.Client(Role::kWorker, 0), kWait);
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.status().message().find("already joined"), std::string::npos)
      << dup.status().ToString();
  auto server = RendezvousClient::Join(ts.Client(Role::kServer, 0), kWait);
  ASSERT_FALSE(server.ok());
  EXPECT_NE(server.status().message().find("expects 0 servers"), std::string::npos)
      << server.status().ToString();
  auto second = RendezvousClient::Join(ts.Client(Role::kWorker, 1), kWait);
  t.join();
  ASSERT_TRUE(second.ok()) << second.status().ToString();
  ASSERT_TRUE(first);
  EXPECT_TRUE(ts.service().WaitUntil([](const auto& s) { return s.refused_joins == 2; }, kWait));
}

TEST(RendezvousTest, ServiceRefusesBadOptions) {
  auto start = [](auto change) {
    RendezvousServiceOptions o;
    o.token = "t";
    change(o);
    return RendezvousServiceThread::Start(o).status();
  };
  EXPECT_TRUE(start([](auto&) {}).ok());
  EXPECT_EQ(start([](auto& o) { o.token.clear(); }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(start([](auto& o) { o.num_workers = 0; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(start([](auto& o) { o.num_workers = 4097; }).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(start([](auto& o) { o.heartbeat_timeout = milliseconds(0); }).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(start([](auto& o) { o.address = "not-an-address"; }).code(),
            StatusCode::kInvalidArgument);
  // A port in use: the first service holds it.
  TestService held(0, 1);
  Status busy = start([&](auto& o) { o.port = held.port(); });
  EXPECT_EQ(busy.code(), StatusCode::kIoError) << busy.ToString();
  EXPECT_NE(busy.message().find(std::to_string(held.port())), std::string::npos);
}

TEST(RendezvousTest, TwoHundredFiftySixClientsJoinAndPassABarrier) {
  constexpr int kClients = 256;
  TestService ts(0, kClients, milliseconds(10000));
  std::vector<RendezvousOptions> opts;
  for (int i = 0; i < kClients; ++i) {
    opts.push_back(ts.Client(Role::kWorker, i % 8, i / 8));
    opts.back().heartbeat_interval = milliseconds(500);
  }
  auto clients = JoinAll(opts);
  ASSERT_TRUE(std::all_of(clients.begin(), clients.end(), [](auto& c) { return c != nullptr; }));
  std::set<int> ranks;
  for (int i = 0; i < kClients; ++i) {
    ranks.insert(clients[static_cast<size_t>(i)]->rank());
    EXPECT_EQ(clients[static_cast<size_t>(i)]->rank(), i);  // node i/8, local i%8
  }
  EXPECT_EQ(ranks.size(), static_cast<size_t>(kClients));
  std::atomic<int> passed{0};
  OnEach(clients.size(), [&](size_t i) {
    Status s = clients[i]->Barrier("all", kWait);
    EXPECT_TRUE(s.ok()) << s.ToString();
    passed += s.ok();
  });
  EXPECT_EQ(passed.load(), kClients);
}

// A node launcher of another node joins without waiting for the world, reads the plan
// node 0 published, and its report of a process that died before joining fails every
// process still waiting to join, naming it; a failed job refuses later launchers (so a
// restarted node waits for the next generation's service).
TEST(RendezvousTest, NodeLauncherReportFailsTheJobBeforeItIsComplete) {
  const std::string plan = "generation=3\nresume=/ck/step-000004\n";
  TestService ts(0, 2, milliseconds(2000), plan);
  const RendezvousOptions lo = ts.Client(Role::kLauncher, 0, /*node_rank=*/1);
  auto launcher = RendezvousClient::Join(lo, kWait);
  ASSERT_TRUE(launcher.ok()) << launcher.status().ToString();
  EXPECT_EQ((*launcher)->rank(), 1);
  Result<std::string> got = (*launcher)->Get(kLaunchPlanKey, kWait);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, plan);
  EXPECT_TRUE(
      ts.service().WaitUntil([](const RendezvousSnapshot& s) { return s.launchers == 1; }, kWait));
  const auto twice = RendezvousClient::Join(lo, kWait);
  EXPECT_EQ(twice.status().code(), StatusCode::kInvalidArgument) << twice.status().ToString();

  Status joined;
  std::thread worker(
      [&] { joined = RendezvousClient::Join(ts.Client(Role::kWorker, 0), kWait).status(); });
  EXPECT_TRUE(
      ts.service().WaitUntil([](const RendezvousSnapshot& s) { return s.joined == 1; }, kWait));
  ASSERT_TRUE((*launcher)->ReportLost(Role::kWorker, 1, "was killed by signal 9 on node 1").ok());
  worker.join();
  EXPECT_EQ(joined.code(), StatusCode::kUnavailable) << joined.ToString();
  EXPECT_NE(joined.message().find("worker 1 lost: was killed by signal 9 on node 1"),
            std::string::npos)
      << joined.ToString();
  Result<PeerLost> news = (*launcher)->WaitForPeerLost(kWait);
  ASSERT_TRUE(news.ok()) << news.status().ToString();
  EXPECT_EQ(news->role, Role::kWorker);
  EXPECT_EQ(news->rank, 1);
  const auto late = RendezvousClient::Join(ts.Client(Role::kLauncher, 0, 2), kWait);
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable) << late.status().ToString();
}

// A node launcher that falls silent (its machine or process is gone) fails the job.
TEST(RendezvousTest, SilentNodeLauncherFailsTheJob) {
  TestService ts(0, 1, milliseconds(300));
  auto launcher = RendezvousClient::Join(ts.Client(Role::kLauncher, 0, 1), kWait);
  ASSERT_TRUE(launcher.ok()) << launcher.status().ToString();
  (*launcher)->StopHeartbeatsForTesting();
  EXPECT_TRUE(ts.service().WaitUntil(
      [](const RendezvousSnapshot& s) {
        return s.lost.size() == 1 && s.lost[0].role == Role::kLauncher && s.lost[0].rank == 1;
      },
      kWait));
  const auto joined = RendezvousClient::Join(ts.Client(Role::kWorker, 0), kWait);
  EXPECT_EQ(joined.status().code(), StatusCode::kUnavailable) << joined.status().ToString();
  EXPECT_NE(joined.status().message().find("node launcher 1 lost: no heartbeat"), std::string::npos)
      << joined.status().ToString();
}

}  // namespace
}  // namespace pszero::testing
