#include "common/kv_store.h"

#include <gtest/gtest.h>

#include <thread>

namespace pszero {
namespace {

using std::chrono::milliseconds;

TEST(InMemoryKeyValueStoreTest, SetThenGet) {
  InMemoryKeyValueStore store;
  ASSERT_TRUE(store.Set("ucx/w0", "addr0").ok());
  Result<std::string> v = store.Get("ucx/w0", milliseconds(0));
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, "addr0");
  ASSERT_TRUE(store.Set("ucx/w0", "addr0b").ok());
  EXPECT_EQ(*store.Get("ucx/w0", milliseconds(0)), "addr0b");
}

TEST(InMemoryKeyValueStoreTest, GetWaitsForAnotherThread) {
  InMemoryKeyValueStore store;
  std::thread publisher([&] { ASSERT_TRUE(store.Set("k", std::string("\0bin", 4)).ok()); });
  Result<std::string> v = store.Get("k", milliseconds(10000));
  publisher.join();
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(*v, std::string("\0bin", 4));
}

TEST(InMemoryKeyValueStoreTest, MissingKeyHitsTheDeadlineAndNamesTheKey) {
  InMemoryKeyValueStore store;
  Result<std::string> v = store.Get("nccl/id", milliseconds(1));
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(v.status().message().find("nccl/id"), std::string::npos);
}

TEST(InMemoryKeyValueStoreTest, FailureWakesWaiters) {
  InMemoryKeyValueStore store;
  std::thread failer([&] { store.Fail("worker 3 lost"); });
  Result<std::string> v = store.Get("never", milliseconds(60000));
  failer.join();
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(v.status().message(), "worker 3 lost");
  EXPECT_FALSE(store.Set("k", "v").ok());
}

}  // namespace
}  // namespace pszero
