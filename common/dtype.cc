#include "common/dtype.h"

#include <string>

namespace pszero {

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kBFloat16:
    case DType::kFloat16:
      return 2;
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
      return 1;
  }
  return 0;
}

std::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "fp32";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat16:
      return "fp16";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
  }
  return "unknown";
}

Result<DType> ParseDType(std::string_view name) {
  for (DType d : {DType::kFloat32, DType::kBFloat16, DType::kFloat16, DType::kInt32, DType::kInt64,
                  DType::kUInt8}) {
    if (name == DTypeName(d)) return d;
  }
  return Status::InvalidArgument("unknown dtype '" + std::string(name) +
                                 "' (expected fp32, bf16, fp16, int32, int64 or uint8)");
}

bool IsFloatingPoint(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kBFloat16 || dtype == DType::kFloat16;
}

std::string_view DeviceName(Device device) { return device == Device::kHost ? "cpu" : "cuda"; }

Result<Device> ParseDevice(std::string_view name) {
  if (name == "cpu" || name == "host") return Device::kHost;
  if (name == "cuda" || name == "gpu") return Device::kCuda;
  return Status::InvalidArgument("unknown device '" + std::string(name) +
                                 "' (expected cpu or cuda)");
}

}  // namespace pszero
