// KeyValueStore: how peers find each other (the shape of Gloo's rendezvous store).
//
// Processes publish small values (a UCX worker address, an NCCL unique id) under string
// keys and look up the values others published, waiting up to a deadline for a key that
// is not there yet. RendezvousClient (common/rendezvous_client.h) implements it over the
// control plane, FileKeyValueStore over a directory of one host, and InMemoryKeyValueStore
// serves ranks that run as threads of one test process.
// Implementations are thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

#include "common/status.h"

namespace pszero {

class KeyValueStore {
 public:
  virtual ~KeyValueStore() = default;

  // Publishes `value` under `key`, replacing any earlier value.
  virtual Status Set(const std::string& key, std::string_view value) = 0;

  // The value of `key`, waiting until it is published. DeadlineExceeded naming the key
  // after `timeout`; Unavailable when the store learns that the job is failing.
  virtual Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) = 0;
};

class InMemoryKeyValueStore final : public KeyValueStore {
 public:
  Status Set(const std::string& key, std::string_view value) override;
  Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;

  // Makes every pending and later Get fail with Unavailable(reason) (simulates a lost peer).
  void Fail(const std::string& reason);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string, std::less<>> values_;
  std::string failure_;  // empty while healthy
};

}  // namespace pszero
