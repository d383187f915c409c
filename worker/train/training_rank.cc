#include "worker/train/training_rank.h"

#include "worker/train/data_parallel.h"
#include "worker/train/single_replica_sync.h"
#include "worker/train/sync_factory.h"

namespace pszero::train {

Result<std::unique_ptr<TrainingRank>> BuildTrainingRank(const model::ModelConfig& config,
                                                        const TrainFlags& flags,
                                                        collectives::Communicator* tp_comm,
                                                        collectives::Communicator* dp_comm,
                                                        MemoryTracker* tracker, const PsSetup* ps,
                                                        kernels::CudaResources* cuda) {
  auto r = std::make_unique<TrainingRank>();
  if (flags.device == "cuda") {
    if (cuda == nullptr) return Status::Internal("--device cuda without a CUDA device set up");
    r->cuda = cuda;
    r->kernels = kernels::KernelContext::Cuda(cuda);
  } else {
    r->kernels = kernels::KernelContext::Host(flags.threads);
  }
  r->tp = std::make_unique<model::TensorParallel>(tp_comm, r->kernels);
  const int dp_size = dp_comm == nullptr ? 1 : dp_comm->size();
  const int dp_rank = dp_comm == nullptr ? 0 : dp_comm->rank();
  model::ModelContext ctx;
  ctx.kernels = r->kernels;
  ctx.tp = r->tp.get();
  ctx.tracker = tracker;
  ctx.bf16 = flags.precision == "bf16";
  PSZERO_ASSIGN_OR_RETURN(ctx.recompute, model::ParseRecompute(flags.recompute));
  ctx.recompute_layers = flags.recompute_layers;
  if (dp_comm != nullptr) {
    PSZERO_ASSIGN_OR_RETURN(SyncPlan plan, SyncPlanFor(flags.sync, dp_size));
    ctx.unit_align = plan.unit_align;
    ctx.storage = plan.storage;
  }
  PSZERO_ASSIGN_OR_RETURN(r->model, model::Model::Create(config, ctx, flags.seed));
  model::DataOptions dopt;
  dopt.seed = flags.seed;
  dopt.path = flags.data;
  dopt.dp_rank = dp_rank;
  dopt.dp_size = dp_size;
  PSZERO_ASSIGN_OR_RETURN(r->data, model::DataSource::Create(config, dopt));
  if (dp_comm == nullptr) {
    PSZERO_ASSIGN_OR_RETURN(
        r->sync,
        SingleReplicaSync::Create(&r->model->params(), OptimizerOptions{}, r->kernels, tracker));
  } else if (flags.sync == "ps") {
    if (ps == nullptr)
      return Status::InvalidArgument("--sync ps: no parameter servers in this job");
    PsSyncOptions o = ps->options;
    o.kernels = r->model->context().kernels;  // where the ParamBuffer lives
    o.tracker = tracker;
    o.grad_accum = flags.grad_accum;
    PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<PsSync> s,
                            MakePsSync(&r->model->params(), o, ps->store));
    r->ps = s.get();
    r->sync = std::move(s);
  } else {
    DataParallelOptions o;
    o.group = dp_comm;
    o.bucket_mb = flags.bucket_mb;
    o.kernels = r->kernels;
    o.tracker = tracker;
    // The group's own op deadline ends a stuck op first, with the op's name.
    o.timeout = dp_comm->options().timeout + std::chrono::milliseconds(10000);
    PSZERO_ASSIGN_OR_RETURN(r->sync, MakeSyncStrategy(flags.sync, &r->model->params(), o));
  }
  r->trainer =
      std::make_unique<Trainer>(r->model.get(), r->data.get(), r->sync.get(), flags.grad_accum);
  return r;
}

}  // namespace pszero::train
