#include "duplex/daemon/node_metrics.h"

#include "duplex/api/metrics.h"

namespace duplex::daemon {

namespace {
// Every state a replica can report: each gets a sample (1 for the current one, 0 for the others),
// so an alert on `duplex_replica_state{state="failed"} == 1` also sees the return to 0.
constexpr const char* kReplicaStates[] = {"creating", "in-sync", "outdated", "resyncing", "failed"};
}  // namespace

std::string render_node_metrics(const NodeMetricsInput& in) {
  using api::MetricsWriter;
  MetricsWriter w;
  render_volume_stats(w, in.volumes);

  w.family("duplex_replica_state", MetricsWriter::Type::gauge,
           "1 for the state this node's replica of the volume is in, 0 for the others.");
  for (const auto& r : in.replicas) {
    bool known = false;
    for (const char* s : kReplicaStates) {
      known = known || r.state == s;
      w.sample("duplex_replica_state", {{"volume", r.volume}, {"node", in.node}, {"state", s}},
               std::uint64_t{r.state == s ? 1u : 0u});
    }
    if (!known)  // a state this build does not list still shows, rather than vanishing
      w.sample("duplex_replica_state", {{"volume", r.volume}, {"node", in.node}, {"state", r.state}},
               std::uint64_t{1});
  }
  w.family("duplex_replica_dirty_bytes", MetricsWriter::Type::gauge,
           "Bytes of this node's replica that may differ from its peer and need a resync.");
  for (const auto& r : in.replicas)
    w.sample("duplex_replica_dirty_bytes", {{"volume", r.volume}, {"node", in.node}}, r.dirty_bytes);

  w.family("duplex_node_up", MetricsWriter::Type::gauge, "1 while the node serves (it answers this scrape).");
  w.sample("duplex_node_up", {{"node", in.node}, {"site", in.site}}, std::uint64_t{1});
  w.family("duplex_node_lease_ok", MetricsWriter::Type::gauge,
           "1 while the node's etcd lease is renewed within its TTL; 0 means it claims nothing.");
  w.sample("duplex_node_lease_ok", {{"node", in.node}}, std::uint64_t{in.lease_ok ? 1u : 0u});
  w.family("duplex_node_etcd_ok", MetricsWriter::Type::gauge, "1 when etcd answered the node's last call.");
  w.sample("duplex_node_etcd_ok", {{"node", in.node}}, std::uint64_t{in.etcd_ok ? 1u : 0u});

  w.family("duplex_pool_size_bytes", MetricsWriter::Type::gauge, "Data area of the pool, in bytes.");
  for (const auto& p : in.pools) w.sample("duplex_pool_size_bytes", {{"pool", p.name}}, p.size);
  w.family("duplex_pool_free_bytes", MetricsWriter::Type::gauge, "Unallocated bytes of the pool.");
  for (const auto& p : in.pools) w.sample("duplex_pool_free_bytes", {{"pool", p.name}}, p.free);

  w.family("duplex_nbd_connections", MetricsWriter::Type::gauge, "Open NBD connections.");
  w.sample("duplex_nbd_connections", {}, in.nbd_connections);
  w.family("duplex_iscsi_connections", MetricsWriter::Type::gauge, "Open iSCSI connections.");
  w.sample("duplex_iscsi_connections", {}, in.iscsi_connections);
  return w.take();
}

}  // namespace duplex::daemon
