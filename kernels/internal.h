// Internal to kernels/: argument checks shared by the entry points, the constants the
// optimizer loops take (host and CUDA alike), and the macro that routes a call to the
// CUDA twin or, in a CPU build, reports that there is none.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "common/status.h"

namespace pszero::kernels::internal {

struct AdamWConsts {
  float lr, beta1, beta2, eps, weight_decay, grad_scale;
  float step_size;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
};

struct SgdConsts {
  float lr, momentum, weight_decay, grad_scale;
  bool nesterov;
};

// Non-negative counts; every pointer non-null when there is anything to do.
inline Status CheckArgs(const char* op, std::initializer_list<int64_t> counts,
                        std::initializer_list<const void*> pointers) {
  bool empty = false;
  for (int64_t c : counts) {
    if (c < 0) return Status::InvalidArgument(std::string(op) + ": negative size");
    empty = empty || c == 0;
  }
  if (empty) return Status::Ok();
  for (const void* p : pointers) {
    if (p == nullptr) return Status::InvalidArgument(std::string(op) + ": null pointer");
  }
  return Status::Ok();
}

inline Status CheckLd(const char* op, int64_t ld, int64_t cols) {
  if (ld < cols) {
    return Status::InvalidArgument(std::string(op) + ": leading dimension " + std::to_string(ld) +
                                   " < " + std::to_string(cols) + " columns");
  }
  return Status::Ok();
}

}  // namespace pszero::kernels::internal

#ifdef PSZERO_HAVE_CUDA
#define PSZERO_KERNELS_CUDA_CALL(call) return (call)
#else
#define PSZERO_KERNELS_CUDA_CALL(call) \
  return ::pszero::Status::Unavailable("CUDA kernels need a CUDA build")
#endif
