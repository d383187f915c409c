#include "common/tensor.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>

#include "common/memory.h"
#include "common/shared_host_memory.h"

namespace pszero {
namespace {

Tensor Iota(const Shape& shape, MemoryTracker* tracker = nullptr) {
  Result<Tensor> r = Tensor::Empty(shape, DType::kFloat32, MemoryCategory::kOther, tracker);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  Tensor t = std::move(r).value();
  std::iota(t.data<float>(), t.data<float>() + t.numel(), 0.0f);
  return t;
}

TEST(TensorTest, EmptyHasShapeStridesAndAlignment) {
  Tensor t = Iota({2, 3, 4});
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.nbytes(), 96u);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_TRUE(t.owns_storage());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data()) % kHostAlignmentBytes, 0u);
  EXPECT_EQ(t.ToString(), "fp32[2, 3, 4] cpu");
}

TEST(TensorTest, EveryDTypeHasItsSize) {
  const std::pair<DType, size_t> sizes[] = {{DType::kFloat32, 4}, {DType::kBFloat16, 2},
                                            {DType::kFloat16, 2}, {DType::kInt32, 4},
                                            {DType::kInt64, 8},   {DType::kUInt8, 1}};
  for (auto [dtype, size] : sizes) {
    Result<Tensor> t = Tensor::Zeros({5, 3}, dtype, MemoryCategory::kOther, nullptr);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->nbytes(), 15 * size) << DTypeName(dtype);
    EXPECT_EQ(*ParseDType(DTypeName(dtype)), dtype);
  }
  EXPECT_FALSE(ParseDType("fp8").ok());
}

TEST(TensorTest, ZerosIsZero) {
  Result<Tensor> t = Tensor::Zeros({1023}, DType::kFloat32, MemoryCategory::kOther, nullptr);
  ASSERT_TRUE(t.ok());
  for (int64_t i = 0; i < t->numel(); ++i) ASSERT_EQ(t->data<float>()[i], 0.0f);
}

TEST(TensorTest, ZeroSizedAndScalarShapes) {
  Result<Tensor> empty = Tensor::Empty({0, 7}, DType::kFloat32, MemoryCategory::kOther, nullptr);
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->numel(), 0);
  EXPECT_EQ(empty->nbytes(), 0u);
  Result<Tensor> scalar = Tensor::Empty({}, DType::kInt64, MemoryCategory::kOther, nullptr);
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->nbytes(), 8u);
}

TEST(TensorTest, NegativeDimensionIsAnError) {
  Result<Tensor> t = Tensor::Empty({2, -1}, DType::kFloat32, MemoryCategory::kOther, nullptr);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), StatusCode::kInvalidArgument);
}

TEST(TensorTest, SliceIsAViewOfTheSameStorage) {
  Tensor t = Iota({4, 5});
  Result<Tensor> rows = t.Slice(0, 1, 3);
  ASSERT_TRUE(rows.ok());
  EXPECT_EQ(rows->shape(), (Shape{2, 5}));
  EXPECT_EQ(rows->data<float>()[0], 5.0f);
  EXPECT_TRUE(rows->is_contiguous());
  EXPECT_EQ(t.storage_use_count(), 2);

  Result<Tensor> cols = t.Slice(1, 2, 4);
  ASSERT_TRUE(cols.ok());
  EXPECT_EQ(cols->shape(), (Shape{4, 2}));
  EXPECT_EQ(cols->strides(), (Shape{5, 1}));
  EXPECT_FALSE(cols->is_contiguous());
  EXPECT_EQ(cols->data<float>()[0], 2.0f);
  EXPECT_EQ(cols->data<float>()[5], 7.0f);  // row 1, col 0 of the view

  rows->data<float>()[0] = -1.0f;  // writes through
  EXPECT_EQ(t.data<float>()[5], -1.0f);
}

TEST(TensorTest, SliceBoundsAreChecked) {
  Tensor t = Iota({4, 5});
  EXPECT_FALSE(t.Slice(0, 3, 5).ok());
  EXPECT_FALSE(t.Slice(0, 3, 2).ok());
  EXPECT_FALSE(t.Slice(2, 0, 1).ok());
  EXPECT_FALSE(t.Slice(-1, 0, 1).ok());
  EXPECT_TRUE(t.Slice(1, 5, 5).ok());  // empty slice at the end
}

TEST(TensorTest, SelectDropsTheDimension) {
  Tensor t = Iota({3, 4});
  Result<Tensor> row = t.Select(0, 2);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->shape(), (Shape{4}));
  EXPECT_EQ(row->data<float>()[1], 9.0f);
  Result<Tensor> col = t.Select(1, 1);
  ASSERT_TRUE(col.ok());
  EXPECT_EQ(col->shape(), (Shape{3}));
  EXPECT_EQ(col->strides(), (Shape{4}));
}

TEST(TensorTest, TransposeAndStridedCopy) {
  Tensor t = Iota({2, 3});
  Result<Tensor> tt = t.Transpose(0, 1);
  ASSERT_TRUE(tt.ok());
  EXPECT_EQ(tt->shape(), (Shape{3, 2}));
  EXPECT_FALSE(tt->is_contiguous());
  Result<Tensor> dense = tt->Clone(MemoryCategory::kOther, nullptr);
  ASSERT_TRUE(dense.ok());
  EXPECT_TRUE(dense->is_contiguous());
  const float expected[] = {0, 3, 1, 4, 2, 5};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(dense->data<float>()[i], expected[i]);
}

TEST(TensorTest, CopyIntoANonContiguousView) {
  Tensor t = Iota({3, 4});
  Tensor src = Iota({3, 2});
  Result<Tensor> cols = t.Slice(1, 1, 3);
  ASSERT_TRUE(cols.ok());
  ASSERT_TRUE(cols->CopyFrom(src).ok());
  const float expected[] = {0, 0, 1, 3, 4, 2, 3, 7, 8, 4, 5, 11};
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.data<float>()[i], expected[i]) << i;
  EXPECT_FALSE(cols->CopyFrom(Iota({2, 2})).ok());  // shape mismatch
}

TEST(TensorTest, Reshape) {
  Tensor t = Iota({2, 3, 4});
  Result<Tensor> r = t.Reshape({6, -1});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->shape(), (Shape{6, 4}));
  EXPECT_EQ(r->data(), t.data());
  EXPECT_EQ(t.Flatten()->shape(), (Shape{24}));
  EXPECT_FALSE(t.Reshape({5, 5}).ok());
  EXPECT_FALSE(t.Reshape({-1, -1}).ok());
  EXPECT_FALSE(t.Reshape({7, -1}).ok());
  EXPECT_FALSE(t.Transpose(0, 2)->Reshape({24}).ok());  // not contiguous
}

TEST(TensorTest, WrapDoesNotOwn) {
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor t = Tensor::Wrap(buf, {2, 3}, DType::kFloat32);
  EXPECT_FALSE(t.owns_storage());
  EXPECT_EQ(t.storage_use_count(), 0);
  EXPECT_EQ(t.Select(0, 1)->data<float>()[2], 6.0f);
}

TEST(TensorTest, DeviceTensorsWithoutCudaAreAnError) {
#ifdef PSZERO_HAVE_CUDA
  GTEST_SKIP() << "CUDA build: device allocation is covered by gpu-labelled tests";
#else
  Result<Tensor> t =
      Tensor::Empty({4}, DType::kFloat32, MemoryCategory::kParams, nullptr, Device::kCuda);
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.status().message().find("CUDA"), std::string::npos);
#endif
}

TEST(TensorTest, PinnedWithoutCudaIsPlainTrackedHostMemory) {
#ifdef PSZERO_HAVE_CUDA
  GTEST_SKIP() << "CUDA build: pinned memory is covered by pinned_tensor_test (gpu)";
#else
  MemoryTracker tracker;
  Result<Tensor> t =
      Tensor::EmptyPinned({10}, DType::kFloat32, MemoryCategory::kCommBuffers, &tracker);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_FALSE(t->pinned());
  EXPECT_EQ(t->device(), Device::kHost);
  EXPECT_EQ(tracker.Usage(MemoryCategory::kCommBuffers).live_bytes, 40);
  t->data<float>()[9] = 1.0f;
  *t = Tensor();
  EXPECT_EQ(tracker.Usage(MemoryCategory::kCommBuffers).live_bytes, 0);
#endif
}

// A shared tensor reads as zeros, is found by any range inside it (with its offset), and
// is gone from the registry once freed; private memory is never found.
TEST(SharedHostMemoryTest, RegistryFindsRangesInsideLiveAllocationsOnly) {
  MemoryTracker tracker;
  const void* first_data = nullptr;
  {
    auto t = Tensor::EmptyShared({1000}, DType::kFloat32, MemoryCategory::kCommBuffers, &tracker);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_TRUE(t->shared_memory());
    EXPECT_EQ(tracker.Usage(MemoryCategory::kCommBuffers).live_bytes, 4000);
    const float* f = t->data<float>();
    for (int i = 0; i < 1000; ++i) ASSERT_EQ(f[i], 0.0f) << i;
    first_data = t->data();
    auto whole = FindSharedHost(f, 4000);
    ASSERT_TRUE(whole.has_value());
    EXPECT_EQ(whole->offset, 0u);
    EXPECT_GE(whole->region_bytes, 4000u);
    EXPECT_GE(whole->fd, 0);
    auto inner = FindSharedHost(f + 100, 400);
    ASSERT_TRUE(inner.has_value());
    EXPECT_EQ(inner->offset, 400u);
    EXPECT_EQ(inner->id, whole->id);
    EXPECT_FALSE(FindSharedHost(f, whole->region_bytes + 1).has_value());
    auto other = Tensor::EmptyShared({10}, DType::kInt64, MemoryCategory::kOther, nullptr);
    ASSERT_TRUE(other.ok());
    EXPECT_NE(FindSharedHost(other->data(), 80)->id, whole->id);
    auto priv = Tensor::Empty({1000}, DType::kFloat32, MemoryCategory::kOther, nullptr);
    ASSERT_TRUE(priv.ok());
    EXPECT_FALSE(FindSharedHost(priv->data(), 4000).has_value());
    EXPECT_FALSE(priv->shared_memory());
  }
  EXPECT_EQ(tracker.Usage(MemoryCategory::kCommBuffers).live_bytes, 0);
  EXPECT_FALSE(FindSharedHost(first_data, 4).has_value());
}

}  // namespace
}  // namespace pszero
