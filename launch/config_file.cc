#include "launch/config_file.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace pszero {

namespace {

// "--name" of every flag given on the command line (also "--name=value").
std::set<std::string> GivenFlags(const std::vector<std::string>& args) {
  std::set<std::string> given;
  for (const std::string& a : args) {
    if (a.rfind("--", 0) != 0 || a.size() == 2) continue;
    given.insert(a.substr(0, a.find('=')));
  }
  return given;
}

}  // namespace

Result<std::vector<std::string>> ExpandConfigFlags(const std::vector<std::string>& args) {
  std::string path;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) return Status::InvalidArgument("--config: needs a file");
      path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
    } else {
      rest.push_back(args[i]);
    }
  }
  if (path.empty()) return rest;
  std::ifstream in(path);
  if (!in) return Status::InvalidArgument("--config: " + path + ": cannot read");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    return Status::InvalidArgument("--config: " + path + ": not JSON: " + what);
  }
  if (!doc.is_object()) {
    return Status::InvalidArgument("--config: " + path + ": expected a JSON object of flags");
  }
  const std::set<std::string> given = GivenFlags(rest);
  std::vector<std::string> out;
  for (const auto& [key, value] : doc.items()) {
    std::string flag = "--" + key;
    for (char& c : flag) {
      if (c == '_') c = '-';
    }
    if (key.empty() || key[0] == '-' || flag == "--config") {
      return Status::InvalidArgument("--config: " + path + ": bad key '" + key + "'");
    }
    if (given.count(flag) > 0) continue;  // the command line wins
    if (value.is_boolean()) {
      if (value.get<bool>()) out.push_back(flag);
    } else if (value.is_string()) {
      out.push_back(flag);
      out.push_back(value.get<std::string>());
    } else if (value.is_number_integer() || value.is_number_unsigned()) {
      out.push_back(flag);
      out.push_back(value.dump());
    } else if (value.is_number_float()) {
      out.push_back(flag);
      out.push_back(value.dump());
    } else {
      return Status::InvalidArgument("--config: " + path + ": '" + key +
                                     "' must be a string, number or boolean");
    }
  }
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

}  // namespace pszero
