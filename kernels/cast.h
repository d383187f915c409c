// Vectorized conversions fp32 -> bf16 / fp16 (round to nearest even) and back.
//
// Bit-identical to the scalar reference in common/half.h for every input, NaN and
// subnormals included, on every ISA and on CUDA. Pointers live on ctx.device and must not
// overlap.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "common/status.h"
#include "kernels/context.h"

namespace pszero::kernels {

// Supported pairs: fp32->bf16, fp32->fp16, bf16->fp32, fp16->fp32.
Status Cast(const void* in, DType in_dtype, void* out, DType out_dtype, int64_t n,
            const KernelContext& ctx);

}  // namespace pszero::kernels
