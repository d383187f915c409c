#include "common/report.h"

#include "common/atomic_file.h"

namespace pszero {

Status WriteJsonAtomic(const std::filesystem::path& path, const nlohmann::json& doc) {
  return WriteFileAtomic(path, doc.dump(2) + "\n");
}

nlohmann::json ToJson(const Summary& s) {
  return {{"count", s.count},   {"min", s.min}, {"max", s.max}, {"mean", s.mean},
          {"median", s.median}, {"p10", s.p10}, {"p90", s.p90}};
}

nlohmann::json ToJson(const MemoryTracker& tracker) {
  nlohmann::json out = nlohmann::json::object();
  for (Device device : {Device::kHost, Device::kCuda}) {
    const MemoryUsage total = tracker.Total(device);
    if (device == Device::kCuda && total.peak_bytes == 0) continue;
    nlohmann::json d = nlohmann::json::object();
    for (int c = 0; c < kNumMemoryCategories; ++c) {
      const auto category = static_cast<MemoryCategory>(c);
      const MemoryUsage u = tracker.Usage(category, device);
      d[std::string(MemoryCategoryName(category))] = {{"live_bytes", u.live_bytes},
                                                      {"peak_bytes", u.peak_bytes}};
    }
    d["total"] = {{"live_bytes", total.live_bytes}, {"peak_bytes", total.peak_bytes}};
    out[std::string(DeviceName(device))] = std::move(d);
  }
  return out;
}

}  // namespace pszero
