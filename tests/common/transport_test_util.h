// Helpers for transport tests: deterministic byte patterns, and ranks as threads (one
// UcxTransport per rank, all in this process, addresses swapped through an in-memory store).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/kv_store.h"
#include "common/ucx/ucx_transport.h"

namespace pszero::testing {

// Fills `bytes` with a pattern that depends on `seed` and on the position (so a shifted,
// truncated or swapped buffer never matches).
inline void FillPattern(std::byte* data, size_t bytes, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(data + i, &x, 8);
  }
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  for (size_t k = 0; i < bytes; ++i, ++k) data[i] = static_cast<std::byte>(x >> (8 * k));
}

// Index of the first byte that differs from FillPattern(seed), or `bytes` when all match.
inline size_t FirstMismatch(const std::byte* data, size_t bytes, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    if (std::memcmp(data + i, &x, 8) != 0) return i;
  }
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  for (size_t k = 0; i < bytes; ++i, ++k) {
    if (data[i] != static_cast<std::byte>(x >> (8 * k))) return i;
  }
  return bytes;
}

inline std::vector<std::byte> PatternBuffer(size_t bytes, uint64_t seed) {
  std::vector<std::byte> v(bytes);
  FillPattern(v.data(), bytes, seed);
  return v;
}

// `world` transports in this process; the store outlives them.
struct ThreadRanks {
  explicit ThreadRanks(int world, ucx::UcxTransportOptions base = {}) {
    for (int r = 0; r < world; ++r) {
      ucx::UcxTransportOptions o = base;
      o.rank = r;
      o.world_size = world;
      o.key_prefix = "test";
      auto t = ucx::UcxTransport::Create(o, &store);
      EXPECT_TRUE(t.ok()) << t.status().ToString();
      if (t.ok()) ranks.push_back(std::move(t).value());
    }
  }
  // Runs fn(rank transport) on one thread per rank; returns each rank's status.
  std::vector<Status> Run(const std::function<Status(ucx::UcxTransport&)>& fn) {
    std::vector<Status> statuses(ranks.size());
    std::vector<std::thread> threads;
    for (size_t r = 0; r < ranks.size(); ++r) {
      threads.emplace_back([&, r] { statuses[r] = fn(*ranks[r]); });
    }
    for (auto& t : threads) t.join();
    return statuses;
  }
  InMemoryKeyValueStore store;
  std::vector<std::unique_ptr<ucx::UcxTransport>> ranks;
};

#define EXPECT_ALL_OK(statuses)                                                                 \
  do {                                                                                          \
    const auto& pszero_sts_ = (statuses);                                                       \
    for (size_t r_ = 0; r_ < pszero_sts_.size(); ++r_) {                                        \
      EXPECT_TRUE(pszero_sts_[r_].ok()) << "rank " << r_ << ": " << pszero_sts_[r_].ToString(); \
    }                                                                                           \
  } while (false)

}  // namespace pszero::testing
