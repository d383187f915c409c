#include "common/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>

#include "common/file_util.h"

namespace pszero {

namespace {

// A token is 64 hex characters; a file much larger than that is not a token file.
constexpr size_t kMaxTokenFileBytes = 64 << 10;

}  // namespace

Result<std::string> SecureRandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    return Status::Internal("RAND_bytes failed: the system has no usable entropy source");
  }
  return out;
}

Result<std::string> GenerateClusterToken() {
  PSZERO_ASSIGN_OR_RETURN(std::string raw, SecureRandomBytes(32));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : raw) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 15]);
  }
  return hex;
}

Result<std::string> LoadClusterToken(const std::string& token_file) {
  std::string token;
  if (!token_file.empty()) {
    Result<std::string> text = ReadInputFile(token_file, kMaxTokenFileBytes);
    if (!text.ok()) return Status::InvalidArgument("token file " + text.status().message());
    token = std::move(*text);
    if (token.find('\0') != std::string::npos) {
      return Status::InvalidArgument("token file " + token_file + " contains a NUL byte");
    }
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ' ||
                              token.back() == '\t')) {
      token.pop_back();
    }
    if (token.empty()) return Status::InvalidArgument("token file " + token_file + " is empty");
    return token;
  }
  const char* env = std::getenv(kTokenEnvVar);
  if (env == nullptr || *env == '\0') {
    return Status::NotFound(std::string("no cluster token: set ") + kTokenEnvVar +
                            " or pass --token-file");
  }
  return std::string(env);
}

std::string JoinMac(std::string_view token, std::string_view nonce, Role role,
                    int32_t requested_rank) {
  std::string data(nonce);
  data.push_back(static_cast<char>(role));
  const auto rank = static_cast<uint32_t>(requested_rank);
  for (int i = 0; i < 4; ++i) data.push_back(static_cast<char>((rank >> (8 * i)) & 0xff));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  // An empty token is legal input (a client without one) and must still produce a MAC
  // the service will refuse; HMAC() wants a non-null key pointer.
  static const char kEmpty = 0;
  HMAC(EVP_sha256(), token.empty() ? &kEmpty : token.data(), static_cast<int>(token.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), mac, &mac_len);
  return std::string(reinterpret_cast<const char*>(mac), mac_len);
}

bool MacEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace pszero
