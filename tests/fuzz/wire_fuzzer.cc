// libFuzzer target for the control-plane decoder (common/wire.h): any bytes, decoded as a
// stream of frames and as a payload of every type, must give a Status or a message, never
// a crash, a leak or undefined behaviour; whatever decodes must survive a re-encode.
// Built with -DPSZERO_FUZZ=ON (clang); scripts/test.sh runs it for a bounded number of runs.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace pszero::wire;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // As a stream of frames, the way the service reads a connection.
  std::string_view rest = bytes;
  while (!rest.empty()) {
    size_t consumed = 0;
    auto m = DecodeFrame(rest, &consumed, 4096);
    if (!m.ok()) break;
    size_t again = 0;
    auto back = DecodeFrame(EncodeFrame(*m), &again, kDefaultMaxPayloadBytes);
    if (!back.ok() || !(*back == *m)) __builtin_trap();
    rest.remove_prefix(consumed);
  }
  // As the payload of the type named by the first byte.
  if (size > 0) {
    const auto type = static_cast<MessageType>(data[0] % 13);
    if (data[0] % 13 != 0) (void)DecodePayload(type, bytes.substr(1));
  }
  return 0;
}
