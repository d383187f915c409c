#include "common/ps/ps_protocol.h"

#include <algorithm>
#include <cstring>
#include <sstream>

namespace pszero::ps {

std::string_view ConsistencyName(Consistency c) {
  switch (c) {
    case Consistency::kBsp:
      return "bsp";
    case Consistency::kSsp:
      return "ssp";
    case Consistency::kAsp:
      return "asp";
  }
  return "?";
}

Result<Consistency> ParseConsistency(std::string_view name) {
  if (name == "bsp") return Consistency::kBsp;
  if (name == "ssp") return Consistency::kSsp;
  if (name == "asp") return Consistency::kAsp;
  return Status::InvalidArgument("consistency must be bsp, ssp or asp, not '" + std::string(name) +
                                 "'");
}

std::string ServerConfigKey(int server_index) {
  return "pszero/ps/config/" + std::to_string(server_index);
}

std::string EncodeServerConfig(const ServerConfig& c) {
  return "slice_bytes=" + std::to_string(c.slice_bytes) +
         " consistency=" + std::string(ConsistencyName(c.consistency)) +
         " staleness=" + std::to_string(c.staleness) + " optimizer=" + c.optimizer +
         (c.grad_accum != 1 ? " grad_accum=" + std::to_string(c.grad_accum) : std::string());
}

Result<ServerConfig> ParseServerConfig(std::string_view text) {
  ServerConfig c;
  bool have_slice = false;
  std::istringstream in{std::string(text)};
  std::string field;
  while (in >> field) {
    const size_t eq = field.find('=');
    if (eq == std::string::npos) {
      return Status::InvalidArgument("ps server config: '" + field + "' is not key=value");
    }
    const std::string key = field.substr(0, eq);
    const std::string value = field.substr(eq + 1);
    try {
      if (key == "slice_bytes") {
        c.slice_bytes = std::stoll(value);
        have_slice = c.slice_bytes >= 4;
      } else if (key == "consistency") {
        PSZERO_ASSIGN_OR_RETURN(c.consistency, ParseConsistency(value));
      } else if (key == "staleness") {
        c.staleness = std::stoi(value);
      } else if (key == "optimizer") {
        c.optimizer = value;
      } else if (key == "grad_accum") {
        c.grad_accum = std::stoi(value);
      }  // unknown keys: a newer server; ignored
    } catch (const std::exception&) {
      return Status::InvalidArgument("ps server config: bad value in '" + field + "'");
    }
  }
  if (!have_slice) {
    return Status::InvalidArgument("ps server config '" + std::string(text) +
                                   "' has no valid slice_bytes");
  }
  return c;
}

Result<SliceMap> SliceMap::Create(int64_t numel, int64_t slice_bytes, int num_servers) {
  if (numel < 1) return Status::InvalidArgument("slice map: numel must be >= 1");
  if (slice_bytes < 4) return Status::InvalidArgument("slice map: slice bytes must be >= 4");
  if (num_servers < 1) return Status::InvalidArgument("slice map: servers must be >= 1");
  SliceMap map;
  map.numel_ = numel;
  map.num_servers_ = num_servers;
  const int64_t target = slice_bytes / 4;
  // Enough slices for the target size, and at least one per server while elements last,
  // so that every server works on every push.
  int64_t count = std::max((numel + target - 1) / target, std::min<int64_t>(num_servers, numel));
  int64_t per = (numel + count - 1) / count;
  // Slices start on 64-byte boundaries when that keeps the count.
  const int64_t aligned = (per + 15) / 16 * 16;
  if ((numel + aligned - 1) / aligned == count) per = aligned;
  count = (numel + per - 1) / per;
  map.slice_numel_ = per;
  map.slices_.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    Slice s;
    s.index = static_cast<int32_t>(i);
    s.begin = i * per;
    s.numel = std::min(per, numel - s.begin);
    s.server = static_cast<int32_t>(i % num_servers);
    map.slices_.push_back(s);
  }
  return map;
}

std::vector<int> SliceMap::SlicesOf(int server) const {
  std::vector<int> out;
  for (const Slice& s : slices_) {
    if (s.server == server) out.push_back(s.index);
  }
  return out;
}

int64_t SliceMap::ServerNumel(int server) const {
  int64_t n = 0;
  for (const Slice& s : slices_) {
    if (s.server == server) n += s.numel;
  }
  return n;
}

std::pair<int, int> SliceMap::SlicesInside(int64_t begin, int64_t end) const {
  begin = std::clamp<int64_t>(begin, 0, numel_);
  end = std::clamp<int64_t>(end, begin, numel_);
  const int64_t first = (begin + slice_numel_ - 1) / slice_numel_;
  const int64_t last = end == numel_ ? num_slices() : end / slice_numel_;
  if (last <= first) return {0, 0};
  return {static_cast<int>(first), static_cast<int>(last)};
}

std::pair<int, int> SliceMap::SlicesTouching(int64_t begin, int64_t end) const {
  begin = std::clamp<int64_t>(begin, 0, numel_);
  end = std::clamp<int64_t>(end, begin, numel_);
  if (end == begin) return {0, 0};
  return {static_cast<int>(begin / slice_numel_), static_cast<int>((end - 1) / slice_numel_ + 1)};
}

std::string SliceMap::Describe() const {
  std::ostringstream os;
  const double mean_bytes = 4.0 * static_cast<double>(numel_) / num_servers_;
  os << "slice map: " << numel_ << " elements, " << num_slices() << " slices of "
     << 4 * slice_numel_ << " bytes over " << num_servers_ << " servers";
  for (int s = 0; s < num_servers_; ++s) {
    os << "\n  server " << s << ": " << SlicesOf(s).size() << " slices, " << 4 * ServerNumel(s)
       << " bytes (mean " << static_cast<int64_t>(mean_bytes) << ")";
  }
  return os.str();
}

template <typename H>
Result<H> DecodeHeader(std::span<const std::byte> bytes) {
  if (bytes.size() != sizeof(H)) {
    return Status::InvalidArgument("ps header of " + std::to_string(bytes.size()) +
                                   " bytes, expected " + std::to_string(sizeof(H)));
  }
  H h;
  std::memcpy(&h, bytes.data(), sizeof(H));
  if (h.magic != kMagic) return Status::InvalidArgument("ps header with a bad magic number");
  return h;
}
template Result<RequestHeader> DecodeHeader<RequestHeader>(std::span<const std::byte>);
template Result<ReplyHeader> DecodeHeader<ReplyHeader>(std::span<const std::byte>);
template Result<StatsReplyHeader> DecodeHeader<StatsReplyHeader>(std::span<const std::byte>);

std::span<const std::byte> HeaderBytes(const RequestHeader& h) {
  return {reinterpret_cast<const std::byte*>(&h), sizeof(h)};
}
std::span<const std::byte> HeaderBytes(const ReplyHeader& h) {
  return {reinterpret_cast<const std::byte*>(&h), sizeof(h)};
}
std::span<const std::byte> HeaderBytes(const StatsReplyHeader& h) {
  return {reinterpret_cast<const std::byte*>(&h), sizeof(h)};
}

void SetMessage(ReplyHeader& h, std::string_view message) {
  const size_t n = std::min(message.size(), sizeof(h.message) - 1);
  std::memcpy(h.message, message.data(), n);
  h.message[n] = '\0';
}

}  // namespace pszero::ps
