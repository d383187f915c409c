// RendezvousClient: the one control-plane client every pszero process uses.
//
// Join() connects to the rendezvous service, proves it holds the cluster token, announces
// role, host, node/local rank and a blob, and returns once the whole world has joined and
// the service has assigned ranks (servers 0..S-1, workers 0..W-1, ordered by node rank
// then local rank unless a rank is requested). Afterwards the client offers key-value
// publish/lookup (it is the job's KeyValueStore), named barriers over the whole world,
// and failure news: it heart-beats in the background, and when the service reports a
// lost peer (or the service itself is lost) every pending and later wait returns
// Unavailable naming that peer, and peer_lost() says who and why.
//
// Every wait has a deadline. The destructor says goodbye (a clean leave is not a
// failure) and stops the background thread. All methods are thread-safe; one client
// owns one TCP connection and one I/O thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/kv_store.h"
#include "common/status.h"
#include "common/wire.h"

namespace pszero {

struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";  // host name or address of the service
  uint16_t master_port = 0;
  std::string token;  // the cluster token (common/auth.h); may be empty: then refused
  Role role = Role::kWorker;
  int node_rank = 0;
  int local_rank = 0;
  int requested_rank = -1;  // -1: the service assigns one
  std::string host;         // announced host name; empty: this machine's name
  std::string blob;         // published under wire::BlobKey(role, rank)
  std::chrono::milliseconds heartbeat_interval{500};
  uint32_t max_payload_bytes = wire::kDefaultMaxPayloadBytes;
};

// News of a process of the job that is gone.
struct PeerLost {
  Role role = Role::kWorker;
  int rank = 0;
  std::string reason;
  std::string ToString() const { return PeerName(role, rank) + " lost: " + reason; }
};

class RendezvousClient final : public KeyValueStore {
 public:
  // Connects (retrying refused connections until the deadline), authenticates, and waits
  // for the world to be complete. Unauthenticated("authentication failed: ...") when the
  // service refuses the token, Unavailable when a peer is lost before the world is
  // complete, DeadlineExceeded after `timeout`.
  static Result<std::unique_ptr<RendezvousClient>> Join(const RendezvousOptions& options,
                                                        std::chrono::milliseconds timeout);

  ~RendezvousClient() override;
  RendezvousClient(const RendezvousClient&) = delete;
  RendezvousClient& operator=(const RendezvousClient&) = delete;

  Role role() const;
  int rank() const;
  int num_servers() const;
  int num_workers() const;
  const std::vector<wire::MemberInfo>& members() const;

  // KeyValueStore. Set returns once the service has stored the value (so a peer that
  // passes a later barrier with this process finds it); the two-argument form waits up
  // to kDefaultSetTimeout. Keys up to wire::kMaxKeyBytes, values up to wire::kMaxBlobBytes.
  static constexpr std::chrono::milliseconds kDefaultSetTimeout{60000};
  Status Set(const std::string& key, std::string_view value) override;
  Status Set(const std::string& key, std::string_view value, std::chrono::milliseconds timeout);
  Result<std::string> Get(const std::string& key, std::chrono::milliseconds timeout) override;

  // The blob `role` `rank` announced when it joined.
  Result<std::string> PeerBlob(Role role, int rank, std::chrono::milliseconds timeout);

  // Returns when every process of the job has entered the barrier `name`. Names may be
  // reused once a barrier of that name has completed.
  Status Barrier(const std::string& name, std::chrono::milliseconds timeout);

  // The first peer-loss news, if any.
  std::optional<PeerLost> peer_lost() const;
  // Waits up to `timeout` for peer-loss news; DeadlineExceeded when none came.
  Result<PeerLost> WaitForPeerLost(std::chrono::milliseconds timeout);
  // Called on the client's I/O thread for each lost peer (must not block).
  void SetPeerLostCallback(std::function<void(const PeerLost&)> callback);

  // A node launcher's client (role Role::kLauncher; Join() returns once the service
  // admitted it, without waiting for the world): reports that `role` `rank`, a process
  // this launcher started, has died, so that the service fails the job at once, even
  // before the whole job has joined. Unavailable when the connection is gone.
  Status ReportLost(Role role, int rank, const std::string& reason);

  // Says goodbye and closes the connection; later calls return Unavailable. Called by
  // the destructor when not called before.
  void Leave();

  // Stops heart-beating without saying anything, as a hung process would (fault tests).
  void StopHeartbeatsForTesting();

  class Impl;

 private:
  explicit RendezvousClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pszero
