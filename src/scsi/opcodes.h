#pragma once
// Operation codes we implement, their CDB layouts and the limits we advertise (VPD 0xB0). The
// table of supported commands (REPORT SUPPORTED OPERATION CODES) is built from the same list, so
// what we report is what we do.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "duplex/base/endian.h"

namespace duplex::scsi {

namespace op {
inline constexpr std::uint8_t kTestUnitReady = 0x00;
inline constexpr std::uint8_t kRequestSense = 0x03;
inline constexpr std::uint8_t kRead6 = 0x08;
inline constexpr std::uint8_t kWrite6 = 0x0a;
inline constexpr std::uint8_t kInquiry = 0x12;
inline constexpr std::uint8_t kModeSelect6 = 0x15;
inline constexpr std::uint8_t kModeSense6 = 0x1a;
inline constexpr std::uint8_t kStartStopUnit = 0x1b;
inline constexpr std::uint8_t kPreventAllow = 0x1e;
inline constexpr std::uint8_t kReadCapacity10 = 0x25;
inline constexpr std::uint8_t kRead10 = 0x28;
inline constexpr std::uint8_t kWrite10 = 0x2a;
inline constexpr std::uint8_t kWriteVerify10 = 0x2e;
inline constexpr std::uint8_t kVerify10 = 0x2f;
inline constexpr std::uint8_t kSynchronizeCache10 = 0x35;
inline constexpr std::uint8_t kWriteSame10 = 0x41;
inline constexpr std::uint8_t kUnmap = 0x42;
inline constexpr std::uint8_t kModeSelect10 = 0x55;
inline constexpr std::uint8_t kModeSense10 = 0x5a;
inline constexpr std::uint8_t kPersistentReserveIn = 0x5e;
inline constexpr std::uint8_t kPersistentReserveOut = 0x5f;
inline constexpr std::uint8_t kRead16 = 0x88;
inline constexpr std::uint8_t kCompareAndWrite = 0x89;
inline constexpr std::uint8_t kWrite16 = 0x8a;
inline constexpr std::uint8_t kWriteVerify16 = 0x8e;
inline constexpr std::uint8_t kVerify16 = 0x8f;
inline constexpr std::uint8_t kSynchronizeCache16 = 0x91;
inline constexpr std::uint8_t kWriteSame16 = 0x93;
inline constexpr std::uint8_t kServiceActionIn16 = 0x9e;
inline constexpr std::uint8_t kReportLuns = 0xa0;
inline constexpr std::uint8_t kMaintenanceIn = 0xa3;
inline constexpr std::uint8_t kRead12 = 0xa8;
inline constexpr std::uint8_t kWrite12 = 0xaa;
inline constexpr std::uint8_t kWriteVerify12 = 0xae;
inline constexpr std::uint8_t kVerify12 = 0xaf;
}  // namespace op

namespace sa {
inline constexpr std::uint8_t kReadCapacity16 = 0x10;
inline constexpr std::uint8_t kGetLbaStatus = 0x12;
inline constexpr std::uint8_t kReportTargetPortGroups = 0x0a;
inline constexpr std::uint8_t kReportSupportedOpcodes = 0x0c;
}  // namespace sa

// Limits advertised in VPD 0xB0, in logical blocks unless named otherwise.
inline constexpr std::uint32_t kMaxTransferBlocks = 32768;  // 16 MiB at 512-byte blocks
inline constexpr std::uint32_t kOptimalTransferBlocks = 2048;
inline constexpr std::uint32_t kMaxUnmapBlocks =
    0x100000;  // 512 MiB per descriptor at 512 (libiscsi's bound)
inline constexpr std::uint32_t kMaxUnmapDescriptors = 256;
inline constexpr std::uint64_t kMaxWriteSameBlocks = 0x400000;
inline constexpr std::uint32_t kMaxCompareAndWriteBlocks = 255;

// CDB length by group code (SPC-4 4.2.5.1).
inline std::size_t cdb_length(std::uint8_t opcode) {
  switch (opcode >> 5) {
    case 0: return 6;
    case 1:
    case 2: return 10;
    case 4: return 16;
    case 5: return 12;
    default: return 6;  // vendor specific / reserved groups: validated by dispatch
  }
}

inline bool is_modifying(std::uint8_t opcode) {
  switch (opcode) {
    case op::kWrite6:
    case op::kWrite10:
    case op::kWrite12:
    case op::kWrite16:
    case op::kWriteVerify10:
    case op::kWriteVerify12:
    case op::kWriteVerify16:
    case op::kWriteSame10:
    case op::kWriteSame16:
    case op::kUnmap:
    case op::kCompareAndWrite:
    case op::kPersistentReserveOut: return true;
    default: return false;
  }
}

// LBA and transfer length (or NUMBER OF BLOCKS) of 10-, 12- and 16-byte block CDBs.
inline std::pair<std::uint64_t, std::uint32_t> lba_and_length(std::span<const std::uint8_t> cdb) {
  switch (cdb.size() >= 16 && (cdb[0] >> 5) == 4 ? 16 : (cdb[0] >> 5) == 5 ? 12 : 10) {
    case 16: return {load_be<std::uint64_t>(&cdb[2]), load_be<std::uint32_t>(&cdb[10])};
    case 12: return {load_be<std::uint32_t>(&cdb[2]), load_be<std::uint32_t>(&cdb[6])};
    default: return {load_be<std::uint32_t>(&cdb[2]), load_be<std::uint16_t>(&cdb[7])};
  }
}

// One supported command: opcode, service action (if any) and the CDB usage map RSOC returns.
struct CommandInfo {
  std::uint8_t opcode;
  bool has_sa;
  std::uint16_t sa;
  std::vector<std::uint8_t> usage;  // usage.size() is the CDB length
};
const std::vector<CommandInfo>& supported_commands();

}  // namespace duplex::scsi
