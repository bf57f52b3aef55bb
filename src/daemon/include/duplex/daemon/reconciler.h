#pragma once
// Applies the volume catalogue (cluster::Catalogue, in etcd) to this node's pools: every volume
// whose replica list names this node is created, grown, snapshotted, exported and deleted here,
// and the outcome is reported under replicas/<volume>/<node>, followed by settle().
//
// Threads. A cluster::Watcher (its own thread) on /duplex/v1/ marks volumes dirty; one worker
// thread applies them. Pool operations are coroutines on the pool's event loop: the worker hands
// them to the Host, which posts them there and waits; no event loop ever waits on etcd.
//
// One volume, each time it is dirty (a change under volumes/, snapshots/ or exports/ for it, the
// watcher's reset, or the periodic pass every `period`):
//
//   read volumes/V, snapshots/V/*, exports/V
//     absent, or not placed here --> unpublish V (and its snapshots)
//     deleting --> unpublish --> remove V with its snapshots from the pool --> report "deleted"
//     creating/ready --> ensure V (create with the record's uuid, or clone) --> grow to size
//                    --> snapshots: create "creating"/"ready" ones, remove "deleting" ones
//                    --> publish V and V@snap with the export record --> report "in-sync"
//     any step fails --> report "failed" with the error; the next pass retries
//   --> settle(V)
//
// Mirrored volumes (two replicas): the in-sync record insync/V is read too and handed to apply(),
// which builds the node's MirrorVolume (docs/mirror.md); the report then carries the mirror's
// view (state, role, in-sync generation, link, dirty bytes, resync progress, last event). Every
// `mirror_tick` the worker asks the host for each mirror's status and re-reports the replica when
// it changed (only the report: no catalogue reads), and refreshes the peers' mirror addresses
// from the node records. A mirror that committed a grow meanwhile (its served size changed)
// marks the volume for a full pass, which publishes the new size to the front-ends.
//
// Pools are reported (pools/<node>/<pool>) at start, every `period`, and after every change.
//
// Drains (drains/<node>, planned maintenance): read at start and whenever the watcher sees a change
// there, and handed to the host (set_drains) then and every mirror tick, which retries a step-down
// that was refused (the peer was not in step yet).
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/cluster/catalogue.h"

namespace duplex::daemon {

// What applying a volume left in the pool (read on the pool's loop).
struct AppliedVolume {
  std::uint64_t size = 0;
  std::uint64_t allocated_bytes = 0;
  std::vector<std::string> snapshots;  // snapshot names present in the pool
};

// A mirrored replica's state as the engine sees it (mirror::MirrorStatus, without the engine's
// types: the reconciler only reports it).
struct MirrorReport {
  std::string state;  // engine state: "in-sync" | "outdated" | "inconsistent" | "resyncing" | "failed"
  std::string role;   // "owner" | "peer" | ""
  std::int64_t insync_generation = 0;
  bool link_up = false;
  std::uint64_t dirty_bytes = 0;
  std::uint64_t resync_total = 0, resync_done = 0;
  double resync_rate = 0;
  std::string last_event;
  std::uint64_t size = 0;           // the size the mirror serves (both replicas hold it, or the peer is out)
  std::string grow;                 // why a grow has not committed here yet ("" when none waits)
  std::int64_t verify_request = 0;  // the online verify this node ran last (as the owner)
  std::string verify_state;         // "" | "running" | "done" | "failed"
  std::uint64_t verify_checked = 0, verify_mismatches = 0, verify_repaired = 0;
  std::string verify_error;
  friend bool operator==(const MirrorReport&, const MirrorReport&) = default;
};

// The daemon side of the reconciler. Calls come from the worker thread and block.
class ReconcilerHost {
 public:
  virtual ~ReconcilerHost() = default;
  virtual std::vector<std::string> pool_names() = 0;
  virtual Result<cluster::PoolRecord> pool_report(const std::string& pool) = 0;
  // Makes the pool hold the volume as recorded (uuid, size, the snapshots not being deleted) and
  // removes the snapshots being deleted. For a mirrored volume `insync` is its in-sync record
  // (nullopt: none could be read) and the node's mirror of it is built and started.
  virtual Result<AppliedVolume> apply(const cluster::VolumeRecord& v,
                                      const std::vector<cluster::SnapshotRecord>& s,
                                      const std::optional<cluster::InSyncRecord>& insync) = 0;
  // The mirrored volumes running here, and one's status (nullopt: not mirrored here).
  virtual std::vector<std::string> mirrored() { return {}; }
  virtual std::optional<MirrorReport> mirror_report(const std::string& /*volume*/) { return std::nullopt; }
  // Node name -> its advertised mirror address (from the node records), for the mirrors' dialers.
  virtual void set_mirror_addresses(const std::map<std::string, std::string>& /*addresses*/) {}
  // The nodes drained for maintenance (node -> reason), after every change and every mirror tick:
  // the mirrors here step down (this node drained) or hold their peer out of the set.
  virtual void set_drains(const std::map<std::string, std::string>& /*drained*/) {}
  // An online verify was asked for (request id, repair): the owner's mirror runs it, once per id.
  virtual void mirror_verify(const std::string& /*volume*/, std::int64_t /*id*/, bool /*repair*/) {}
  // Removes the volume and its snapshots from the pool (absent already: OK).
  virtual Status remove(const std::string& pool, const std::string& volume) = 0;
  // Serves the volume (and the listed snapshots, read-only) per the export record.
  virtual void publish(const cluster::VolumeRecord& v, const std::vector<std::string>& snapshots,
                       const cluster::ExportRecord& ex) = 0;
  // Stops serving the volume and its snapshots (objects stay alive for running sessions).
  virtual void unpublish(const std::string& volume) = 0;
};

struct ReconcilerOptions {
  cluster::EtcdOptions etcd;
  std::string node;
  std::chrono::milliseconds period{30000};
  std::chrono::milliseconds mirror_tick{1000};
};

class Reconciler {
 public:
  Reconciler(ReconcilerOptions opts, ReconcilerHost& host);
  ~Reconciler();  // stops the watcher and the worker (a pool operation in progress is abandoned)
  Reconciler(const Reconciler&) = delete;
  Reconciler& operator=(const Reconciler&) = delete;

  // The names of the volumes this node applied successfully in its last pass over each (tests).
  std::set<std::string> applied() const;

 private:
  void run();
  void mark(const std::string& volume);
  void mark_all();
  void reconcile(const std::string& volume);
  void report_pools();
  void mirror_tick();
  void refresh_peers();
  void refresh_drains();

  ReconcilerOptions opts_;
  ReconcilerHost& host_;
  cluster::Etcd etcd_;
  cluster::Catalogue cat_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::set<std::string> dirty_;
  bool all_dirty_ = true;
  bool drains_dirty_ = true;  // under mu_
  bool stop_ = false;
  std::set<std::string> applied_;
  std::set<std::string> published_;  // volumes this reconciler published (worker thread only)
  // The last report written per mirrored volume (worker thread only): the tick re-sends it with
  // the mirror's fields updated when they changed.
  std::map<std::string, cluster::ReplicaStatus> mirror_reports_;
  std::map<std::string, MirrorReport> mirror_seen_;
  // What the periodic pass last wrote, by name (worker thread only): an unchanged report is not
  // written again until kRewriteAfter has passed (each put is an fsync on every etcd member; an
  // idle cluster of N volumes would otherwise write 2N keys per period).
  template <typename T>
  class Written {
   public:
    static constexpr std::chrono::minutes kRewriteAfter{10};
    bool unchanged(const std::string& name, const T& v, std::chrono::steady_clock::time_point now) const {
      auto it = last_.find(name);
      return it != last_.end() && it->second.first == v && now - it->second.second < kRewriteAfter;
    }
    void wrote(const std::string& name, T v, std::chrono::steady_clock::time_point now) {
      last_[name] = {std::move(v), now};
    }
    void forget(const std::string& name) { last_.erase(name); }

   private:
    std::map<std::string, std::pair<T, std::chrono::steady_clock::time_point>> last_;
  };
  // A replica's report with its volume's uuid, so a volume deleted and made again under its name
  // is always reported.
  Written<std::pair<std::string, cluster::ReplicaStatus>> written_;
  Written<cluster::PoolRecord> pools_written_;
  // drains/ (worker thread only): re-read when the watcher saw a change there.
  std::map<std::string, std::string> drained_;
  bool drains_read_ = false;
  std::thread worker_;
  std::unique_ptr<cluster::Watcher> watcher_;
};

}  // namespace duplex::daemon
