#pragma once
// The local thin store: one pool on one BlockDevice holds volumes, their snapshots and clones.
//
// Model (docs/architecture.md argues it):
// - The device is cut into fixed clusters (default 64 KiB). Each volume has an in-memory map
//   virtual cluster -> (physical cluster | none, birth epoch).
// - The pool has a monotonic epoch E. A snapshot of V records s = E and bumps E; V's "frozen"
//   epoch F(V) becomes s. A cluster of V is V's own iff birth > F(V) and no other object maps it:
//   an overwrite of it is one data write and no metadata write. Otherwise the write allocates a new
//   cluster (copy-on-write of the untouched part) and the old mapping moves to V's history, kept
//   as long as some snapshot can see it. Snapshot creation is O(1); live reads are one array lookup
//   whatever the number of snapshots; snapshot reads add a binary search in one cluster's history.
// - A clone copies the snapshot's resolved map (O(size of map), no data copied) and shares the
//   clusters by reference count, so deleting the snapshot or its volume never changes the clone.
// - Metadata is made durable by a checksummed journal of logical records written at flush time,
//   after the data they point to is durable, and by checkpoints written to clusters of the pool.
//
// Threading: a Pool belongs to one event-loop thread; nothing here takes a lock. Concurrent
// coroutines on that thread are ordered per cluster inside the pool.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/base/uuid.h"
#include "duplex/reactor/block_device.h"

namespace duplex::store {

using ObjectId = std::uint64_t;  // a volume or a snapshot; never reused within a pool

struct PoolOptions {
  std::string name = "pool";
  std::uint32_t cluster_size = 64 * 1024;  // power of two, 4 KiB .. 4 MiB
  std::uint64_t journal_bytes = 0;         // 0: 1/128 of the device, clamped to [256 KiB, 64 MiB]
};

struct OpenOptions {
  // Replay and check without writing anything (duplex-fsck). I/O calls fail with read_only.
  bool read_only = false;
};

enum class ObjectKind : std::uint8_t { volume = 1, snapshot = 2 };

struct ObjectInfo {
  ObjectId id = 0;
  ObjectKind kind = ObjectKind::volume;
  std::string name;                // volume: "vm1"; snapshot: its own name (full name "vm1@daily")
  Uuid uuid;                       // stable identity (NAA/serial derive from it; lineage checks)
  std::uint64_t size = 0;          // bytes
  ObjectId origin = 0;             // snapshot: its volume; clone: the snapshot it was made from (0 if none)
  std::uint64_t epoch = 0;         // snapshot: its epoch; volume: its frozen epoch F(V)
  std::uint64_t mapped_bytes = 0;  // clusters this object sees as allocated
  std::uint64_t exclusive_bytes = 0;  // clusters only this object references (freed by deleting it)
  std::uint64_t created_unix = 0;
};

struct PoolInfo {
  std::string name;
  Uuid uuid;
  std::string device;
  std::uint32_t cluster_size = 0;
  std::uint64_t device_bytes = 0;
  std::uint64_t data_clusters = 0;
  std::uint64_t free_clusters = 0;
  std::uint64_t metadata_clusters = 0;  // checkpoint chain
  std::uint64_t epoch = 0;
  std::uint64_t journal_bytes = 0;
  std::uint64_t journal_used_bytes = 0;
};

// One run of a block-status or changed-regions answer. Runs are contiguous, ascending and cover
// exactly the range asked for.
struct Extent {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool allocated = false;  // block_status: backed by a cluster; changed(): differs
  bool zero = false;       // reads as zeroes (always true when !allocated for block_status)
};

struct CheckReport {
  std::uint64_t objects = 0;
  std::uint64_t mapped_entries = 0;
  std::uint64_t history_entries = 0;
  std::uint64_t used_clusters = 0;
  std::uint64_t free_clusters = 0;
  std::uint64_t replayed_journal_records = 0;
  std::vector<std::string> errors;  // empty = consistent
  bool ok() const { return errors.empty(); }
};

class Pool {
 public:
  virtual ~Pool() = default;

  // Formats `dev` (everything on it is lost) and returns the open pool. The device must outlive
  // the pool (and the returned task), hence the reference.
  // NOLINTNEXTLINE(cppcoreguidelines-avoid-reference-coroutine-parameters)
  static Task<Result<std::unique_ptr<Pool>>> create(BlockDevice& dev, PoolOptions opts);
  // Opens a pool: picks the newest valid superblock, loads the checkpoint, replays the journal,
  // and (unless read_only) writes a fresh checkpoint so the next crash starts from a clean journal.
  // Every corruption is an error naming the pool, the structure and the offset; nothing is guessed.
  // NOLINTNEXTLINE(cppcoreguidelines-avoid-reference-coroutine-parameters)
  static Task<Result<std::unique_ptr<Pool>>> open(BlockDevice& dev, OpenOptions opts = {});

  virtual PoolInfo info() const = 0;
  virtual std::vector<ObjectInfo> list() const = 0;
  // With usage (mapped and exclusive bytes): O(size of the object's map).
  virtual Result<ObjectInfo> stat(ObjectId id) const = 0;
  // O(1), for the I/O path: 0 / nil when the object does not exist.
  virtual std::uint64_t size_of(ObjectId id) const = 0;
  virtual Uuid uuid_of(ObjectId id) const = 0;
  // "vol" or "vol@snap".
  virtual Result<ObjectId> find(const std::string& name) const = 0;

  // --- catalogue (each durable when it returns OK) ---
  virtual Task<Result<ObjectId>> create_volume(std::string name, std::uint64_t size,
                                               std::optional<Uuid> uuid = std::nullopt) = 0;
  // Deletes a volume (refused while it has snapshots unless with_snapshots) or a snapshot.
  virtual Task<Status> remove(ObjectId id, bool with_snapshots = false) = 0;
  virtual Task<Status> grow(ObjectId volume, std::uint64_t new_size) = 0;
  virtual Task<Result<ObjectId>> snapshot(ObjectId volume, std::string snap_name) = 0;
  // `uuid`: the identity the cluster gave the clone (every replica serves the same one).
  virtual Task<Result<ObjectId>> clone(ObjectId snapshot, std::string volume_name,
                                       std::optional<Uuid> uuid = std::nullopt) = 0;

  // --- I/O (any byte offset and length; snapshots are read-only) ---
  virtual Task<Status> read(ObjectId id, std::uint64_t offset, std::span<std::byte> buf) = 0;
  // Completed writes are visible at once and durable after the next flush (or at once with fua).
  virtual Task<Status> write(ObjectId id, std::uint64_t offset, std::span<const std::byte> buf,
                             bool fua = false) = 0;
  // The range reads as zeroes afterwards. Whole clusters are unmapped (space returned);
  // partial ones are zero-written. With `no_unmap`, clusters stay allocated (zeroes written).
  virtual Task<Status> write_zeroes(ObjectId id, std::uint64_t offset, std::uint64_t length,
                                    bool no_unmap = false, bool fua = false) = 0;
  // Like write_zeroes: a discarded range reads as zeroes (the store promises LBPRZ).
  virtual Task<Status> trim(ObjectId id, std::uint64_t offset, std::uint64_t length) = 0;
  virtual Task<Status> flush() = 0;

  // --- metadata queries (no data read) ---
  virtual Result<std::vector<Extent>> block_status(ObjectId id, std::uint64_t offset,
                                                   std::uint64_t length) const = 0;
  // Regions whose content may differ between `from` and `to` (snapshots or volumes, typically a
  // snapshot and a later snapshot of the same volume, or a snapshot and the live volume).
  virtual Result<std::vector<Extent>> changed(ObjectId from, ObjectId to, std::uint64_t offset,
                                              std::uint64_t length) const = 0;
  // Where the byte at `offset` of the object lies on the device, to order I/O (a resync reads
  // in this order, so data a random workload scattered over the volume but allocated in write
  // order is read sequentially), never to address it: kUnplaced where nothing is allocated or
  // the object or offset is unknown.
  static constexpr std::uint64_t kUnplaced = ~std::uint64_t{0};
  virtual std::uint64_t placement(ObjectId id, std::uint64_t offset) const = 0;

  // Full consistency check of the in-memory metadata (duplex-fsck runs it after open).
  virtual CheckReport check() const = 0;
  // Writes a checkpoint and empties the journal (clean shutdown).
  virtual Task<Status> close() = 0;
};

}  // namespace duplex::store
