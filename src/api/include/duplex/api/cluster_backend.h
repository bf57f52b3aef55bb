#pragma once
// The API's backend over the cluster catalogue in etcd, as every duplexd serves it.
//
// A change is an intent recorded at once (cluster::Catalogue); waiting for it to be applied is
// polling: settle the volume (moves creating -> ready and finishes deletes once every replica has
// reported), re-read, and check the change's condition, until it holds or the timeout passes.
//
//   intent --txn--> recorded --(wait=false)--------------------------------> Applied{done=false}
//                      |
//                      +--> settle + re-read --condition holds------------> Applied{done=true}
//                              ^          |
//                              +--sleep---+ (until the timeout) ----------> Applied{done=false}
//
// Conditions: create: state ready; grow and export changes: every replica reports the volume's
// new generation (and size); delete: the volume record is gone; snapshot create: snapshot ready;
// snapshot delete: the snapshot record is gone.
#include <atomic>
#include <chrono>
#include <string>

#include "duplex/api/backend.h"
#include "duplex/cluster/catalogue.h"

namespace duplex::api {

// What the API needs of the node it runs in; duplexd implements it.
class LocalNode {
 public:
  virtual ~LocalNode() = default;
  virtual std::string name() const = 0;
  virtual std::string site() const = 0;
  virtual bool lease_ok() const = 0;  // the node's etcd lease was renewed within its TTL
  virtual bool etcd_ok() const = 0;   // etcd answered the node's last call
  // The node's /metrics text (its volumes' stats, replicas, pools, connections).
  virtual std::string render_metrics() = 0;
};

struct ClusterBackendOptions {
  std::chrono::milliseconds poll{100};                     // between re-reads while waiting
  std::string default_base_iqn = "iqn.2026-11.io.duplex";  // when no replica node names one
};

class ClusterBackend final : public Backend {
 public:
  ClusterBackend(cluster::Catalogue& catalogue, LocalNode& node, ClusterBackendOptions opts = {});

  HealthView health() override;
  Result<std::vector<NodeView>> nodes() override;
  Result<std::vector<cluster::PoolRecord>> pools() override;
  Result<cluster::DrainRecord> drain_node(const std::string& node, const std::string& by,
                                          const std::string& reason) override;
  Status resume_node(const std::string& node) override;
  Result<std::vector<VolumeView>> volumes() override;
  Result<VolumeView> volume(const std::string& name) override;

  Result<Applied<VolumeView>> create_volume(const cluster::VolumeSpec& spec, Wait w) override;
  Result<Applied<VolumeView>> grow_volume(const std::string& name, std::uint64_t size,
                                          std::int64_t expected_generation, Wait w) override;
  Result<Applied<VolumeView>> delete_volume(const std::string& name, Wait w) override;

  Result<std::vector<SnapshotView>> snapshots(const std::string& volume) override;
  Result<Applied<SnapshotView>> create_snapshot(const std::string& volume, const std::string& snap,
                                                Wait w) override;
  Result<Applied<SnapshotView>> delete_snapshot(const std::string& volume, const std::string& snap,
                                                Wait w) override;

  Result<ExportView> export_of(const std::string& volume) override;
  Result<Applied<ExportView>> set_export(const cluster::ExportRecord& rec, std::int64_t expected_revision,
                                         Wait w) override;

  Result<std::int64_t> request_verify(const std::string& volume, bool repair) override {
    return cat_.request_verify(volume, repair);
  }
  Result<cluster::InSyncRecord> change_insync(const cluster::InSyncRecord& expected,
                                              std::vector<std::string> members, const std::string& decided_by,
                                              const std::string& reason,
                                              std::vector<std::string> may_lose) override {
    return cat_.change_insync(expected, std::move(members), decided_by, reason, may_lose);
  }

  std::string metrics() override { return node_.render_metrics(); }

  // Ends every wait in progress at its next turn (answered 202, state so far): the node is
  // stopping and its API threads must finish promptly.
  void cancel_waits() { cancelled_.store(true, std::memory_order_relaxed); }

 private:
  Result<VolumeView> view(const cluster::VolumeRecord& rec, const std::vector<NodeView>& nodes);
  Result<VolumeView> view(const std::string& name);
  // Polls until `done()` answers true or the wait's timeout passes; settles `volume` each turn.
  template <typename Done>
  Result<bool> poll_until(const std::string& volume, Wait w, Done done);
  Result<bool> replicas_applied(const std::string& volume, std::int64_t generation, std::uint64_t size);

  cluster::Catalogue& cat_;
  LocalNode& node_;
  ClusterBackendOptions opts_;
  std::atomic<bool> cancelled_{false};
};

}  // namespace duplex::api
