#pragma once
// A replica's persistent mirror metadata: identity, the generation it last held as an in-sync
// member, its state, the per-peer dirty bitmap and the activity log (format: meta_format.h,
// docs/mirror-formats.md).
//
// The invariant it keeps: every region that may differ between the two replicas is dirty in the
// durable bitmap, or lies in an extent of the durable activity log (marked dirty at open after a
// crash), or is dirty in RAM in an extent that is still hot.
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "duplex/base/async.h"
#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/base/uuid.h"
#include "duplex/reactor/block_device.h"

namespace duplex {
class Ring;  // duplex/reactor/uring.h: only open_meta_file takes one
}  // namespace duplex

namespace duplex::mirror {

enum class ReplicaState : std::uint8_t {
  in_sync = 1,       // holds every acknowledged write of `generation`
  outdated = 2,      // consistent but missed writes (left the in-sync set); never serves
  inconsistent = 3,  // a resync target mid-copy: not even consistent; never serves, never a source
};
std::string_view to_string(ReplicaState s);  // "in-sync" | "outdated" | "inconsistent"

struct MetaRecord {
  Uuid volume;                       // lineage: a replica of another volume is refused
  std::uint64_t size = 0;            // volume size in bytes
  std::uint32_t granularity = 4096;  // bytes per bitmap bit (power of two, 4 KiB..1 MiB)
  std::uint64_t generation = 0;      // the in-sync generation this replica last held as a member
  ReplicaState state = ReplicaState::in_sync;
  std::string node;                 // this node's name (at most 63 bytes)
  std::string peer;                 // the other replica's node name (at most 63 bytes)
  bool bitmap_complete = true;      // false: the bitmap cannot be trusted -> full resync
  bool clean = false;               // set by close(); cleared by open() (crash detection)
  std::uint64_t resync_cursor = 0;  // resync target: bytes below this are copied (resume point)
};

struct MetaOptions {
  std::uint32_t al_extent = 4u << 20;  // activity-log extent size
  std::uint32_t al_capacity = 512;     // hot extents kept (<= what fits in one AL block: 1016)
  std::uint32_t al_blocks = 8;         // ring length
};

// A replica's metadata on one BlockDevice, used from one event loop.
//
// Dirty tracking for the peer (what the peer may lack):
// - mark_dirty(range) sets bits in RAM (the peer is absent, or a write to it failed).
// - Before any local data write, the engine calls `co_await begin_write(range)`: if an extent of
//   the range is not hot, the activity log is updated durably (block write + flush) before it
//   returns; if it is hot, it returns at once without I/O (the hot path costs nothing).
//   When the log is full the least recently used extent is evicted - but only after the bitmap
//   blocks covering it are durable (persist them first if they have unsaved bits).
//   Group commit: writers that find their extents cold while a log update is in flight wait for
//   it, and the next update logs all their extents at once (up to a quarter of the log), so a
//   burst of writes to cold extents costs one block write and one flush, as DRBD's activity-log
//   transactions do, not one per extent.
//   With bare begin_write, an extent is evicted once al_capacity - 1 other extents became hot
//   since its last begin_write, even with a write still in flight there (a stalled peer): use
//   pin_write() to keep an extent in the log until its write, and any mark_dirty for it, is done.
// - After a crash (open() finds clean == false), every extent in the activity log is marked
//   dirty in the bitmap (and persisted): writes in flight at the crash may have reached one
//   replica only.
// - persist() writes the changed bitmap blocks + flush (the engine calls it lazily, e.g. every
//   few seconds and on close).
// Ranges round outwards to the granularity for mark_dirty and is_dirty, and INWARDS for
// clear_dirty (a partly resynced bit stays dirty), except that a range reaching the volume's end
// covers the last, partial bit.
// Metadata I/O (update, the cold path of begin_write, persist, ...) is serialised internally; a
// failed operation leaves the durable state as it was or as asked, never torn, and can be retried.
class ReplicaMeta {
 public:
  // Formats the device for a new replica (size must fit: see required_bytes()).
  static Task<Result<std::unique_ptr<ReplicaMeta>>> create(BlockDevice* dev, MetaRecord rec,
                                                           MetaOptions o = {});
  // Opens, validates (wrong magic/version/CRC in both slots -> error naming the file and the
  // structure), and applies crash recovery (above). Sets clean=false durably before returning.
  static Task<Result<std::unique_ptr<ReplicaMeta>>> open(BlockDevice* dev);
  static std::uint64_t required_bytes(std::uint64_t volume_size, std::uint32_t granularity,
                                      MetaOptions o = {});

  ReplicaMeta(const ReplicaMeta&) = delete;
  ReplicaMeta& operator=(const ReplicaMeta&) = delete;
  ~ReplicaMeta();

  const MetaRecord& record() const { return rec_; }
  const MetaOptions& options() const { return opts_; }
  // True when open() found the previous user did not close() (its AL extents are now dirty).
  bool recovered_from_crash() const { return recovered_; }

  // Durably replaces the record (next slot, flush). The engine calls it on every generation or
  // state change BEFORE acting on it. volume, size and granularity cannot change here (resize()).
  Task<Status> update(MetaRecord r);

  Task<Status> begin_write(std::uint64_t offset, std::uint64_t length);
  // Logs the range ahead of a pinned write that will follow (the owner's al_hint): like
  // begin_write, but no data is written under this call, so it leaves nothing to flush.
  Task<Status> log_ahead(std::uint64_t offset, std::uint64_t length);

  // begin_write() + a pin on the range's extents until the WritePin is released or destroyed:
  // a pinned extent is never evicted, so a write in flight (and the mark_dirty that may follow
  // its failure on the peer) stays covered by the log however long it takes. Evictions skip
  // pinned extents; if every extent is pinned the log grows past al_capacity up to one block's
  // worth (1016) and then begin_write fails with Errc::busy. Prefer this to bare begin_write; a
  // pin must not outlive its ReplicaMeta.
  class WritePin {
   public:
    WritePin() = default;
    WritePin(WritePin&& o) noexcept : m_(std::exchange(o.m_, nullptr)), e0_(o.e0_), e1_(o.e1_) {}
    WritePin& operator=(WritePin&& o) noexcept {
      if (this != &o) {
        release();
        m_ = std::exchange(o.m_, nullptr);
        e0_ = o.e0_;
        e1_ = o.e1_;
      }
      return *this;
    }
    ~WritePin() { release(); }
    void release();

   private:
    friend class ReplicaMeta;
    WritePin(ReplicaMeta* m, std::uint32_t e0, std::uint32_t e1) : m_(m), e0_(e0), e1_(e1) {}
    ReplicaMeta* m_ = nullptr;
    std::uint32_t e0_ = 0, e1_ = 0;
  };
  Task<Result<WritePin>> pin_write(std::uint64_t offset, std::uint64_t length);
  // pin_write()'s hot path without a coroutine: the pin when every extent of the range is hot
  // now (nothing to write to the log), else nullopt and the caller awaits pin_write().
  std::optional<WritePin> try_pin_hot(std::uint64_t offset, std::uint64_t length);
  // Called before the log stops covering evicted extents: the replica's data writes there must
  // be durable by then (a write acknowledged but only cached could be lost at a crash with
  // nothing left to tell the resync). The engine passes its data volume's flush. A failure
  // keeps the extents in the log and fails the begin_write. Skipped when every evicted extent's
  // writes completed before an earlier such flush started (an extent stays in the log for many
  // updates, so under random writes most evictions find their data flushed already); writes
  // under a bare begin_write have no known end, and their extents always take the flush.
  void set_before_evict(std::function<Task<Status>()> fn) { before_evict_ = std::move(fn); }

  void mark_dirty(std::uint64_t offset, std::uint64_t length);
  void clear_dirty(std::uint64_t offset, std::uint64_t length);     // after a region is resynced
  void mark_all_dirty();                                            // full resync (RAM; persist())
  bool is_dirty(std::uint64_t offset, std::uint64_t length) const;  // any bit in the range
  std::uint64_t dirty_bytes() const;  // set bits x granularity, the last bit cut at the volume end
  // The next run of dirty bits at or after `from` (coalesced, at most max_len bytes), or nullopt.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> next_dirty(std::uint64_t from,
                                                                    std::uint64_t max_len) const;
  // The activity log's extents as byte ranges (sent to the peer on reconnect), ascending.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> hot_ranges() const;
  // Empties the activity log durably (both replicas in sync and quiet, e.g. on clean close).
  // Persists the bitmap first: the log no longer covers its RAM-only bits afterwards.
  Task<Status> clear_activity_log();
  Task<Status> persist();
  // Grows the bitmap for a grown volume (the device must be large enough: re-create otherwise).
  // The new region starts clean. Shrinking is refused.
  Task<Status> resize(std::uint64_t new_size);
  // persist(), empty the activity log, set clean=true durably. Afterwards every metadata
  // operation fails with Errc::shutdown (the RAM-only calls still work but are never persisted).
  Task<Status> close();

  // Bitmap blocks with bits not yet durable (for tests and metrics).
  std::uint64_t unsaved_bitmap_blocks() const;
  // Activity-log updates written (each a block write and a flush) and the cold extents they
  // made hot: more extents than updates is group commit at work.
  std::uint64_t al_updates() const { return al_updates_; }
  std::uint64_t al_extents_logged() const { return al_extents_logged_; }
  std::uint64_t evict_flushes() const { return flushes_started_; }  // before_evict calls

 private:
  ReplicaMeta(BlockDevice* dev, MetaRecord rec, MetaOptions o);
  // If every extent of [e0, e1] is hot, touches them all (most recently used) and says true;
  // otherwise changes nothing.
  bool touch_if_hot(std::uint32_t e0, std::uint32_t e1);
  // Pins [e0, e1] (they are hot, and nothing suspends between the check and this).
  WritePin pin_extents(std::uint32_t e0, std::uint32_t e1);

  std::uint64_t bits() const { return (rec_.size + rec_.granularity - 1) / rec_.granularity; }
  void set_bits(std::uint64_t first, std::uint64_t end);  // [first, end)
  void clear_bits(std::uint64_t first, std::uint64_t end);
  bool test_bit(std::uint64_t b) const;

  Status bad(Errc c, std::string_view what) const;
  Task<Status> write_record(MetaRecord r);                              // under io_
  Task<Status> write_bitmap_blocks(std::vector<std::uint64_t> blocks);  // under io_; + flush
  Task<Status> persist_locked();
  Task<Status> write_al(std::vector<std::uint32_t> extents);  // under io_; + flush
  // begin_write, and pin_write when pin is set: the pin is taken before anything else can run.
  // How the caller writes under the range: through a pin (its end is known), without one (a
  // bare begin_write: the end is unknown), or not at all (log_ahead).
  enum class Writes { pinned, unpinned, none };
  Task<Status> make_hot(std::uint64_t offset, std::uint64_t length, WritePin* pin, Writes writes);
  void writes_done(std::uint32_t e0, std::uint32_t e1);
  struct Wanted;
  Task<Status> load_bitmap();
  Task<Status> load_al();

  BlockDevice* dev_;
  MetaRecord rec_;
  MetaOptions opts_;
  std::uint64_t record_seq_ = 0;
  int record_slot_ = 0;  // the slot holding rec_ (the next update writes the other)
  std::uint64_t bitmap_blocks_ = 0;
  std::vector<std::uint64_t> words_;  // the bitmap, LSB first
  std::vector<bool> unsaved_;         // per bitmap block: changed since written
  std::uint64_t set_count_ = 0;
  // Hot extents, least recently used first; only extents durable in the AL are here.
  std::list<std::uint32_t> lru_;
  std::unordered_map<std::uint32_t, std::list<std::uint32_t>::iterator> hot_;
  std::uint64_t al_seq_ = 0;  // seq of the newest durable AL block
  bool recovered_ = false;
  std::function<Task<Status>()> before_evict_;
  bool closed_ = false;
  std::unordered_map<std::uint32_t, std::uint32_t> pins_;  // extent -> writes in flight
  // Data flushes before evictions: started, and the newest that completed (ids from 1). A hot
  // extent's entry is the last id started when a write there ended (kUnknownEnd: a bare
  // begin_write); the flush with a larger id made its data durable. No entry: nothing written.
  static constexpr std::uint64_t kUnknownEnd = ~std::uint64_t{0};
  std::uint64_t flushes_started_ = 0, flushed_ = 0;
  std::unordered_map<std::uint32_t, std::uint64_t> written_at_;
  // Cold extents writers are waiting for (extent -> waiters): the next log update takes them too.
  std::unordered_map<std::uint32_t, std::uint32_t> wanted_;
  std::uint64_t al_updates_ = 0;
  std::uint64_t al_extents_logged_ = 0;
  AsyncMutex io_;
};

// Opens (or, with create, creates: the file must not exist) a metadata file of at least `size`
// bytes; an existing smaller file is grown (for resize()). A created file's directory entry is
// made durable. Through `ring` (the loop's io_uring, buffered I/O) when one is given and io_uring
// is allowed, so that a log update's write and fdatasync do not stop the loop and every other
// I/O it serves; else inline pread/pwrite/fdatasync.
Task<Result<std::unique_ptr<BlockDevice>>> open_meta_file(std::string path, std::uint64_t size, bool create,
                                                          Ring* ring = nullptr);
// Lengthens an open metadata file (from open_meta_file) to at least `size` bytes, durably, so
// that ReplicaMeta::resize() can cover a grown volume. The caller is on the metadata's loop.
Status grow_meta_file(BlockDevice& dev, std::uint64_t size);

}  // namespace duplex::mirror
