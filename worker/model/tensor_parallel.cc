#include "worker/model/tensor_parallel.h"

#include <algorithm>

namespace pszero::model {

Status TensorParallel::CopyBackward(float* dx, int64_t n) {
  if (size() == 1 || n == 0) return Status::Ok();
  return comm_->AllReduce(Tensor::Wrap(dx, {n}, DType::kFloat32), collectives::ReduceOp::kSum);
}

Status TensorParallel::ReduceForward(float* y, int64_t n) {
  if (size() == 1 || n == 0) return Status::Ok();
  return comm_->AllReduce(Tensor::Wrap(y, {n}, DType::kFloat32), collectives::ReduceOp::kSum);
}

Status TensorParallel::GatherLastDimForward(const float* local, int64_t rows, int64_t cols,
                                            float* full) {
  const int t = size();
  if (t == 1) {
    std::copy(local, local + rows * cols, full);
    return Status::Ok();
  }
  // The communicator gathers flat blocks, in place from block rank(): [t][rows][cols],
  // then transposed to [rows][t * cols].
  const int64_t block = rows * cols;
  gather_scratch_.resize(static_cast<size_t>(block) * t);
  float* mine = gather_scratch_.data() + rank() * block;
  std::copy(local, local + block, mine);
  PSZERO_RETURN_IF_ERROR(
      comm_->AllGather(Tensor::Wrap(mine, {block}, DType::kFloat32),
                       Tensor::Wrap(gather_scratch_.data(), {block * t}, DType::kFloat32)));
  for (int r = 0; r < t; ++r) {
    for (int64_t i = 0; i < rows; ++i) {
      const float* src = gather_scratch_.data() + r * block + i * cols;
      std::copy(src, src + cols, full + i * cols * t + r * cols);
    }
  }
  return Status::Ok();
}

void TensorParallel::SliceLastDim(const float* full, int64_t rows, int64_t cols,
                                  float* local) const {
  const int t = size();
  const int r = rank();
  for (int64_t i = 0; i < rows; ++i) {
    const float* src = full + i * cols * t + r * cols;
    std::copy(src, src + cols, local + i * cols);
  }
}

}  // namespace pszero::model
