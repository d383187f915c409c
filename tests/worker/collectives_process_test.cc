// Collectives across real processes: this test is rank 0, collective_peer processes are
// the others (spawned per test, reaped by pid); UCX addresses are swapped through a
// FileKeyValueStore in a fresh directory. And the fault case: a rank killed with SIGKILL
// mid-collective makes every survivor's op fail with Unavailable naming it within 5 s, also
// when the ranks pose as two hosts of two (the hierarchical all-reduce).
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/file_kv_store.h"
#include "common/ucx/ucx_transport.h"
#include "tests/support/child_process.h"
#include "tests/worker/collective_check.h"

namespace pszero {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using testing::ChildProcess;

class CollectivesProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = fs::temp_directory_path() /
           ("pszero_coll_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(dir_);
    auto store = FileKeyValueStore::Create(dir_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::make_unique<FileKeyValueStore>(std::move(store).value());
  }
  void TearDown() override {
    peers_.clear();  // kills and reaps any still running
    comm_.reset();
    transport_.reset();
    fs::remove_all(dir_);
  }

  std::string Result(int rank, milliseconds timeout) {
    return store_->Get("job/result/" + std::to_string(rank), timeout).value_or("(no result)");
  }

  // Spawns ranks 1..n-1, then makes this process rank 0.
  // A rank killed with SIGKILL while the others are blocked in their next allreduce.
  // `two_hosts`: ranks 0, 1 pose as one host and 2, 3 as another.
  void KillMidCollective(testing::CheckBuffers buffers, bool two_hosts = false);

  // `two_hosts`: rank r poses as host r / (n / 2) (CommunicatorOptions::test_host_id).
  void StartWorld(int n, int iterations, int64_t count, const std::string& buffers = "private",
                  bool two_hosts = false) {
    auto host = [&](int r) { return two_hosts ? r / (n / 2) : -1; };
    for (int r = 1; r < n; ++r) {
      peers_.push_back(ChildProcess::Spawn(
          {testing::BinaryPath("collective_peer"), "--store", dir_.string(), "--rank",
           std::to_string(r), "--world", std::to_string(n), "--iterations",
           std::to_string(iterations), "--count", std::to_string(count), "--buffers", buffers,
           "--test-host-id", std::to_string(host(r))}));
      ASSERT_TRUE(peers_.back());
    }
    ucx::UcxTransportOptions o;
    o.rank = 0;
    o.world_size = n;
    o.key_prefix = "job";
    auto t = ucx::UcxTransport::Create(o, store_.get());
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    transport_ = std::move(t).value();
    collectives::CommunicatorOptions options;
    options.test_host_id = host(0);
    auto c = collectives::Communicator::World(transport_.get(), options);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    comm_ = std::move(c).value();
  }

  fs::path dir_;
  std::unique_ptr<FileKeyValueStore> store_;
  std::vector<std::unique_ptr<ChildProcess>> peers_;
  std::unique_ptr<ucx::UcxTransport> transport_;
  std::unique_ptr<collectives::Communicator> comm_;
};

TEST_F(CollectivesProcessTest, FourProcessesAgree) {
  const int n = 4;
  StartWorld(n, 3, (1 << 20) + 3);
  Status s = testing::RunCheckedIterations(*comm_, 3, (1 << 20) + 3, nullptr);
  EXPECT_TRUE(s.ok()) << s.ToString();
  for (int r = 1; r < n; ++r) {
    testing::ProcessResult result = peers_[r - 1]->Finish(milliseconds(120000));
    EXPECT_EQ(result.exit_code, 0) << "rank " << r << ": " << Result(r, milliseconds(0)) << "\n"
                                   << result.out;
  }
}

// Every rank's buffers in shared memory: the intra-host path reads them in place. The
// buffers are fresh every iteration, more than a rank keeps mapped per peer.
TEST_F(CollectivesProcessTest, FourProcessesReadSharedBuffersInPlace) {
  const int n = 4, iterations = 12;
  StartWorld(n, iterations, (1 << 18) + 3, "fresh");
  Status s = testing::RunCheckedIterations(*comm_, iterations, (1 << 18) + 3, nullptr,
                                           testing::CheckBuffers::kFreshShared);
  EXPECT_TRUE(s.ok()) << s.ToString();
  // All-reduce, reduce-scatter, all-gather and broadcast, every iteration.
  EXPECT_EQ(comm_->single_copy_ops(), 4 * iterations);
  for (int r = 1; r < n; ++r) {
    testing::ProcessResult result = peers_[r - 1]->Finish(milliseconds(120000));
    EXPECT_EQ(result.exit_code, 0) << "rank " << r << ": " << Result(r, milliseconds(0)) << "\n"
                                   << result.out;
  }
}

// Two posed hosts of two processes: the all-reduce is hierarchical (intra-host steps in
// shared memory between processes, inter-host steps over UCX).
TEST_F(CollectivesProcessTest, FourProcessesOnTwoHostsAgreeHierarchically) {
  const int n = 4;
  StartWorld(n, 3, (1 << 20) + 3, "private", /*two_hosts=*/true);
  Status s = testing::RunCheckedIterations(*comm_, 3, (1 << 20) + 3, nullptr);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_TRUE(comm_->hierarchical_active()) << comm_->hierarchical_why_not();
  EXPECT_EQ(comm_->hierarchical_hosts(), 2);
  for (int r = 1; r < n; ++r) {
    testing::ProcessResult result = peers_[r - 1]->Finish(milliseconds(120000));
    EXPECT_EQ(result.exit_code, 0) << "rank " << r << ": " << Result(r, milliseconds(0)) << "\n"
                                   << result.out;
  }
}

TEST_F(CollectivesProcessTest, RankKilledMidHierarchicalCollectiveFailsEverySurvivorWithin5s) {
  KillMidCollective(testing::CheckBuffers::kPrivate, /*two_hosts=*/true);
  EXPECT_TRUE(comm_->hierarchical_active()) << comm_->hierarchical_why_not();
}

TEST_F(CollectivesProcessTest, RankKilledMidCollectiveFailsEverySurvivorWithin5s) {
  KillMidCollective(testing::CheckBuffers::kPrivate);
}

TEST_F(CollectivesProcessTest, RankKilledMidSingleCopyCollectiveFailsEverySurvivorWithin5s) {
  KillMidCollective(testing::CheckBuffers::kShared);
}

void CollectivesProcessTest::KillMidCollective(testing::CheckBuffers buffers, bool two_hosts) {
  const int n = 4, victim = 2;
  StartWorld(n, /*iterations=*/0, 1 << 18,
             buffers == testing::CheckBuffers::kShared ? "shared" : "private", two_hosts);
  // Two rounds here, so that every peer is past its first round and looping.
  ASSERT_TRUE(testing::RunCheckedIterations(*comm_, 2, 1 << 18, nullptr, buffers).ok());
  for (int r = 1; r < n; ++r) {
    ASSERT_TRUE(store_->Get("job/progress/" + std::to_string(r), milliseconds(60000)).ok());
  }
  // The peers are now blocked inside their next allreduce, waiting for this rank.
  peers_[victim - 1]->Signal(SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  testing::ProcessResult killed = peers_[victim - 1]->Finish(milliseconds(60000));
  EXPECT_TRUE(killed.signaled);

  Status s = testing::RunCheckedIterations(*comm_, 1, 1 << 18, nullptr, buffers);
  const auto mine = std::chrono::steady_clock::now() - killed_at;
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  EXPECT_NE(s.message().find("rank " + std::to_string(victim)), std::string::npos) << s.ToString();
  EXPECT_LT(mine, std::chrono::seconds(5))
      << std::chrono::duration_cast<milliseconds>(mine).count() << " ms";
  std::printf("rank 0 failed after %lld ms: %s\n",
              static_cast<long long>(std::chrono::duration_cast<milliseconds>(mine).count()),
              s.ToString().c_str());

  // Each survivor reports (its result file appears) within 5 s of the kill too.
  for (int r = 1; r < n; ++r) {
    if (r == victim) continue;
    const std::string text = Result(r, milliseconds(30000));
    const auto when = std::chrono::steady_clock::now() - killed_at;
    EXPECT_EQ(text.rfind("3 unavailable", 0), 0u) << "rank " << r << ": " << text << "\n"
                                                  << peers_[r - 1]->Output();
    EXPECT_NE(text.find("rank " + std::to_string(victim)), std::string::npos) << text;
    EXPECT_LT(when, std::chrono::seconds(5))
        << "rank " << r << " after " << std::chrono::duration_cast<milliseconds>(when).count()
        << " ms";
  }
  ASSERT_TRUE(store_->Set("job/done", "1").ok());
  for (int r = 1; r < n; ++r) {
    if (r == victim) continue;
    EXPECT_EQ(peers_[r - 1]->Finish(milliseconds(60000)).exit_code, 3) << "rank " << r;
  }
}

}  // namespace
}  // namespace pszero
