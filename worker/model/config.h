// ModelConfig: the shape of a model, from a preset name (DESIGN.md's table) or from the
// --model custom flags, and the arithmetic the benchmark reports.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace pszero::model {

enum class ModelKind : uint8_t { kMlp, kGpt };

struct ModelConfig {
  std::string name = "gpt-tiny";
  ModelKind kind = ModelKind::kGpt;
  int64_t layers = 4;
  int64_t d_model = 256;
  int64_t heads = 4;  // gpt only
  int64_t seq = 128;  // gpt only (mlp: 1)
  int64_t batch = 8;  // per replica (mlp: rows of x)
  int64_t ffn_mult = 4;
  int64_t vocab = 256;  // gpt only

  int64_t tokens_per_step() const { return batch * seq; }
};

// "mlp", "gpt-tiny", "gpt-small"; NotFound otherwise ("custom" is built by the caller).
Result<ModelConfig> PresetConfig(const std::string& name);
// InvalidArgument naming the offending field, e.g. heads not dividing d_model, or a
// dimension that does not split across `tp` ranks.
Status ValidateConfig(const ModelConfig& config, int tp);
// --recompute-layers N (-1: unset) against --recompute (its name) and the model's
// `layers`: unset always passes; 0 <= N <= layers only with "full". InvalidArgument
// naming the flag. Here rather than beside model::Recompute (layers.h) so that the
// launcher checks it without linking the kernels.
Status CheckRecomputeLayers(const std::string& recompute, int64_t recompute_layers, int64_t layers);
// Parameters of the whole (T = 1) model.
int64_t ParamCount(const ModelConfig& config);
// FLOPs of one training step of one replica: 6 * params * tokens, plus attention's
// score and value products (12 * layers * batch * seq^2 * d, forward and backward).
double TrainFlopsPerStep(const ModelConfig& config);

}  // namespace pszero::model
