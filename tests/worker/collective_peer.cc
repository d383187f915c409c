// collective_peer: one rank of a multi-process collectives test (the test process is
// rank 0). Runs allreduce, reduce_scatter and allgather on known inputs, checks every
// result exactly, and writes a one-line result file "<exit code> <status>" when it ends.
// With --iterations 0 it loops until an op fails, then waits for the key "job/done" so
// that the test decides when the survivors go (and no exit is mistaken for the failure).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "common/file_kv_store.h"
#include "common/flags.h"
#include "common/ucx/ucx_transport.h"
#include "tests/worker/collective_check.h"

namespace {
std::string ResultKey(int rank) { return "job/result/" + std::to_string(rank); }
}  // namespace

int main(int argc, char** argv) {
  std::string store_dir;
  int rank = 1, world = 2, iterations = 1;
  int64_t count = 1 << 20;
  std::string buffers = "private";
  int64_t test_host_id = -1;
  auto app = pszero::MakeApp("collective_peer", "one rank of a collectives test");
  app->add_option("--store", store_dir)->required();
  app->add_option("--rank", rank)->required();
  app->add_option("--world", world)->required();
  app->add_option("--iterations", iterations);
  app->add_option("--count", count);
  app->add_option("--buffers", buffers)->check(CLI::IsMember({"private", "shared", "fresh"}));
  app->add_option("--test-host-id", test_host_id,
                  "pose as this host (CommunicatorOptions::test_host_id)");
  if (auto code = pszero::ParseFlags(*app, argc, argv)) return *code;

  pszero::FileKeyValueStore store(store_dir);
  pszero::ucx::UcxTransportOptions o;
  o.rank = rank;
  o.world_size = world;
  o.key_prefix = "job";
  pszero::Status status;
  {
    auto transport = pszero::ucx::UcxTransport::Create(o, &store);
    if (!transport.ok()) {
      status = transport.status();
    } else {
      pszero::collectives::CommunicatorOptions options;
      options.test_host_id = test_host_id;
      auto comm = pszero::collectives::Communicator::World(transport->get(), options);
      status = comm.ok() ? pszero::testing::RunCheckedIterations(
                               **comm, iterations, count, &store,
                               buffers == "private"  ? pszero::testing::CheckBuffers::kPrivate
                               : buffers == "shared" ? pszero::testing::CheckBuffers::kShared
                                                     : pszero::testing::CheckBuffers::kFreshShared)
                         : comm.status();
      if (!status.ok() && iterations == 0) {
        // Report, then stay (with the transport alive) until the test says to go.
        (void)store.Set(ResultKey(rank), "3 " + status.ToString());
        (void)store.Get("job/done", std::chrono::seconds(60));
      }
    }
  }
  const int code = status.ok()                                              ? 0
                   : status.code() == pszero::StatusCode::kUnavailable      ? 3
                   : status.code() == pszero::StatusCode::kDeadlineExceeded ? 4
                                                                            : 1;
  (void)store.Set(ResultKey(rank), std::to_string(code) + " " + status.ToString());
  std::fprintf(stderr, "collective_peer rank %d: %s\n", rank, status.ToString().c_str());
  return code;
}
