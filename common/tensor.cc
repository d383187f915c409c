#include "common/tensor.h"

#include <cassert>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "common/shared_host_memory.h"

#ifdef PSZERO_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace pszero {

int64_t ShapeNumel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Shape ContiguousStrides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

std::string ShapeToString(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

// ---------------------------------------------------------------------------------------
// Storage

Result<std::shared_ptr<Storage>> Storage::Allocate(int64_t bytes, Device device,
                                                   MemoryCategory category,
                                                   MemoryTracker* tracker) {
  if (bytes < 0) return Status::InvalidArgument("negative allocation size");
  void* data = nullptr;
  if (device == Device::kHost) {
    const size_t rounded = (static_cast<size_t>(bytes) + kHostAlignmentBytes - 1) /
                           kHostAlignmentBytes * kHostAlignmentBytes;
    if (rounded > 0) {
      data = std::aligned_alloc(kHostAlignmentBytes, rounded);
      if (data == nullptr) {
        return Status::ResourceExhausted("host allocation of " + std::to_string(bytes) +
                                         " bytes failed");
      }
    }
  } else {
#ifdef PSZERO_HAVE_CUDA
    if (bytes > 0) {
      cudaError_t err = cudaMalloc(&data, static_cast<size_t>(bytes));
      if (err != cudaSuccess) {
        return Status::Unavailable("cudaMalloc of " + std::to_string(bytes) +
                                   " bytes failed: " + cudaGetErrorString(err));
      }
    }
#else
    return Status::InvalidArgument("device tensors need a CUDA build (built with PSZERO_CUDA=OFF)");
#endif
  }
  if (tracker != nullptr) tracker->OnAllocate(category, device, bytes);
  return std::shared_ptr<Storage>(new Storage(data, bytes, device, category, tracker));
}

Result<std::shared_ptr<Storage>> Storage::AllocateShared(int64_t bytes, MemoryCategory category,
                                                         MemoryTracker* tracker) {
  if (bytes <= 0) return Allocate(bytes, Device::kHost, category, tracker);
  PSZERO_ASSIGN_OR_RETURN(void* data, AllocateSharedHost(static_cast<size_t>(bytes)));
  if (tracker != nullptr) tracker->OnAllocate(category, Device::kHost, bytes);
  std::shared_ptr<Storage> storage(new Storage(data, bytes, Device::kHost, category, tracker));
  storage->shared_ = true;
  return storage;
}

Result<std::shared_ptr<Storage>> Storage::AllocatePinned(int64_t bytes, MemoryCategory category,
                                                         MemoryTracker* tracker) {
#ifdef PSZERO_HAVE_CUDA
  if (bytes <= 0) return Allocate(bytes, Device::kHost, category, tracker);
  void* data = nullptr;
  cudaError_t err = cudaMallocHost(&data, static_cast<size_t>(bytes));
  if (err != cudaSuccess) {
    return Status::Unavailable("cudaMallocHost of " + std::to_string(bytes) +
                               " bytes failed: " + cudaGetErrorString(err));
  }
  if (tracker != nullptr) tracker->OnAllocate(category, Device::kHost, bytes);
  std::shared_ptr<Storage> storage(new Storage(data, bytes, Device::kHost, category, tracker));
  storage->pinned_ = true;
  return storage;
#else
  (void)bytes;
  (void)category;
  (void)tracker;
  return Status::InvalidArgument(
      "pinned host memory needs a CUDA build (built with PSZERO_CUDA=OFF)");
#endif
}

Storage::~Storage() {
  if (shared_) {
    FreeSharedHost(data_);
  } else if (pinned_) {
#ifdef PSZERO_HAVE_CUDA
    cudaFreeHost(data_);
#endif
  } else if (device_ == Device::kHost) {
    std::free(data_);
  } else {
#ifdef PSZERO_HAVE_CUDA
    if (data_ != nullptr) cudaFree(data_);
#endif
  }
  if (tracker_ != nullptr) tracker_->OnFree(category_, device_, bytes_);
}

// ---------------------------------------------------------------------------------------
// Tensor

namespace {

Status CheckShape(const Shape& shape) {
  for (int64_t d : shape) {
    if (d < 0)
      return Status::InvalidArgument("negative dimension in shape " + ShapeToString(shape));
  }
  return Status::Ok();
}

}  // namespace

Tensor Tensor::Own(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype) {
  Tensor t;
  t.data_ = storage->data();
  t.device_ = storage->device();
  t.storage_ = std::move(storage);
  t.shape_ = shape;
  t.strides_ = ContiguousStrides(shape);
  t.dtype_ = dtype;
  return t;
}

Result<Tensor> Tensor::Empty(const Shape& shape, DType dtype, MemoryCategory category,
                             MemoryTracker* tracker, Device device) {
  PSZERO_RETURN_IF_ERROR(CheckShape(shape));
  const int64_t bytes = ShapeNumel(shape) * static_cast<int64_t>(DTypeSize(dtype));
  PSZERO_ASSIGN_OR_RETURN(auto storage, Storage::Allocate(bytes, device, category, tracker));
  return Own(std::move(storage), shape, dtype);
}

Result<Tensor> Tensor::EmptyShared(const Shape& shape, DType dtype, MemoryCategory category,
                                   MemoryTracker* tracker) {
  PSZERO_RETURN_IF_ERROR(CheckShape(shape));
  const int64_t bytes = ShapeNumel(shape) * static_cast<int64_t>(DTypeSize(dtype));
  PSZERO_ASSIGN_OR_RETURN(auto storage, Storage::AllocateShared(bytes, category, tracker));
  return Own(std::move(storage), shape, dtype);
}

Result<Tensor> Tensor::EmptyPinned(const Shape& shape, DType dtype, MemoryCategory category,
                                   MemoryTracker* tracker) {
  PSZERO_RETURN_IF_ERROR(CheckShape(shape));
  const int64_t bytes = ShapeNumel(shape) * static_cast<int64_t>(DTypeSize(dtype));
#ifdef PSZERO_HAVE_CUDA
  PSZERO_ASSIGN_OR_RETURN(auto storage, Storage::AllocatePinned(bytes, category, tracker));
#else
  PSZERO_ASSIGN_OR_RETURN(auto storage, Storage::Allocate(bytes, Device::kHost, category, tracker));
#endif
  return Own(std::move(storage), shape, dtype);
}

Result<Tensor> Tensor::Zeros(const Shape& shape, DType dtype, MemoryCategory category,
                             MemoryTracker* tracker, Device device) {
  PSZERO_ASSIGN_OR_RETURN(Tensor t, Empty(shape, dtype, category, tracker, device));
  PSZERO_RETURN_IF_ERROR(t.ZeroFill());
  return t;
}

Tensor Tensor::Wrap(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.data_ = data;
  t.shape_ = shape;
  t.strides_ = ContiguousStrides(shape);
  t.dtype_ = dtype;
  t.device_ = device;
  return t;
}

bool Tensor::is_contiguous() const { return strides_ == ContiguousStrides(shape_) || numel() <= 1; }

void Tensor::assertDType(DType expected) const {
  assert(dtype_ == expected && "Tensor::data<T>() with the wrong element type");
  (void)expected;
}

Status Tensor::CheckDim(int d) const {
  if (d < 0 || d >= dim()) {
    return Status::InvalidArgument("dimension " + std::to_string(d) + " out of range for " +
                                   ToString());
  }
  return Status::Ok();
}

Result<Tensor> Tensor::Slice(int d, int64_t start, int64_t end) const {
  PSZERO_RETURN_IF_ERROR(CheckDim(d));
  if (start < 0 || end < start || end > shape_[d]) {
    return Status::InvalidArgument("slice [" + std::to_string(start) + ", " + std::to_string(end) +
                                   ") of dimension " + std::to_string(d) + " out of range for " +
                                   ToString());
  }
  Tensor t = *this;
  t.shape_[d] = end - start;
  t.data_ = static_cast<char*>(data_) + start * strides_[d] * static_cast<int64_t>(element_size());
  return t;
}

Result<Tensor> Tensor::Select(int d, int64_t index) const {
  PSZERO_ASSIGN_OR_RETURN(Tensor t, Slice(d, index, index + 1));
  t.shape_.erase(t.shape_.begin() + d);
  t.strides_.erase(t.strides_.begin() + d);
  return t;
}

Result<Tensor> Tensor::Transpose(int d0, int d1) const {
  PSZERO_RETURN_IF_ERROR(CheckDim(d0));
  PSZERO_RETURN_IF_ERROR(CheckDim(d1));
  Tensor t = *this;
  std::swap(t.shape_[d0], t.shape_[d1]);
  std::swap(t.strides_[d0], t.strides_[d1]);
  return t;
}

Result<Tensor> Tensor::Reshape(const Shape& shape) const {
  if (!is_contiguous()) {
    return Status::InvalidArgument("reshape of a non-contiguous tensor " + ToString());
  }
  Shape resolved = shape;
  int inferred = -1;
  int64_t known = 1;
  for (size_t i = 0; i < resolved.size(); ++i) {
    if (resolved[i] == -1) {
      if (inferred >= 0) return Status::InvalidArgument("reshape with more than one -1");
      inferred = static_cast<int>(i);
    } else if (resolved[i] < 0) {
      return Status::InvalidArgument("negative dimension in reshape " + ShapeToString(shape));
    } else {
      known *= resolved[i];
    }
  }
  if (inferred >= 0) {
    if (known == 0 || numel() % known != 0) {
      return Status::InvalidArgument("cannot infer -1 reshaping " + ToString() + " to " +
                                     ShapeToString(shape));
    }
    resolved[inferred] = numel() / known;
  }
  if (ShapeNumel(resolved) != numel()) {
    return Status::InvalidArgument("reshape " + ToString() + " to " + ShapeToString(shape) +
                                   " changes the number of elements");
  }
  Tensor t = *this;
  t.shape_ = std::move(resolved);
  t.strides_ = ContiguousStrides(t.shape_);
  return t;
}

namespace {

// Copies a strided host tensor element by element, innermost dimension last.
void CopyStridedHost(char* dst, const Shape& dst_strides, const char* src, const Shape& src_strides,
                     const Shape& shape, size_t elem, int d) {
  const int64_t n = shape[d];
  if (d == static_cast<int>(shape.size()) - 1) {
    if (dst_strides[d] == 1 && src_strides[d] == 1) {
      std::memcpy(dst, src, static_cast<size_t>(n) * elem);
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      std::memcpy(dst + i * dst_strides[d] * static_cast<int64_t>(elem),
                  src + i * src_strides[d] * static_cast<int64_t>(elem), elem);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    CopyStridedHost(dst + i * dst_strides[d] * static_cast<int64_t>(elem), dst_strides,
                    src + i * src_strides[d] * static_cast<int64_t>(elem), src_strides, shape, elem,
                    d + 1);
  }
}

}  // namespace

Status Tensor::CopyFrom(const Tensor& src) {
  if (src.shape_ != shape_ || src.dtype_ != dtype_) {
    return Status::InvalidArgument("copy from " + src.ToString() + " into " + ToString());
  }
  if (numel() == 0) return Status::Ok();
  if (device_ == Device::kHost && src.device_ == Device::kHost) {
    if (is_contiguous() && src.is_contiguous()) {
      std::memmove(data_, src.data_, nbytes());
    } else {
      CopyStridedHost(static_cast<char*>(data_), strides_, static_cast<const char*>(src.data_),
                      src.strides_, shape_, element_size(), 0);
    }
    return Status::Ok();
  }
#ifdef PSZERO_HAVE_CUDA
  if (!is_contiguous() || !src.is_contiguous()) {
    return Status::InvalidArgument("device copies need contiguous tensors");
  }
  // On the legacy default stream: after the kernels of blocking streams enqueued before it.
  // cudaMemcpy may return before a device-to-device or pageable host-to-device copy has
  // landed; waiting here makes the copy final for every stream and the host.
  cudaError_t err = cudaMemcpy(data_, src.data_, nbytes(), cudaMemcpyDefault);
  if (err == cudaSuccess) err = cudaStreamSynchronize(cudaStreamLegacy);
  if (err != cudaSuccess)
    return Status::Internal(std::string("cudaMemcpy: ") + cudaGetErrorString(err));
  return Status::Ok();
#else
  return Status::InvalidArgument("device tensors need a CUDA build (built with PSZERO_CUDA=OFF)");
#endif
}

Result<Tensor> Tensor::Clone(MemoryCategory category, MemoryTracker* tracker, Device device) const {
  PSZERO_ASSIGN_OR_RETURN(Tensor t, Empty(shape_, dtype_, category, tracker, device));
  PSZERO_RETURN_IF_ERROR(t.CopyFrom(*this));
  return t;
}

Status Tensor::ZeroFill() {
  if (!is_contiguous()) return Status::InvalidArgument("ZeroFill of a non-contiguous tensor");
  if (numel() == 0) return Status::Ok();
  if (device_ == Device::kHost) {
    std::memset(data_, 0, nbytes());
    return Status::Ok();
  }
#ifdef PSZERO_HAVE_CUDA
  cudaError_t err = cudaMemset(data_, 0, nbytes());
  if (err != cudaSuccess)
    return Status::Internal(std::string("cudaMemset: ") + cudaGetErrorString(err));
  return Status::Ok();
#else
  return Status::InvalidArgument("device tensors need a CUDA build (built with PSZERO_CUDA=OFF)");
#endif
}

std::string Tensor::ToString() const {
  return std::string(DTypeName(dtype_)) + ShapeToString(shape_) + " " +
         std::string(DeviceName(device_));
}

Status CopyElements(void* dst, Device dst_device, const void* src, Device src_device, int64_t n,
                    DType dtype) {
  if (n == 0) return Status::Ok();
  return Tensor::Wrap(dst, {n}, dtype, dst_device)
      .CopyFrom(Tensor::Wrap(const_cast<void*>(src), {n}, dtype, src_device));
}

}  // namespace pszero
