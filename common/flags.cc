#include "common/flags.h"

#include <cmath>
#include <iostream>
#include <new>
#include <sstream>

#include "common/version.h"

namespace pszero {

std::string VersionString() {
  std::string v = "pszero " PSZERO_VERSION_STRING;
#ifdef PSZERO_HAVE_CUDA
  v += " (cuda on)";
#else
  v += " (cuda off)";
#endif
  return v;
}

std::unique_ptr<CLI::App> MakeApp(const std::string& name, const std::string& description) {
  auto app = std::make_unique<CLI::App>(description, name);
  app->option_defaults()->always_capture_default();
  app->set_version_flag("--version", VersionString());
  app->get_formatter()->column_width(36);
  return app;
}

int GuardedMain(const std::string& name, const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    std::cerr << name << ": out of memory\n";
  } catch (const std::exception& e) {
    std::string what = e.what();
    for (char& c : what) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    std::cerr << name << ": internal error: " << what << "\n";
  } catch (...) {
    std::cerr << name << ": internal error: an exception of unknown type\n";
  }
  return 1;
}

CLI::Validator FiniteRange(double lo, double hi) {
  std::stringstream bounds;
  bounds << "[" << lo << " - " << hi << "]";
  CLI::Validator v(
      [lo, hi, range = bounds.str()](std::string& input) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(input, value)) {
          return "Value " + input + " is not a number in " + range;
        }
        if (!std::isfinite(value)) return "Value " + input + " is not a finite number in " + range;
        if (value < lo || value > hi) return "Value " + input + " not in range " + range;
        return std::string();
      },
      std::string("FLOAT in ") + bounds.str());
  return v;
}

std::optional<uint64_t> ParseDecimal(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9' || __builtin_mul_overflow(value, uint64_t{10}, &value) ||
        __builtin_add_overflow(value, static_cast<uint64_t>(c - '0'), &value)) {
      return std::nullopt;
    }
  }
  return value;
}

CLI::Validator NonEmpty() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        return input.empty() ? std::string("empty value") : std::string();
      },
      "");
}

namespace {

// CLI11 messages may span lines; the contract is one line.
std::string OneLine(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// CLI11 says "A subcommand is required" even when the user typed a wrong one; name it.
std::string UsageMessage(const CLI::App& app, int argc, const char* const* argv,
                         const CLI::ParseError& e) {
  const auto subcommands = app.get_subcommands({});
  if (subcommands.empty() || argc < 2 || argv[1][0] == '-') return e.what();
  for (const CLI::App* sub : subcommands) {
    if (sub->check_name(argv[1])) return e.what();
  }
  std::string names;
  for (const CLI::App* sub : subcommands) names += (names.empty() ? "" : ", ") + sub->get_name();
  return "unknown subcommand '" + std::string(argv[1]) + "' (expected one of: " + names + ")";
}

}  // namespace

std::optional<int> ParseFlags(CLI::App& app, int argc, const char* const* argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    std::cout << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion&) {
    std::cout << VersionString() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    std::cerr << app.get_name() << ": error: " << OneLine(UsageMessage(app, argc, argv, e)) << "\n";
    return kExitUsage;
  }
  return std::nullopt;
}

}  // namespace pszero
