// pszero-worker: one worker process of a job. It joins the job (common/control_plane_main.h);
// with --model it then trains its shard (worker/train/train_worker.h), otherwise it lives
// only the control-plane rounds.
#include <signal.h>

#include "common/control_plane_main.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "worker/train/train_flags.h"
#include "worker/train/train_worker.h"

int main(int argc, char** argv) {
  return pszero::GuardedMain("pszero-worker", [&] {
    // pszero-launch forwards SIGUSR1 to every worker to ask for its flight recorder; the
    // training loop installs the handler. Before that, and in a worker that does not train,
    // the signal must not kill it (its default action).
    ::signal(SIGUSR1, SIG_IGN);
    pszero::train::TrainFlags flags;
    pszero::ProcessWork work;
    work.add_flags = [&](CLI::App& app) { pszero::train::AddTrainFlags(app, flags); };
    work.check_flags = [&]() -> pszero::Status {
      // The world size is known only after the join (0: unknown); check the rest now.
      PSZERO_RETURN_IF_ERROR(pszero::train::CheckTrainFlags(flags, 0));
      return pszero::train::CheckLocalTrainFlags(flags, 0);
    };
    work.enabled = [&] { return !flags.model.empty(); };
    work.run = [&](pszero::RendezvousClient& client) {
      return pszero::train::RunTrainingWorker(flags, client);
    };
    return pszero::ControlPlaneMain(pszero::Role::kWorker, argc, argv, work);
  });
}
