#include "worker/train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <system_error>

#include "common/atomic_file.h"
#include "common/control_plane_main.h"
#include "common/flags.h"
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

namespace {

// `s` as one printable line: control and non-ASCII bytes as \xNN, at most `max` bytes
// shown (a file's content can be anything).
std::string Printable(std::string_view s, size_t max = 80) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch >= 0x20 && ch < 0x7f && ch != '\\') {
      out.push_back(static_cast<char>(ch));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", ch);
      out += buf;
    }
  }
  if (s.size() > max) out += "... (" + std::to_string(s.size()) + " bytes)";
  return out;
}

// True when `path` exists; false with `*error` set when it cannot be told (a name too
// long, a permission): the error names the path.
bool Exists(const fs::path& path, Status* error) {
  std::error_code ec;
  const bool there = fs::exists(path, ec);
  if (ec) *error = Status::NotFound(Printable(path.string(), 200) + ": " + ec.message());
  return there;
}

// A file a manifest lists: one plain name inside the step directory (never absolute, no
// directory part, no `..`), so that a manifest cannot make the launcher read elsewhere.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
         name.find('/') == std::string::npos && name.find('\0') == std::string::npos;
}

}  // namespace

Result<fs::path> ResolveCheckpoint(const fs::path& path) {
  Status error;
  if (Exists(path / "manifest.json", &error)) return path;
  if (!error.ok()) return error;
  if (Exists(path / "latest", &error)) {
    const fs::path latest = path / "latest";
    PSZERO_ASSIGN_OR_RETURN(std::string name, ReadFile(latest));
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    bool printable = true;
    for (const char ch : name) printable = printable && ch > 0x20 && ch < 0x7f;
    if (!printable || !IsPlainFileName(name)) {
      return Status::Corruption(latest.string() + ": not a checkpoint name: \"" + Printable(name) +
                                "\"");
    }
    const bool there = Exists(path / name / "manifest.json", &error);
    if (!error.ok()) return error;
    if (!there) return Status::NotFound((path / name / "manifest.json").string() + ": missing");
    return path / name;
  }
  if (!error.ok()) return error;
  return Status::NotFound(Printable(path.string(), 200) +
                          ": no checkpoint here (neither manifest.json nor latest)");
}

namespace {

// Largest step, parameter count and so on a manifest may hold: 2^53, exact in a double (what
// any JSON reader can round-trip) and far beyond any run.
constexpr int64_t kMaxManifestInt = int64_t{1} << 53;
// Largest worker count, TP degree and --grad-accum a manifest may hold.
constexpr int64_t kMaxManifestWorkers = int64_t{1} << 20;

bool IsSha256Hex(const nlohmann::json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

// Every field of a manifest, its type and range (a manifest is input like any other file):
// Corruption naming the file and the key.
Status CheckManifest(const fs::path& file, const nlohmann::json& m) {
  auto bad = [&](const std::string& key, const std::string& why) {
    return Status::Corruption(file.string() + ": \"" + key + "\" " + why);
  };
  // An integer field present (or absent when `optional`) within [lo, hi].
  auto integer = [&](const nlohmann::json& obj, const std::string& key, int64_t lo, int64_t hi,
                     bool optional, const std::string& prefix = "") -> Status {
    if (!obj.contains(key)) {
      return optional ? Status::Ok() : bad(prefix + key, "is missing");
    }
    const nlohmann::json& v = obj.at(key);
    const bool in_range =
        v.is_number_integer() &&
        (v.is_number_unsigned() ? v.get<uint64_t>() <= static_cast<uint64_t>(hi) &&
                                      static_cast<int64_t>(v.get<uint64_t>()) >= lo
                                : v.get<int64_t>() >= lo && v.get<int64_t>() <= hi);
    if (!in_range) {
      return bad(prefix + key, "is " + Printable(v.dump()) + ", not an integer in [" +
                                   std::to_string(lo) + ", " + std::to_string(hi) + "]");
    }
    return Status::Ok();
  };
  auto string_in = [&](const nlohmann::json& obj, const std::string& key,
                       const std::vector<std::string>& allowed,
                       const std::string& prefix = "") -> Status {
    if (!obj.contains(key)) return bad(prefix + key, "is missing");
    const nlohmann::json& v = obj.at(key);
    if (!v.is_string() || (!allowed.empty() && std::find(allowed.begin(), allowed.end(),
                                                         v.get<std::string>()) == allowed.end())) {
      std::string list;
      for (const std::string& a : allowed) list += (list.empty() ? "" : ", ") + a;
      return bad(prefix + key, "is " + Printable(v.dump()) + ", not " +
                                   (allowed.empty() ? "a string" : "one of " + list));
    }
    return Status::Ok();
  };
  if (!m.is_object()) return Status::Corruption(file.string() + ": not a JSON object");
  PSZERO_RETURN_IF_ERROR(string_in(m, "format", {"pszero.checkpoint/1"}));
  // AdamW's bias correction needs step >= 1; a checkpoint is written after a step.
  PSZERO_RETURN_IF_ERROR(integer(m, "step", 1, kMaxManifestInt, false));
  PSZERO_RETURN_IF_ERROR(integer(m, "data_position", 0, kMaxManifestInt, true));
  if (m.contains("rng")) {
    if (!m.at("rng").is_object()) return bad("rng", "is not an object");
    const nlohmann::json& rng = m.at("rng");
    if (rng.contains("seed") && !rng.at("seed").is_number_integer()) {
      return bad("rng.seed", "is " + Printable(rng.at("seed").dump()) + ", not an integer");
    }
  }
  PSZERO_RETURN_IF_ERROR(string_in(m, "sync", {"allreduce", "zero1", "zero2", "zero3", "ps"}));
  PSZERO_RETURN_IF_ERROR(integer(m, "workers", 1, kMaxManifestWorkers, false));
  PSZERO_RETURN_IF_ERROR(integer(m, "tp", 1, kMaxManifestWorkers, false));
  PSZERO_RETURN_IF_ERROR(integer(m, "dp", 1, kMaxManifestWorkers, false));
  if (m.at("tp").get<int64_t>() * m.at("dp").get<int64_t>() != m.at("workers").get<int64_t>()) {
    return bad("workers", "is not tp x dp");
  }
  PSZERO_RETURN_IF_ERROR(string_in(m, "precision", {"fp32", "bf16"}));
  PSZERO_RETURN_IF_ERROR(integer(m, "grad_accum", 1, kMaxManifestWorkers, true));
  if (!m.contains("model") || !m.at("model").is_object()) return bad("model", "is not an object");
  const nlohmann::json& model = m.at("model");
  PSZERO_RETURN_IF_ERROR(string_in(model, "name", {}, "model."));
  PSZERO_RETURN_IF_ERROR(string_in(model, "kind", {"gpt", "mlp"}, "model."));
  for (const char* key : {"layers", "d_model", "heads", "seq", "batch", "ffn_mult"}) {
    PSZERO_RETURN_IF_ERROR(integer(model, key, 1, kMaxManifestInt, false, "model."));
  }
  // The mlp has no vocabulary (0).
  PSZERO_RETURN_IF_ERROR(
      integer(model, "vocab", model.at("kind") == "mlp" ? 0 : 1, kMaxManifestInt, false, "model."));
  PSZERO_RETURN_IF_ERROR(integer(m, "params", 1, kMaxManifestInt, false));
  if (!m.contains("params_sha256") || !IsSha256Hex(m.at("params_sha256"))) {
    return bad("params_sha256", "is not a sha256 (64 lower-case hex digits)");
  }
  if (!m.contains("files") || !m.at("files").is_object()) return bad("files", "is not an object");
  bool has_model = false, has_shard = false;
  for (const auto& [f, sha] : m.at("files").items()) {
    if (!IsPlainFileName(f)) {
      return bad("files",
                 "lists \"" + Printable(f) + "\": not a file name inside the checkpoint directory");
    }
    if (!IsSha256Hex(sha)) return bad("files." + Printable(f), "is not a sha256");
    has_model = has_model || f == "model.safetensors";
    has_shard = has_shard || f.rfind("optimizer-", 0) == 0;
  }
  if (!has_model) return bad("files", "does not list model.safetensors");
  if (!has_shard) return bad("files", "lists no optimizer-*.safetensors shard");
  return Status::Ok();
}

Result<nlohmann::json> ReadManifest(const fs::path& dir) {
  const fs::path file = dir / "manifest.json";
  PSZERO_ASSIGN_OR_RETURN(std::string text, ReadFile(file));
  nlohmann::json manifest = nlohmann::json::parse(text, nullptr, false);
  if (manifest.is_discarded()) {
    return Status::Corruption(file.string() + ": not a pszero checkpoint manifest (not JSON)");
  }
  PSZERO_RETURN_IF_ERROR(CheckManifest(file, manifest));
  return manifest;
}

Status CheckFile(const fs::path& dir, const nlohmann::json& manifest, const std::string& f) {
  if (!manifest.at("files").contains(f)) {
    return Status::Corruption((dir / "manifest.json").string() + ": does not list " + f);
  }
  PSZERO_ASSIGN_OR_RETURN(std::string sha, FileSha256(dir / f));
  if (sha != manifest.at("files").at(f).get<std::string>()) {
    return Status::Corruption((dir / f).string() +
                              ": sha256 differs from the manifest (corrupt or truncated)");
  }
  return Status::Ok();
}

// A strictly decimal, non-negative metadata value of an optimizer shard; -1 otherwise.
int64_t MetadataInt(const std::map<std::string, std::string>& meta, const std::string& key) {
  const auto it = meta.find(key);
  if (it == meta.end() || it->second.size() > 16) return -1;
  const std::optional<uint64_t> v = ParseDecimal(it->second);
  return v ? static_cast<int64_t>(*v) : -1;
}

struct ShardRange {
  std::string file;
  int64_t begin = 0;
  int64_t end = 0;
};

// An optimizer shard's key range from its header: [range_begin, range_end) of `total`,
// exp_avg and exp_avg_sq of that many values. Corruption naming the file.
template <typename Header>
Result<ShardRange> CheckShard(const fs::path& path, const Header& h, int64_t total) {
  const int64_t begin = MetadataInt(h.metadata, "range_begin");
  const int64_t end = MetadataInt(h.metadata, "range_end");
  const int64_t shard_total = MetadataInt(h.metadata, "total");
  const auto* a = h.Find("exp_avg");
  const auto* b = h.Find("exp_avg_sq");
  auto numel = [](const auto* t) -> int64_t {
    if constexpr (std::is_same_v<Header, SafetensorsFile>) {
      return static_cast<int64_t>(t->data.size());
    } else {
      return t->numel;
    }
  };
  if (a == nullptr || b == nullptr || begin < 0 || end < begin || end > total ||
      (shard_total >= 0 && shard_total != total) || numel(a) != end - begin ||
      numel(b) != end - begin) {
    return Status::Corruption(path.string() + ": bad optimizer shard (range or tensors)");
  }
  return ShardRange{path.filename().string(), begin, end};
}

// The shards' ranges tile [0, total): no gap, no overlap.
Status CheckShardsTile(const fs::path& dir, std::vector<ShardRange> ranges, int64_t total) {
  std::sort(ranges.begin(), ranges.end(),
            [](const ShardRange& a, const ShardRange& b) { return a.begin < b.begin; });
  int64_t at = 0;
  for (const ShardRange& r : ranges) {
    if (r.begin < at) {
      return Status::Corruption((dir / r.file).string() + ": optimizer range [" +
                                std::to_string(r.begin) + ", " + std::to_string(r.end) +
                                ") overlaps another shard's");
    }
    if (r.begin > at) break;
    at = r.end;
  }
  if (at != total || (!ranges.empty() && ranges.back().end != total)) {
    return Status::Corruption((dir / "manifest.json").string() +
                              ": optimizer shards do not cover all " + std::to_string(total) +
                              " values (a gap at " + std::to_string(at) + ")");
  }
  return Status::Ok();
}

// The global batch is batch x D x K: like the model's batch, K stays what it was (a
// manifest without it was written with K = 1).
Status CheckGradAccum(const fs::path& dir, const nlohmann::json& manifest, int grad_accum) {
  const int k = static_cast<int>(manifest.value("grad_accum", int64_t{1}));
  if (k == grad_accum) return Status::Ok();
  return Status::InvalidArgument("--grad-accum " + std::to_string(grad_accum) + ": checkpoint " +
                                 dir.string() + " was trained with --grad-accum " +
                                 std::to_string(k));
}

// The checkpoint holds the model this run trains (same shape, same parameter count).
Status CheckModel(const fs::path& dir, const nlohmann::json& manifest,
                  const model::ModelConfig& config) {
  if (manifest.at("model") != ModelJson(config)) {
    return Status::InvalidArgument("--resume " + dir.string() + ": checkpoint of model " +
                                   manifest.at("model").dump() + ", this run trains " +
                                   ModelJson(config).dump());
  }
  const int64_t want = model::ParamCount(config);
  if (manifest.at("params").get<int64_t>() != want) {
    return Status::InvalidArgument("--resume " + dir.string() + ": checkpoint of " +
                                   std::to_string(manifest.at("params").get<int64_t>()) +
                                   " parameters, this run's model has " + std::to_string(want));
  }
  return Status::Ok();
}

}  // namespace

Status CheckResumeFlags(const fs::path& dir, int grad_accum, const model::ModelConfig* config) {
  PSZERO_ASSIGN_OR_RETURN(nlohmann::json manifest, ReadManifest(dir));
  if (config != nullptr) PSZERO_RETURN_IF_ERROR(CheckModel(dir, manifest, *config));
  return CheckGradAccum(dir, manifest, grad_accum);
}

Result<fs::path> VerifyCheckpoint(const fs::path& path) {
  PSZERO_ASSIGN_OR_RETURN(fs::path dir, ResolveCheckpoint(path));
  PSZERO_ASSIGN_OR_RETURN(nlohmann::json manifest, ReadManifest(dir));
  const int64_t total = manifest.at("params").get<int64_t>();
  std::vector<ShardRange> ranges;
  for (const auto& [f, sha] : manifest.at("files").items()) {
    PSZERO_RETURN_IF_ERROR(CheckFile(dir, manifest, f));
    if (!f.ends_with(".safetensors")) continue;
    // Every header decoded (not the data): a file whose hash matches but whose structure
    // does not is refused here, before any process starts.
    PSZERO_ASSIGN_OR_RETURN(SafetensorsHeader h, ReadSafetensorsHeader(dir / f));
    if (f == "model.safetensors") {
      int64_t n = 0;
      for (const SafeTensorInfo& t : h.tensors) {
        if (__builtin_add_overflow(n, t.numel, &n)) n = -1;
      }
      if (n != total) {
        return Status::Corruption((dir / f).string() + ": holds " + std::to_string(n) +
                                  " parameters, the manifest says " + std::to_string(total));
      }
    } else if (f.rfind("optimizer-", 0) == 0) {
      PSZERO_ASSIGN_OR_RETURN(ShardRange r, CheckShard(dir / f, h, total));
      ranges.push_back(std::move(r));
    }
  }
  PSZERO_RETURN_IF_ERROR(CheckShardsTile(dir, std::move(ranges), total));
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
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string n = it->path().filename().string();
      std::error_code type_ec;
      if (it->is_directory(type_ec) && n.rfind("step-", 0) == 0) steps.push_back(it->path());
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
  PSZERO_RETURN_IF_ERROR(CheckModel(dir, manifest, *c.config));
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
  std::vector<ShardRange> ranges;
  for (const auto& [f, sha] : manifest.at("files").items()) {
    if (f.rfind("optimizer-", 0) != 0) continue;
    PSZERO_ASSIGN_OR_RETURN(SafetensorsFile shard, load(f));
    PSZERO_ASSIGN_OR_RETURN(ShardRange r, CheckShard(dir / f, shard, total));
    const SafeTensor* a = shard.Find("exp_avg");
    const SafeTensor* b = shard.Find("exp_avg_sq");
    std::copy(a->data.begin(), a->data.end(), m.begin() + r.begin);
    std::copy(b->data.begin(), b->data.end(), v.begin() + r.begin);
    ranges.push_back(std::move(r));
  }
  PSZERO_RETURN_IF_ERROR(CheckShardsTile(dir, std::move(ranges), total));
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
