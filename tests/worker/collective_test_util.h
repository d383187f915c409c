// Ranks as threads for collective tests: one UcxTransport and one World communicator per
// rank, all in this process, addresses swapped through an in-memory store.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/kv_store.h"
#include "common/ucx/ucx_transport.h"
#include "worker/collectives/communicator.h"

namespace pszero::testing {

class CommRanks {
 public:
  CommRanks(int world, const collectives::CommunicatorOptions& options)
      : CommRanks(
            world, [&](int) { return options; }, PerRank{}) {}
  // Ranks posing as hosts: rank r claims to run on host hosts[r]
  // (CommunicatorOptions::test_host_id).
  CommRanks(const std::vector<int64_t>& hosts, const collectives::CommunicatorOptions& options)
      : CommRanks(
            static_cast<int>(hosts.size()),
            [&](int r) {
              collectives::CommunicatorOptions o = options;
              o.test_host_id = hosts[r];
              return o;
            },
            PerRank{}) {}

 private:
  struct PerRank {};
  CommRanks(int world, const std::function<collectives::CommunicatorOptions(int rank)>& options_of,
            PerRank) {
    // Every transport first: a communicator connects to all its members when made.
    for (int r = 0; r < world; ++r) {
      ucx::UcxTransportOptions o;
      o.rank = r;
      o.world_size = world;
      o.key_prefix = "coll";
      auto t = ucx::UcxTransport::Create(o, &store_);
      EXPECT_TRUE(t.ok()) << t.status().ToString();
      if (!t.ok()) return;
      transports_.push_back(std::move(t).value());
    }
    for (int r = 0; r < world; ++r) {
      auto c = collectives::Communicator::World(transports_[r].get(), options_of(r));
      EXPECT_TRUE(c.ok()) << c.status().ToString();
      if (!c.ok()) {
        comms_.clear();
        return;
      }
      comms_.push_back(std::move(c).value());
    }
  }

 public:
  int size() const { return static_cast<int>(comms_.size()); }
  collectives::Communicator& comm(int r) { return *comms_[r]; }
  Transport& transport(int r) { return *transports_[r]; }

  // Runs fn(rank) on one thread per rank; each rank's Status in rank order.
  std::vector<Status> Run(const std::function<Status(int rank)>& fn) {
    std::vector<Status> statuses(comms_.size());
    std::vector<std::thread> threads;
    for (int r = 0; r < size(); ++r) {
      threads.emplace_back([&, r] { statuses[r] = fn(r); });
    }
    for (auto& t : threads) t.join();
    return statuses;
  }

  static void ExpectAllOk(const std::vector<Status>& statuses) {
    for (size_t r = 0; r < statuses.size(); ++r) {
      EXPECT_TRUE(statuses[r].ok()) << "rank " << r << ": " << statuses[r].ToString();
    }
  }

 private:
  InMemoryKeyValueStore store_;
  std::vector<std::unique_ptr<ucx::UcxTransport>> transports_;
  std::vector<std::unique_ptr<collectives::Communicator>> comms_;
};

}  // namespace pszero::testing
