#include "worker/train/training_rank.h"

namespace pszero::train {

Result<std::unique_ptr<TrainingRank>> BuildTrainingRank(const model::ModelConfig& config,
                                                        const TrainFlags& flags,
                                                        collectives::Communicator* tp_comm,
                                                        MemoryTracker* tracker, int dp_rank,
                                                        int dp_size) {
  auto r = std::make_unique<TrainingRank>();
  r->tp = std::make_unique<model::TensorParallel>(tp_comm);
  r->kernels = kernels::KernelContext::Host(flags.threads);
  model::ModelContext ctx;
  ctx.kernels = r->kernels;
  ctx.tp = r->tp.get();
  ctx.tracker = tracker;
  ctx.bf16 = flags.precision == "bf16";
  PSZERO_ASSIGN_OR_RETURN(r->model, model::Model::Create(config, ctx, flags.seed));
  model::DataOptions dopt;
  dopt.seed = flags.seed;
  dopt.path = flags.data;
  dopt.dp_rank = dp_rank;
  dopt.dp_size = dp_size;
  PSZERO_ASSIGN_OR_RETURN(r->data, model::DataSource::Create(config, dopt));
  PSZERO_ASSIGN_OR_RETURN(
      r->sync,
      SingleReplicaSync::Create(&r->model->params(), OptimizerOptions{}, r->kernels, tracker));
  r->trainer = std::make_unique<Trainer>(r->model.get(), r->data.get(), r->sync.get());
  return r;
}

}  // namespace pszero::train
