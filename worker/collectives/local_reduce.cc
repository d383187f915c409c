#include "worker/collectives/local_reduce.h"

#include <algorithm>
#include <string>

#include "common/half.h"
#include "kernels/reduce.h"

namespace pszero::collectives {

std::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
  }
  return "unknown";
}

Result<ReduceOp> ParseReduceOp(std::string_view name) {
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
    if (name == ReduceOpName(op)) return op;
  }
  return Status::InvalidArgument("unknown reduction '" + std::string(name) +
                                 "' (expected sum, avg or max)");
}

Status CheckReduce(DType dtype, ReduceOp op) {
  if (dtype == DType::kUInt8 && op != ReduceOp::kMax) {
    return Status::InvalidArgument("uint8 supports only max");
  }
  if (op == ReduceOp::kAvg && !IsFloatingPoint(dtype)) {
    return Status::InvalidArgument(std::string("avg needs a floating-point dtype, not ") +
                                   std::string(DTypeName(dtype)));
  }
  return Status::Ok();
}

namespace {

// How an element type is loaded into and stored from its compute type.
template <typename T>
struct Elem {
  using Compute = T;
  static Compute Load(T v) { return v; }
  static T Store(Compute v) { return v; }
};
template <>
struct Elem<bf16_t> {
  using Compute = float;
  static float Load(bf16_t v) { return Bf16BitsToFloat(v.bits); }
  static bf16_t Store(float v) { return {FloatToBf16Bits(v)}; }
};
template <>
struct Elem<fp16_t> {
  using Compute = float;
  static float Load(fp16_t v) { return Fp16BitsToFloat(v.bits); }
  static fp16_t Store(float v) { return {FloatToFp16Bits(v)}; }
};

template <typename T, bool kMax>
void ReduceIntoT(T* __restrict acc, const T* __restrict in, int64_t count) {
  using E = Elem<T>;
  for (int64_t i = 0; i < count; ++i) {
    const auto a = E::Load(acc[i]);
    const auto b = E::Load(in[i]);
    acc[i] = E::Store(kMax ? std::max(a, b) : a + b);
  }
}

template <typename T, bool kMax>
void ReduceOrderedT(T* out, const void* const* inputs, int n, int64_t count, double scale) {
  using E = Elem<T>;
  using C = typename E::Compute;
  constexpr int64_t kBlock = 1024;  // keeps the partial sums in L1 while inputs stream
  C partial[kBlock];
  for (int64_t begin = 0; begin < count; begin += kBlock) {
    const int64_t len = std::min(kBlock, count - begin);
    const T* first = static_cast<const T*>(inputs[0]) + begin;
    for (int64_t i = 0; i < len; ++i) partial[i] = E::Load(first[i]);
    for (int k = 1; k < n; ++k) {
      const T* x = static_cast<const T*>(inputs[k]) + begin;
      for (int64_t i = 0; i < len; ++i) {
        const C v = E::Load(x[i]);
        partial[i] = kMax ? std::max(partial[i], v) : partial[i] + v;
      }
    }
    if (scale != 1.0) {
      const C s = static_cast<C>(scale);
      for (int64_t i = 0; i < len; ++i) partial[i] = partial[i] * s;
    }
    for (int64_t i = 0; i < len; ++i) out[begin + i] = E::Store(partial[i]);
  }
}

template <typename T>
void ScaleT(T* data, int64_t count, double scale) {
  using E = Elem<T>;
  using C = typename E::Compute;
  const C s = static_cast<C>(scale);
  for (int64_t i = 0; i < count; ++i) data[i] = E::Store(E::Load(data[i]) * s);
}

template <typename F>
void Dispatch(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kBFloat16:
      return f(bf16_t{});
    case DType::kFloat16:
      return f(fp16_t{});
    case DType::kInt32:
      return f(int32_t{});
    case DType::kInt64:
      return f(int64_t{});
    case DType::kUInt8:
      return f(uint8_t{});
  }
}

}  // namespace

namespace {

// fp32 and bf16 sums take the vectorized kernels (same order and rounding: fp32
// accumulation, one rounding per call).
bool KernelSum(DType dtype, ReduceOp op) {
  return op != ReduceOp::kMax && (dtype == DType::kFloat32 || dtype == DType::kBFloat16);
}

}  // namespace

void ReduceInto(void* acc, const void* in, int64_t count, DType dtype, ReduceOp op) {
  if (KernelSum(dtype, op) &&
      kernels::Accumulate(in, dtype, acc, dtype, count, kernels::KernelContext::Host()).ok()) {
    return;
  }
  Dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (op == ReduceOp::kMax) {
      ReduceIntoT<T, true>(static_cast<T*>(acc), static_cast<const T*>(in), count);
    } else {
      ReduceIntoT<T, false>(static_cast<T*>(acc), static_cast<const T*>(in), count);
    }
  });
}

void ReduceOrdered(void* out, const void* const* inputs, int n, int64_t count, DType dtype,
                   ReduceOp op, double scale) {
  if (KernelSum(dtype, op) && n <= kernels::kMaxSumInputs && scale == 1.0 &&
      kernels::Sum(std::span<const void* const>(inputs, n), dtype, out, dtype, count,
                   /*accumulate=*/false, kernels::KernelContext::Host())
          .ok()) {
    return;
  }
  Dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (op == ReduceOp::kMax) {
      ReduceOrderedT<T, true>(static_cast<T*>(out), inputs, n, count, 1.0);
    } else {
      ReduceOrderedT<T, false>(static_cast<T*>(out), inputs, n, count, scale);
    }
  });
}

void ScaleInPlace(void* data, int64_t count, DType dtype, double scale) {
  Dispatch(dtype, [&](auto tag) {
    using T = decltype(tag);
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, bf16_t> ||
                  std::is_same_v<T, fp16_t>) {
      ScaleT<T>(static_cast<T*>(data), count, scale);
    }
  });
}

}  // namespace pszero::collectives
