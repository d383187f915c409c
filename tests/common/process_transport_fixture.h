// ProcessTransportTest: the fixture of the multi-process transport tests. The test is
// rank 0; transport_peer (tests/common/transport_peer.cc) is rank 1, spawned per test and
// reaped by pid; UCX worker addresses are swapped through a FileKeyValueStore in a fresh
// temporary directory that is removed afterwards.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "common/file_kv_store.h"
#include "common/ucx/ucx_transport.h"
#include "tests/support/child_process.h"

namespace pszero::testing {

// A fresh store directory per test, removed afterwards.
class ProcessTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static std::atomic<int> counter{0};
    dir_ = std::filesystem::temp_directory_path() /
           ("pszero_transport_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::remove_all(dir_);
    auto store = FileKeyValueStore::Create(dir_);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::make_unique<FileKeyValueStore>(std::move(store).value());
    ucx::UcxTransportOptions o;
    o.rank = 0;
    o.world_size = 2;
    o.key_prefix = "job";
    auto t = ucx::UcxTransport::Create(o, store_.get());
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    transport_ = std::move(t).value();
  }
  void TearDown() override {
    transport_.reset();
    std::filesystem::remove_all(dir_);
  }
  std::unique_ptr<testing::ChildProcess> SpawnPeer(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {testing::BinaryPath("transport_peer"), "--store",
                                     dir_.string(), "--prefix", "job"};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::ChildProcess::Spawn(argv);
  }

  std::filesystem::path dir_;
  std::unique_ptr<FileKeyValueStore> store_;
  std::unique_ptr<ucx::UcxTransport> transport_;
};

}  // namespace pszero::testing
