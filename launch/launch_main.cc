// pszero-launch: runs a whole pszero job on this machine (local mode). See
// docs/launch.md for flags, environment variables and exit codes.
#include <glog/logging.h>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "common/auth.h"
#include "common/exit_codes.h"
#include "common/flags.h"
#include "common/logging.h"
#include "launch/launcher.h"
#include "worker/train/checkpoint.h"
#include "worker/train/train_flags.h"

namespace {

struct LaunchFlags {
  int workers = 1;
  int servers = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;
  std::string token_file;
  double timeout_s = 0;
  int heartbeat_ms = 500;
  int heartbeat_timeout_ms = 2000;
  int join_timeout_ms = 60000;
  int grace_ms = 5000;
  std::string bin_dir;
  int max_restarts = 0;
  // pszero-server's consistency flags (docs/ps.md), passed on its command line.
  std::string consistency = "bsp";
  int staleness = 0;
  double ps_slice_mb = 4.0;
};

// The parameter-server flags against --servers and --sync. `training`: --model given
// (otherwise the children only live the control-plane rounds, and servers may be
// started with any --sync for that). InvalidArgument naming the flag.
pszero::Status CheckPsFlags(const CLI::App& app, const LaunchFlags& f,
                            const pszero::train::TrainFlags& train) {
  using pszero::Status;
  const bool ps = train.sync == "ps";
  const bool training = !train.model.empty();
  if (ps && f.servers < 1) {
    return Status::InvalidArgument(
        "--servers: --sync ps needs at least one pszero-server (--servers S with S >= 1)");
  }
  if (!ps && f.servers > 0 && (training || app.count("--sync") > 0)) {
    return Status::InvalidArgument("--servers: " + std::to_string(f.servers) +
                                   " pszero-servers serve only --sync ps, not --sync " +
                                   train.sync + " (use --servers 0)");
  }
  for (const char* flag : {"--consistency", "--staleness", "--ps-slice-mb"}) {
    if (app.count(flag) > 0 && f.servers < 1) {
      return Status::InvalidArgument(std::string(flag) +
                                     ": a pszero-server flag; give --servers S and --sync ps");
    }
  }
  if (app.count("--staleness") > 0 && f.consistency != "ssp") {
    return Status::InvalidArgument("--staleness: only with --consistency ssp, not " +
                                   f.consistency);
  }
  return Status::Ok();
}

std::vector<std::string> ServerArgs(const LaunchFlags& f) {
  char mb[32];
  std::snprintf(mb, sizeof(mb), "%.17g", f.ps_slice_mb);
  return {"--consistency", f.consistency,
          "--staleness",   std::to_string(f.staleness),
          "--ps-slice-mb", mb};
}

}  // namespace

int main(int argc, char** argv) {
  using std::chrono::milliseconds;
  pszero::InitLogging(argv[0], "launch");
  auto app = pszero::MakeApp("pszero-launch", "pszero-launch: runs a pszero job on this machine");
  LaunchFlags f;
  app->add_option("--workers", f.workers, "Number of pszero-worker processes")
      ->check(CLI::Range(1, 4096));
  app->add_option("--servers", f.servers, "Number of pszero-server processes")
      ->check(CLI::Range(0, 4096));
  app->add_option("--master-addr", f.master_addr, "Address the rendezvous service binds");
  app->add_option("--master-port", f.master_port, "Port of the rendezvous service (0: any free)")
      ->check(CLI::Range(0, 65535));
  app->add_option("--token-file", f.token_file,
                  "Cluster token file (default: $PSZERO_TOKEN, else a fresh random token)")
      ->check(CLI::ExistingFile);
  app->add_option("--timeout", f.timeout_s, "Seconds the whole job may run (0: no limit)")
      ->check(CLI::Range(0.0, 1e7));
  app->add_option("--heartbeat-ms", f.heartbeat_ms, "Heartbeat interval of every process")
      ->check(CLI::Range(10, 60000));
  app->add_option("--heartbeat-timeout-ms", f.heartbeat_timeout_ms,
                  "Silence after which a process is declared lost")
      ->check(CLI::Range(20, 600000));
  app->add_option("--join-timeout-ms", f.join_timeout_ms, "Deadline for every process to join")
      ->check(CLI::Range(1, 86400000));
  app->add_option("--grace-ms", f.grace_ms,
                  "After a failure, how long the others may take to exit before SIGTERM")
      ->check(CLI::Range(0, 3600000));
  app->add_option("--bin-dir", f.bin_dir,
                  "Directory of pszero-worker and pszero-server (default: beside pszero-launch)")
      ->check(CLI::ExistingDirectory);
  app->add_option("--max-restarts", f.max_restarts,
                  "When a process of the job fails, restart the job up to this many times "
                  "(from the newest checkpoint in --checkpoint-dir, if any)")
      ->check(CLI::Range(0, 1000));
  app->add_option("--consistency", f.consistency,
                  "--sync ps: when the servers apply pushes and answer pulls (bsp, ssp, asp)")
      ->check(CLI::IsMember({"bsp", "ssp", "asp"}));
  app->add_option("--staleness", f.staleness,
                  "--consistency ssp: how many steps a worker may run ahead of the slowest")
      ->check(CLI::Range(0, 1 << 20));
  app->add_option("--ps-slice-mb", f.ps_slice_mb,
                  "--sync ps: size of the key-range slices spread over the servers, MiB")
      ->check(CLI::Range(0.0001, 4096.0));
  pszero::train::TrainFlags train;
  pszero::train::AddTrainFlags(*app, train);
  if (auto code = pszero::ParseFlags(*app, argc, argv)) return *code;
  if (pszero::Status s = CheckPsFlags(*app, f, train); !s.ok()) {
    std::cerr << "pszero-launch: error: " << s.message() << "\n";
    return pszero::kExitUsage;
  }
  if (pszero::Status s = pszero::train::CheckTrainFlags(train, f.workers); !s.ok()) {
    std::cerr << "pszero-launch: error: " << s.message() << "\n";
    return pszero::kExitUsage;
  }
  if (f.heartbeat_timeout_ms <= f.heartbeat_ms) {
    std::cerr << "pszero-launch: error: --heartbeat-timeout-ms (" << f.heartbeat_timeout_ms
              << ") must be longer than --heartbeat-ms (" << f.heartbeat_ms << ")\n";
    return pszero::kExitUsage;
  }

  pszero::LaunchOptions options;
  options.num_workers = f.workers;
  options.num_servers = f.servers;
  options.master_addr = f.master_addr;
  options.master_port = static_cast<uint16_t>(f.master_port);
  options.timeout = milliseconds(static_cast<int64_t>(f.timeout_s * 1000));
  options.heartbeat_interval = milliseconds(f.heartbeat_ms);
  options.heartbeat_timeout = milliseconds(f.heartbeat_timeout_ms);
  options.join_timeout = milliseconds(f.join_timeout_ms);
  options.grace = milliseconds(f.grace_ms);
  options.worker_args = pszero::train::TrainArgs(train);
  if (f.servers > 0) options.server_args = ServerArgs(f);
  options.bin_dir = f.bin_dir.empty() ? pszero::ExecutableDir() : f.bin_dir;

  pszero::Result<std::string> token = pszero::LoadClusterToken(f.token_file);
  if (!token.ok() && f.token_file.empty()) token = pszero::GenerateClusterToken();
  if (!token.ok()) {
    LOG(ERROR) << token.status().ToString();
    return pszero::kExitLaunchError;
  }
  options.token = *token;
  int code = pszero::RunLocalJob(options);
  // Restart after a failed process (not after a timeout, an interrupt or a launch error).
  for (int restart = 1; code == pszero::kExitFailure && restart <= f.max_restarts; ++restart) {
    pszero::train::TrainFlags again = train;
    std::string from = again.resume.empty() ? "the beginning" : again.resume;
    if (!train.checkpoint_dir.empty()) {
      if (auto at = pszero::train::ResolveCheckpoint(train.checkpoint_dir); at.ok()) {
        again.resume = train.checkpoint_dir;
        from = at->string();
      }
    }
    LOG(WARNING) << "restart " << restart << "/" << f.max_restarts << " from " << from;
    options.worker_args = pszero::train::TrainArgs(again);
    code = pszero::RunLocalJob(options);
  }
  return code;
}
