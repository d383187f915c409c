#include "launch/hostfile.h"

#include <set>
#include <sstream>

#include "common/file_util.h"

namespace pszero {

Result<std::vector<HostSlots>> ParseHostfile(const std::string& text, const std::string& name) {
  std::vector<HostSlots> hosts;
  std::set<std::string> seen;
  std::istringstream in(text);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    ++number;
    const std::string where = name + ":" + std::to_string(number) + ": ";
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.erase(hash);
    std::istringstream words(line);
    HostSlots entry;
    if (!(words >> entry.host)) continue;  // blank or comment only
    // A host that starts with '-' would reach ssh's command line as an option ("-F file"
    // loads another ssh config, "-oProxyCommand=..." runs a command).
    if (entry.host[0] == '-') {
      return Status::InvalidArgument(where + "host '" + entry.host +
                                     "' starts with '-' (not a host name)");
    }
    if (entry.host.find('=') != std::string::npos) {
      return Status::InvalidArgument(where + "expected 'host slots=N', not '" + entry.host + "'");
    }
    for (std::string word; words >> word;) {
      if (word.rfind("slots=", 0) != 0) {
        return Status::InvalidArgument(where + "unknown field '" + word +
                                       "' (expected 'host slots=N')");
      }
      const std::string value = word.substr(6);
      size_t used = 0;
      int slots = 0;
      try {
        slots = std::stoi(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (value.empty() || used != value.size() || slots < 1 || slots > 4096) {
        return Status::InvalidArgument(where + "bad slots '" + value + "' (an integer 1..4096)");
      }
      entry.slots = slots;
    }
    if (!seen.insert(entry.host).second) {
      return Status::InvalidArgument(where + "host '" + entry.host + "' listed twice");
    }
    hosts.push_back(std::move(entry));
  }
  if (hosts.empty()) return Status::InvalidArgument(name + ": no hosts");
  return hosts;
}

Result<std::vector<HostSlots>> ReadHostfile(const std::string& path) {
  PSZERO_ASSIGN_OR_RETURN(std::string text, ReadInputFile(path));
  return ParseHostfile(text, path);
}

}  // namespace pszero
