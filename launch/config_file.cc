#include "launch/config_file.h"

#include <nlohmann/json.hpp>
#include <set>

#include "common/file_util.h"

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

Result<std::vector<std::string>> ExpandConfigFlags(const std::vector<std::string>& args,
                                                   const CLI::App& app) {
  std::optional<std::string> given_path;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    std::optional<std::string> path;
    if (args[i] == "--config") {
      if (i + 1 >= args.size()) return Status::InvalidArgument("--config: needs a file");
      path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
    } else {
      rest.push_back(args[i]);
      continue;
    }
    if (given_path) return Status::InvalidArgument("--config: given twice (one file only)");
    if (path->empty()) return Status::InvalidArgument("--config: empty file name");
    given_path = path;
  }
  if (!given_path) return rest;
  const std::string& path = *given_path;
  const std::string where = "--config " + path + ": ";
  Result<std::string> text = ReadInputFile(path);
  if (!text.ok()) return Status::InvalidArgument("--config " + text.status().message());
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    std::string what = e.what();
    for (char& c : what) {
      if (c == '\n') c = ' ';
    }
    return Status::InvalidArgument(where + "not JSON: " + what);
  }
  if (!doc.is_object()) return Status::InvalidArgument(where + "expected a JSON object of flags");
  const std::set<std::string> given = GivenFlags(rest);
  std::vector<std::string> out;
  for (const auto& [key, value] : doc.items()) {
    std::string flag = "--" + key;
    for (char& c : flag) {
      if (c == '_') c = '-';
    }
    if (key.empty() || key[0] == '-' || flag == "--config" ||
        flag.find_first_of("= \t\n") != std::string::npos) {
      return Status::InvalidArgument(where + "bad key '" + key + "'");
    }
    const CLI::Option* option = app.get_option_no_throw(flag);
    if (option == nullptr || flag == "--help" || flag == "--version") {
      return Status::InvalidArgument(where + "unknown key '" + key + "'");
    }
    const bool takes_value = option->get_expected_max() > 0;
    if (value.is_boolean()) {
      if (takes_value) {
        return Status::InvalidArgument(where + "'" + key + "' takes a value, not " + value.dump());
      }
    } else if (!takes_value) {
      return Status::InvalidArgument(where + "'" + key +
                                     "' is a flag without value: true or false");
    } else if (!value.is_string() && !value.is_number()) {
      return Status::InvalidArgument(where + "'" + key + "' must be a string or a number");
    }
    if (given.count(flag) > 0) continue;  // the command line wins
    if (value.is_boolean()) {
      if (value.get<bool>()) out.push_back(flag);
    } else if (value.is_string()) {
      out.push_back(flag);
      out.push_back(value.get<std::string>());
    } else {
      out.push_back(flag);
      out.push_back(value.dump());
    }
  }
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

}  // namespace pszero
