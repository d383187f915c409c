// RAII owners of UCX (ucp) handles, in the layering of ucxx:
//   UcxContext → UcxWorker → UcxEndpoint → UcxRequest, and UcxMemory (registered memory).
// Each class owns exactly one handle and releases it in its destructor; nothing else in
// pszero calls ucp_*_destroy / ucp_cleanup / ucp_mem_unmap / ucp_request_free. Owners of
// several of them declare them so that C++ destroys them in reverse order (requests and
// endpoints before the worker, the worker before the context). A UcxMemory holds a
// shared_ptr to its context, so a registration can never outlive the context it belongs to.
// Not thread-safe: the worker is created in single-thread mode and is driven by the one
// thread that owns the transport.
#pragma once

#include <ucp/api/ucp.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "common/status.h"

namespace pszero::ucx {

// "UCX <what>: <ucs_status_string>" as an Internal (or given-code) Status.
Status UcsError(std::string_view what, ucs_status_t status);

class UcxContext {
 public:
  // ucp_init with TAG | AM | WAKEUP features. `defaults` are UCX configuration values
  // (name without the UCX_ prefix → value) applied only where the user's environment
  // does not already set UCX_<name>: the environment always wins.
  static Result<std::shared_ptr<UcxContext>> Create(
      const std::map<std::string, std::string>& defaults);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;

  ucp_context_h get() const { return handle_; }

 private:
  explicit UcxContext(ucp_context_h handle) : handle_(handle) {}
  ucp_context_h handle_;
};

class UcxWorker {
 public:
  static Result<std::unique_ptr<UcxWorker>> Create(std::shared_ptr<UcxContext> context);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  ucp_worker_h get() const { return handle_; }
  // The worker's address, as bytes to publish at rendezvous.
  Result<std::string> Address() const;
  // The wake-up event fd (for epoll); valid as long as the worker.
  int event_fd() const { return event_fd_; }

 private:
  UcxWorker(std::shared_ptr<UcxContext> context, ucp_worker_h handle, int event_fd)
      : context_(std::move(context)), handle_(handle), event_fd_(event_fd) {}
  std::shared_ptr<UcxContext> context_;  // outlives the worker
  ucp_worker_h handle_;
  int event_fd_;
};

// An endpoint to one remote worker, in error-handling mode "peer" unless told otherwise
// (mode "none" exists only to measure what "peer" costs). Close() flushes (or,
// after a peer failure, force-closes) within a deadline; the destructor force-closes an
// endpoint that was not closed, progressing the worker for a bounded time.
class UcxEndpoint {
 public:
  static Result<std::unique_ptr<UcxEndpoint>> Create(UcxWorker* worker, std::string_view address,
                                                     ucp_err_handler_cb_t on_error, void* error_arg,
                                                     bool peer_error_handling = true);
  ~UcxEndpoint();
  UcxEndpoint(const UcxEndpoint&) = delete;
  UcxEndpoint& operator=(const UcxEndpoint&) = delete;

  ucp_ep_h get() const { return handle_; }
  // force: do not flush (required once the peer has failed). Idempotent.
  Status Close(bool force, std::chrono::milliseconds timeout);

 private:
  UcxEndpoint(UcxWorker* worker, ucp_ep_h handle) : worker_(worker), handle_(handle) {}
  UcxWorker* worker_;  // not owned; outlives the endpoint
  ucp_ep_h handle_;    // null once closed
};

// One UCX request (the pointer an *_nbx call returned). Freeing an uncompleted request
// is allowed by UCX: it is released when it completes, and its callback still runs.
class UcxRequest {
 public:
  UcxRequest() = default;
  explicit UcxRequest(void* request) : request_(request) {}
  UcxRequest(UcxRequest&& other) noexcept : request_(std::exchange(other.request_, nullptr)) {}
  UcxRequest& operator=(UcxRequest&& other) noexcept;
  UcxRequest(const UcxRequest&) = delete;
  UcxRequest& operator=(const UcxRequest&) = delete;
  ~UcxRequest();

  void* get() const { return request_; }
  explicit operator bool() const { return request_ != nullptr; }

 private:
  void* request_ = nullptr;
};

// A range of host memory registered with the context (ucp_mem_map without allocation).
class UcxMemory {
 public:
  static Result<std::unique_ptr<UcxMemory>> Register(std::shared_ptr<UcxContext> context,
                                                     void* data, size_t bytes);
  ~UcxMemory();
  UcxMemory(const UcxMemory&) = delete;
  UcxMemory& operator=(const UcxMemory&) = delete;

  ucp_mem_h get() const { return handle_; }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  UcxMemory(std::shared_ptr<UcxContext> context, ucp_mem_h handle, void* data, size_t bytes)
      : context_(std::move(context)), handle_(handle), data_(data), bytes_(bytes) {}
  std::shared_ptr<UcxContext> context_;
  ucp_mem_h handle_;
  void* data_;
  size_t bytes_;
};

}  // namespace pszero::ucx
