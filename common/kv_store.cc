#include "common/kv_store.h"

namespace pszero {

Status InMemoryKeyValueStore::Set(const std::string& key, std::string_view value) {
  {
    std::lock_guard lock(mu_);
    if (!failure_.empty()) return Status::Unavailable(failure_);
    values_[key] = std::string(value);
  }
  cv_.notify_all();
  return Status::Ok();
}

Result<std::string> InMemoryKeyValueStore::Get(const std::string& key,
                                               std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  const bool ready = cv_.wait_for(
      lock, timeout, [&] { return !failure_.empty() || values_.find(key) != values_.end(); });
  if (!failure_.empty()) return Status::Unavailable(failure_);
  if (!ready) {
    return Status::DeadlineExceeded("key '" + key + "' not published within " +
                                    std::to_string(timeout.count()) + " ms");
  }
  return values_.find(key)->second;
}

void InMemoryKeyValueStore::Fail(const std::string& reason) {
  {
    std::lock_guard lock(mu_);
    failure_ = reason.empty() ? "store failed" : reason;
  }
  cv_.notify_all();
}

}  // namespace pszero
