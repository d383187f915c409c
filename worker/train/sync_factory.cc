#include "worker/train/sync_factory.h"

#include "worker/train/allreduce_sync.h"
#include "worker/train/zero1_sync.h"
#include "worker/train/zero2_sync.h"
#include "worker/train/zero3_sync.h"

namespace pszero::train {

namespace {

template <typename T>
Result<std::unique_ptr<SyncStrategy>> Make(model::ParamBuffer* params,
                                           const DataParallelOptions& options) {
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<T> s, T::Create(params, options));
  return std::unique_ptr<SyncStrategy>(std::move(s));
}

}  // namespace

Result<std::unique_ptr<SyncStrategy>> MakeSyncStrategy(std::string_view mode,
                                                       model::ParamBuffer* params,
                                                       const DataParallelOptions& options) {
  if (options.group == nullptr) return Status::InvalidArgument("--sync: no data-parallel group");
  if (mode == "allreduce") return Make<AllReduceSync>(params, options);
  if (mode == "zero1") return Make<Zero1Sync>(params, options);
  if (mode == "zero2") return Make<Zero2Sync>(params, options);
  if (mode == "zero3") return Make<Zero3Sync>(params, options);
  return Status::InvalidArgument("--sync " + std::string(mode) +
                                 ": not one of allreduce, zero1, zero2, zero3");
}

}  // namespace pszero::train
