#include "worker/model/tensor_parallel.h"

#include "kernels/elementwise.h"

namespace pszero::model {

Status TensorParallel::AllReduce(float* data, int64_t n) {
  if (size() == 1 || n == 0) return Status::Ok();
  PSZERO_RETURN_IF_ERROR(kernels::Fence(kernels_));
  return comm_->AllReduce(Tensor::Wrap(data, {n}, DType::kFloat32, kernels_.device),
                          collectives::ReduceOp::kSum);
}

Status TensorParallel::CopyBackward(float* dx, int64_t n) { return AllReduce(dx, n); }

Status TensorParallel::ReduceForward(float* y, int64_t n) { return AllReduce(y, n); }

Status TensorParallel::GatherLastDimForward(const float* local, int64_t rows, int64_t cols,
                                            float* full) {
  const int t = size();
  if (t == 1) {
    return kernels::Copy2D(local, cols, full, cols, rows, cols, DType::kFloat32, kernels_);
  }
  // The communicator gathers flat blocks, in place from block rank(): [t][rows][cols],
  // then transposed to [rows][t * cols].
  const int64_t block = rows * cols;
  if (gather_scratch_.numel() != block * t) {
    PSZERO_ASSIGN_OR_RETURN(
        gather_scratch_, Tensor::Empty({block * t}, DType::kFloat32, MemoryCategory::kCommBuffers,
                                       nullptr, kernels_.device));
  }
  float* all = gather_scratch_.data<float>();
  float* mine = all + rank() * block;
  PSZERO_RETURN_IF_ERROR(
      kernels::Copy2D(local, cols, mine, cols, rows, cols, DType::kFloat32, kernels_));
  PSZERO_RETURN_IF_ERROR(kernels::Fence(kernels_));
  PSZERO_RETURN_IF_ERROR(
      comm_->AllGather(Tensor::Wrap(mine, {block}, DType::kFloat32, kernels_.device),
                       Tensor::Wrap(all, {block * t}, DType::kFloat32, kernels_.device)));
  for (int r = 0; r < t; ++r) {
    PSZERO_RETURN_IF_ERROR(kernels::Copy2D(all + r * block, cols, full + r * cols, cols * t, rows,
                                           cols, DType::kFloat32, kernels_));
  }
  return Status::Ok();
}

Status TensorParallel::SliceLastDim(const float* full, int64_t rows, int64_t cols,
                                    float* local) const {
  return kernels::Copy2D(full + rank() * cols, cols * size(), local, cols, rows, cols,
                         DType::kFloat32, kernels_);
}

}  // namespace pszero::model
