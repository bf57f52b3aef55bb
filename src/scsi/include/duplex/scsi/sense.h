#pragma once
// SCSI status, sense keys and additional sense codes (SPC-4), and the fixed-format sense data
// every error carries. Hosts act on these exact values (frontends.md §2.1), so they live in one
// place.
#include <array>
#include <cstdint>

namespace duplex::scsi {

enum class ScsiStatus : std::uint8_t {
  good = 0x00,
  check_condition = 0x02,
  busy = 0x08,
  reservation_conflict = 0x18,
  task_set_full = 0x28,
  task_aborted = 0x40,
};

enum class SenseKey : std::uint8_t {
  no_sense = 0x0,
  not_ready = 0x2,
  medium_error = 0x3,
  hardware_error = 0x4,
  illegal_request = 0x5,
  unit_attention = 0x6,
  data_protect = 0x7,
  aborted_command = 0xb,
  miscompare = 0xe,
};

struct Asc {
  std::uint8_t asc = 0;
  std::uint8_t ascq = 0;
  friend bool operator==(const Asc&, const Asc&) = default;
};

namespace asc {
inline constexpr Asc kNone{0x00, 0x00};
inline constexpr Asc kWriteError{0x0c, 0x00};
inline constexpr Asc kUnrecoveredReadError{0x11, 0x00};
inline constexpr Asc kParameterListLengthError{0x1a, 0x00};
inline constexpr Asc kMiscompareDuringVerify{0x1d, 0x00};
inline constexpr Asc kInvalidOpcode{0x20, 0x00};
inline constexpr Asc kLbaOutOfRange{0x21, 0x00};
inline constexpr Asc kInvalidFieldInCdb{0x24, 0x00};
inline constexpr Asc kLunNotSupported{0x25, 0x00};
inline constexpr Asc kInvalidFieldInParameterList{0x26, 0x00};
inline constexpr Asc kWriteProtected{0x27, 0x00};
inline constexpr Asc kSpaceAllocationFailedWriteProtect{0x27, 0x07};
inline constexpr Asc kPowerOnReset{0x29, 0x00};
inline constexpr Asc kLunReset{0x29, 0x03};
inline constexpr Asc kNexusLoss{0x29, 0x07};
inline constexpr Asc kModeParametersChanged{0x2a, 0x01};
inline constexpr Asc kAsymmetricAccessStateChanged{0x2a, 0x06};
inline constexpr Asc kCapacityDataChanged{0x2a, 0x09};
inline constexpr Asc kCommandsClearedByAnotherInitiator{0x2f, 0x00};
inline constexpr Asc kSavingParametersNotSupported{0x39, 0x00};
inline constexpr Asc kInternalTargetFailure{0x44, 0x00};
inline constexpr Asc kNotReadyStandby{0x04, 0x0b};
inline constexpr Asc kNotReadyUnavailable{0x04, 0x0c};
inline constexpr Asc kLogicalUnitNotReadyShutdown{0x04, 0x00};
}  // namespace asc

// Fixed-format sense data (response code 0x70), 18 bytes.
struct Sense {
  SenseKey key = SenseKey::no_sense;
  Asc code;
  bool information_valid = false;
  std::uint64_t information = 0;  // low 32 bits are encoded
  // Sense-key specific field pointer (ILLEGAL REQUEST): which CDB / parameter byte (and bit) is bad.
  bool field_pointer_valid = false;
  bool in_cdb = true;
  std::uint16_t field_byte = 0;
  bool bit_valid = false;
  std::uint8_t field_bit = 0;

  static constexpr std::size_t kSize = 18;
  std::array<std::uint8_t, kSize> encode() const;
};

}  // namespace duplex::scsi
