#pragma once
// The volume catalogue: the cluster's record of nodes, pools, volumes, snapshots, exports and
// replica states, kept in etcd under /duplex/v1/ (docs/cluster-state.md lists every key).
//
// Intent and report. The API records what should exist (a volume, its size, its snapshots, its
// export) with a transaction; each node holding a replica watches the records, applies them to its
// own pools, and reports what it holds under replicas/<volume>/<node>. The API answers once the
// reports show the intent applied (or answers 202 with the state so far).
//
// A volume's life (state field of VolumeRecord):
//
//   (absent) --create: txn absent(volumes/V)--> creating --every replica reported, txn on the
//   record's revision--> ready --delete: txn unchanged_since--> deleting --every replica report
//   gone: txn deletes volumes/V, snapshots/V/*, exports/V--> (absent)
//
// Every change that decides who may serve or write (create, grow, delete, replica set, export and
// ACL changes) is a transaction comparing the record's mod_revision and bumps `generation`; two
// callers changing the same volume at once cannot both win: the loser gets Errc::conflict.
//
// Calls block (one etcd round trip or a few); they run on control-plane threads, never on an
// event loop. Errors: not_found (no such volume/snapshot), exists, invalid (a field names the
// problem), conflict (lost a compare), no_space (no node/pool can place it), unavailable (etcd
// has no quorum: nothing was decided, or a decision is not confirmed).
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/cluster/etcd.h"

namespace duplex::cluster {

inline constexpr const char* kRoot = "/duplex/v1/";

// nodes/<name>: written by the node's agent under its lease (present exactly while it lives).
struct NodeRecord {
  std::string name;
  std::string site;
  std::string address;             // the node's address ("127.0.0.11")
  std::string api;                 // "http://127.0.0.11:7480"
  std::vector<std::string> nbd;    // "127.0.0.11:10809"
  std::vector<std::string> iscsi;  // "127.0.0.11:3260"
  std::string base_iqn;            // "iqn.2026-11.io.duplex"
  std::string mirror;              // the mirror link's listen address "127.0.0.11:7789" ("" = none)
  std::int64_t pid = 0;
  std::string version;
  std::string started;  // RFC 3339 UTC
};

// drains/<name>: an operator drained the node for planned maintenance (docs/mirror.md). Unlike
// nodes/<name> it outlives the node's lease: the node stays drained across its restart until
// resumed. While it exists the node's replicas step out of every in-sync set (they keep serving by
// forwarding to the peer), and the peers copy what they miss but do not add them back.
struct DrainRecord {
  std::string node;
  std::string reason;
  std::string by;  // "api:<who>"
  std::string at;  // RFC 3339
};

// pools/<node>/<pool>: the node's report of a pool (informational, refreshed by the node).
struct PoolRecord {
  std::string node;
  std::string name;
  std::string uuid;
  std::uint64_t size = 0;  // bytes of data area
  std::uint64_t free = 0;  // bytes not allocated
  std::uint32_t cluster_size = 0;
  std::uint64_t volumes = 0;
  friend bool operator==(const PoolRecord&, const PoolRecord&) = default;
};

enum class VolumeState { creating, ready, deleting };
std::string_view to_string(VolumeState s);
std::optional<VolumeState> volume_state_from(std::string_view s);

// volumes/<name>
struct VolumeRecord {
  std::string name;
  std::string uuid;  // the volume's identity on every replica (VPD serial and NAA derive from it)
  std::uint64_t size = 0;
  unsigned replicas_wanted = 1;
  std::vector<std::string> replicas;  // node names, placement order (first = preferred site's)
  std::string pool;                   // pool name on each replica node
  std::string preferred_site;
  std::int64_t generation = 1;
  std::string clone_of;  // "vol@snap" when the volume was made as a clone
  VolumeState state = VolumeState::creating;
  std::string created;            // RFC 3339 UTC
  std::string reason;             // why the last change was made (shown by `volume show`)
  std::int64_t mod_revision = 0;  // from etcd, not stored: the basis of the next compare-and-swap
};

enum class SnapshotState { creating, ready, deleting };
std::string_view to_string(SnapshotState s);

// snapshots/<volume>/<snap>
struct SnapshotRecord {
  std::string volume;
  std::string name;
  SnapshotState state = SnapshotState::creating;
  std::string created;
  std::int64_t mod_revision = 0;
};

// replicas/<volume>/<node>: written only by that node, after it applied the volume's records.
struct ReplicaStatus {
  std::string volume;
  std::string node;
  std::string state;            // "creating" | "in-sync" | "outdated" | "resyncing" | "failed" | "deleted"
  std::int64_t generation = 0;  // the volume generation the node has applied
  std::uint64_t size = 0;
  std::uint64_t allocated_bytes = 0;
  std::uint64_t dirty_bytes = 0;
  double resync_progress = 1.0;        // 0..1
  std::vector<std::string> snapshots;  // snapshot names present in the node's pool
  std::string error;                   // the last apply that failed, "" if none
  std::string updated;
  // The mirror's view (replicas = 2). Read leniently: a report without them reads as these defaults.
  std::string role;                      // "owner" | "peer" | "" (not mirrored or not serving)
  double resync_rate = 0;                // bytes/s of the resync in progress
  double resync_eta_seconds = -1;        // -1: unknown or no resync
  std::uint64_t resync_bytes_total = 0;  // bytes the resync in progress has to copy
  std::uint64_t resync_bytes_done = 0;   // bytes it copied so far
  std::uint64_t verify_mismatches = 0;   // bytes found to differ by the last verify
  // The owner's online verify (verify/<volume> asks for one): the request it ran last, and how.
  std::int64_t verify_request = 0;     // the request's id (its etcd revision); 0 = never ran
  std::string verify_state;            // "" | "running" | "done" | "failed"
  std::uint64_t verify_checked = 0;    // bytes compared so far
  std::uint64_t verify_repaired = 0;   // bytes copied over the peer's (repair requested)
  std::string verify_error;            // why it failed
  std::string last_event;              // the last thing the mirror did and why
  std::string grow;                    // why a grow of the mirrored volume has not committed here yet
  bool link_up = false;                // the mirror link to the peer is up
  std::int64_t insync_generation = 0;  // the in-sync set's generation this replica acts on
                                       // (`generation` stays the volume record's: settle())
  std::int64_t mod_revision = 0;
  // The reconciler writes a report again only when it differs from the last one it wrote.
  friend bool operator==(const ReplicaStatus&, const ReplicaStatus&) = default;
};

// verify/<volume>: an operator asked for an online verify (the owner runs it). The id is the
// key's revision, so every request is new even with the same body.
struct VerifyRequest {
  std::string volume;
  bool repair = false;
  std::int64_t id = 0;
};

// insync/<volume>: the replicas that hold every acknowledged write. Only members serve data.
struct InSyncRecord {
  std::string volume;
  std::string uuid;                  // the volume's uuid (a record of a deleted+recreated V differs)
  std::int64_t generation = 1;       // bumped by every change of the set
  std::vector<std::string> members;  // node names, in the volume's placement order
  std::string owner;                 // the member that orders writes: the first member in the
                                     // volume's placement order (its preferred site) - derived
                                     // from `members` + the volume's `replicas`, stored for show
  std::string decided_by;            // node (or "api:<who>") that made the last change
  std::string reason;                // why (shown by volume show, logged)
  std::string at;                    // RFC 3339
  std::int64_t mod_revision = 0;     // not stored: basis of the next compare-and-swap
};

// decisions/<volume>/<generation as 20 digits>: one per change of the set, the last 100 kept.
struct Decision {
  std::int64_t generation = 0;
  std::vector<std::string> members;
  std::string decided_by, reason, at;
  std::vector<std::string> may_lose;  // overrides only: what the operator accepted to lose
};

// How many decisions are kept per volume (older ones are deleted by the change that passes it).
inline constexpr std::int64_t kDecisionsKept = 100;

enum class Access { none, read_only, read_write };
std::string_view to_string(Access a);
std::optional<Access> access_from(std::string_view s);  // "none" | "read-only" | "read-write"

// exports/<volume>: how the volume is served. Absent = NBD and iSCSI, everyone read-write.
struct ExportRecord {
  std::string volume;
  bool nbd = true;
  bool iscsi = true;
  Access default_access = Access::read_write;  // initiators not in `acl`
  std::map<std::string, Access> acl;           // initiator IQN -> access
  std::int64_t mod_revision = 0;
};

struct VolumeSpec {
  std::string name;            // [A-Za-z0-9][A-Za-z0-9._-]{0,62}
  std::uint64_t size = 0;      // > 0, multiple of 4096
  unsigned replicas = 1;       // 1 or 2 (2: two sites, else two nodes of one site)
  std::string preferred_site;  // "" = the site of the first live node with room
  std::string pool;            // "" = each chosen node's first pool with room
  std::string clone_of;        // "vol@snap": placed on the snapshot's replicas
  std::string reason;
};

class Catalogue {
 public:
  explicit Catalogue(Etcd& etcd) : etcd_(etcd) {}

  // --- reads ---
  Result<std::vector<NodeRecord>> nodes();
  Result<std::vector<PoolRecord>> pools();
  Result<std::vector<DrainRecord>> drains();
  Result<std::vector<VolumeRecord>> volumes();
  Result<VolumeRecord> volume(const std::string& name);
  Result<std::vector<SnapshotRecord>> snapshots(const std::string& volume);
  Result<std::vector<ReplicaStatus>> replicas(const std::string& volume);
  Result<ExportRecord> export_of(const std::string& volume);  // the default when absent
  // not_found when the volume has no in-sync record (it does not exist, or predates mirroring).
  Result<InSyncRecord> insync(const std::string& volume);
  // Online verify: asks the owner to compare the replicas (returns the request's id), and reads
  // the latest request (not_found if none).
  Result<std::int64_t> request_verify(const std::string& volume, bool repair);
  Result<VerifyRequest> verify_request(const std::string& volume);
  Result<std::vector<Decision>> decisions(const std::string& volume);  // oldest first

  // --- intents (API side) ---
  // Validates, places on live nodes with room (distinct sites first), records state=creating and
  // insync/<name> generation 1 (members = every replica, owner = the first) with its decision.
  Result<VolumeRecord> create_volume(const VolumeSpec& spec);
  // Grows (never shrinks: Errc::invalid). expected_generation (0 = any) guards against stale edits.
  Result<VolumeRecord> grow_volume(const std::string& name, std::uint64_t new_size,
                                   std::int64_t expected_generation = 0);
  Result<VolumeRecord> delete_volume(const std::string& name, const std::string& reason = {});
  Result<SnapshotRecord> create_snapshot(const std::string& volume, const std::string& snap);
  Result<SnapshotRecord> delete_snapshot(const std::string& volume, const std::string& snap);
  Result<ExportRecord> set_export(const ExportRecord& rec, std::int64_t expected_revision = -1);

  // Compare-and-swap of the in-sync set: succeeds only if insync/<volume> still has
  // expected.mod_revision (and the volume exists, has expected.uuid and is not deleting); writes
  // generation = expected.generation + 1, the new members/owner/decided_by/reason/at, and
  // decisions/<volume>/<new generation>, in ONE txn. Lost compare -> Errc::conflict (the caller
  // re-reads and re-decides); no quorum -> unavailable (nothing confirmed). members must be
  // non-empty and a subset of the volume's replicas (invalid, message starts "members:").
  // The volume record changing meanwhile (a grow) does not make it lose: it re-reads and retries.
  Result<InSyncRecord> change_insync(const InSyncRecord& expected, std::vector<std::string> members,
                                     const std::string& decided_by, const std::string& reason,
                                     const std::vector<std::string>& may_lose = {});

  // Planned maintenance: marks the node drained (idempotent: a second drain keeps the first
  // record's time and updates the reason), and resumes it (not_found if it was not drained).
  Result<DrainRecord> drain_node(const std::string& node, const std::string& by, const std::string& reason);
  Status resume_node(const std::string& node);

  // --- reports (node side) ---
  Status report_pool(const PoolRecord& rec);
  Status report_replica(const ReplicaStatus& st);
  Status remove_replica(const std::string& volume, const std::string& node);
  // Moves creating -> ready / snapshots creating -> ready / finishes deletes once every replica
  // has reported; any node may call it (the transaction makes it idempotent).
  Status settle(const std::string& volume);

  Etcd& etcd() { return etcd_; }

 private:
  Etcd& etcd_;
};

// Names: volumes, snapshots, nodes, pools.
bool valid_name(std::string_view s);

// The current time as the catalogue stores it (RFC 3339, UTC, seconds): "2026-11-24T10:00:00Z".
std::string now_rfc3339();

}  // namespace duplex::cluster
