// Element-wise reductions that the collectives apply to message segments on the host.
//
// ReduceInto accumulates one buffer into another (the ring's per-hop step); ReduceOrdered
// combines n buffers strictly left to right (the deterministic variant's ascending-rank
// sum). bf16 and fp16 are computed in fp32 and rounded to nearest-even once per call, so
// an ordered sum of n bf16 inputs rounds once, like a serial fp32 sum cast at the end.
// Pure functions on caller-owned memory; thread-safe.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/dtype.h"
#include "common/status.h"

namespace pszero::collectives {

enum class ReduceOp : uint8_t { kSum, kAvg, kMax };

std::string_view ReduceOpName(ReduceOp op);  // sum, avg, max
Result<ReduceOp> ParseReduceOp(std::string_view name);

// Whether `op` is defined on `dtype` (avg needs a floating-point type).
Status CheckReduce(DType dtype, ReduceOp op);

// acc[i] = acc[i] (op) in[i]; avg accumulates like sum (the caller scales once).
void ReduceInto(void* acc, const void* in, int64_t count, DType dtype, ReduceOp op);

// out[i] = ((inputs[0][i] op inputs[1][i]) op ...) op inputs[n-1][i], then times `scale`
// when scale != 1 (1/N for avg). `out` may alias any input.
void ReduceOrdered(void* out, const void* const* inputs, int n, int64_t count, DType dtype,
                   ReduceOp op, double scale);

// data[i] *= scale (floating-point dtypes).
void ScaleInPlace(void* data, int64_t count, DType dtype, double scale);

}  // namespace pszero::collectives
