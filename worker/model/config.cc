#include "worker/model/config.h"

namespace pszero::model {

Result<ModelConfig> PresetConfig(const std::string& name) {
  ModelConfig c;
  c.name = name;
  if (name == "mlp") {
    c.kind = ModelKind::kMlp;
    c.layers = 4;
    c.d_model = 1024;
    c.heads = 1;
    c.seq = 1;
    c.batch = 16;
    c.ffn_mult = 4;
    c.vocab = 0;
    return c;
  }
  if (name == "gpt-tiny") return c;  // the defaults
  if (name == "gpt-small") {
    c.layers = 12;
    c.d_model = 768;
    c.heads = 12;
    c.seq = 256;
    c.batch = 4;
    return c;
  }
  return Status::NotFound("unknown model '" + name + "' (mlp, gpt-tiny, gpt-small, custom)");
}

Status ValidateConfig(const ModelConfig& c, int tp) {
  auto bad = [](const std::string& field, const std::string& why) {
    return Status::InvalidArgument("--" + field + ": " + why);
  };
  if (c.layers < 1) return bad("layers", "must be at least 1");
  if (c.d_model < 1) return bad("d-model", "must be at least 1");
  if (c.batch < 1) return bad("batch", "must be at least 1");
  if (c.ffn_mult < 1) return bad("ffn-mult", "must be at least 1");
  if (tp < 1) return bad("tp", "must be at least 1");
  if ((c.d_model * c.ffn_mult) % tp != 0) {
    return bad("tp", "the MLP width " + std::to_string(c.d_model * c.ffn_mult) +
                         " does not split across " + std::to_string(tp) + " ranks");
  }
  if (c.kind == ModelKind::kMlp) return Status::Ok();
  if (c.heads < 1 || c.d_model % c.heads != 0) {
    return bad("heads", std::to_string(c.heads) + " heads do not divide d-model " +
                            std::to_string(c.d_model));
  }
  if (c.heads % tp != 0) {
    return bad("tp", std::to_string(c.heads) + " heads do not split across " + std::to_string(tp) +
                         " ranks");
  }
  if (c.seq < 1) return bad("seq", "must be at least 1");
  if (c.vocab < 2 || c.vocab > 256) return bad("vocab", "must be in [2, 256] (byte-level)");
  if (c.vocab % tp != 0) {
    return bad("tp", "vocab " + std::to_string(c.vocab) + " does not split across " +
                         std::to_string(tp) + " ranks");
  }
  return Status::Ok();
}

int64_t ParamCount(const ModelConfig& c) {
  const int64_t d = c.d_model;
  const int64_t h = d * c.ffn_mult;
  const int64_t mlp_block = 2 * d + (d * h + h) + (h * d + d);
  if (c.kind == ModelKind::kMlp) return c.layers * mlp_block;
  const int64_t attn_block = 2 * d + (d * 3 * d + 3 * d) + (d * d + d);
  return c.vocab * d + c.seq * d + c.layers * (attn_block + mlp_block) + 2 * d;
}

double TrainFlopsPerStep(const ModelConfig& c) {
  const double tokens = static_cast<double>(c.tokens_per_step());
  double flops = 6.0 * static_cast<double>(ParamCount(c)) * tokens;
  if (c.kind == ModelKind::kGpt) {
    flops += 12.0 * c.layers * c.batch * static_cast<double>(c.seq) * c.seq * c.d_model;
  }
  return flops;
}

Status CheckRecomputeLayers(const std::string& recompute, int64_t recompute_layers,
                            int64_t layers) {
  if (recompute_layers == -1) return Status::Ok();
  if (recompute != "full") {
    return Status::InvalidArgument(
        "--recompute-layers: only with --recompute full (it picks the blocks full "
        "recomputes), not --recompute " +
        recompute);
  }
  if (recompute_layers < 0 || recompute_layers > layers) {
    return Status::InvalidArgument("--recompute-layers: " + std::to_string(recompute_layers) +
                                   " is not within 0 .. " + std::to_string(layers) +
                                   " (the model's layers)");
  }
  return Status::Ok();
}

}  // namespace pszero::model
