// glog set-up for pszero processes: every line starts with the process tag ("[w3]",
// "[s0]", "[launch]") so that the interleaved output of a local cluster stays readable.
// Call once from main before logging; glog itself is process-wide.
#pragma once

#include <string>

namespace pszero {

// Logs to stderr with prefix "[tag] I1126 03:45:24.123456 file.cc:12] ".
void InitLogging(const char* argv0, const std::string& tag);

// Changes the tag once the process knows its role and rank (after rendezvous).
void SetLogTag(const std::string& tag);

}  // namespace pszero
