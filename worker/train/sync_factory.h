// MakeSyncStrategy: the strategy for a --sync mode over a data-parallel group, on a
// ParamBuffer laid out as SyncPlanFor(mode, group size) asked.
#pragma once

#include <memory>
#include <string_view>

#include "worker/train/data_parallel.h"
#include "worker/train/sync_strategy.h"

namespace pszero::train {

// allreduce, zero1, zero2, zero3 (ps is made by MakePsSync). InvalidArgument otherwise.
Result<std::unique_ptr<SyncStrategy>> MakeSyncStrategy(std::string_view mode,
                                                       model::ParamBuffer* params,
                                                       const DataParallelOptions& options);

}  // namespace pszero::train
