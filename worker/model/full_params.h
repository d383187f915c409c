// The full (T = 1) parameter vector in canonical order, assembled from the TP shards of
// one replica: what final_params_sha256 hashes and what a checkpoint writes.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "worker/model/param_buffer.h"
#include "worker/model/tensor_parallel.h"

namespace pszero::model {

// Collective over the TP group: every rank gets the full vector (T = 1 layout, each view
// at the sum of the full sizes of the views before it). Every shard holds the same numel.
Result<std::vector<float>> GatherFullParams(const ParamBuffer& params, TensorParallel& tp);
// The same from this TP rank's parameters in `local` (params.numel() values in the
// buffer's layout), for a buffer whose parameters are not resident (ZeRO-3).
Result<std::vector<float>> GatherFullParams(const ParamBuffer& params, const float* local,
                                            TensorParallel& tp);

// Lower-case hex SHA-256 of the little-endian fp32 bytes of `full`.
std::string Sha256Hex(const std::vector<float>& full);

}  // namespace pszero::model
