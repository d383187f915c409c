#include "common/transport.h"

namespace pszero {

Status CompletionStatus(const Completion& completion) {
  if (!completion.done) return Status::Internal("operation still pending");
  return completion.status;
}

void Request::AbandonIfPending() {
  if (completion_ && !completion_->done && transport_ != nullptr) {
    transport_->Abandon(completion_.get());
  }
}

Request& Request::operator=(Request&& other) noexcept {
  if (this != &other) {
    AbandonIfPending();
    completion_ = std::move(other.completion_);
    transport_ = other.transport_;
  }
  return *this;
}

Request::~Request() { AbandonIfPending(); }

bool Request::Test() {
  if (!completion_) return false;
  if (!completion_->done && transport_ != nullptr) {
    // A progress error is reported by the Request itself when it fails the operation.
    (void)transport_->Progress();
  }
  return completion_->done;
}

Status Request::Wait(std::chrono::milliseconds timeout) {
  if (!completion_) return Status::InvalidArgument("Wait on an empty Request");
  if (completion_->done) return completion_->status;
  if (transport_ == nullptr) return Status::Internal("Request has no transport");
  return transport_->WaitAll(std::span<Request>(this, 1), timeout);
}

Status Request::status() const {
  if (!completion_) return Status::InvalidArgument("empty Request");
  return CompletionStatus(*completion_);
}

}  // namespace pszero
