#include "duplex/scsi/sense.h"

namespace duplex::scsi {

std::array<std::uint8_t, Sense::kSize> Sense::encode() const {
  std::array<std::uint8_t, kSize> s{};
  s[0] = 0x70 | (information_valid ? 0x80 : 0x00);
  s[2] = static_cast<std::uint8_t>(key);
  const auto info = static_cast<std::uint32_t>(information);
  s[3] = static_cast<std::uint8_t>(info >> 24);
  s[4] = static_cast<std::uint8_t>(info >> 16);
  s[5] = static_cast<std::uint8_t>(info >> 8);
  s[6] = static_cast<std::uint8_t>(info);
  s[7] = kSize - 8;  // additional sense length
  s[12] = code.asc;
  s[13] = code.ascq;
  if (field_pointer_valid) {
    s[15] = static_cast<std::uint8_t>(0x80 | (in_cdb ? 0x40 : 0x00) | (bit_valid ? 0x08 : 0x00) |
                                      (field_bit & 0x07));
    s[16] = static_cast<std::uint8_t>(field_byte >> 8);
    s[17] = static_cast<std::uint8_t>(field_byte);
  }
  return s;
}

}  // namespace duplex::scsi
