#include "worker/model/data.h"

#include <algorithm>

#include "common/file_util.h"
#include "worker/model/param_buffer.h"

namespace pszero::model {

namespace {

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

constexpr int64_t kSyntheticCorpusBytes = int64_t{1} << 16;

}  // namespace

Result<std::vector<uint8_t>> ReadDataFile(const std::string& path) {
  if (path.empty()) return Status::InvalidArgument("--data: empty path");
  // A corpus is held in memory whole: more than half the machine's memory is refused
  // before reading (a FIFO or a device such as /dev/zero is refused outright).
  const size_t limit = static_cast<size_t>(std::min(PhysicalMemoryBytes() / 2, uint64_t{1} << 40));
  Result<std::string> text = ReadInputFile(path, limit);
  if (!text.ok()) return Status::InvalidArgument("--data " + text.status().message());
  if (text->empty()) return Status::InvalidArgument("--data " + path + ": file is empty");
  return std::vector<uint8_t>(text->begin(), text->end());
}

Result<std::unique_ptr<DataSource>> DataSource::Create(const ModelConfig& config,
                                                       const DataOptions& options) {
  if (options.dp_size < 1 || options.dp_rank < 0 || options.dp_rank >= options.dp_size) {
    return Status::InvalidArgument("data-parallel rank out of range");
  }
  std::unique_ptr<DataSource> d(new DataSource(config, options));
  if (config.kind == ModelKind::kGpt) {
    if (!options.path.empty()) {
      PSZERO_ASSIGN_OR_RETURN(d->corpus_, ReadDataFile(options.path));
    } else {
      d->corpus_.resize(kSyntheticCorpusBytes);
      const uint64_t key = Mix(options.seed ^ 0x5eed0da7aULL);
      for (int64_t i = 0; i < kSyntheticCorpusBytes; ++i) {
        d->corpus_[i] = static_cast<uint8_t>(Mix(key + i) >> 56);
      }
    }
    const int64_t size = static_cast<int64_t>(d->corpus_.size());
    if (size < options.dp_size) {
      return Status::InvalidArgument("--data " + options.path + ": " + std::to_string(size) +
                                     " bytes cannot be split across " +
                                     std::to_string(options.dp_size) + " data-parallel ranks");
    }
    d->part_begin_ = size * options.dp_rank / options.dp_size;
    d->part_end_ = size * (options.dp_rank + 1) / options.dp_size;
  }
  return d;
}

Status DataSource::Next(int64_t step, int64_t micro, Batch* batch) const {
  const ModelConfig& c = config_;
  const uint64_t key = Mix(Mix(Mix(options_.seed) ^ static_cast<uint64_t>(step)) ^
                           static_cast<uint64_t>(options_.dp_rank));
  batch->first_row = micro * c.batch;
  if (c.kind == ModelKind::kMlp) {
    const ParamSpec spec{"mlp.input", {c.batch, c.d_model}, -1, 1, ParamInit::kNormal, 1.0f};
    const int64_t first = micro * c.batch * c.d_model;
    batch->inputs.resize(c.batch * c.d_model);
    for (size_t i = 0; i < batch->inputs.size(); ++i) {
      batch->inputs[i] = InitialValue(key, spec, first + static_cast<int64_t>(i));
    }
    return Status::Ok();
  }
  const int64_t part = part_end_ - part_begin_;
  batch->tokens.resize(c.batch * c.seq);
  batch->targets.resize(c.batch * c.seq);
  for (int64_t b = 0; b < c.batch; ++b) {
    const auto row = static_cast<uint64_t>(micro * c.batch + b);
    const int64_t start = static_cast<int64_t>(Mix(key + row) % static_cast<uint64_t>(part));
    for (int64_t j = 0; j < c.seq; ++j) {
      const int64_t at = part_begin_ + (start + j) % part;
      const int64_t next = part_begin_ + (start + j + 1) % part;
      batch->tokens[b * c.seq + j] = corpus_[at] % c.vocab;
      batch->targets[b * c.seq + j] = corpus_[next] % c.vocab;
    }
  }
  return Status::Ok();
}

}  // namespace pszero::model
