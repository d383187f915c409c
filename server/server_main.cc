// pszero-server: one parameter-server process of a job. It lives the control-plane life
// every process lives (common/control_plane_main.h: join, heartbeats, clean exit) and
// runs the shard store (server/ps_server.h) on the data plane until every worker is done:
// when the workers train, from the join until they have all entered barrier "train-done";
// when they only live the control-plane rounds, inside the rounds until barrier "done".
// It publishes its configuration (ps::ServerConfigKey) for the workers before serving.
//
// Data-plane ranks: servers are transport ranks 0..S-1 and workers S..S+W-1 of one UCX
// job whose addresses are published in the rendezvous store under "pszero/ps"
// (docs/ps.md).
//
// Fault injection for tests (common/control_plane_main.h): besides the barriers, point
// "apply<N>" is reached when one of the server's slices applies its N-th update.
#include <glog/logging.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "common/control_plane_main.h"
#include "common/flags.h"
#include "common/rendezvous_client.h"
#include "common/ucx/ucx_transport.h"
#include "server/ps_server.h"

namespace pszero {
namespace {

struct ServerFlags {
  std::string consistency = "bsp";
  int staleness = 0;
  double slice_mb = 4.0;
  std::string optimizer = "adamw";
  float lr = 1e-3f;
  float weight_decay = 0.01f;
  float momentum = 0.9f;
  int threads = 1;
  int grad_accum = 1;
};

void AddServerFlags(CLI::App& app, ServerFlags& f) {
  app.add_option("--consistency", f.consistency, "bsp, ssp or asp")
      ->envname("PSZERO_CONSISTENCY")
      ->check(CLI::IsMember({"bsp", "ssp", "asp"}));
  app.add_option("--staleness", f.staleness, "ssp: how many clocks a worker may run ahead")
      ->envname("PSZERO_STALENESS")
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("--ps-slice-mb", f.slice_mb, "Size of the key-range slices, MiB")
      ->envname("PSZERO_PS_SLICE_MB")
      ->check(FiniteRange(0.0001, 4096.0));
  app.add_option("--optimizer", f.optimizer, "Server-side update: adamw, sgd or none")
      ->envname("PSZERO_OPTIMIZER")
      ->check(CLI::IsMember({"adamw", "sgd", "none"}));
  app.add_option("--lr", f.lr, "Learning rate")->envname("PSZERO_LR")->check(FiniteRange(0.0, 1e6));
  app.add_option("--weight-decay", f.weight_decay, "Weight decay (decoupled for AdamW)")
      ->envname("PSZERO_WEIGHT_DECAY")
      ->check(FiniteRange(0.0, 1e6));
  app.add_option("--momentum", f.momentum, "SGD momentum")
      ->envname("PSZERO_MOMENTUM")
      ->check(FiniteRange(0.0, 1.0));
  app.add_option("--grad-accum", f.grad_accum,
                 "Micro-batches each worker sums into one push (the workers' --grad-accum): the "
                 "update averages over D x K")
      ->envname("PSZERO_GRAD_ACCUM")
      ->check(CLI::Range(1, 1 << 20));
  app.add_option("--ps-threads", f.threads, "Kernel threads of the optimizer")
      ->envname("PSZERO_PS_THREADS")
      ->check(CLI::Range(1, 256));
}

Status Serve(const ServerFlags& f, RendezvousClient& client,
             const std::function<bool()>& job_done) {
  const int servers = client.num_servers();
  const int world = servers + client.num_workers();
  ucx::UcxTransportOptions t;
  t.rank = client.rank();
  t.world_size = world;
  t.key_prefix = "pszero/ps";
  PSZERO_ASSIGN_OR_RETURN(auto transport, ucx::UcxTransport::Create(t, &client));
  ps::PsServerOptions o;
  o.server_index = client.rank();
  o.num_servers = servers;
  o.slice_bytes = static_cast<int64_t>(f.slice_mb * (1 << 20));
  o.consistency = *ps::ParseConsistency(f.consistency);
  o.staleness = f.staleness;
  o.optimizer = *ps::ParseOptimizer(f.optimizer);
  o.adamw.lr = f.lr;
  o.adamw.weight_decay = f.weight_decay;
  o.sgd.lr = f.lr;
  o.sgd.weight_decay = f.weight_decay;
  o.sgd.momentum = f.momentum;
  o.threads = f.threads;
  o.grad_accum = f.grad_accum;
  if (std::getenv("PSZERO_FAULT_INJECT") != nullptr) {
    // Tests kill a server mid-training: fault point "apply<N>" when a slice's N-th update
    // is applied (only with the variable set: the update path stays as it is otherwise).
    o.on_update = [tag = PeerTag(Role::kServer, client.rank())](int64_t n) {
      MaybeInjectFault(tag, "apply" + std::to_string(n));
    };
  }
  PSZERO_ASSIGN_OR_RETURN(auto server, ps::PsServer::Create(transport.get(), o));
  // What the workers must agree on (the slice map), for them to read instead of flags.
  ps::ServerConfig config;
  config.slice_bytes = o.slice_bytes;
  config.consistency = o.consistency;
  config.staleness = o.staleness;
  config.optimizer = f.optimizer;
  config.grad_accum = f.grad_accum;
  PSZERO_RETURN_IF_ERROR(
      client.Set(ps::ServerConfigKey(o.server_index), EncodeServerConfig(config)));
  LOG(INFO) << "ps server " << o.server_index << " of " << servers << ": " << f.consistency
            << (o.consistency == ps::Consistency::kSsp ? " staleness " + std::to_string(f.staleness)
                                                       : "")
            << ", optimizer " << f.optimizer << ", slices of " << f.slice_mb
            << " MiB, transport rank " << t.rank << " of " << world
            << " (the slice map is printed when a key space arrives)";
  Status served;
  while (served.ok() && !job_done()) {
    served = server->Serve(std::chrono::milliseconds(100)).status();
  }
  const ps::PsServerStats& st = server->stats();
  LOG(INFO) << "ps server " << o.server_index << ": " << st.pushes << " pushes, " << st.pulls
            << " pulls, " << st.updates << " updates, " << st.rejected << " rejected, "
            << st.model_bytes << " bytes held";
  // A worker that stopped mid-push (its job failed) may leave a receive into one of the
  // server's slots in flight: close the transport while the slots still exist.
  server->DetachTransport();
  transport.reset();
  return served;
}

}  // namespace
}  // namespace pszero

int main(int argc, char** argv) {
  return pszero::GuardedMain("pszero-server", [&] {
    auto flags = std::make_shared<pszero::ServerFlags>();
    pszero::ProcessWork hooks;
    hooks.add_flags = [flags](CLI::App& app) { pszero::AddServerFlags(app, *flags); };
    hooks.serve = [flags](pszero::RendezvousClient& client, const std::function<bool()>& job_done) {
      return pszero::Serve(*flags, client, job_done);
    };
    return pszero::ControlPlaneMain(pszero::Role::kServer, argc, argv, hooks);
  });
}
