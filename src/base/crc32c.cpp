#include "duplex/base/crc32c.h"

#include <isa-l/crc.h>

namespace duplex {

std::uint32_t crc32c(const void* data, std::size_t len, std::uint32_t seed) {
  // ISA-L's crc32_iscsi works on the un-inverted register: invert on the way in and out so that
  // results chain like every other CRC32C implementation.
  std::uint32_t crc = ~seed;
  const auto* p = static_cast<const unsigned char*>(data);
  while (len > 0) {
    const int chunk = len > (1u << 30) ? (1 << 30) : static_cast<int>(len);
    crc = crc32_iscsi(const_cast<unsigned char*>(p), chunk, crc);
    p += chunk;
    len -= static_cast<std::size_t>(chunk);
  }
  return ~crc;
}

}  // namespace duplex
