#include "duplex/iscsi/pdu.h"

#include "duplex/base/crc32c.h"

namespace duplex::iscsi {

Status validate_bhs(const Bhs& h, std::uint32_t max_recv_data_segment, std::uint32_t max_ahs_bytes) {
  if (!is_initiator_opcode(h.raw_opcode()))
    return Status::error(Errc::invalid, "iSCSI PDU with opcode {:#04x}, not an initiator opcode",
                         h.raw_opcode());
  if (h.total_ahs_bytes() > max_ahs_bytes)
    return Status::error(Errc::invalid, "iSCSI PDU with {} bytes of AHS (at most {} accepted)",
                         h.total_ahs_bytes(), max_ahs_bytes);
  if (h.data_segment_length() > max_recv_data_segment)
    return Status::error(Errc::invalid,
                         "iSCSI PDU data segment of {} bytes exceeds MaxRecvDataSegmentLength {}",
                         h.data_segment_length(), max_recv_data_segment);
  return Status::ok();
}

std::array<std::uint8_t, kDigestSize> digest(std::span<const std::uint8_t> data) {
  const std::uint32_t crc = crc32c(data.data(), data.size());
  return {static_cast<std::uint8_t>(crc), static_cast<std::uint8_t>(crc >> 8),
          static_cast<std::uint8_t>(crc >> 16), static_cast<std::uint8_t>(crc >> 24)};
}

}  // namespace duplex::iscsi
