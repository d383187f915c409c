// TensorParallel: the TP group of one worker and Megatron-LM's four conjugate operators
// (mappings.py) on it. Column- and row-parallel layers are written only with these.
//
//   copy    (f): identity forward,            all-reduce of the gradient backward
//   reduce  (g): all-reduce forward,          identity backward
//   scatter    : keep this rank's last-dim slice forward, all-gather backward
//   gather     : all-gather along the last dim forward, keep this rank's slice backward
//
// With no communicator (T = 1) every operator is the identity. fp32 buffers on the device
// of the kernel context (set_kernels; host by default): on CUDA each operator first waits
// for the kernels that produced its input (kernels::Fence), then runs the collective
// (NCCL when the communicator has it), and the transposes around the gather are Copy2D
// kernels. Not thread-safe: one TensorParallel per rank, used by that rank's thread (as
// its Communicator). The communicator is owned by the caller and must outlive this object.
#pragma once

#include <cstdint>

#include "common/status.h"
#include "common/tensor.h"
#include "kernels/context.h"
#include "worker/collectives/communicator.h"

namespace pszero::model {

class TensorParallel {
 public:
  // `comm` may be null: a group of one.
  explicit TensorParallel(collectives::Communicator* comm = nullptr,
                          const kernels::KernelContext& kernels = kernels::KernelContext::Host())
      : comm_(comm), kernels_(kernels) {}

  int rank() const { return comm_ == nullptr ? 0 : comm_->rank(); }
  int size() const { return comm_ == nullptr ? 1 : comm_->size(); }
  collectives::Communicator* comm() const { return comm_; }
  const kernels::KernelContext& kernels() const { return kernels_; }

  // copy (f): the forward is the identity; backward sums the n gradients in place.
  Status CopyBackward(float* dx, int64_t n);
  // reduce (g): forward sums the partial outputs in place; the backward is the identity.
  Status ReduceForward(float* y, int64_t n);
  // gather: local [rows, cols] -> full [rows, cols * size()], block t from TP rank t.
  Status GatherLastDimForward(const float* local, int64_t rows, int64_t cols, float* full);
  // gather's backward (and scatter's forward): dlocal = this rank's columns of dfull.
  Status SliceLastDim(const float* full, int64_t rows, int64_t cols, float* local) const;

 private:
  Status AllReduce(float* data, int64_t n);

  collectives::Communicator* comm_;
  kernels::KernelContext kernels_;
  Tensor gather_scratch_;  // [size()][rows][cols], on the kernels' device
};

}  // namespace pszero::model
