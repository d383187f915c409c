// Reading what a pszero job printed, for tests that run pszero-launch: the final
// parameters' hash, per-step losses, and glog timestamps (to time how fast a failure was
// noticed without any sleep in the test).
#pragma once

#include <map>
#include <regex>
#include <string>

namespace pszero::testing {

// The last "final_params_sha256 <hex>" in `out` (a restarted job prints one per attempt
// that ends); empty when there is none.
inline std::string PrintedSha(const std::string& out) {
  static const std::regex re("final_params_sha256 ([0-9a-f]{64})");
  std::string last;
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    last = (*it)[1].str();
  }
  return last;
}

// Worker 0's "step k/K loss L" lines: k -> L as printed.
inline std::map<int, std::string> PrintedLosses(const std::string& out) {
  static const std::regex re(R"(step (\d+)/\d+ loss (\S+))");
  std::map<int, std::string> losses;
  for (auto it = std::sregex_iterator(out.begin(), out.end(), re); it != std::sregex_iterator();
       ++it) {
    losses[std::stoi((*it)[1].str())] = (*it)[2].str();
  }
  return losses;
}

// Seconds since midnight of a glog line ("[w0] E1126 06:19:25.656236 file.cc:219] ..."),
// or -1 when the line has no glog prefix.
inline double GlogSeconds(const std::string& line) {
  static const std::regex re(R"(\] [IWEF]\d{4} (\d\d):(\d\d):(\d\d\.\d+) )");
  std::smatch m;
  if (!std::regex_search(line, m, re)) return -1.0;
  return std::stoi(m[1].str()) * 3600.0 + std::stoi(m[2].str()) * 60.0 + std::stod(m[3].str());
}

}  // namespace pszero::testing
