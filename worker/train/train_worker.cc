#include "worker/train/train_worker.h"

#include <glog/logging.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "common/control_plane_main.h"
#include "common/report.h"
#include "common/trace.h"
#include "common/ucx/ucx_transport.h"
#include "kernels/cuda_resources.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/flight_recorder.h"
#include "worker/collectives/nccl_backend.h"
#include "worker/model/full_params.h"
#include "worker/train/checkpoint.h"
#include "worker/train/run_report.h"
#include "worker/train/training_rank.h"

namespace pszero::train {

namespace {

// This process's resident set size (/proc/self/statm), 0 when unknown.
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t pages_total = 0, pages_resident = 0;
  if (!(in >> pages_total >> pages_resident)) return 0;
  return pages_resident * static_cast<int64_t>(::sysconf(_SC_PAGESIZE));
}

int64_t RealParamCount(const model::ParamBuffer& params) {
  int64_t n = 0;
  for (const model::ParamView& v : params.views()) n += v.numel;
  return n;
}

// After a failed step: this worker's flight recorder in its log; after a timeout (a hang,
// not a lost peer) also its latest collective published for the others, and the
// diagnosis over every worker's (waiting up to `wait` for them): who waits where.
void ReportFailure(RendezvousClient& client, int rank, int world, const Status& why,
                   std::chrono::milliseconds wait) {
  collectives::FlightRecorder& recorder = collectives::FlightRecorder::Get();
  LOG(WARNING) << "flight recorder, last " << collectives::FlightRecorder::kCapacity
               << " collectives at most:\n"
               << recorder.Dump();
  if (why.code() != StatusCode::kDeadlineExceeded) return;
  const std::string key = collectives::kHangTimeoutKeyPrefix;
  collectives::OpRecord waited = recorder.Latest();
  waited.end_us = 0;  // it failed: this is where the rank waited, not an op it is past
  if (!client.Set(key + std::to_string(rank), ToJson(waited).dump()).ok()) return;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::vector<collectives::OpRecord> latest(world);
  for (int r = 0; r < world; ++r) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    Result<std::string> doc =
        client.Get(key + std::to_string(r), std::max(left, std::chrono::milliseconds(1)));
    if (!doc.ok()) continue;
    nlohmann::json j = nlohmann::json::parse(*doc, nullptr, false);
    if (!j.is_discarded()) latest[r] = collectives::OpRecordFromJson(j);
  }
  const std::string diagnosis = collectives::DiagnoseHang(latest);
  if (!diagnosis.empty()) LOG(ERROR) << "hang diagnosis: " << diagnosis;
}

// SIGUSR1 → this worker's flight recorder in its log, and its latest op in the job's
// key-value store (collectives::kHangSignalKeyPrefix + rank) for pszero-launch, which
// forwards its own SIGUSR1 to every worker and names the disagreement; training goes on
// (a job that seems stuck: `kill -USR1 <launcher pid>`). The handler only writes a byte to
// a pipe; a thread of its own does the rest (the client is thread-safe).
class RecorderOnSignal {
 public:
  RecorderOnSignal(RendezvousClient& client, int rank) {
    if (::pipe(fds_) != 0) return;
    write_fd_.store(fds_[1]);
    struct sigaction sa {};
    sa.sa_handler = [](int) {
      const int fd = write_fd_.load();
      const char c = 's';
      if (fd >= 0) (void)!::write(fd, &c, 1);
    };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    ::sigaction(SIGUSR1, &sa, &old_);
    thread_ = std::thread([this, &client, rank] {
      char c;
      while (::read(fds_[0], &c, 1) == 1 && c == 's') {
        collectives::FlightRecorder& recorder = collectives::FlightRecorder::Get();
        LOG(WARNING) << "SIGUSR1: flight recorder, last " << collectives::FlightRecorder::kCapacity
                     << " collectives at most:\n"
                     << recorder.Dump();
        nlohmann::json latest = ToJson(recorder.Latest());
        latest["dumped_us"] = Tracer::NowUs();  // a new value for every signal
        const Status published =
            client.Set(collectives::kHangSignalKeyPrefix + std::to_string(rank), latest.dump());
        if (!published.ok()) LOG(WARNING) << "SIGUSR1: " << published.ToString();
      }
    });
  }
  ~RecorderOnSignal() {
    if (!thread_.joinable()) return;
    ::sigaction(SIGUSR1, &old_, nullptr);
    write_fd_.store(-1);
    const char stop = 'x';
    (void)!::write(fds_[1], &stop, 1);
    thread_.join();
    ::close(fds_[0]);
    ::close(fds_[1]);
  }

 private:
  static inline std::atomic<int> write_fd_{-1};
  int fds_[2] = {-1, -1};
  struct sigaction old_ {};
  std::thread thread_;
};

// The GPU of this worker: local rank (PSZERO_LOCAL_RANK, set by the launcher or derived
// from mpirun/torchrun/Slurm variables) modulo the devices it sees, as torchrun's
// LOCAL_RANK → cuda:LOCAL_RANK.
Result<std::unique_ptr<kernels::CudaResources>> OpenWorkerDevice(int rank) {
  const int count = kernels::CudaDeviceCount();
  if (count == 0) {
    return Status::Unavailable("--device cuda: worker " + std::to_string(rank) +
                               " sees no CUDA device");
  }
  int local_rank = 0;
  if (const char* v = std::getenv("PSZERO_LOCAL_RANK"); v != nullptr) local_rank = std::atoi(v);
  const int device = std::max(local_rank, 0) % count;
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<kernels::CudaResources> cuda,
                          kernels::CudaResources::Create(device));
  LOG(INFO) << "worker " << rank << " (local rank " << local_rank << ") on CUDA device " << device
            << " of " << count;
  return cuda;
}

// Every worker writes its events beside `path`; worker 0 merges them into `path` (one
// machine, or a shared file system) and removes the parts, whether the merge worked or
// not (a failed barrier: each worker removes its own).
Status WriteTrace(const std::string& path, int rank, int world, collectives::Communicator& comm) {
  auto part_path = [&](int r) { return path + ".rank" + std::to_string(r); };
  PSZERO_RETURN_IF_ERROR(WriteJsonAtomic(part_path(rank), Tracer::Get()->Events()));
  if (Status s = comm.Barrier(); !s.ok()) {
    std::remove(part_path(rank).c_str());
    return s;
  }
  if (rank != 0) return Status::Ok();
  const Status merged = [&]() -> Status {
    std::vector<nlohmann::json> parts;
    for (int r = 0; r < world; ++r) {
      std::ifstream in(part_path(r));
      nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
      if (doc.is_discarded()) return Status::Corruption(part_path(r) + ": unreadable trace part");
      parts.push_back(std::move(doc));
    }
    return WriteJsonAtomic(path, MergeTraces(parts));
  }();
  for (int r = 0; r < world; ++r) std::remove(part_path(r).c_str());
  PSZERO_RETURN_IF_ERROR(merged);
  std::printf("trace written to %s\n", path.c_str());
  std::fflush(stdout);
  return Status::Ok();
}

}  // namespace

Status RunTrainingWorker(const TrainFlags& flags, RendezvousClient& client) {
  using std::chrono::milliseconds;
  const int rank = client.rank();
  const int world = client.num_workers();
  PSZERO_RETURN_IF_ERROR(CheckTrainFlags(flags, world));
  PSZERO_RETURN_IF_ERROR(CheckLocalTrainFlags(flags, world));
  if (rank == 0) PSZERO_RETURN_IF_ERROR(CheckReportFlag(flags));
  PSZERO_ASSIGN_OR_RETURN(model::ModelConfig config, ResolveModel(flags));
  const int tp_rank = rank % flags.tp;
  const int replica = rank / flags.tp;
  if (!flags.trace.empty()) {
    Tracer::Enable(rank, "worker " + std::to_string(rank));
    Tracer::Get()->NameThread("main");
  }

  RecorderOnSignal recorder_on_signal(client, rank);
  const milliseconds collective_timeout(static_cast<int64_t>(flags.collective_timeout_s * 1000));
  MemoryTracker tracker;
  // Two transports: the model's thread drives tensor parallelism on the first while the
  // sync strategy's stream thread drives the data-parallel group on the second (a
  // Transport is single-threaded).
  std::unique_ptr<ucx::UcxTransport> transports[2];
  std::unique_ptr<collectives::Communicator> worlds[2];
  for (int i = 0; i < 2; ++i) {
    ucx::UcxTransportOptions to;
    to.rank = rank;
    to.world_size = world;
    to.key_prefix = i == 0 ? "pszero/train/tp" : "pszero/train/dp";
    PSZERO_ASSIGN_OR_RETURN(transports[i], ucx::UcxTransport::Create(to, &client));
    collectives::CommunicatorOptions co;
    co.tracker = &tracker;
    co.timeout = collective_timeout;
    co.deterministic = flags.deterministic;
    PSZERO_ASSIGN_OR_RETURN(worlds[i], collectives::Communicator::World(transports[i].get(), co));
  }
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<collectives::Communicator> tp_comm,
                          worlds[0]->Split(replica, tp_rank));
  PSZERO_ASSIGN_OR_RETURN(std::unique_ptr<collectives::Communicator> dp_comm,
                          worlds[1]->Split(tp_rank, replica));
  // --device cuda: this worker's GPU (local rank modulo the visible devices), and NCCL for
  // the device tensors of its TP and DP groups (not under --deterministic, whose sums NCCL
  // cannot give: those stage through host memory).
  std::unique_ptr<kernels::CudaResources> cuda;
  if (flags.device == "cuda") {
    PSZERO_ASSIGN_OR_RETURN(cuda, OpenWorkerDevice(rank));
    const std::pair<collectives::Communicator*, const char*> groups[] = {
        {tp_comm.get(), "pszero/train/nccl/tp"}, {dp_comm.get(), "pszero/train/nccl/dp"}};
    // PSZERO_NCCL_HOST_PER_WORKER=1 (a check for one-GPU machines): every worker gives
    // NCCL a host id of its own before NCCL starts, so NCCL accepts workers that share a
    // GPU and connects them over its socket transport, where they would otherwise stage
    // through host memory (docs/collectives.md, "NCCL on a one-GPU machine").
    if (const char* v = std::getenv("PSZERO_NCCL_HOST_PER_WORKER");
        v != nullptr && std::string(v) == "1") {
      collectives::NcclBackend::UseOwnHostId("worker-" + std::to_string(rank));
    }
    for (const auto& [comm, key] : groups) {
      if (comm->size() == 1 || flags.deterministic) continue;
      PSZERO_RETURN_IF_ERROR(
          comm->EnableNccl(&client, key, cuda->device()).WithContext("--device cuda"));
      LOG_IF(INFO, comm->nccl_enabled()) << "NCCL on the " << (comm == tp_comm.get() ? "tp" : "dp")
                                         << " group (" << comm->size() << " ranks)";
    }
  }
  std::atomic<PsSync*> ps_sync{nullptr};
  client.SetPeerLostCallback([&](const PeerLost& lost) {
    const Status why = Status::Unavailable(lost.ToString());
    for (auto* c : {worlds[0].get(), worlds[1].get(), tp_comm.get(), dp_comm.get()}) c->Abort(why);
    if (PsSync* ps = ps_sync.load()) ps->Abort(why);
  });

  PsSetup ps;
  ps.store = &client;
  ps.options.worker_rank = rank;
  ps.options.num_workers = world;
  ps.options.num_servers = client.num_servers();
  ps.options.dp_rank = replica;
  ps.options.dp_size = world / flags.tp;
  ps.options.tp_rank = tp_rank;
  ps.options.group = dp_comm.get();
  PSZERO_ASSIGN_OR_RETURN(
      std::unique_ptr<TrainingRank> run,
      BuildTrainingRank(config, flags, tp_comm.get(), dp_comm.get(), &tracker, &ps, cuda.get()));
  ps_sync = run->ps;
  model::TensorParallel& tp = *run->tp;
  model::ParamBuffer& params = run->model->params();
  const int dp_size = dp_comm->size();
  const int64_t psi = RealParamCount(params);
  LOG(INFO) << "training " << config.name << " (" << model::ParamCount(config) << " parameters, "
            << psi << " on TP rank " << tp.rank() << "/" << tp.size() << ") with --sync "
            << run->sync->name() << " over " << dp_size << " replicas for " << flags.steps
            << " steps, " << flags.precision
            << (flags.recompute != "none" ? ", --recompute " + flags.recompute : "")
            << (flags.recompute_layers >= 0
                    ? ", --recompute-layers " + std::to_string(flags.recompute_layers)
                    : "")
            << (flags.deterministic ? ", deterministic" : "");

  CheckpointContext ckpt;
  ckpt.flags = &flags;
  ckpt.config = &config;
  ckpt.params = &params;
  ckpt.sync = run->sync.get();
  ckpt.tp = run->tp.get();
  ckpt.world = worlds[0].get();
  int64_t first = 0;
  CheckpointStats ckpt_stats;
  if (!flags.resume.empty()) {
    PSZERO_ASSIGN_OR_RETURN(first, LoadCheckpoint(ckpt, flags.resume, &ckpt_stats));
    LOG(INFO) << "resumed from " << flags.resume << " after step " << first;
  }

  const double tokens = static_cast<double>(config.tokens_per_step()) * dp_size * flags.grad_accum;
  std::vector<StepRecord> steps;
  int64_t rss_after_first_step = 0;
  auto train = [&]() -> Status {
    for (int64_t step = first; step < flags.steps; ++step) {
      const std::string point = "step" + std::to_string(step + 1);
      MaybeInjectFault(PeerTag(Role::kWorker, rank), point);
      if (FaultAsked("hang", PeerTag(Role::kWorker, rank), point)) {
        // Tests: a collective the other workers never enter.
        LOG(WARNING) << "fault injection: hang in a world barrier at '" << point << "'";
        PSZERO_RETURN_IF_ERROR(worlds[0]->Barrier());
      }
      PSZERO_ASSIGN_OR_RETURN(StepResult r, run->trainer->RunStep(step));
      PSZERO_ASSIGN_OR_RETURN(float loss, run->sync->AverageLoss(r.loss));
      steps.push_back({step + 1, loss, r.seconds});
      if (step == first) rss_after_first_step = ResidentBytes();
      if (rank == 0) {
        // One plain line per step on stdout (the launcher's progress line reads it).
        std::printf("%s\n", StepLine(steps.back(), flags.steps, tokens / r.seconds).c_str());
        std::fflush(stdout);
      }
      const int64_t done = step + 1;
      if (!flags.checkpoint_dir.empty() &&
          ((flags.checkpoint_every > 0 && done % flags.checkpoint_every == 0) ||
           done == flags.steps)) {
        PSZERO_RETURN_IF_ERROR(WriteCheckpoint(ckpt, flags.checkpoint_dir, done, &ckpt_stats));
        if (rank == 0)
          LOG(INFO) << "checkpoint after step " << done << " in " << flags.checkpoint_dir;
      }
    }
    return Status::Ok();
  };
  if (Status trained = train(); !trained.ok()) {
    ReportFailure(client, rank, world, trained, collective_timeout + milliseconds(5000));
    return trained;
  }
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> local, run->sync->LocalParams(params));
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> full,
                          model::GatherFullParams(params, local.data(), tp));
  const std::string sha = model::Sha256Hex(full);
  if (rank == 0) {
    std::printf("final_params_sha256 %s\n", sha.c_str());
    std::fflush(stdout);
  }

  if (!flags.report.empty()) {
    RankFacts facts;
    facts.rank = rank;
    facts.tp_rank = tp_rank;
    facts.dp_rank = replica;
    facts.dp_size = dp_size;
    facts.psi = psi;
    facts.last_step = run->sync->last_step_traffic();
    facts.total = run->sync->total_traffic();
    facts.rss_after_first_step = rss_after_first_step;
    facts.rss_end = ResidentBytes();
    facts.checkpoint = {{"writes", ckpt_stats.writes},
                        {"bytes_written", ckpt_stats.bytes_written},
                        {"write_seconds", ckpt_stats.write_seconds},
                        {"bytes_read", ckpt_stats.bytes_read},
                        {"load_seconds", ckpt_stats.load_seconds}};
    const std::string key = "pszero/report/rank/";
    PSZERO_RETURN_IF_ERROR(
        client.Set(key + std::to_string(rank), RankReport(flags, facts, tracker).dump()));
    nlohmann::json servers;
    if (run->ps != nullptr && rank == 0) {
      PSZERO_ASSIGN_OR_RETURN(std::vector<ps::ServerCounters> stats, run->ps->ServerStats());
      servers = nlohmann::json::array();
      for (size_t s = 0; s < stats.size(); ++s) {
        servers.push_back({{"server", s},
                           {"bytes_received", stats[s].push_bytes},
                           {"bytes_sent", stats[s].pull_bytes},
                           {"pushes", stats[s].pushes},
                           {"pulls", stats[s].pulls},
                           {"rejected", stats[s].rejected},
                           {"max_served_staleness", stats[s].max_served_staleness},
                           {"memory", {{"model_state_bytes", stats[s].model_bytes}}}});
      }
    }
    if (rank == 0) {
      std::vector<nlohmann::json> ranks;
      for (int r = 0; r < world; ++r) {
        PSZERO_ASSIGN_OR_RETURN(std::string doc,
                                client.Get(key + std::to_string(r), milliseconds(60000)));
        ranks.push_back(nlohmann::json::parse(doc));
      }
      PSZERO_RETURN_IF_ERROR(WriteJsonAtomic(
          flags.report, RunReport(flags, config, world, client.num_servers(), psi, steps, sha,
                                  std::move(ranks), std::move(servers))));
      std::printf("report written to %s\n", flags.report.c_str());
      std::fflush(stdout);
    }
  }
  if (!flags.trace.empty())
    PSZERO_RETURN_IF_ERROR(WriteTrace(flags.trace, rank, world, *worlds[0]));
  ps_sync = nullptr;
  run.reset();  // the strategy's stream ends before the communicators
  PSZERO_RETURN_IF_ERROR(worlds[0]->Barrier());
  client.SetPeerLostCallback(nullptr);
  return client.Barrier(kWorkDoneBarrier, milliseconds(60000));
}

}  // namespace pszero::train
