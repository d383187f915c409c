#include "worker/train/train_flags.h"

#include <cstdio>
#include <filesystem>
#include <utility>

#include "common/file_util.h"
#include "common/flags.h"

#include "kernels/cuda_resources.h"
#include "worker/model/data.h"
#include "worker/train/checkpoint.h"

namespace pszero::train {

namespace {

struct ShapeFlag {
  const char* name;
  int64_t TrainFlags::*field;
  int64_t model::ModelConfig::*config;
};

constexpr ShapeFlag kShapeFlags[] = {
    {"--layers", &TrainFlags::layers, &model::ModelConfig::layers},
    {"--d-model", &TrainFlags::d_model, &model::ModelConfig::d_model},
    {"--heads", &TrainFlags::heads, &model::ModelConfig::heads},
    {"--seq", &TrainFlags::seq, &model::ModelConfig::seq},
    {"--batch", &TrainFlags::batch, &model::ModelConfig::batch},
    {"--ffn-mult", &TrainFlags::ffn_mult, &model::ModelConfig::ffn_mult},
    {"--vocab", &TrainFlags::vocab, &model::ModelConfig::vocab},
};

// CLI11 reads "-1" into a uint64_t as 2^64-1 and saturates on overflow: the seed must be
// decimal digits only and fit 64 bits.
CLI::Validator Uint64Decimal() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        return ParseDecimal(input)
                   ? std::string()
                   : "Value " + input + " is not an integer in [0 - 18446744073709551615]";
      },
      "UINT in [0 - 18446744073709551615]");
}

// What one worker must hold at least, in bytes, as a lower bound: fp32 parameters,
// gradients and two AdamW moments of its 1/T share, and the activations of one step
// (every layer's block input, and one layer's attention scores, which even full
// recompute materialises). Doubles: the flags' products overflow 64 bits.
struct MemoryFloor {
  double params = 0;
  double activations = 0;
};

MemoryFloor WorkerMemoryFloor(const model::ModelConfig& c, int tp) {
  MemoryFloor m;
  const double d = static_cast<double>(c.d_model);
  const double h = d * static_cast<double>(c.ffn_mult);
  const double layers = static_cast<double>(c.layers);
  const double rows = static_cast<double>(c.batch) * static_cast<double>(c.seq);
  const double blocks = c.kind == model::ModelKind::kMlp
                            ? layers * 2 * d * h
                            : layers * (4 * d * d + 2 * d * h) + static_cast<double>(c.vocab) * d;
  m.params = 4.0 * 4.0 * blocks / tp;  // fp32 params, grads, m, v (allreduce's 16 bytes)
  m.activations = 4.0 * layers * rows * d;
  if (c.kind == model::ModelKind::kGpt) {
    const double seq = static_cast<double>(c.seq);
    m.activations +=
        4.0 * static_cast<double>(c.batch) * static_cast<double>(c.heads) / tp * seq * seq;
  }
  return m;
}

std::string GiB(double bytes) {
  char out[32];
  std::snprintf(out, sizeof(out), "%.3g GiB", bytes / (1024.0 * 1024.0 * 1024.0));
  return out;
}

// InvalidArgument naming the shape flags when one worker could not hold the model on
// this machine at all (its physical memory), so that such a job is refused up front
// instead of dying of std::bad_alloc (or the OOM killer) mid-step.
// The floor is per mode: zero3 keeps 16/D bytes per parameter (world known: D = workers /
// T; unknown, workers = 0: not checked), the other modes at least bf16 parameters and
// gradients (4 bytes). On a GPU the model lives in device memory: not checked here.
Status CheckFitsInMemory(const model::ModelConfig& c, const TrainFlags& f, int workers) {
  if (f.device == "cuda") return Status::Ok();
  const double physical = static_cast<double>(PhysicalMemoryBytes());
  MemoryFloor m = WorkerMemoryFloor(c, f.tp);
  if (f.sync == "zero3") {
    m.params = workers > 0 ? m.params / (workers / f.tp) : 0;
  } else {
    m.params /= 4;
  }
  if (m.params > physical) {
    return Status::InvalidArgument(
        "--d-model/--layers/--ffn-mult: parameters and optimizer state of at least " +
        GiB(m.params) + " per worker, more than this machine's " + GiB(physical) + " of memory");
  }
  if (m.activations > physical) {
    return Status::InvalidArgument("--batch/--seq: activations of at least " + GiB(m.activations) +
                                   " per worker, more than this machine's " + GiB(physical) +
                                   " of memory");
  }
  return Status::Ok();
}

}  // namespace

void AddTrainFlags(CLI::App& app, TrainFlags& f) {
  app.add_option("--model", f.model, "Model: mlp, gpt-tiny, gpt-small or custom")
      ->check(CLI::IsMember({"mlp", "gpt-tiny", "gpt-small", "custom"}));
  app.add_option("--tp", f.tp, "Tensor-parallel degree T (world = T x D)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--steps", f.steps, "Training steps")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--seed", f.seed, "Seed of the initial weights and the data order")
      ->check(Uint64Decimal());
  app.add_option("--layers", f.layers, "custom model: transformer layers")
      ->check(CLI::Range(int64_t{1}, int64_t{1024}));
  app.add_option("--d-model", f.d_model, "custom model: width")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  app.add_option("--heads", f.heads, "custom model: attention heads")
      ->check(CLI::Range(int64_t{1}, int64_t{4096}));
  app.add_option("--seq", f.seq, "custom model: sequence length")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  app.add_option("--batch", f.batch, "custom model: sequences per replica and step")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  app.add_option("--ffn-mult", f.ffn_mult, "custom model: MLP width / d-model")
      ->check(CLI::Range(int64_t{1}, int64_t{64}));
  app.add_option("--vocab", f.vocab, "custom model: vocabulary (byte tokens modulo it)")
      ->check(CLI::Range(int64_t{2}, int64_t{256}));
  app.add_option("--data", f.data, "Train on the bytes of this file (default: synthetic)")
      ->check(NonEmpty());
  app.add_option("--precision", f.precision, "fp32, or bf16 compute with fp32 master weights")
      ->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--device", f.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--recompute", f.recompute,
                 "Activation recompute: none, selective (attention probabilities) or full "
                 "(every block from its input); bit-identical results, less activation memory")
      ->check(CLI::IsMember({"none", "selective", "full"}));
  app.add_option("--recompute-layers", f.recompute_layers,
                 "With --recompute full: recompute only the first N blocks, the others keep "
                 "their activations (default: all blocks)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  app.add_option("--threads", f.threads, "Kernel threads per worker")->check(CLI::Range(1, 1024));
  app.add_option("--sync", f.sync, "Data-parallel sync mode: allreduce, zero1, zero2, zero3 or ps")
      ->check(CLI::IsMember({"allreduce", "zero1", "zero2", "zero3", "ps"}));
  app.add_option("--bucket-mb", f.bucket_mb,
                 "Gradient bucket size in MiB (allreduce, zero1, zero2)")
      ->check(FiniteRange(0.001, 65536.0));
  app.add_option("--grad-accum", f.grad_accum,
                 "Gradient accumulation: micro-batches of --batch per optimizer step (global "
                 "batch = batch x K x D)")
      ->check(CLI::Range(1, 1 << 20));
  app.add_flag("--deterministic", f.deterministic,
               "Sum gradients in ascending rank order: every sync mode gives the same bits");
  app.add_option("--report", f.report, "Write the run report (JSON, docs/report.md) here")
      ->check(NonEmpty());
  app.add_option("--checkpoint-dir", f.checkpoint_dir,
                 "Save checkpoints here (every --checkpoint-every steps and at the end)")
      ->check(NonEmpty());
  app.add_option("--checkpoint-every", f.checkpoint_every, "Steps between checkpoints")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  app.add_option("--collective-timeout-s", f.collective_timeout_s,
                 "Deadline of one collective; a stuck one fails naming where each worker waits")
      ->check(FiniteRange(0.1, 86400.0));
  app.add_option("--trace", f.trace,
                 "Write a timeline of every worker (Chrome trace-event JSON, opens in Perfetto)")
      ->check(NonEmpty());
  app.add_option("--resume", f.resume,
                 "Start from this checkpoint (a step directory, or a --checkpoint-dir)")
      ->check(NonEmpty());
}

Result<model::ModelConfig> ResolveModel(const TrainFlags& f) {
  const bool custom = f.model == "custom";
  PSZERO_ASSIGN_OR_RETURN(model::ModelConfig c,
                          model::PresetConfig(custom ? std::string("gpt-tiny") : f.model));
  for (const ShapeFlag& s : kShapeFlags) {
    if (f.*s.field == 0) continue;
    if (!custom) {
      return Status::InvalidArgument(std::string(s.name) + ": only with --model custom");
    }
    c.*s.config = f.*s.field;
  }
  if (custom) c.name = "custom";
  return c;
}

Status CheckTrainFlags(const TrainFlags& f, int workers) {
  if (f.model.empty()) return Status::Ok();
  if (f.device == "cuda" && !kernels::CudaBuilt()) {
    return Status::InvalidArgument(
        "--device cuda: this build has no CUDA (configured with -DPSZERO_CUDA=OFF or without a "
        "CUDA toolkit)");
  }
  PSZERO_ASSIGN_OR_RETURN(model::ModelConfig c, ResolveModel(f));
  PSZERO_RETURN_IF_ERROR(model::ValidateConfig(c, f.tp));
  PSZERO_RETURN_IF_ERROR(model::CheckRecomputeLayers(f.recompute, f.recompute_layers, c.layers));
  if (workers % f.tp != 0) {
    return Status::InvalidArgument("--workers: " + std::to_string(workers) +
                                   " workers do not split into replicas of --tp " +
                                   std::to_string(f.tp) + " (world = T x D)");
  }
  if (!f.checkpoint_dir.empty()) {
    // The directory, or the nearest ancestor that exists (it is created), must be one.
    std::filesystem::path at = f.checkpoint_dir;
    std::error_code ec;
    while (!std::filesystem::exists(std::filesystem::symlink_status(at, ec)) &&
           at.has_parent_path() && at.parent_path() != at) {
      at = at.parent_path();
    }
    if (std::filesystem::exists(at, ec) && !std::filesystem::is_directory(at, ec)) {
      return Status::InvalidArgument("--checkpoint-dir: " + at.string() + " is not a directory");
    }
  }
  if (f.checkpoint_every > 0 && f.checkpoint_dir.empty()) {
    return Status::InvalidArgument("--checkpoint-every: needs --checkpoint-dir");
  }
  if (!f.resume.empty()) {
    Result<std::filesystem::path> at = VerifyCheckpoint(f.resume);
    if (!at.ok()) return Status::InvalidArgument("--resume: " + at.status().message());
    PSZERO_RETURN_IF_ERROR(CheckResumeFlags(*at, f.grad_accum, &c));
  }
  if (!f.data.empty()) {
    if (c.kind != model::ModelKind::kGpt) {
      return Status::InvalidArgument("--data: the mlp model trains on synthetic data only");
    }
    PSZERO_RETURN_IF_ERROR(model::ReadDataFile(f.data).status());
  }
  return Status::Ok();
}

Status CheckLocalTrainFlags(const TrainFlags& f, int workers) {
  if (f.model.empty()) return Status::Ok();
  PSZERO_ASSIGN_OR_RETURN(model::ModelConfig c, ResolveModel(f));
  PSZERO_RETURN_IF_ERROR(CheckFitsInMemory(c, f, workers));
  // Output paths are checked now, not found bad after the training ran. Every worker
  // writes its trace part beside --trace, so the directory must exist wherever one runs.
  if (!f.trace.empty()) {
    if (Status s = CheckOutputFilePath(f.trace); !s.ok()) {
      return Status::InvalidArgument("--trace: " + s.message());
    }
  }
  return Status::Ok();
}

Status CheckReportFlag(const TrainFlags& f) {
  if (f.report.empty()) return Status::Ok();
  if (Status s = CheckOutputFilePath(f.report); !s.ok()) {
    return Status::InvalidArgument("--report: " + s.message());
  }
  return Status::Ok();
}

std::vector<std::string> TrainArgs(const TrainFlags& f) {
  std::vector<std::string> a;
  if (f.model.empty()) return a;
  auto add = [&](const char* name, const std::string& v) {
    a.push_back(name);
    a.push_back(v);
  };
  add("--model", f.model);
  add("--tp", std::to_string(f.tp));
  add("--steps", std::to_string(f.steps));
  add("--seed", std::to_string(f.seed));
  for (const ShapeFlag& s : kShapeFlags) {
    if (f.*s.field != 0) add(s.name, std::to_string(f.*s.field));
  }
  if (!f.data.empty()) add("--data", f.data);
  add("--precision", f.precision);
  add("--device", f.device);
  add("--recompute", f.recompute);
  if (f.recompute_layers >= 0) add("--recompute-layers", std::to_string(f.recompute_layers));
  add("--threads", std::to_string(f.threads));
  add("--sync", f.sync);
  char mb[32];
  std::snprintf(mb, sizeof(mb), "%.17g", f.bucket_mb);
  add("--bucket-mb", mb);
  if (f.grad_accum != 1) add("--grad-accum", std::to_string(f.grad_accum));
  if (f.deterministic) a.push_back("--deterministic");
  if (!f.report.empty()) add("--report", f.report);
  if (!f.checkpoint_dir.empty()) add("--checkpoint-dir", f.checkpoint_dir);
  if (f.checkpoint_every > 0) add("--checkpoint-every", std::to_string(f.checkpoint_every));
  if (!f.resume.empty()) add("--resume", f.resume);
  if (!f.trace.empty()) add("--trace", f.trace);
  if (f.collective_timeout_s != TrainFlags().collective_timeout_s) {
    char t[32];
    std::snprintf(t, sizeof(t), "%.17g", f.collective_timeout_s);
    add("--collective-timeout-s", t);
  }
  return a;
}

}  // namespace pszero::train
