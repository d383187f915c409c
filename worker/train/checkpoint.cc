#include "worker/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/atomic_file.h"
#include "common/control_plane_main.h"
#include "common/report.h"
#include "common/safetensors.h"
#include "common/stats.h"
#include "common/wire.h"
#include "worker/model/full_params.h"

namespace pszero::train {

namespace fs = std::filesystem;

namespace {

std::string StepName(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  return name;
}

std::string ShardName(int rank, int world) {
  char name[64];
  std::snprintf(name, sizeof(name), "optimizer-%05d-of-%05d.safetensors", rank, world);
  return name;
}

Status FsError(const std::string& what, const std::error_code& ec) {
  return Status::IoError(what + ": " + ec.message());
}

Status SyncDirectory(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Status::IoError(dir.string() + ": cannot open to sync");
  const int rc = ::fsync(fd);
  ::close(fd);
  return rc == 0 ? Status::Ok() : Status::IoError(dir.string() + ": fsync failed");
}

// Canonical key range of worker `rank` of `world` over `n` values.
std::pair<int64_t, int64_t> Range(int64_t n, int rank, int world) {
  return {n * rank / world, n * (rank + 1) / world};
}

nlohmann::json ModelJson(const model::ModelConfig& m) {
  return {{"name", m.name},     {"kind", m.kind == model::ModelKind::kGpt ? "gpt" : "mlp"},
          {"layers", m.layers}, {"d_model", m.d_model},
          {"heads", m.heads},   {"seq", m.seq},
          {"batch", m.batch},   {"ffn_mult", m.ffn_mult},
          {"vocab", m.vocab}};
}

}  // namespace

Result<fs::path> ResolveCheckpoint(const fs::path& path) {
  if (fs::exists(path / "manifest.json")) return path;
  if (fs::exists(path / "latest")) {
    PSZERO_ASSIGN_OR_RETURN(std::string name, ReadFile(path / "latest"));
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    if (name.empty() || name.find('/') != std::string::npos) {
      return Status::Corruption((path / "latest").string() + ": not a checkpoint name");
    }
    if (!fs::exists(path / name / "manifest.json")) {
      return Status::NotFound((path / name / "manifest.json").string() + ": missing");
    }
    return path / name;
  }
  return Status::NotFound(path.string() +
                          ": no checkpoint here (neither manifest.json nor latest)");
}

namespace {

Result<nlohmann::json> ReadManifest(const fs::path& dir) {
  PSZERO_ASSIGN_OR_RETURN(std::string text, ReadFile(dir / "manifest.json"));
  nlohmann::json manifest = nlohmann::json::parse(text, nullptr, false);
  if (manifest.is_discarded() || !manifest.is_object() ||
      manifest.value("format", "") != "pszero.checkpoint/1" || !manifest.contains("files") ||
      !manifest.at("files").is_object() || !manifest.contains("step") ||
      !manifest.at("step").is_number_integer()) {
    return Status::Corruption((dir / "manifest.json").string() +
                              ": not a pszero checkpoint manifest");
  }
  return manifest;
}

Status CheckFile(const fs::path& dir, const nlohmann::json& manifest, const std::string& f) {
  if (!manifest.at("files").contains(f)) {
    return Status::Corruption((dir / "manifest.json").string() + ": does not list " + f);
  }
  PSZERO_ASSIGN_OR_RETURN(std::string sha, FileSha256(dir / f));
  if (!manifest.at("files").at(f).is_string() ||
      sha != manifest.at("files").at(f).get<std::string>()) {
    return Status::Corruption((dir / f).string() +
                              ": sha256 differs from the manifest (corrupt or truncated)");
  }
  return Status::Ok();
}

// The global batch is batch x D x K: like the model's batch, K stays what it was (a
// manifest without it was written with K = 1).
Status CheckGradAccum(const fs::path& dir, const nlohmann::json& manifest, int grad_accum) {
  const int k = manifest.value("grad_accum", 1);
  if (k == grad_accum) return Status::Ok();
  return Status::InvalidArgument("--grad-accum " + std::to_string(grad_accum) + ": checkpoint " +
                                 dir.string() + " was trained with --grad-accum " +
                                 std::to_string(k));
}

}  // namespace

Status CheckResumeFlags(const fs::path& dir, int grad_accum) {
  PSZERO_ASSIGN_OR_RETURN(nlohmann::json manifest, ReadManifest(dir));
  return CheckGradAccum(dir, manifest, grad_accum);
}

Result<fs::path> VerifyCheckpoint(const fs::path& path) {
  PSZERO_ASSIGN_OR_RETURN(fs::path dir, ResolveCheckpoint(path));
  PSZERO_ASSIGN_OR_RETURN(nlohmann::json manifest, ReadManifest(dir));
  for (const auto& [f, sha] : manifest.at("files").items()) {
    PSZERO_RETURN_IF_ERROR(CheckFile(dir, manifest, f));
  }
  return dir;
}

Status WriteCheckpoint(const CheckpointContext& c, const fs::path& dir, int64_t steps_done,
                       CheckpointStats* stats) {
  const Stopwatch watch;
  const int rank = c.world->rank();
  const int world = c.world->size();
  // Everything collective first: the full canonical parameters and moments on every rank.
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> local_params, c.sync->LocalParams(*c.params));
  PSZERO_ASSIGN_OR_RETURN(Moments local_moments, c.sync->LocalMoments(*c.params));
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> params,
                          model::GatherFullParams(*c.params, local_params.data(), *c.tp));
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> m,
                          model::GatherFullParams(*c.params, local_moments.m.data(), *c.tp));
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> v,
                          model::GatherFullParams(*c.params, local_moments.v.data(), *c.tp));

  const std::string name = StepName(steps_done);
  const fs::path tmp = dir / (".tmp-" + name);
  std::error_code ec;
  if (rank == 0) {
    fs::create_directories(dir, ec);
    if (ec) return FsError("--checkpoint-dir " + dir.string(), ec);
    fs::remove_all(tmp, ec);  // a previous attempt that died half-way
    fs::create_directories(tmp, ec);
    if (ec) return FsError(tmp.string(), ec);
  }
  PSZERO_RETURN_IF_ERROR(c.world->Barrier());

  // This worker's key range of the moments; worker 0 also writes the parameters.
  const auto [begin, end] = Range(static_cast<int64_t>(m.size()), rank, world);
  SafetensorsFile shard;
  shard.metadata = {{"range_begin", std::to_string(begin)},
                    {"range_end", std::to_string(end)},
                    {"total", std::to_string(m.size())},
                    {"format", "pszero.optimizer/1"}};
  shard.tensors.push_back({"exp_avg", {end - begin}, {m.begin() + begin, m.begin() + end}});
  shard.tensors.push_back({"exp_avg_sq", {end - begin}, {v.begin() + begin, v.begin() + end}});
  PSZERO_RETURN_IF_ERROR(WriteSafetensors(tmp / ShardName(rank, world), shard));
  int64_t written = static_cast<int64_t>(fs::file_size(tmp / ShardName(rank, world), ec));
  if (rank == 0) {
    SafetensorsFile weights;
    weights.metadata = {{"format", "pt"}, {"model", c.config->name}};
    int64_t at = 0;
    for (const model::ParamView& view : c.params->views()) {
      const int64_t n = ShapeNumel(view.spec.full_shape);
      weights.tensors.push_back(
          {view.spec.name, view.spec.full_shape, {params.begin() + at, params.begin() + at + n}});
      at += n;
    }
    PSZERO_RETURN_IF_ERROR(WriteSafetensors(tmp / "model.safetensors", weights));
    written += static_cast<int64_t>(fs::file_size(tmp / "model.safetensors", ec));
  }
  PSZERO_RETURN_IF_ERROR(c.world->Barrier());
  // Tests kill a worker here: the files are written, the checkpoint is not yet in place.
  MaybeInjectFault(PeerTag(Role::kWorker, rank), "checkpoint" + std::to_string(steps_done));

  if (rank == 0) {
    nlohmann::json files = nlohmann::json::object();
    std::vector<std::string> names = {"model.safetensors"};
    for (int r = 0; r < world; ++r) names.push_back(ShardName(r, world));
    for (const std::string& f : names) {
      PSZERO_ASSIGN_OR_RETURN(std::string sha, FileSha256(tmp / f));
      files[f] = sha;
    }
    const TrainFlags& f = *c.flags;
    const nlohmann::json manifest = {
        {"format", "pszero.checkpoint/1"},
        {"step", steps_done},
        // The data stream and the initial weights are functions of (seed, step) only: the
        // next step's batch is determined by these two.
        {"data_position", steps_done},
        {"rng", {{"seed", f.seed}, {"kind", "counter-based (seed, step, index)"}}},
        {"sync", f.sync},
        {"workers", world},
        {"tp", f.tp},
        {"dp", world / f.tp},
        {"precision", f.precision},
        {"grad_accum", f.grad_accum},
        {"model", ModelJson(*c.config)},
        {"params", params.size()},
        {"params_sha256", model::Sha256Hex(params)},
        {"files", files}};
    PSZERO_RETURN_IF_ERROR(WriteJsonAtomic(tmp / "manifest.json", manifest));
    const fs::path final_dir = dir / name;
    fs::remove_all(final_dir, ec);
    fs::rename(tmp, final_dir, ec);
    if (ec) return FsError("rename " + tmp.string() + " to " + final_dir.string(), ec);
    PSZERO_RETURN_IF_ERROR(SyncDirectory(dir));
    PSZERO_RETURN_IF_ERROR(WriteFileAtomic(dir / "latest", name + "\n"));
    // Keep the newest `keep` checkpoints.
    std::vector<fs::path> steps;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string n = e.path().filename().string();
      if (e.is_directory() && n.rfind("step-", 0) == 0) steps.push_back(e.path());
    }
    std::sort(steps.begin(), steps.end());
    for (size_t i = 0; i + c.keep < steps.size(); ++i) fs::remove_all(steps[i], ec);
  }
  PSZERO_RETURN_IF_ERROR(c.world->Barrier());
  if (stats != nullptr) {
    ++stats->writes;
    stats->bytes_written += written;
    stats->write_seconds += watch.ElapsedSeconds();
  }
  return Status::Ok();
}

Result<int64_t> LoadCheckpoint(const CheckpointContext& c, const fs::path& path,
                               CheckpointStats* stats) {
  const Stopwatch watch;
  int64_t read = 0;
  PSZERO_ASSIGN_OR_RETURN(fs::path dir, ResolveCheckpoint(path));
  PSZERO_ASSIGN_OR_RETURN(const nlohmann::json manifest, ReadManifest(dir));
  const std::string where = (dir / "manifest.json").string();
  if (!manifest.contains("model") || manifest.at("model") != ModelJson(*c.config)) {
    return Status::InvalidArgument("--resume " + dir.string() + ": checkpoint of model " +
                                   manifest.value("model", nlohmann::json()).dump() +
                                   ", this run trains " + ModelJson(*c.config).dump());
  }
  if (c.flags != nullptr)
    PSZERO_RETURN_IF_ERROR(CheckGradAccum(dir, manifest, c.flags->grad_accum));
  // Every file listed, checked against its sha256 before use.
  auto load = [&](const std::string& f) -> Result<SafetensorsFile> {
    PSZERO_RETURN_IF_ERROR(CheckFile(dir, manifest, f));
    std::error_code size_ec;
    read += static_cast<int64_t>(fs::file_size(dir / f, size_ec));
    return ReadSafetensors(dir / f);
  };
  PSZERO_ASSIGN_OR_RETURN(SafetensorsFile weights, load("model.safetensors"));
  const int64_t total = model::FullNumel(*c.params);
  std::vector<float> params;
  params.reserve(static_cast<size_t>(total));
  for (const model::ParamView& view : c.params->views()) {
    const SafeTensor* t = weights.Find(view.spec.name);
    if (t == nullptr || t->shape != view.spec.full_shape) {
      return Status::InvalidArgument("--resume " + (dir / "model.safetensors").string() +
                                     ": no tensor " + view.spec.name + " of shape " +
                                     ShapeToString(view.spec.full_shape));
    }
    params.insert(params.end(), t->data.begin(), t->data.end());
  }
  std::vector<float> m(static_cast<size_t>(total)), v(static_cast<size_t>(total));
  int64_t covered = 0;
  for (const auto& [f, sha] : manifest.at("files").items()) {
    if (f.rfind("optimizer-", 0) != 0) continue;
    PSZERO_ASSIGN_OR_RETURN(SafetensorsFile shard, load(f));
    const SafeTensor* a = shard.Find("exp_avg");
    const SafeTensor* b = shard.Find("exp_avg_sq");
    int64_t begin = -1, end = -1;
    try {
      begin = std::stoll(shard.metadata.at("range_begin"));
      end = std::stoll(shard.metadata.at("range_end"));
    } catch (const std::exception&) {
    }
    if (a == nullptr || b == nullptr || begin < 0 || end < begin || end > total ||
        static_cast<int64_t>(a->data.size()) != end - begin ||
        static_cast<int64_t>(b->data.size()) != end - begin) {
      return Status::Corruption((dir / f).string() + ": bad optimizer shard (range or tensors)");
    }
    std::copy(a->data.begin(), a->data.end(), m.begin() + begin);
    std::copy(b->data.begin(), b->data.end(), v.begin() + begin);
    covered += end - begin;
  }
  if (covered != total) {
    return Status::Corruption(where + ": optimizer shards cover " + std::to_string(covered) +
                              " of " + std::to_string(total) + " values");
  }
  const int tp_rank = c.tp->rank();
  const int tp_size = c.tp->size();
  PSZERO_ASSIGN_OR_RETURN(std::vector<float> local,
                          model::LocalFromFull(*c.params, params, tp_rank, tp_size));
  Moments moments;
  moments.step = manifest.at("step").get<int64_t>();
  PSZERO_ASSIGN_OR_RETURN(moments.m, model::LocalFromFull(*c.params, m, tp_rank, tp_size));
  PSZERO_ASSIGN_OR_RETURN(moments.v, model::LocalFromFull(*c.params, v, tp_rank, tp_size));
  PSZERO_RETURN_IF_ERROR(c.sync->Restore(local, moments));
  PSZERO_RETURN_IF_ERROR(c.world->Barrier());
  if (stats != nullptr) {
    stats->bytes_read += read;
    stats->load_seconds += watch.ElapsedSeconds();
  }
  return manifest.at("step").get<int64_t>();
}

}  // namespace pszero::train
