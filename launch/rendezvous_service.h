// RendezvousService: the control-plane server of a job (Boost.Asio, TCP).
//
// It admits exactly the expected world (S servers + W workers), each only after the
// client answered a random nonce with HMAC-SHA256 of the cluster token (and, beside the
// world, the node launchers of other nodes: Role::kLauncher, one per node, which may
// read the job's keys, report the death of a process they started, and are told of
// every loss; a node launcher that goes away without a goodbye fails the job); assigns ranks
// once everyone has joined; stores the job's key-value pairs (including every member's
// join blob under wire::BlobKey); runs named barriers over the whole world; and watches
// heartbeats. A member whose connection drops without a goodbye, or who is silent for
// longer than the heartbeat timeout, is lost: every survivor receives PeerLost and every
// pending barrier or lookup fails with Unavailable naming it.
//
// Everything runs asynchronously on the io_context passed to Start(), which must be run
// by exactly one thread (no thread per connection). Start() and the destructor must be
// called where no handler of the service can run concurrently (before that thread runs
// the context, or after it stopped). ReportLost() and Stop() may be called from any
// thread; Snapshot() and WaitUntil() too. RendezvousServiceThread bundles a service with
// its own io_context and thread, for tests, the benchmark and tools.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/rendezvous_client.h"
#include "common/status.h"
#include "common/wire.h"

namespace boost::asio {
class io_context;
}

namespace pszero {

struct RendezvousServiceOptions {
  std::string address = "127.0.0.1";  // address to bind
  uint16_t port = 0;                  // 0: pick a free port
  int num_servers = 0;
  int num_workers = 1;
  std::string token;  // the cluster token; must not be empty
  std::chrono::milliseconds heartbeat_timeout{2000};
  // How long a connection may take from accept to a valid join frame.
  std::chrono::milliseconds handshake_timeout{10000};
  uint32_t max_payload_bytes = wire::kDefaultMaxPayloadBytes;
  // Called on the I/O thread for each lost peer (must not block).
  std::function<void(const PeerLost&)> on_peer_lost;
  // Called on the I/O thread for each key set in the store (by a member, or a join blob;
  // must not block): how the launcher hears of the workers' flight-recorder reports.
  std::function<void(const std::string& key, const std::string& value)> on_set;
  // Published under kLaunchPlanKey for the node launchers of other nodes (which
  // generation of a restarted job this service serves, and its checkpoint:
  // launch/launcher.h's LaunchPlan); empty: nothing published.
  std::string launch_plan;
};

// The key under which the service publishes RendezvousServiceOptions::launch_plan.
inline constexpr char kLaunchPlanKey[] = "pszero/launch/plan";

// What the service has seen so far; for tests, the launcher's messages and the benchmark.
struct RendezvousSnapshot {
  int connections = 0;  // open TCP connections
  int joined = 0;       // authenticated members (before and after the world is complete)
  bool world_complete = false;
  int auth_failures = 0;    // joins refused for a wrong token
  int protocol_errors = 0;  // connections dropped for malformed or unexpected frames
  int refused_joins = 0;    // authenticated joins refused (duplicate, world full, ...)
  int left = 0;             // members that said goodbye
  int launchers = 0;        // node launchers of other nodes connected (docs/cluster.md)
  std::vector<PeerLost> lost;
  std::map<std::string, int> barrier_arrivals;  // pending barriers and their arrivals
};

class RendezvousService {
 public:
  static Result<std::unique_ptr<RendezvousService>> Start(boost::asio::io_context& io,
                                                          RendezvousServiceOptions options);
  ~RendezvousService();
  RendezvousService(const RendezvousService&) = delete;
  RendezvousService& operator=(const RendezvousService&) = delete;

  uint16_t port() const;

  // Declares `role` `rank` lost (the launcher saw its process exit) unless it already
  // left or was lost; when it has not joined yet, the job fails all the same.
  void ReportLost(Role role, int rank, std::string reason);

  // Closes the listening socket and every connection.
  void Stop();

  RendezvousSnapshot Snapshot() const;
  // Waits until `predicate(snapshot)` holds; false after `timeout`.
  bool WaitUntil(const std::function<bool(const RendezvousSnapshot&)>& predicate,
                 std::chrono::milliseconds timeout) const;

  class Impl;

 private:
  explicit RendezvousService(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// A service on its own io_context and thread.
class RendezvousServiceThread {
 public:
  static Result<std::unique_ptr<RendezvousServiceThread>> Start(RendezvousServiceOptions options);
  ~RendezvousServiceThread();  // stops the service and joins the thread

  RendezvousService& service() { return *service_; }
  uint16_t port() const { return service_->port(); }

 private:
  RendezvousServiceThread();
  std::unique_ptr<boost::asio::io_context> io_;
  std::unique_ptr<RendezvousService> service_;
  std::thread thread_;
};

}  // namespace pszero
