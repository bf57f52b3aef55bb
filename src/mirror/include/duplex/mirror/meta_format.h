#pragma once
// The on-disk format of a replica's mirror metadata file (<state_dir>/mirror/<uuid>.meta), all of
// it; docs/mirror-formats.md has the tables. Every integer is little-endian; every 4 KiB block
// carries a magic, a version and a CRC32C; sizes are static_asserted.
//
// Layout:
//   [0, 4096)                          record slot 0  } written alternately; the valid slot with
//   [4096, 8192)                       record slot 1  } the higher seq is the record
//   [8192, 8192 + al_blocks * 4096)    activity-log ring: each block a full snapshot of the hot
//                                      extents; the valid block with the highest seq wins
//   [bitmap_offset, ...)               dirty bitmap, 4 KiB blocks of kBitmapBitsPerBlock bits each
//                                      (a block that fails its CRC reads as all dirty)
#include <cstddef>
#include <cstdint>

#include "duplex/base/endian.h"

namespace duplex::mirror::format {

inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kBlock = 4096;
inline constexpr std::uint64_t kRecordOffset[2] = {0, 4096};
inline constexpr std::uint64_t kAlOffset = 8192;

inline constexpr char kRecordMagic[8] = {'D', 'P', 'X', 'M', 'E', 'T', 'A', '1'};
inline constexpr std::uint32_t kAlMagic = 0x4c4d5844;      // "DXML"
inline constexpr std::uint32_t kBitmapMagic = 0x424d5844;  // "DXMB"

inline constexpr std::uint8_t kFlagBitmapComplete = 1u << 0;
inline constexpr std::uint8_t kFlagClean = 1u << 1;
inline constexpr std::uint8_t kKnownFlags = kFlagBitmapComplete | kFlagClean;
inline constexpr std::uint32_t kNameBytes = 64;  // node names: up to 63 bytes, NUL padded

struct RecordBlock {
  char magic[8];
  le32 version;
  le32 block_size;  // 4096
  le64 seq;         // bumped by every record write; the higher valid slot wins
  std::uint8_t volume_uuid[16];
  le64 volume_size;
  le32 granularity;    // bytes per bitmap bit, power of two in [4 KiB, 1 MiB]
  std::uint8_t state;  // ReplicaState: 1 in-sync, 2 outdated, 3 inconsistent
  std::uint8_t flags;  // kFlag*; unknown bits are corruption
  le16 reserved0;
  le64 generation;
  le64 resync_cursor;
  le32 al_extent;    // activity-log extent size, power of two >= granularity
  le32 al_capacity;  // hot extents kept, <= kAlMaxExtents
  le32 al_blocks;    // ring length, >= 2
  le32 reserved1;
  le64 bitmap_offset;  // kAlOffset + al_blocks * 4096
  le64 bitmap_blocks;  // blocks covering volume_size
  char node[kNameBytes];
  char peer[kNameBytes];
  std::uint8_t reserved[3860];
  le32 crc;  // CRC32C of bytes [0, 4092)
};
static_assert(sizeof(RecordBlock) == kBlock);
static_assert(offsetof(RecordBlock, volume_uuid) == 24 && offsetof(RecordBlock, state) == 52 &&
              offsetof(RecordBlock, generation) == 56 && offsetof(RecordBlock, bitmap_offset) == 88 &&
              offsetof(RecordBlock, node) == 104 && offsetof(RecordBlock, peer) == 168 &&
              offsetof(RecordBlock, crc) == 4092);

struct AlHeader {
  le32 magic;
  le16 version;
  le16 reserved0;
  le64 seq;    // 1, 2, 3, ...: block seq % al_blocks is its ring slot
  le32 count;  // extents that follow, least recently used first
  le32 crc;    // CRC32C of the 4 KiB block with this field zero
  le64 reserved1;
};
static_assert(sizeof(AlHeader) == 32);
inline constexpr std::uint32_t kAlMaxExtents = (kBlock - sizeof(AlHeader)) / 4;  // le32 extent numbers
static_assert(kAlMaxExtents == 1016);

struct BitmapHeader {
  le32 magic;
  le32 index;  // block number within the bitmap area: a misplaced block fails
  le32 crc;    // CRC32C of the 4 KiB block with this field zero
  le32 reserved;
};
static_assert(sizeof(BitmapHeader) == 16);
inline constexpr std::uint32_t kBitmapBytesPerBlock = kBlock - sizeof(BitmapHeader);
inline constexpr std::uint64_t kBitmapBitsPerBlock = std::uint64_t{kBitmapBytesPerBlock} * 8;  // 32640
// Bit i of the block's payload is byte i / 8, bit i % 8 (LSB first); bit k of the volume is bit
// k % kBitmapBitsPerBlock of block k / kBitmapBitsPerBlock.

}  // namespace duplex::mirror::format
