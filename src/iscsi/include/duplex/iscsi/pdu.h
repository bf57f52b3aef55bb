#pragma once
// iSCSI PDU framing (RFC 7143 §11): the 48-byte Basic Header Segment, its opcodes and fields, and
// validation of what a peer sends before anything trusts it. All multi-byte fields are big-endian.
#include <array>
#include <cstdint>
#include <span>

#include "duplex/base/endian.h"
#include "duplex/base/status.h"

namespace duplex::iscsi {

inline constexpr std::size_t kBhsSize = 48;
inline constexpr std::size_t kDigestSize = 4;
inline constexpr std::uint32_t kReservedTag = 0xffffffffu;

enum class Opcode : std::uint8_t {
  // Initiator to target.
  nop_out = 0x00,
  scsi_command = 0x01,
  task_management = 0x02,
  login_request = 0x03,
  text_request = 0x04,
  data_out = 0x05,
  logout_request = 0x06,
  snack = 0x10,
  // Target to initiator.
  nop_in = 0x20,
  scsi_response = 0x21,
  task_management_response = 0x22,
  login_response = 0x23,
  text_response = 0x24,
  data_in = 0x25,
  logout_response = 0x26,
  r2t = 0x31,
  async_message = 0x32,
  reject = 0x3f,
};

// Reject reasons (RFC 7143 §11.17.1).
enum class RejectReason : std::uint8_t {
  data_digest_error = 0x02,
  snack_reject = 0x03,
  protocol_error = 0x04,
  command_not_supported = 0x05,
  immediate_command_reject = 0x06,
  task_in_progress = 0x07,
  invalid_data_ack = 0x08,
  invalid_pdu_field = 0x09,
  long_op_reject = 0x0a,
  waiting_for_logout = 0x0c,
};

// Login status class/detail (RFC 7143 §11.13.5), as one 16-bit value.
enum class LoginStatus : std::uint16_t {
  success = 0x0000,
  target_moved_temporarily = 0x0101,
  initiator_error = 0x0200,
  authentication_failure = 0x0201,
  authorization_failure = 0x0202,
  not_found = 0x0203,
  target_removed = 0x0204,
  unsupported_version = 0x0205,
  too_many_connections = 0x0206,
  missing_parameter = 0x0207,
  cannot_include_in_session = 0x0208,
  session_type_not_supported = 0x0209,
  session_does_not_exist = 0x020a,
  invalid_during_login = 0x020b,
  target_error = 0x0300,
  service_unavailable = 0x0301,
  out_of_resources = 0x0302,
};

// A view of a received BHS with accessors named after the RFC's fields.
class Bhs {
 public:
  Bhs() = default;
  explicit Bhs(std::span<const std::uint8_t, kBhsSize> raw) { std::copy(raw.begin(), raw.end(), b_.begin()); }
  explicit Bhs(const std::array<std::uint8_t, kBhsSize>& raw) : b_(raw) {}

  std::uint8_t raw_opcode() const { return b_[0] & 0x3f; }
  Opcode opcode() const { return static_cast<Opcode>(raw_opcode()); }
  bool immediate() const { return b_[0] & 0x40; }
  bool final_bit() const { return b_[1] & 0x80; }
  std::uint8_t flags() const { return b_[1]; }
  std::uint32_t total_ahs_bytes() const { return std::uint32_t{b_[4]} * 4; }
  std::uint32_t data_segment_length() const {
    return (std::uint32_t{b_[5]} << 16) | (std::uint32_t{b_[6]} << 8) | b_[7];
  }
  std::uint64_t lun() const { return load_be<std::uint64_t>(&b_[8]); }
  std::uint32_t itt() const { return load_be<std::uint32_t>(&b_[16]); }
  std::uint32_t u32(std::size_t at) const { return load_be<std::uint32_t>(&b_[at]); }
  std::uint16_t u16(std::size_t at) const { return load_be<std::uint16_t>(&b_[at]); }
  std::uint8_t byte(std::size_t at) const { return b_[at]; }
  std::span<const std::uint8_t> cdb() const { return {&b_[32], 16}; }
  const std::array<std::uint8_t, kBhsSize>& bytes() const { return b_; }

  // Field offsets shared by several PDUs.
  static constexpr std::size_t kTtt = 20, kCmdSn = 24, kExpStatSn = 28, kStatSn = 24, kExpCmdSn = 28,
                               kMaxCmdSn = 32, kDataSn = 36, kBufferOffset = 40, kEdtl = 20;

 private:
  std::array<std::uint8_t, kBhsSize> b_{};
};

// Builds an outgoing BHS.
class BhsBuilder {
 public:
  explicit BhsBuilder(Opcode op) { b_[0] = static_cast<std::uint8_t>(op); }
  BhsBuilder& flags(std::uint8_t f) {
    b_[1] = f;
    return *this;
  }
  BhsBuilder& byte(std::size_t at, std::uint8_t v) {
    b_[at] = v;
    return *this;
  }
  BhsBuilder& u16(std::size_t at, std::uint16_t v) {
    store_be(&b_[at], v);
    return *this;
  }
  BhsBuilder& u32(std::size_t at, std::uint32_t v) {
    store_be(&b_[at], v);
    return *this;
  }
  BhsBuilder& u64(std::size_t at, std::uint64_t v) {
    store_be(&b_[at], v);
    return *this;
  }
  BhsBuilder& data_segment_length(std::uint32_t n) {
    b_[5] = static_cast<std::uint8_t>(n >> 16);
    b_[6] = static_cast<std::uint8_t>(n >> 8);
    b_[7] = static_cast<std::uint8_t>(n);
    return *this;
  }
  BhsBuilder& itt(std::uint32_t v) { return u32(16, v); }
  BhsBuilder& copy(std::size_t at, std::span<const std::uint8_t> src) {
    std::copy(src.begin(), src.end(), b_.begin() + static_cast<std::ptrdiff_t>(at));
    return *this;
  }
  const std::array<std::uint8_t, kBhsSize>& bytes() const { return b_; }

 private:
  std::array<std::uint8_t, kBhsSize> b_{};
};

inline bool is_initiator_opcode(std::uint8_t op) { return op <= 0x06 || op == 0x10; }

// Checks what can be checked from the BHS alone, before any AHS or data is read: a known
// initiator opcode, AHS within its bound, a data segment within what we declared we receive.
// Errc::invalid -> answer with a Reject (protocol error) or close the connection, per the RFC.
Status validate_bhs(const Bhs& h, std::uint32_t max_recv_data_segment, std::uint32_t max_ahs_bytes = 256);

// Padding of a data segment to a multiple of 4 bytes.
inline std::uint32_t padded(std::uint32_t n) { return (n + 3) & ~3u; }

// Header and data digests: CRC32C, sent least-significant byte first (RFC 3720 B.4).
std::array<std::uint8_t, kDigestSize> digest(std::span<const std::uint8_t> data);

// Serial number arithmetic (RFC 1982) for CmdSN/StatSN/DataSN windows.
inline bool sn_lt(std::uint32_t a, std::uint32_t b) { return a != b && static_cast<std::int32_t>(a - b) < 0; }
inline bool sn_le(std::uint32_t a, std::uint32_t b) { return a == b || sn_lt(a, b); }

}  // namespace duplex::iscsi
