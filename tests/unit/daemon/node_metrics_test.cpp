// The node's /metrics text: every family announced once, samples that move with the input.
#include "duplex/daemon/node_metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <sstream>

namespace duplex::daemon {
namespace {

bool has_line(const std::string& text, const std::string& line) {
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (l == line) return true;
  return false;
}

TEST(NodeMetrics, CountersReplicasPoolsAndHealth) {
  volume::VolumeStats stats;
  stats.record(volume::IoOp::write, 4096, true, std::chrono::microseconds(80));
  stats.record(volume::IoOp::write, 4096, true, std::chrono::microseconds(80));
  stats.record(volume::IoOp::read, 512, false, std::chrono::milliseconds(3));
  NodeMetricsInput in;
  in.node = "n1";
  in.site = "a";
  in.lease_ok = true;
  in.etcd_ok = false;
  in.volumes.emplace_back("vm\"1", stats.snapshot());
  in.replicas.push_back({"vm\"1", "in-sync", 0});
  in.replicas.push_back({"other", "rebuilding", 4096});  // a state this build does not list
  in.pools.push_back({"p0", 1 << 30, 1 << 29});
  in.nbd_connections = 3;
  const std::string t = render_node_metrics(in);

  EXPECT_TRUE(has_line(t, R"(duplex_volume_ops_total{volume="vm\"1",op="write"} 2)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_volume_bytes_total{volume="vm\"1",op="write"} 8192)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_volume_errors_total{volume="vm\"1",op="read"} 1)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_volume_latency_seconds_bucket{volume="vm\"1",op="write",le="0.0001"} 2)"))
      << t;
  EXPECT_TRUE(has_line(t, R"(duplex_volume_latency_seconds_bucket{volume="vm\"1",op="read",le="0.0025"} 0)"))
      << t;
  EXPECT_TRUE(has_line(t, R"(duplex_volume_latency_seconds_bucket{volume="vm\"1",op="read",le="0.005"} 1)"))
      << t;
  EXPECT_TRUE(has_line(t, R"(duplex_replica_state{volume="vm\"1",node="n1",state="in-sync"} 1)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_replica_state{volume="vm\"1",node="n1",state="failed"} 0)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_replica_state{volume="other",node="n1",state="rebuilding"} 1)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_replica_dirty_bytes{volume="other",node="n1"} 4096)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_node_up{node="n1",site="a"} 1)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_node_lease_ok{node="n1"} 1)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_node_etcd_ok{node="n1"} 0)")) << t;
  EXPECT_TRUE(has_line(t, R"(duplex_pool_free_bytes{pool="p0"} 536870912)")) << t;
  EXPECT_TRUE(has_line(t, "duplex_nbd_connections 3")) << t;
  EXPECT_TRUE(has_line(t, "duplex_iscsi_connections 0")) << t;

  // Each family is announced exactly once (the format forbids repeating a TYPE line).
  std::istringstream lines(t);
  std::map<std::string, int> types;
  for (std::string l; std::getline(lines, l);)
    if (l.rfind("# TYPE ", 0) == 0) ++types[l.substr(7, l.find(' ', 7) - 7)];
  for (const auto& [name, n] : types) EXPECT_EQ(n, 1) << name;
  EXPECT_EQ(types.count("duplex_replica_state"), 1u);
}

}  // namespace
}  // namespace duplex::daemon
