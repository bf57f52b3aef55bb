#pragma once
// CRC32C (Castagnoli) through ISA-L: hardware accelerated (SSE4.2 / PCLMUL, ARM CRC), the same
// polynomial iSCSI uses for its digests, so one well-kept library serves both the on-disk
// checksums and the wire. xxHash was the alternative: faster, but a second algorithm to carry.
#include <cstddef>
#include <cstdint>
#include <span>

namespace duplex {

// Standard CRC32C: crc32c("123456789") == 0xE3069283. `seed` chains calls: pass the previous result.
std::uint32_t crc32c(const void* data, std::size_t len, std::uint32_t seed = 0);
inline std::uint32_t crc32c_span(std::span<const std::byte> s, std::uint32_t seed = 0) {
  return crc32c(s.data(), s.size(), seed);
}

}  // namespace duplex
