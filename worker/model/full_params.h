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

// The inverse, local to this TP rank: the ParamBuffer-layout vector (params.numel()
// values, padding 0) of TP rank `tp_rank` of `tp_size` cut from the full canonical vector.
// InvalidArgument when `full` has the wrong length.
Result<std::vector<float>> LocalFromFull(const ParamBuffer& params, const std::vector<float>& full,
                                         int tp_rank, int tp_size);

// Number of values of the full (T = 1) canonical vector.
int64_t FullNumel(const ParamBuffer& params);

// Lower-case hex SHA-256 of the little-endian fp32 bytes of `full`.
std::string Sha256Hex(const std::vector<float>& full);

}  // namespace pszero::model
