// transport_peer: the other rank of the multi-process transport tests. It joins a job
// through a FileKeyValueStore directory and plays one role against rank 0:
//   echo  receives each message of --sizes from rank 0 and sends it back under the same
//         tag, then answers --am-count active messages (id 1) with their payload (id 2);
//   hold  receives --hold-recvs messages of --hold-bytes, publishes "<prefix>/ready", and
//         then only progresses (posting nothing more) until it is killed.
// Exit code 0 on success, 1 on a transport error, 2 on bad flags.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <list>
#include <string>
#include <vector>

#include "common/file_kv_store.h"
#include "common/flags.h"
#include "common/ucx/ucx_transport.h"

namespace pszero {
namespace {

using std::chrono::milliseconds;
constexpr milliseconds kTimeout(60000);

struct PeerFlags {
  std::string store;
  std::string prefix = "job";
  std::string role;
  int rank = 1;
  int world = 2;
  std::vector<size_t> sizes;
  int am_count = 0;
  size_t hold_bytes = 0;
  int hold_recvs = 0;
};

Status Echo(ucx::UcxTransport& t, const PeerFlags& f) {
  for (size_t i = 0; i < f.sizes.size(); ++i) {
    std::vector<std::byte> buf(f.sizes[i]);
    PSZERO_ASSIGN_OR_RETURN(Request r, t.Recv(0, MakeTag(0, 0, i), buf.data(), buf.size()));
    PSZERO_RETURN_IF_ERROR(r.Wait(kTimeout));
    PSZERO_ASSIGN_OR_RETURN(Request s, t.Send(0, MakeTag(0, 0, i), buf.data(), r.bytes()));
    PSZERO_RETURN_IF_ERROR(s.Wait(kTimeout));
  }
  std::list<std::vector<std::byte>> replies;
  std::vector<Request> sends;
  Status handler_status;
  int served = 0;
  PSZERO_RETURN_IF_ERROR(t.SetAmHandler(
      1, {.payload_destination = nullptr,
          .on_message = [&](const AmInfo& info, std::span<const std::byte> payload) {
            replies.emplace_back(payload.begin(), payload.end());
            auto r =
                t.SendAm(info.peer, 2, info.header, replies.back().data(), replies.back().size());
            if (r.ok()) {
              sends.push_back(std::move(r).value());
            } else {
              handler_status = r.status();
            }
            ++served;
          }}));
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (served < f.am_count && std::chrono::steady_clock::now() < deadline) {
    PSZERO_RETURN_IF_ERROR(t.Poll(milliseconds(1000)).status());
  }
  PSZERO_RETURN_IF_ERROR(handler_status);
  if (served < f.am_count) return Status::DeadlineExceeded("not every AM arrived");
  return t.WaitAll(sends, kTimeout);
}

Status Hold(ucx::UcxTransport& t, const PeerFlags& f, KeyValueStore& store) {
  std::vector<std::byte> buf(f.hold_bytes);
  for (int i = 0; i < f.hold_recvs; ++i) {
    PSZERO_ASSIGN_OR_RETURN(Request r, t.Recv(0, MakeTag(0, 0, i), buf.data(), buf.size()));
    PSZERO_RETURN_IF_ERROR(r.Wait(kTimeout));
  }
  PSZERO_RETURN_IF_ERROR(store.Set(f.prefix + "/ready", "1"));
  // Keep the endpoint alive and progressing until rank 0 kills this process.
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (std::chrono::steady_clock::now() < deadline) {
    PSZERO_RETURN_IF_ERROR(t.Poll(milliseconds(1000)).status());
  }
  return Status::DeadlineExceeded("hold: never killed");
}

int Main(int argc, char** argv) {
  auto flags = std::make_shared<PeerFlags>();
  auto app = MakeApp("transport_peer", "peer rank for the transport tests");
  app->add_option("--store", flags->store, "FileKeyValueStore directory")->required();
  app->add_option("--prefix", flags->prefix, "Key prefix of the job");
  app->add_option("--role", flags->role, "echo | hold")->required();
  app->add_option("--rank", flags->rank, "This rank");
  app->add_option("--world", flags->world, "World size");
  app->add_option("--sizes", flags->sizes, "Echo: message sizes")->delimiter(',');
  app->add_option("--am-count", flags->am_count, "Echo: active messages to answer");
  app->add_option("--hold-bytes", flags->hold_bytes, "Hold: bytes per message");
  app->add_option("--hold-recvs", flags->hold_recvs, "Hold: messages to receive first");
  if (auto code = ParseFlags(*app, argc, argv)) return *code;

  FileKeyValueStore store(flags->store);
  ucx::UcxTransportOptions options;
  options.rank = flags->rank;
  options.world_size = flags->world;
  options.key_prefix = flags->prefix;
  auto transport = ucx::UcxTransport::Create(options, &store);
  Status s = transport.ok() ? Status::Ok() : transport.status();
  if (s.ok()) {
    s = flags->role == "echo"   ? Echo(**transport, *flags)
        : flags->role == "hold" ? Hold(**transport, *flags, store)
                                : Status::InvalidArgument("unknown role " + flags->role);
  }
  if (!s.ok()) {
    std::fprintf(stderr, "transport_peer rank %d: %s\n", flags->rank, s.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace pszero

int main(int argc, char** argv) { return pszero::Main(argc, argv); }
