// Element types and devices of tensors. Pure value types; thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/half.h"
#include "common/status.h"

namespace pszero {

enum class DType : uint8_t { kFloat32, kBFloat16, kFloat16, kInt32, kInt64, kUInt8 };

// Bytes per element.
size_t DTypeSize(DType dtype);
// Short name used in flags and reports: fp32, bf16, fp16, int32, int64, uint8.
std::string_view DTypeName(DType dtype);
Result<DType> ParseDType(std::string_view name);
bool IsFloatingPoint(DType dtype);

// Maps a C++ element type to its DType (float → kFloat32, bf16_t → kBFloat16, ...).
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct DTypeOf<bf16_t> {
  static constexpr DType value = DType::kBFloat16;
};
template <>
struct DTypeOf<fp16_t> {
  static constexpr DType value = DType::kFloat16;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kInt32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kInt64;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kUInt8;
};

enum class Device : uint8_t { kHost, kCuda };
std::string_view DeviceName(Device device);
Result<Device> ParseDevice(std::string_view name);

}  // namespace pszero
