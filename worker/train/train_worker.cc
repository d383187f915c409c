#include "worker/train/train_worker.h"

#include <glog/logging.h>

#include <chrono>
#include <cstdio>

#include "common/ucx/ucx_transport.h"
#include "worker/collectives/communicator.h"
#include "worker/model/full_params.h"
#include "worker/train/training_rank.h"

namespace pszero::train {

Status RunTrainingWorker(const TrainFlags& flags, RendezvousClient& client) {
  using std::chrono::milliseconds;
  const int rank = client.rank();
  const int world = client.num_workers();
  PSZERO_RETURN_IF_ERROR(CheckTrainFlags(flags, world));
  PSZERO_ASSIGN_OR_RETURN(model::ModelConfig config, ResolveModel(flags));

  MemoryTracker tracker;
  ucx::UcxTransportOptions to;
  to.rank = rank;
  to.world_size = world;
  to.key_prefix = "pszero/train";
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxTransport> transport,
                          ucx::UcxTransport::Create(to, &client));
  collectives::CommunicatorOptions co;
  co.tracker = &tracker;
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<collectives::Communicator> world_comm,
                          collectives::Communicator::World(transport.get(), co));
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<collectives::Communicator> tp_comm,
                          world_comm->Split(rank / flags.tp, rank % flags.tp));
  client.SetPeerLostCallback([&](const PeerLost& lost) {
    const Status why = Status::Unavailable(lost.ToString());
    world_comm->Abort(why);
    tp_comm->Abort(why);
  });

  PSZERO_ASSIGN_OR_RETURN(
      std::unique_ptr<TrainingRank> run,
      BuildTrainingRank(config, flags, tp_comm.get(), &tracker, rank / flags.tp, world / flags.tp));
  model::TensorParallel& tp = *run->tp;
  LOG(INFO) << "training " << config.name << " (" << model::ParamCount(config) << " parameters, "
            << run->model->params().numel() << " on this TP rank " << tp.rank() << "/" << tp.size()
            << ") for " << flags.steps << " steps, " << flags.precision;

  for (int64_t step = 0; step < flags.steps; ++step) {
    PSZERO_ASSIGN_OR_RETURN(StepResult r, run->trainer->RunStep(step));
    if (rank == 0) {
      // One plain line per step on stdout: "step k/K loss L time_ms T tokens_per_s S".
      std::printf("step %lld/%lld loss %.6f time_ms %.3f tokens_per_s %.1f\n",
                  static_cast<long long>(step + 1), static_cast<long long>(flags.steps), r.loss,
                  r.seconds * 1e3, static_cast<double>(config.tokens_per_step()) / r.seconds);
      std::fflush(stdout);
    }
  }
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> full,
                          model::GatherFullParams(run->model->params(), tp));
  if (rank == 0) {
    std::printf("final_params_sha256 %s\n", model::Sha256Hex(full).c_str());
    std::fflush(stdout);
  }
  PSZERO_RETURN_IF_ERROR(world_comm->Barrier());
  client.SetPeerLostCallback(nullptr);
  return client.Barrier("train-done", milliseconds(60000));
}

}  // namespace pszero::train
