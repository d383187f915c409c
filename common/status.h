// Status and Result<T>: how every fallible call in pszero reports failure.
//
// A Status is either ok or carries a code and a human-readable message. Result<T> holds
// either a value or a non-ok Status. Both are cheap to move, [[nodiscard]], and safe to
// use from any thread (they are plain values). Network, file, flag and peer failures are
// always reported this way, never by abort.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace pszero {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kNotFound,
  kIoError,
  kUnavailable,  // a peer is gone or unreachable
  kDeadlineExceeded,
  kCorruption,
  kUnauthenticated,
  kInternal,
  kResourceExhausted,  // out of memory (or another finite resource)
};

// Lower-case name of the code, as it appears in messages ("unavailable").
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(StatusCode code, std::string message);

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status IoError(std::string msg) { return {StatusCode::kIoError, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status DeadlineExceeded(std::string msg) {
    return {StatusCode::kDeadlineExceeded, std::move(msg)};
  }
  static Status Corruption(std::string msg) { return {StatusCode::kCorruption, std::move(msg)}; }
  static Status Unauthenticated(std::string msg) {
    return {StatusCode::kUnauthenticated, std::move(msg)};
  }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }
  static Status ResourceExhausted(std::string msg) {
    return {StatusCode::kResourceExhausted, std::move(msg)};
  }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "ok", or "<code>: <message>".
  std::string ToString() const;

  // The same code with "context: " prepended to the message; ok stays ok.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code_ == b.code_ && a.message_ == b.message_;
  }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// A value or the Status that explains why there is none. Constructing a Result from an
// ok Status is a programmer error.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    assert(!status_.ok() && "Result built from an ok Status");
    if (status_.ok()) status_ = Status::Internal("Result built from an ok Status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }

  T& value() & {
    assert(ok());
    return *value_;
  }
  const T& value() const& {
    assert(ok());
    return *value_;
  }
  T&& value() && {
    assert(ok());
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  T value_or(T fallback) const& { return ok() ? *value_ : std::move(fallback); }

 private:
  std::optional<T> value_;
  Status status_;  // ok while value_ holds a value
};

}  // namespace pszero

#define PSZERO_CONCAT_INNER_(a, b) a##b
#define PSZERO_CONCAT_(a, b) PSZERO_CONCAT_INNER_(a, b)

// Returns the Status of `expr` from the enclosing function when it is not ok.
#define PSZERO_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::pszero::Status pszero_status_ = (expr);        \
    if (!pszero_status_.ok()) return pszero_status_; \
  } while (false)

// `lhs = value of expr`, or returns its Status from the enclosing function.
#define PSZERO_ASSIGN_OR_RETURN(lhs, expr) \
  PSZERO_ASSIGN_OR_RETURN_IMPL_(PSZERO_CONCAT_(pszero_result_, __LINE__), lhs, expr)
#define PSZERO_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
