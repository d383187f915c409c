// Tensor: the one n-dimensional array type of pszero.
//
// A Tensor is a view (shape, strides in elements, dtype, device, data pointer) over a
// Storage. An owning tensor shares its Storage through a reference count: views made by
// Slice/Select/Transpose/Reshape keep it alive, and the last one frees it and tells the
// MemoryTracker. Wrap() makes a non-owning view of memory someone else manages. Host
// memory is 64-byte aligned; device memory comes from cudaMalloc (CUDA builds only).
// Tensors are values: copying one copies the view, not the data. A Tensor is not
// synchronized: concurrent writes to overlapping data are the caller's to avoid.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/memory.h"
#include "common/status.h"

namespace pszero {

using Shape = std::vector<int64_t>;

inline constexpr size_t kHostAlignmentBytes = 64;

// Product of the dimensions (1 for a scalar shape {}).
int64_t ShapeNumel(const Shape& shape);
// Row-major strides, in elements.
Shape ContiguousStrides(const Shape& shape);
// "[16, 1024]".
std::string ShapeToString(const Shape& shape);

// Memory owned by one or more tensors; frees itself and reports to its tracker.
class Storage {
 public:
  static Result<std::shared_ptr<Storage>> Allocate(int64_t bytes, Device device,
                                                   MemoryCategory category, MemoryTracker* tracker);
  // Host memory the other processes of this host can map (common/shared_host_memory.h).
  static Result<std::shared_ptr<Storage>> AllocateShared(int64_t bytes, MemoryCategory category,
                                                         MemoryTracker* tracker);
  // Page-locked host memory (cudaMallocHost) that device copies reach by DMA at full
  // speed; Unavailable when the CUDA runtime refuses it. Only CUDA builds have it.
  static Result<std::shared_ptr<Storage>> AllocatePinned(int64_t bytes, MemoryCategory category,
                                                         MemoryTracker* tracker);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }
  bool shared() const { return shared_; }
  bool pinned() const { return pinned_; }

 private:
  Storage(void* data, int64_t bytes, Device device, MemoryCategory category, MemoryTracker* tracker)
      : data_(data), bytes_(bytes), device_(device), category_(category), tracker_(tracker) {}

  void* data_;
  int64_t bytes_;
  Device device_;
  MemoryCategory category_;
  MemoryTracker* tracker_;  // may be null: untracked
  bool shared_ = false;     // from AllocateShared
  bool pinned_ = false;     // from AllocatePinned
};

class Tensor {
 public:
  Tensor() = default;  // undefined: no data, dim 0, numel 0

  // Uninitialized owning tensor. `tracker` may be null (untracked scratch memory).
  static Result<Tensor> Empty(const Shape& shape, DType dtype, MemoryCategory category,
                              MemoryTracker* tracker, Device device = Device::kHost);
  // Uninitialized owning host tensor in shared memory: the intra-host collectives read it
  // from the peers' processes in place (single copy) instead of staging it.
  // Its pages are fresh, so it reads as zeros: ZerosShared is the same call.
  static Result<Tensor> EmptyShared(const Shape& shape, DType dtype, MemoryCategory category,
                                    MemoryTracker* tracker);
  static Result<Tensor> ZerosShared(const Shape& shape, DType dtype, MemoryCategory category,
                                    MemoryTracker* tracker) {
    return EmptyShared(shape, dtype, category, tracker);
  }
  // Uninitialized owning host tensor in page-locked memory, for staging device data
  // (host↔device copies of it run at full DMA speed). A CPU build has no device to copy
  // from: it returns ordinary host memory (pinned() false).
  static Result<Tensor> EmptyPinned(const Shape& shape, DType dtype, MemoryCategory category,
                                    MemoryTracker* tracker);
  // Owning tensor filled with zero bytes.
  static Result<Tensor> Zeros(const Shape& shape, DType dtype, MemoryCategory category,
                              MemoryTracker* tracker, Device device = Device::kHost);
  // Non-owning contiguous view of `data`, which must outlive every view made from it.
  static Tensor Wrap(void* data, const Shape& shape, DType dtype, Device device = Device::kHost);

  bool defined() const { return data_ != nullptr || !shape_.empty(); }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int dim() const { return static_cast<int>(shape_.size()); }
  int64_t size(int d) const { return shape_.at(d); }
  int64_t stride(int d) const { return strides_.at(d); }
  int64_t numel() const { return ShapeNumel(shape_); }
  size_t element_size() const { return DTypeSize(dtype_); }
  // Bytes covered by numel() elements (the storage a contiguous copy needs).
  size_t nbytes() const { return static_cast<size_t>(numel()) * element_size(); }
  bool is_contiguous() const;
  bool owns_storage() const { return storage_ != nullptr; }
  // Whether it lies in shared host memory (EmptyShared).
  bool shared_memory() const { return storage_ != nullptr && storage_->shared(); }
  // Whether it lies in page-locked host memory (EmptyPinned in a CUDA build).
  bool pinned() const { return storage_ != nullptr && storage_->pinned(); }
  // Tensors sharing one storage (0 for a non-owning view).
  long storage_use_count() const { return storage_.use_count(); }

  void* data() const { return data_; }
  // Typed pointer; the element type must match dtype() (programmer error otherwise).
  template <typename T>
  T* data() const {
    assertDType(DTypeOf<T>::value);
    return static_cast<T*>(data_);
  }

  // Elements [start, end) of dimension d; shares storage.
  Result<Tensor> Slice(int d, int64_t start, int64_t end) const;
  // Index `index` of dimension d, which disappears; shares storage.
  Result<Tensor> Select(int d, int64_t index) const;
  // Swaps two dimensions; shares storage (the result is not contiguous in general).
  Result<Tensor> Transpose(int d0, int d1) const;
  // New shape with the same numel; one dimension may be -1. Contiguous tensors only.
  Result<Tensor> Reshape(const Shape& shape) const;
  Result<Tensor> Flatten() const { return Reshape({numel()}); }

  // Copies the elements of `src` (same shape and dtype) into this tensor, honouring the
  // strides of both. Host↔device copies need both sides contiguous; a device copy starts
  // after the kernels enqueued before it on blocking CUDA streams and has landed when it
  // returns.
  Status CopyFrom(const Tensor& src);
  // Contiguous owning copy.
  Result<Tensor> Clone(MemoryCategory category, MemoryTracker* tracker,
                       Device device = Device::kHost) const;
  // Sets every element's bytes to zero (contiguous tensors). On a device: a cudaMemset on
  // the legacy default stream, ordered with the kernels of blocking streams but not waited
  // for (CudaResources::Synchronize waits for it).
  Status ZeroFill();

  // "fp32[16, 1024] cpu".
  std::string ToString() const;

 private:
  // A contiguous tensor over all of `storage`.
  static Tensor Own(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype);
  void assertDType(DType expected) const;
  Status CheckDim(int d) const;

  std::shared_ptr<Storage> storage_;
  void* data_ = nullptr;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::kFloat32;
  Device device_ = Device::kHost;
};

// Copies n contiguous elements of `dtype` from `src` on `src_device` to `dst` on
// `dst_device` (either may be the host), as Tensor::CopyFrom.
Status CopyElements(void* dst, Device dst_device, const void* src, Device src_device, int64_t n,
                    DType dtype);

}  // namespace pszero
