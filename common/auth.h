// Cluster-token authentication of control-plane joins (OpenSSL).
//
// Every process of a job holds the same secret token. The rendezvous service sends each
// new connection a random nonce; the client proves it holds the token by answering
// HMAC-SHA256(token, nonce ‖ role ‖ requested rank), which the service recomputes and
// compares in constant time. The token itself never crosses the wire and never appears
// on a command line: it comes from a file (--token-file) or the PSZERO_TOKEN environment
// variable. Pure functions; thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"
#include "common/wire.h"

namespace pszero {

inline constexpr const char* kTokenEnvVar = "PSZERO_TOKEN";

// `n` bytes from OpenSSL's CSPRNG (RAND_bytes).
Result<std::string> SecureRandomBytes(size_t n);

// A fresh token for a local job: 32 random bytes as 64 hex characters.
Result<std::string> GenerateClusterToken();

// The token from `token_file` when it is not empty (trailing whitespace removed), else
// from $PSZERO_TOKEN. With a file: InvalidArgument "token file ..." when it is not a
// regular file (a FIFO is never waited on), is empty, or contains a NUL byte. Without
// one: NotFound when $PSZERO_TOKEN is unset or empty.
Result<std::string> LoadClusterToken(const std::string& token_file);

// HMAC-SHA256(token, nonce ‖ role byte ‖ requested_rank as little-endian i32).
std::string JoinMac(std::string_view token, std::string_view nonce, Role role,
                    int32_t requested_rank);

// Constant-time equality (CRYPTO_memcmp); false when the sizes differ.
bool MacEquals(std::string_view a, std::string_view b);

}  // namespace pszero
