// The training life of one pszero-worker once it has joined the job: its UCX transport
// (addresses swapped through the rendezvous client), the World communicator and the TP
// communicator (Split by replica), the model shard, the data of its replica, the sync
// strategy, and the steps. Worker w is TP rank w % T of replica w / T.
#pragma once

#include "common/rendezvous_client.h"
#include "common/status.h"
#include "worker/train/train_flags.h"

namespace pszero::train {

Status RunTrainingWorker(const TrainFlags& flags, RendezvousClient& client);

}  // namespace pszero::train
