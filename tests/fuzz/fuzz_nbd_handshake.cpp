// libFuzzer target: the NBD handshake (client flags, option headers, every option's data, the
// negotiator's state machine), and whatever transmission follows a successful GO.
// Byte 0 picks the read chunk size and the TLS policy; the rest is the client's byte stream.
#include <cstddef>
#include <cstdint>

#include "run_session.h"

using namespace duplex::nbd;
using namespace duplex::nbd::testing;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static TestCatalogue* cat = new TestCatalogue(256 * 1024);
  NegotiationPolicy pol;
  pol.tls_required = data[0] & 0x80;
  pol.shutting_down = (data[0] & 0x60) == 0x60;
  const std::size_t chunk = (data[0] & 0x1f) + 1;
  std::vector<std::byte> in(reinterpret_cast<const std::byte*>(data + 1),
                            reinterpret_cast<const std::byte*>(data + size));
  (void)run_session(*cat, std::move(in), chunk == 32 ? (1 << 20) : chunk, pol);
  return 0;
}
