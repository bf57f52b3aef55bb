#pragma once
// The on-disk format of a pool, all of it (docs/format.md describes it byte by byte).
// Every integer is little-endian (le* fields); every structure carries a magic, a format version
// and a CRC32C; sizes are static_asserted so the layout can never drift silently.
//
// Layout of the device:
//   [0, 4096)                       superblock copy 0
//   [4096, 8192)                    superblock copy 1   (the valid copy with the higher seq wins)
//   [8192, 8192 + journal_bytes)    journal: 4 KiB blocks, written once each, never rewritten
//   [data_offset, ...)              clusters of cluster_size bytes: volume data and checkpoints
#include <cstdint>

#include "duplex/base/endian.h"

namespace duplex::store::format {

inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kBlock = 4096;
inline constexpr std::uint64_t kSuperblockOffset[2] = {0, 4096};
inline constexpr std::uint64_t kJournalOffset = 8192;
inline constexpr std::uint64_t kNoCluster = ~std::uint64_t{0};

inline constexpr char kSuperMagic[8] = {'D', 'P', 'X', 'P', 'O', 'O', 'L', '1'};
inline constexpr std::uint32_t kJournalMagic = 0x4a585044;     // "DPXJ"
inline constexpr std::uint32_t kCheckpointMagic = 0x4b585044;  // "DPXK"

struct Superblock {
  char magic[8];
  le32 version;
  le32 block_size;  // 4096
  le64 seq;         // bumped by every superblock write
  std::uint8_t pool_uuid[16];
  char name[64];      // NUL padded
  le64 device_bytes;  // size the pool was formatted for
  le32 cluster_size;
  le32 flags;  // none defined; must be 0
  le64 journal_offset;
  le64 journal_bytes;
  le64 data_offset;
  le64 cluster_count;
  le64 checkpoint_cluster;   // first cluster of the checkpoint chain, kNoCluster = none
  le64 checkpoint_clusters;  // clusters in the chain
  le64 checkpoint_bytes;     // payload bytes in the chain
  le32 checkpoint_crc;       // CRC32C of the whole payload
  le32 reserved0;
  le64 journal_gen;  // only journal blocks of this generation are replayed
  le64 created_unix;
  std::uint8_t reserved[3892];
  le32 crc;  // CRC32C of bytes [0, 4092)
};
static_assert(sizeof(Superblock) == kBlock);

// A journal block: header, then records back to back, then zero padding to 4 KiB.
struct JournalHeader {
  le32 magic;
  le16 version;
  le16 records;
  le64 journal_gen;
  le64 seq;  // block index within the generation: 0, 1, 2, ...
  le32 payload_bytes;
  le32 crc;  // CRC32C of the 4 KiB block with this field zero
};
static_assert(sizeof(JournalHeader) == 32);
inline constexpr std::uint32_t kJournalPayload = kBlock - sizeof(JournalHeader);

// Journal records: le16 type, le16 body length, body. Unknown types are corruption.
enum class RecordType : std::uint16_t {
  create_volume = 1,  // id, size, created, uuid[16], name
  remove = 2,         // id
  grow = 3,           // id, new size
  snapshot = 4,       // volume id, snapshot id, epoch, created, uuid[16], name
  clone = 5,          // snapshot id, new volume id, epoch, created, uuid[16], name
  map_run = 6,        // volume id, first virtual cluster, first physical cluster | kNoCluster, count, birth
};

struct RecordHeader {
  le16 type;
  le16 length;
};
static_assert(sizeof(RecordHeader) == 4);

struct MapRunRecord {
  le64 volume;
  le64 vcluster;
  le64 pcluster;  // kNoCluster: unmapped; otherwise pcluster + i for element i
  le64 count;
  le64 birth;
};
static_assert(sizeof(MapRunRecord) == 40);

// A checkpoint cluster: header, then payload bytes; clusters form a chain.
struct CheckpointHeader {
  le32 magic;
  le16 version;
  le16 reserved0;
  le64 superblock_seq;  // the superblock seq that will point at this checkpoint
  le64 index;           // position in the chain
  le64 next_cluster;    // kNoCluster at the end
  le32 payload_bytes;   // bytes of payload in this cluster
  le32 crc;             // CRC32C of header (crc zero) + payload
};
static_assert(sizeof(CheckpointHeader) == 40);

// The checkpoint payload (concatenated across the chain):
//   CheckpointState, then for each object: ObjectRecord, name bytes, then if it is a volume:
//   map_entries x MapEntryRecord, history_entries x HistoryEntryRecord.
struct CheckpointState {
  le64 epoch;
  le64 next_id;
  le64 objects;
};
static_assert(sizeof(CheckpointState) == 24);

struct ObjectRecord {
  le64 id;
  le64 origin;
  le64 size;
  le64 epoch;       // snapshot: its epoch; volume: frozen epoch F
  le64 base_epoch;  // volume: epoch it was cloned at (0 for a new volume)
  le64 created_unix;
  std::uint8_t uuid[16];
  le64 map_entries;      // volume only
  le64 history_entries;  // volume only
  le16 name_length;
  std::uint8_t kind;  // 1 volume, 2 snapshot
  std::uint8_t reserved[5];
};
static_assert(sizeof(ObjectRecord) == 88);

struct MapEntryRecord {
  le64 vcluster;
  le64 pcluster;
  le64 birth;
};
static_assert(sizeof(MapEntryRecord) == 24);

struct HistoryEntryRecord {
  le64 vcluster;
  le64 pcluster;
  le64 birth;
  le64 until;
};
static_assert(sizeof(HistoryEntryRecord) == 32);

}  // namespace duplex::store::format
