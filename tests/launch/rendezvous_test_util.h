// Shared set-up of the rendezvous tests: a service on its own thread with a fresh token on
// a free port of 127.0.0.1, and client options that point at it.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#include "common/auth.h"
#include "common/rendezvous_client.h"
#include "launch/rendezvous_service.h"

namespace pszero::testing {

using std::chrono::milliseconds;

// Generous: these tests run beside two other engineers' builds on two cores.
inline constexpr milliseconds kWait{30000};

struct TestService {
  explicit TestService(int servers, int workers,
                       milliseconds heartbeat_timeout = milliseconds(2000),
                       std::string launch_plan = "") {
    token = *GenerateClusterToken();
    RendezvousServiceOptions o;
    o.num_servers = servers;
    o.num_workers = workers;
    o.token = token;
    o.heartbeat_timeout = heartbeat_timeout;
    o.launch_plan = std::move(launch_plan);
    auto started = RendezvousServiceThread::Start(o);
    EXPECT_TRUE(started.ok()) << started.status().ToString();
    if (started.ok()) thread = std::move(started).value();
  }
  RendezvousService& service() { return thread->service(); }
  uint16_t port() const { return thread->port(); }

  RendezvousOptions Client(Role role, int local_rank, int node_rank = 0) const {
    RendezvousOptions o;
    o.master_port = thread->port();
    o.token = token;
    o.role = role;
    o.local_rank = local_rank;
    o.node_rank = node_rank;
    o.blob = "blob " + std::string(RoleName(role)) + " " + std::to_string(node_rank) + "/" +
             std::to_string(local_rank);
    o.heartbeat_interval = milliseconds(100);
    return o;
  }

  std::string token;
  std::unique_ptr<RendezvousServiceThread> thread;
};

}  // namespace pszero::testing
