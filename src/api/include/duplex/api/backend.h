#pragma once
// What the REST handler needs from the cluster, as plain values: the handler turns requests into
// these calls and their results into JSON; it knows nothing of etcd. ClusterBackend implements it
// over cluster::Catalogue; tests and the fuzz target use an in-memory one.
//
// Changes (create, grow, delete, snapshots, export) are intents: the backend records them and, when
// asked to wait, watches until the nodes holding replicas have applied them or the time runs out.
// `Applied::done` tells which (the handler answers 200/201 or 202).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/cluster/catalogue.h"

namespace duplex::api {

struct Wait {
  bool wait = true;                           // ?wait=false: record and answer at once
  std::chrono::milliseconds timeout{30'000};  // ?timeout= seconds
};

template <typename T>
struct Applied {
  T value;
  bool done = false;  // every node concerned applied the change before the timeout
};

struct NodeView {
  cluster::NodeRecord rec;
  bool alive = false;  // the node's leased record is present
  // Drained for planned maintenance (a drained node is listed even while it is down).
  std::optional<cluster::DrainRecord> drain;
};

struct ReplicaView {
  std::string node;
  std::string site;  // "" when the node is not alive (its record went with its lease)
  bool alive = false;
  std::optional<cluster::ReplicaStatus> report;  // nullopt: the node has not reported yet
};

struct PathView {
  std::string node;
  std::string nbd;    // "nbd://127.0.0.11:10809/demo", "" when not exported over NBD
  std::string iscsi;  // "iscsi://127.0.0.11:3260/iqn...:demo/0", "" when not over iSCSI
};

struct ExportView {
  cluster::ExportRecord rec;
  std::string iqn;  // <base_iqn of a replica node>:<volume>
};

struct SnapshotView {
  cluster::SnapshotRecord rec;
  std::string nbd;  // "nbd://.../demo@s1" through the first path with NBD, or ""
};

struct VolumeView {
  cluster::VolumeRecord rec;
  std::vector<ReplicaView> replicas;  // in rec.replicas order
  std::vector<SnapshotView> snapshots;
  ExportView exp;
  std::vector<PathView> paths;                  // in-sync members, reporting in-sync, on a live node
  std::optional<cluster::InSyncRecord> insync;  // nullopt: none stored (a volume older than the mirror)
  std::vector<cluster::Decision> decisions;     // the last kDecisionsShown, oldest first
};

// How many of a volume's decisions its view carries (etcd keeps the last 100).
inline constexpr std::size_t kDecisionsShown = 20;

struct HealthView {
  std::string node;
  std::string site;
  bool etcd = false;   // etcd answered a read just now
  bool lease = false;  // this node's lease is being renewed
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual HealthView health() = 0;
  virtual Result<std::vector<NodeView>> nodes() = 0;
  virtual Result<std::vector<cluster::PoolRecord>> pools() = 0;
  virtual Result<std::vector<VolumeView>> volumes() = 0;
  virtual Result<VolumeView> volume(const std::string& name) = 0;

  virtual Result<Applied<VolumeView>> create_volume(const cluster::VolumeSpec& spec, Wait w) = 0;
  virtual Result<Applied<VolumeView>> grow_volume(const std::string& name, std::uint64_t size,
                                                  std::int64_t expected_generation, Wait w) = 0;
  // done: the volume and its snapshots are gone; otherwise value is its state so far.
  virtual Result<Applied<VolumeView>> delete_volume(const std::string& name, Wait w) = 0;

  virtual Result<std::vector<SnapshotView>> snapshots(const std::string& volume) = 0;
  virtual Result<Applied<SnapshotView>> create_snapshot(const std::string& volume, const std::string& snap,
                                                        Wait w) = 0;
  virtual Result<Applied<SnapshotView>> delete_snapshot(const std::string& volume, const std::string& snap,
                                                        Wait w) = 0;

  virtual Result<ExportView> export_of(const std::string& volume) = 0;
  // rec.volume names the volume; the whole record replaces the current one if the stored record
  // is still at expected_revision (-1: whatever it is; 0: none stored yet), else Errc::conflict.
  virtual Result<Applied<ExportView>> set_export(const cluster::ExportRecord& rec,
                                                 std::int64_t expected_revision, Wait w) = 0;

  // Asks the owner of a mirrored volume for an online verify; returns the request's id.
  virtual Result<std::int64_t> request_verify(const std::string& volume, bool repair) = 0;
  // Compare-and-swap of the volume's in-sync set (cluster::Catalogue::change_insync): conflict when
  // the stored set is no longer `expected`. The operator's promote is built on it.
  virtual Result<cluster::InSyncRecord> change_insync(const cluster::InSyncRecord& expected,
                                                      std::vector<std::string> members,
                                                      const std::string& decided_by,
                                                      const std::string& reason,
                                                      std::vector<std::string> may_lose) = 0;

  // Planned maintenance (cluster::Catalogue::drain_node / resume_node). The handler checks first
  // that no volume would be left without an in-sync replica.
  virtual Result<cluster::DrainRecord> drain_node(const std::string& /*node*/, const std::string& /*by*/,
                                                  const std::string& /*reason*/) {
    return Status::error(Errc::unsupported, "this backend cannot drain nodes");
  }
  virtual Status resume_node(const std::string& /*node*/) {
    return Status::error(Errc::unsupported, "this backend cannot resume nodes");
  }

  // Prometheus text of this node (its volumes, replicas, pools, connections).
  virtual std::string metrics() = 0;
};

}  // namespace duplex::api
