#pragma once
// What one node says about itself on /metrics (docs/api.md, "Metrics"): its volumes' I/O counters
// and latency histograms, the replicas it holds and their states, its pools, its front-end
// connections and its own health. The daemon gathers a snapshot (NodeMetricsInput) on the API's
// thread; rendering is a pure function so a test can check the text without a running node.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "duplex/volume/volume_stats.h"

namespace duplex::daemon {

struct NodeMetricsInput {
  std::string node;
  std::string site;
  bool lease_ok = false;  // the node's etcd lease was renewed within its TTL
  bool etcd_ok = false;   // etcd answered the node's last call
  std::vector<std::pair<std::string, volume::VolumeStatsSnapshot>> volumes;
  struct Replica {
    std::string volume;
    std::string state;  // "in-sync", "creating", "failed", ...
    std::uint64_t dirty_bytes = 0;
  };
  std::vector<Replica> replicas;
  struct Pool {
    std::string name;
    std::uint64_t size = 0;
    std::uint64_t free = 0;
  };
  std::vector<Pool> pools;
  std::uint64_t nbd_connections = 0;
  std::uint64_t iscsi_connections = 0;
};

std::string render_node_metrics(const NodeMetricsInput& in);

}  // namespace duplex::daemon
