#pragma once
// The pool's metadata in memory: objects, per-volume cluster maps and histories, and cluster
// reference counts. Pure state and rules, no I/O, so the live path and journal replay apply
// exactly the same functions (replay is deterministic by construction) and fsck checks the same
// structures the I/O path uses.
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/uuid.h"
#include "duplex/store/format.h"
#include "duplex/store/pool.h"

namespace duplex::store {

inline constexpr std::uint64_t kNone = format::kNoCluster;

struct MapEntry {
  std::uint64_t pc = kNone;  // physical cluster, kNone = unmapped (reads zeroes)
  std::uint64_t birth = 0;   // pool epoch when this mapping was made
};

// A mapping that the live volume replaced but a snapshot still sees: valid for snapshot epochs
// in [birth, until).
struct HistEntry {
  std::uint64_t pc;
  std::uint64_t birth;
  std::uint64_t until;
};

struct Object {
  ObjectId id = 0;
  ObjectKind kind = ObjectKind::volume;
  std::string name;  // snapshot: short name
  Uuid uuid;
  std::uint64_t size = 0;
  ObjectId origin = 0;
  std::uint64_t epoch = 0;       // snapshot: s; volume: frozen epoch F
  std::uint64_t base_epoch = 0;  // volume: clone epoch (floor for F)
  std::uint64_t created = 0;
  // Volume only.
  std::vector<MapEntry> map;
  std::unordered_map<std::uint64_t, std::vector<HistEntry>> history;  // sorted by birth
  std::vector<ObjectId> snapshots;                                    // ascending epoch
  std::uint64_t mapped = 0;                                           // live entries with pc != kNone
  // Live path only: the frozen epoch the durable metadata may still have. Removing a snapshot
  // lowers `epoch` at once, but until the removal is durable a crash brings the snapshot back, so
  // clusters it sees must not be overwritten in place before then.
  std::uint64_t durable_floor = 0;
};

class Catalogue {
 public:
  Catalogue(std::string pool_name, std::uint32_t cluster_size, std::uint64_t cluster_count);

  const std::string& pool_name() const { return pool_name_; }
  std::uint32_t cluster_size() const { return cluster_size_; }
  std::uint64_t cluster_count() const { return cluster_count_; }
  std::uint64_t epoch() const { return epoch_; }
  ObjectId next_id() const { return next_id_; }
  ObjectId take_id() { return next_id_++; }

  const Object* get(ObjectId id) const;
  Object* get(ObjectId id);
  const Object* find(const std::string& full_name) const;
  std::string full_name(const Object& o) const;
  const std::unordered_map<ObjectId, std::unique_ptr<Object>>& objects() const { return objects_; }
  std::uint64_t clusters_for(std::uint64_t bytes) const {
    return (bytes + cluster_size_ - 1) / cluster_size_;
  }

  // Reference counts of physical clusters. `on_zero` is called when a count drops to 0 on the
  // live path (the pool delays reuse until the change is durable); replay passes none.
  std::uint32_t refs(std::uint64_t pc) const { return refs_[pc]; }
  void ref(std::uint64_t pc) { ++refs_[pc]; }
  void unref(std::uint64_t pc);
  void set_on_zero(std::function<void(std::uint64_t)> f) { on_zero_ = std::move(f); }
  // Called when a count drops to 1 on the live path: the cluster is one object's alone in memory,
  // but the durable metadata may still share it until the change is committed, so it is not
  // owned (no in-place overwrite) before clear_unshared().
  void set_on_unshare(std::function<void(std::uint64_t)> f) { on_unshare_ = std::move(f); }
  void clear_unshared(std::uint64_t pc) { unshare_pending_[pc] = 0; }
  void recount_refs();  // rebuild from the maps (after load)

  // The mutations; each is one journal record. They validate their input and fail with
  // Errc::corrupt on replay of an impossible record (live callers validate before).
  Status apply_create_volume(ObjectId id, const std::string& name, std::uint64_t size, const Uuid& uuid,
                             std::uint64_t created);
  Status apply_remove(ObjectId id);
  Status apply_grow(ObjectId id, std::uint64_t size);
  Status apply_snapshot(ObjectId volume, ObjectId snap_id, std::uint64_t epoch, const std::string& name,
                        const Uuid& uuid, std::uint64_t created);
  Status apply_clone(ObjectId snapshot, ObjectId new_id, std::uint64_t epoch, const std::string& name,
                     const Uuid& uuid, std::uint64_t created);
  // Map one virtual cluster. `reserved`: the new cluster's reference was taken at allocation.
  Status apply_map(ObjectId volume, std::uint64_t vc, std::uint64_t pc, std::uint64_t birth, bool reserved);

  // What `o` (volume or snapshot) sees at virtual cluster vc.
  MapEntry resolve(const Object& o, std::uint64_t vc) const;
  // True if a write to vc of volume v may go in place: the cluster is v's alone and no snapshot sees it.
  bool owned(const Object& v, std::uint64_t vc) const {
    const MapEntry& e = v.map[vc];
    return e.pc != kNone && e.birth > v.epoch && e.birth > v.durable_floor && refs_[e.pc] == 1 &&
           !unshare_pending_[e.pc];
  }
  // Clusters only `o` references (freed by deleting it).
  std::uint64_t exclusive_clusters(const Object& o) const;
  std::uint64_t mapped_clusters(const Object& o) const;

  std::vector<std::byte> serialize() const;
  Status deserialize(std::span<const std::byte> payload);

  // Every rule the structures must keep; `reserved` are clusters the checkpoint chain holds.
  void check(CheckReport& r, const std::vector<std::uint64_t>& reserved) const;

 private:
  Status corrupt(std::string what) const;
  void drop_history_unseen(Object& v);
  void release_volume(Object& v);
  void index_name(const Object& o);

  std::string pool_name_;
  std::uint32_t cluster_size_;
  std::uint64_t cluster_count_;
  std::uint64_t epoch_ = 1;
  ObjectId next_id_ = 1;
  std::unordered_map<ObjectId, std::unique_ptr<Object>> objects_;
  std::unordered_map<std::string, ObjectId> names_;
  std::vector<std::uint32_t> refs_;
  std::function<void(std::uint64_t)> on_zero_;
  std::function<void(std::uint64_t)> on_unshare_;
  std::vector<std::uint8_t> unshare_pending_;
};

}  // namespace duplex::store
