// libFuzzer target: the transmission phase. A valid handshake (structured replies and two meta
// contexts, or simple replies, chosen by byte 0) is prepended; the fuzzer's bytes are the request
// stream: headers, payloads, truncation, bad magic, any command/flag/offset/length.
// Invariant checked besides the sanitizers: every reply the server sends has a valid magic and
// lies within the output.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "run_session.h"

using namespace duplex;
using namespace duplex::nbd;
using namespace duplex::nbd::testing;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static TestCatalogue* cat = new TestCatalogue(256 * 1024);
  const bool structured = data[0] & 1;
  const bool read_only = data[0] & 2;
  const std::size_t chunk = (data[0] >> 2) ? (data[0] >> 2) : (1 << 20);
  Wire w = standard_handshake(structured, read_only ? "ro" : "vol");
  w.b.insert(w.b.end(), reinterpret_cast<const std::byte*>(data + 1),
             reinterpret_cast<const std::byte*>(data + size));
  auto r = run_session(*cat, std::move(w.b), chunk);
  if (!r.transmitted) std::abort();  // the fixed handshake must always succeed
  // Skip the handshake replies, then walk the replies.
  std::size_t pos = sizeof(ServerGreeting);
  while (pos + 20 <= r.out.size()) {
    const auto opt = load_be<std::uint32_t>(r.out.data() + pos + 8);
    const auto type = load_be<std::uint32_t>(r.out.data() + pos + 12);
    pos += 20 + load_be<std::uint32_t>(r.out.data() + pos + 16);
    if (opt == kOptGo && type == kRepAck) break;
  }
  while (pos < r.out.size()) {
    if (pos + 16 > r.out.size()) std::abort();
    const auto magic = load_be<std::uint32_t>(r.out.data() + pos);
    if (magic == kSimpleReplyMagic) {
      pos += 16;
      // A successful simple READ reply is followed by data whose length only the request knows;
      // the simple-reply stream cannot be walked further without it.
      break;
    }
    if (magic != kStructuredReplyMagic || pos + 20 > r.out.size()) std::abort();
    pos += 20 + load_be<std::uint32_t>(r.out.data() + pos + 16);
    if (pos > r.out.size()) std::abort();
  }
  return 0;
}
