// Command-line flags for every pszero binary, on CLI11.
//
// MakeApp() gives an app whose --help lists every flag with its default and which knows
// --version. ParseFlags() turns CLI11's outcome into pszero's contract: --help and
// --version exit 0; an unknown flag or a bad value prints exactly one line naming the
// flag and why, and exits 2. Not thread-safe (called once, from main).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace pszero {

inline constexpr int kExitUsage = 2;

std::unique_ptr<CLI::App> MakeApp(const std::string& name, const std::string& description);

// Parses argv into `app`. Returns std::nullopt when the program should go on, or the
// exit code it should return now (0 after --help/--version, kExitUsage after an error,
// with the one-line message already written to stderr).
std::optional<int> ParseFlags(CLI::App& app, int argc, const char* const* argv);

// A range check for floating-point flags: like CLI::Range(lo, hi) (the same help text),
// and it also refuses NaN, which CLI::Range lets through (every comparison with NaN is
// false), and infinities. Use it for every double/float flag.
CLI::Validator FiniteRange(double lo, double hi);

// `text` as a non-negative decimal integer: digits only (no sign, no spaces, not empty),
// no overflow past 2^64 - 1; nullopt otherwise. (std::stoull takes "-8" as 2^64 - 8.)
std::optional<uint64_t> ParseDecimal(std::string_view text);

// Refuses an empty value ("--report ''"), which would otherwise read as "not given".
CLI::Validator NonEmpty();

// Runs a binary's main body; an exception that escapes it (a bug, or memory running out)
// ends the program with one line, "NAME: out of memory" for std::bad_alloc or "NAME:
// internal error: what()", and exit code 1, instead of std::terminate's abort.
int GuardedMain(const std::string& name, const std::function<int()>& body);

// The version string printed by --version ("pszero 0.1.0 (cuda on)").
std::string VersionString();

}  // namespace pszero
