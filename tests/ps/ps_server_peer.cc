// ps_server_peer: a PsServer in its own process for the multi-process ps tests. It joins
// through a FileKeyValueStore directory as transport rank --rank of --world, serves as
// server --index of --servers, publishes its configuration (ps::ServerConfigKey) as
// pszero-server does, and runs until killed or --max-seconds pass.
// Exit code 0 after --max-seconds, 1 on a transport error, 2 on bad flags.
#include <chrono>
#include <string>

#include "common/file_kv_store.h"
#include "common/flags.h"
#include "common/ucx/ucx_transport.h"
#include "server/ps_server.h"

int main(int argc, char** argv) {
  using namespace pszero;
  std::string store_dir, prefix = "job", consistency = "bsp";
  int rank = 1, world = 2, index = 0, servers = 1, max_seconds = 60;
  int64_t slice_bytes = 4 << 20;
  auto app = MakeApp("ps_server_peer", "a ps server for tests");
  app->add_option("--store", store_dir)->required();
  app->add_option("--prefix", prefix);
  app->add_option("--rank", rank);
  app->add_option("--world", world);
  app->add_option("--index", index);
  app->add_option("--servers", servers);
  app->add_option("--slice-bytes", slice_bytes);
  app->add_option("--consistency", consistency);
  app->add_option("--max-seconds", max_seconds);
  if (auto code = ParseFlags(*app, argc, argv)) return *code;
  FileKeyValueStore store(store_dir);
  ucx::UcxTransportOptions o;
  o.rank = rank;
  o.world_size = world;
  o.key_prefix = prefix;
  auto transport = ucx::UcxTransport::Create(o, &store);
  if (!transport.ok()) {
    fprintf(stderr, "%s\n", transport.status().ToString().c_str());
    return 1;
  }
  ps::PsServerOptions so;
  so.server_index = index;
  so.num_servers = servers;
  so.slice_bytes = slice_bytes;
  so.consistency = ps::ParseConsistency(consistency).value_or(ps::Consistency::kBsp);
  so.optimizer = ps::OptimizerKind::kSgd;
  so.sgd.lr = 1.0f;
  so.sgd.momentum = 0.0f;
  so.grad_scale = 1.0f;
  auto server = ps::PsServer::Create(transport->get(), so);
  if (!server.ok()) {
    fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  ps::ServerConfig config;
  config.slice_bytes = so.slice_bytes;
  config.consistency = so.consistency;
  config.optimizer = "sgd";
  if (Status st = store.Set(ps::ServerConfigKey(index), ps::EncodeServerConfig(config)); !st.ok()) {
    fprintf(stderr, "%s\n", st.ToString().c_str());
    return 1;
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(max_seconds);
  while (std::chrono::steady_clock::now() < end) {
    Result<int> r = (*server)->Serve(std::chrono::milliseconds(100));
    if (!r.ok()) {
      fprintf(stderr, "%s\n", r.status().ToString().c_str());
      return 1;
    }
  }
  return 0;
}
