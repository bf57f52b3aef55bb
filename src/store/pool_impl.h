#pragma once
// The pool implementation. State diagrams of the long operations:
//
// write(V, range), per cluster c:
//   owned(V,c)? --yes--> pin pc -> data write in place -> unpin            (no metadata)
//        |no
//        v
//   lock(V,c) -> owned now? -> (in place as above)
//        |no
//        v
//   allocate pc' -> [partial: read old cluster, merge] -> write whole cluster to pc'
//        -> install map V,c -> pc' (old mapping to history if a snapshot sees it, else unref)
//        -> append journal record -> unlock
//
// commit (flush):                               checkpoint:
//   take records (tag T) -> device flush            serialize state + take records (tag T)
//   -> journal has room? -> write blocks -> flush   -> device flush -> write chain to free clusters
//   -> else checkpoint                              -> flush -> superblock (seq+1, new journal gen)
//   -> release clusters freed under tag <= T        -> flush -> free the old chain, release <= T
//
// Snapshot/remove drain the volume first: new writes wait at its gate until in-flight ones end,
// so no in-place write can land in a cluster a new snapshot shares.
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <vector>

#include "allocator.h"
#include "catalogue.h"
#include "duplex/base/async.h"
#include "duplex/store/format.h"
#include "duplex/store/pool.h"
#include "journal.h"

namespace duplex::store {

class PoolImpl final : public Pool {
 public:
  PoolImpl(BlockDevice& dev, const format::Superblock& sb, bool read_only);

  // Pool interface.
  PoolInfo info() const override;
  std::vector<ObjectInfo> list() const override;
  Result<ObjectInfo> stat(ObjectId id) const override;
  std::uint64_t size_of(ObjectId id) const override {
    const Object* o = cat_.get(id);
    return o ? o->size : 0;
  }
  Uuid uuid_of(ObjectId id) const override {
    const Object* o = cat_.get(id);
    return o ? o->uuid : Uuid{};
  }
  Result<ObjectId> find(const std::string& name) const override;
  Task<Result<ObjectId>> create_volume(std::string name, std::uint64_t size,
                                       std::optional<Uuid> uuid) override;
  Task<Status> remove(ObjectId id, bool with_snapshots) override;
  Task<Status> grow(ObjectId volume, std::uint64_t new_size) override;
  Task<Result<ObjectId>> snapshot(ObjectId volume, std::string snap_name) override;
  Task<Result<ObjectId>> clone(ObjectId snapshot, std::string volume_name,
                               std::optional<Uuid> uuid = std::nullopt) override;
  Task<Status> read(ObjectId id, std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(ObjectId id, std::uint64_t offset, std::span<const std::byte> buf, bool fua) override;
  Task<Status> write_zeroes(ObjectId id, std::uint64_t offset, std::uint64_t length, bool no_unmap,
                            bool fua) override;
  Task<Status> trim(ObjectId id, std::uint64_t offset, std::uint64_t length) override;
  Task<Status> flush() override;
  Result<std::vector<Extent>> block_status(ObjectId id, std::uint64_t offset,
                                           std::uint64_t length) const override;
  Result<std::vector<Extent>> changed(ObjectId from, ObjectId to, std::uint64_t offset,
                                      std::uint64_t length) const override;
  std::uint64_t placement(ObjectId id, std::uint64_t offset) const override;
  CheckReport check() const override;
  Task<Status> close() override;

  // Opening (pool_open.cpp).
  Status load_checkpoint_and_replay();  // synchronous parts run through sync device calls
  Task<Status> load();
  Task<Status> checkpoint_locked();
  std::uint64_t replayed_records() const { return replayed_; }

 private:
  friend class Pool;  // create() seeds a fresh pool's allocator
  struct VolState {
    int inflight = 0;
    WaitQueue drained;
    bool gated = false;
    WaitQueue gate;
    AsyncMutex admin;
  };
  struct ClusterKey {
    ObjectId vol;
    std::uint64_t vc;
    bool operator==(const ClusterKey&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const ClusterKey& k) const {
      return std::hash<std::uint64_t>()(k.vol * 0x9E3779B97F4A7C15ull ^ k.vc);
    }
  };

  std::uint64_t phys(std::uint64_t pc) const { return data_offset_ + pc * cs_; }
  Status check_range(const Object* o, ObjectId id, const char* op, std::uint64_t offset,
                     std::uint64_t length) const;
  Status failed_or_ro() const;

  Task<Status> enter_write(ObjectId id);
  void leave_write(ObjectId id);
  Task<void> drain(ObjectId id);
  void undrain(ObjectId id);

  Task<void> lock_cluster(ClusterKey k);
  void unlock_cluster(ClusterKey k);

  Task<Status> write_in_place(std::uint64_t pc, std::uint64_t off_in_cluster,
                              std::span<const std::byte> data);
  Task<Status> write_slow(ObjectId id, std::uint64_t vc, std::uint64_t off_in_cluster,
                          std::span<const std::byte> data);
  Task<Status> write_locked(ObjectId id, std::uint64_t offset, std::span<const std::byte> buf);
  Task<Status> unmap_cluster(ObjectId id, std::uint64_t vc);
  Task<Status> zero_range(ObjectId id, std::uint64_t offset, std::uint64_t length, bool no_unmap);
  Task<Status> commit();
  Task<Status> write_superblock(format::Superblock sb);
  void fail(const Status& s);
  ObjectInfo to_info(const Object& o, bool usage) const;

  BlockDevice& dev_;
  format::Superblock sb_;
  bool read_only_;
  std::string name_;
  std::uint32_t cs_;
  std::uint64_t data_offset_;
  std::uint64_t journal_blocks_;
  Catalogue cat_;
  Allocator alloc_;
  JournalRecords records_;
  std::uint64_t tag_ = 1;          // tag of the records now accumulating (frees wait for it)
  std::uint64_t journal_seq_ = 0;  // next journal block
  std::vector<std::uint64_t> ckpt_clusters_;
  // Ownership gained in memory but not yet durably (see Catalogue::set_on_unshare and
  // Object::durable_floor), released with the commit of `tag`.
  struct PendingUnshare {
    std::uint64_t pc, tag;
  };
  std::vector<PendingUnshare> unshared_;
  std::unordered_map<ObjectId, std::uint64_t> floor_tags_;
  void release_durable(std::uint64_t tag);
  void watch_catalogue();
  AsyncMutex meta_;
  // Group commit: a commit that starts after a caller asked covers that caller, so callers that
  // queued behind a running commit share the next one instead of flushing once each.
  std::uint64_t commit_requests_ = 0;
  std::uint64_t commit_covered_ = 0;
  Status last_commit_;
  std::unordered_map<ObjectId, std::unique_ptr<VolState>> vols_;
  std::unordered_map<ClusterKey, std::unique_ptr<AsyncMutex>, KeyHash> locks_;
  AlignedBuffer zero_cluster_;
  Status failed_;
  bool closed_ = false;
  std::uint64_t replayed_ = 0;
};

}  // namespace duplex::store
