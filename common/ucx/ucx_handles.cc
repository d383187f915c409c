#include "common/ucx/ucx_handles.h"

#include <cstdlib>
#include <string>

namespace pszero::ucx {

Status UcsError(std::string_view what, ucs_status_t status) {
  return Status::Internal("UCX " + std::string(what) + ": " + ucs_status_string(status));
}

// ---- UcxContext ----

Result<std::shared_ptr<UcxContext>> UcxContext::Create(
    const std::map<std::string, std::string>& defaults) {
  ucp_config_t* config = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &config);
  if (st != UCS_OK) return UcsError("config_read", st);
  for (const auto& [name, value] : defaults) {
    if (std::getenv(("UCX_" + name).c_str()) != nullptr) continue;  // the user's choice wins
    st = ucp_config_modify(config, name.c_str(), value.c_str());
    if (st != UCS_OK) {
      ucp_config_release(config);
      return UcsError("config_modify " + name + "=" + value, st);
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_REQUEST_SIZE;
  params.features = UCP_FEATURE_TAG | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.request_size = 0;
  ucp_context_h handle = nullptr;
  st = ucp_init(&params, config, &handle);
  ucp_config_release(config);
  if (st != UCS_OK) return UcsError("init", st);
  return std::shared_ptr<UcxContext>(new UcxContext(handle));
}

UcxContext::~UcxContext() { ucp_cleanup(handle_); }

// ---- UcxWorker ----

Result<std::unique_ptr<UcxWorker>> UcxWorker::Create(std::shared_ptr<UcxContext> context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h handle = nullptr;
  ucs_status_t st = ucp_worker_create(context->get(), &params, &handle);
  if (st != UCS_OK) return UcsError("worker_create", st);
  int fd = -1;
  st = ucp_worker_get_efd(handle, &fd);
  if (st != UCS_OK) {
    ucp_worker_destroy(handle);
    return UcsError("worker_get_efd", st);
  }
  return std::unique_ptr<UcxWorker>(new UcxWorker(std::move(context), handle, fd));
}

UcxWorker::~UcxWorker() { ucp_worker_destroy(handle_); }

Result<std::string> UcxWorker::Address() const {
  ucp_address_t* address = nullptr;
  size_t length = 0;
  ucs_status_t st = ucp_worker_get_address(handle_, &address, &length);
  if (st != UCS_OK) return UcsError("worker_get_address", st);
  std::string bytes(reinterpret_cast<const char*>(address), length);
  ucp_worker_release_address(handle_, address);
  return bytes;
}

// ---- UcxEndpoint ----

Result<std::unique_ptr<UcxEndpoint>> UcxEndpoint::Create(UcxWorker* worker,
                                                         std::string_view address,
                                                         ucp_err_handler_cb_t on_error,
                                                         void* error_arg,
                                                         bool peer_error_handling) {
  ucp_ep_params_t params{};
  params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER;
  params.address = reinterpret_cast<const ucp_address_t*>(address.data());
  params.err_mode = peer_error_handling ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  params.err_handler.cb = on_error;
  params.err_handler.arg = error_arg;
  ucp_ep_h handle = nullptr;
  ucs_status_t st = ucp_ep_create(worker->get(), &params, &handle);
  if (st != UCS_OK) return UcsError("ep_create", st);
  return std::unique_ptr<UcxEndpoint>(new UcxEndpoint(worker, handle));
}

Status UcxEndpoint::Close(bool force, std::chrono::milliseconds timeout) {
  if (handle_ == nullptr) return Status::Ok();
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t request = ucp_ep_close_nbx(handle_, &param);
  handle_ = nullptr;
  if (request == nullptr) return Status::Ok();
  if (UCS_PTR_IS_ERR(request)) return UcsError("ep_close", UCS_PTR_STATUS(request));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  ucs_status_t st = UCS_INPROGRESS;
  while ((st = ucp_request_check_status(request)) == UCS_INPROGRESS) {
    ucp_worker_progress(worker_->get());
    if (std::chrono::steady_clock::now() > deadline) break;
  }
  ucp_request_free(request);
  if (st == UCS_INPROGRESS) return Status::DeadlineExceeded("UCX ep_close did not finish");
  // A close that reports the peer's failure is still a closed endpoint.
  return Status::Ok();
}

UcxEndpoint::~UcxEndpoint() {
  if (handle_ != nullptr) (void)Close(/*force=*/true, std::chrono::seconds(1));
}

// ---- UcxRequest ----

UcxRequest& UcxRequest::operator=(UcxRequest&& other) noexcept {
  if (this != &other) {
    if (request_ != nullptr) ucp_request_free(request_);
    request_ = std::exchange(other.request_, nullptr);
  }
  return *this;
}

UcxRequest::~UcxRequest() {
  if (request_ != nullptr) ucp_request_free(request_);
}

// ---- UcxMemory ----

Result<std::unique_ptr<UcxMemory>> UcxMemory::Register(std::shared_ptr<UcxContext> context,
                                                       void* data, size_t bytes) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = data;
  params.length = bytes;
  ucp_mem_h handle = nullptr;
  ucs_status_t st = ucp_mem_map(context->get(), &params, &handle);
  if (st != UCS_OK) return UcsError("mem_map", st);
  return std::unique_ptr<UcxMemory>(new UcxMemory(std::move(context), handle, data, bytes));
}

UcxMemory::~UcxMemory() { ucp_mem_unmap(context_->get(), handle_); }

}  // namespace pszero::ucx
