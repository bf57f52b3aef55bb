// The handler over the real ClusterBackend and Catalogue on a real etcd member. The node side
// (applying records and reporting replicas) is played by FakeNode, a thread that reports what a
// duplexd would after applying each record; without it nothing is applied and changes answer 202.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <thread>

#include "duplex/api/cluster_backend.h"
#include "duplex/api/handler.h"
#include "etcd_cluster.h"

using namespace duplex;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

class TestNode final : public api::LocalNode {
 public:
  std::string name() const override { return "n1"; }
  std::string site() const override { return "a"; }
  bool lease_ok() const override { return lease; }
  bool etcd_ok() const override { return true; }
  std::string render_metrics() override { return "duplex_node_up{node=\"n1\",site=\"a\"} 1\n"; }
  std::atomic<bool> lease{true};
};

// Plays duplexd's replica side for node n1: every record it holds is reported applied.
class FakeNode {
 public:
  explicit FakeNode(cluster::Catalogue& cat) : cat_(cat), thread_([this] { run(); }) {}
  ~FakeNode() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    while (!stop_) {
      if (auto vols = cat_.volumes()) {
        for (const auto& v : *vols) apply(v);
      }
      std::this_thread::sleep_for(20ms);
    }
  }
  void apply(const cluster::VolumeRecord& v) {
    cluster::ReplicaStatus st;
    st.volume = v.name;
    st.node = "n1";
    st.generation = v.generation;
    st.size = v.size;
    if (v.state == cluster::VolumeState::deleting) {
      st.state = "deleted";
    } else {
      st.state = "in-sync";
      if (auto snaps = cat_.snapshots(v.name)) {
        for (const auto& s : *snaps) {
          if (s.state != cluster::SnapshotState::deleting) st.snapshots.push_back(s.name);
        }
      }
    }
    (void)cat_.report_replica(st);
  }
  cluster::Catalogue& cat_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class ClusterApi : public ::testing::Test {
 protected:
  test::EtcdCluster etcd{1};
  cluster::Etcd client{cluster::EtcdOptions{etcd.endpoints(), 1000ms}};
  cluster::Catalogue cat{client};
  TestNode node;
  api::ClusterBackend backend{cat, node, api::ClusterBackendOptions{20ms}};
  api::Handler handler{backend, api::HandlerOptions{"tok"}};

  void SetUp() override {
    ASSERT_TRUE(client.put(std::string(cluster::kRoot) + "nodes/n1",
                           R"({"site":"a","address":"127.0.0.11","api":"http://127.0.0.11:7480",)"
                           R"("nbd":["127.0.0.11:10809"],"iscsi":["127.0.0.11:3260"],)"
                           R"("base_iqn":"iqn.2026-11.io.duplex","pid":42,"version":"0.1.0"})"));
    cluster::PoolRecord p;
    p.node = "n1";
    p.name = "p0";
    p.uuid = "u0";
    p.size = 100ULL << 30;
    p.free = 50ULL << 30;
    p.cluster_size = 65536;
    ASSERT_TRUE(cat.report_pool(p));
  }

  api::Response call(std::string method, std::string path, std::string body = {},
                     std::map<std::string, std::string> query = {}) {
    return handler.handle(
        api::Request{std::move(method), std::move(path), std::move(query), "Bearer tok", std::move(body)});
  }
  static json parse(const api::Response& r) { return json::parse(r.body); }
};

}  // namespace

TEST_F(ClusterApi, NothingAppliedGives202ThenAReportMakesItReady) {
  auto r = call("POST", "/v1/volumes", R"({"name":"slow","size":"1GiB"})", {{"timeout", "0.3"}});
  ASSERT_EQ(r.status, 202) << r.body;
  json v = parse(r);
  EXPECT_EQ(v["state"], "creating");
  EXPECT_EQ(v["replicas"][0]["node"], "n1");
  EXPECT_EQ(v["replicas"][0]["state"], "creating");
  EXPECT_EQ(v["paths"], json::array());

  // The node reports it applied the record (what duplexd does): the volume settles to ready.
  cluster::ReplicaStatus st;
  st.volume = "slow";
  st.node = "n1";
  st.state = "in-sync";
  st.generation = v["generation"];
  st.size = 1ULL << 30;
  ASSERT_TRUE(cat.report_replica(st));
  ASSERT_TRUE(cat.settle("slow"));
  r = call("GET", "/v1/volumes/slow");
  ASSERT_EQ(r.status, 200);
  v = parse(r);
  EXPECT_EQ(v["state"], "ready");
  EXPECT_EQ(v["replicas"][0]["state"], "in-sync");
  EXPECT_EQ(v["replicas"][0]["alive"], true);
  EXPECT_EQ(v["replicas"][0]["site"], "a");
  ASSERT_EQ(v["paths"].size(), 1u);
  EXPECT_EQ(v["paths"][0]["nbd"], "nbd://127.0.0.11:10809/slow");
  EXPECT_EQ(v["paths"][0]["iscsi"], "iscsi://127.0.0.11:3260/iqn.2026-11.io.duplex:slow/0");

  // Waiting for a grow nobody applies: 202 with the new size recorded.
  r = call("PATCH", "/v1/volumes/slow", R"({"size":"2GiB"})", {{"timeout", "0.2"}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(parse(r)["size"], 2ULL << 30);
  r = call("DELETE", "/v1/volumes/slow", {}, {{"wait", "false"}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(parse(r)["state"], "deleting");
}

TEST_F(ClusterApi, FullLifecycleWithANodeApplying) {
  FakeNode n1(cat);
  auto r = call("POST", "/v1/volumes", R"({"name":"demo","size":"1GiB","preferred_site":"a"})",
                {{"timeout", "10"}});
  ASSERT_EQ(r.status, 201) << r.body;
  json v = parse(r);
  EXPECT_EQ(v["state"], "ready");
  EXPECT_EQ(v["pool"], "p0");
  EXPECT_EQ(v["paths"][0]["node"], "n1");
  EXPECT_EQ(v["export"]["iqn"], "iqn.2026-11.io.duplex:demo");

  r = call("POST", "/v1/volumes", R"({"name":"demo","size":"1GiB"})");
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(parse(r)["error"]["code"], "exists");

  r = call("PATCH", "/v1/volumes/demo", R"({"size":"2GiB"})", {{"timeout", "10"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["size"], 2ULL << 30);
  EXPECT_EQ(parse(r)["replicas"][0]["size"], 2ULL << 30);
  const auto gen = parse(r)["generation"].get<std::int64_t>();
  r = call("PATCH", "/v1/volumes/demo", json{{"size", "3GiB"}, {"generation", gen - 1}}.dump());
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(parse(r)["error"]["code"], "conflict");
  r = call("PATCH", "/v1/volumes/demo", R"({"size":"1GiB"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(parse(r)["error"]["field"], "size");

  r = call("POST", "/v1/volumes/demo/snapshots", R"({"name":"s1"})", {{"timeout", "10"}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(parse(r)["state"], "ready");
  EXPECT_EQ(parse(r)["nbd"], "nbd://127.0.0.11:10809/demo@s1");
  r = call("GET", "/v1/volumes/demo/snapshots");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r).size(), 1u);

  r = call("PUT", "/v1/volumes/demo/export", R"({"nbd":false})", {{"timeout", "10"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["nbd"], false);
  r = call("GET", "/v1/volumes/demo");
  EXPECT_FALSE(parse(r)["paths"][0].contains("nbd")) << r.body;  // no NBD path while NBD is off
  r = call("PUT", "/v1/volumes/demo/export/acl/iqn.1994-05.com.redhat:host1", R"({"access":"read-only"})",
           {{"timeout", "10"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["acl"]["iqn.1994-05.com.redhat:host1"], "read-only");
  r = call("GET", "/v1/volumes/demo/export");
  EXPECT_EQ(parse(r)["acl"]["iqn.1994-05.com.redhat:host1"], "read-only");
  r = call("DELETE", "/v1/volumes/demo/export/acl/iqn.1994-05.com.redhat:host1", {}, {{"timeout", "10"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["acl"], json::object());

  r = call("POST", "/v1/volumes", R"({"name":"clone","clone_of":"demo@s1"})", {{"timeout", "10"}});
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(parse(r)["size"], 2ULL << 30);
  EXPECT_EQ(parse(r)["clone_of"], "demo@s1");

  r = call("DELETE", "/v1/volumes/demo/snapshots/s1", {}, {{"timeout", "10"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r), (json{{"deleted", "demo@s1"}}));
  r = call("DELETE", "/v1/volumes/demo", {}, {{"timeout", "10"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r), (json{{"deleted", "demo"}}));
  EXPECT_EQ(call("GET", "/v1/volumes/demo").status, 404);
  EXPECT_EQ(call("DELETE", "/v1/volumes/demo").status, 404);

  r = call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200) << r.body;
  json s = parse(r);
  EXPECT_EQ(s["node"]["name"], "n1");
  EXPECT_EQ(s["node"]["nbd"], (json{"127.0.0.11:10809"}));
  EXPECT_EQ(s["cluster"]["alive"], 1);
  EXPECT_EQ(s["cluster"]["volumes"], 1);  // the clone
  EXPECT_EQ(s["volumes"][0]["replicas"][0]["state"], "in-sync");
}

TEST_F(ClusterApi, CatalogueErrorsMapToHttp) {
  // One live node: a mirror has nowhere to put its second replica.
  auto r = call("POST", "/v1/volumes", R"({"name":"m","size":"1GiB","replicas":2})");
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_EQ(parse(r)["error"]["code"], "no_space");
  EXPECT_NE(parse(r)["error"]["message"].get<std::string>().find("replicas"), std::string::npos);
  r = call("POST", "/v1/volumes", R"({"name":"m","size":"1GiB","preferred_site":"elsewhere"})");
  EXPECT_EQ(r.status, 507) << r.body;
  EXPECT_EQ(parse(r)["error"]["code"], "no_space");
  r = call("POST", "/v1/volumes", R"({"name":"m","clone_of":"none@s"})");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_EQ(call("GET", "/v1/volumes/m/export").status, 404);
  EXPECT_EQ(call("DELETE", "/v1/volumes/m/snapshots/s").status, 404);
  EXPECT_EQ(call("GET", "/v1/nodes/n2").status, 404);
  r = call("GET", "/v1/nodes/n1");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r)["pid"], 42);
  EXPECT_EQ(parse(r)["alive"], true);
  r = call("GET", "/v1/pools");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r)[0]["free"], 50ULL << 30);

  r = call("GET", "/v1/health");
  EXPECT_EQ(parse(r)["status"], "ok");
  node.lease = false;
  r = call("GET", "/v1/health");
  EXPECT_EQ(parse(r)["status"], "degraded");
  EXPECT_EQ(parse(r)["lease"], false);
  EXPECT_EQ(call("GET", "/metrics").body, node.render_metrics());

  // etcd gone: nothing can be read or decided.
  etcd.kill(0);
  r = call("GET", "/v1/volumes");
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(parse(r)["error"]["code"], "unavailable");
  r = call("POST", "/v1/volumes", R"({"name":"x","size":"1GiB"})");
  EXPECT_EQ(r.status, 503) << r.body;
}

TEST_F(ClusterApi, MirroredVolumeShowsItsSetAndPromoteChangesItInEtcd) {
  ASSERT_TRUE(client.put(std::string(cluster::kRoot) + "nodes/n2",
                         R"({"site":"b","address":"127.0.0.12","nbd":["127.0.0.12:10809"],"pid":43})"));
  cluster::PoolRecord p;
  p.node = "n2";
  p.name = "p0";
  p.uuid = "u2";
  p.size = 100ULL << 30;
  p.free = 40ULL << 30;
  ASSERT_TRUE(cat.report_pool(p));
  auto r = call("POST", "/v1/volumes", R"({"name":"m","size":"1GiB","replicas":2})", {{"wait", "false"}});
  ASSERT_EQ(r.status, 202) << r.body;
  json j = parse(r);
  EXPECT_EQ(j["replicas_wanted"], 2);
  EXPECT_EQ(j["insync"]["generation"], 1);
  EXPECT_EQ(j["insync"]["members"], (json{"n1", "n2"}));
  EXPECT_EQ(j["insync"]["owner"], "n1");
  ASSERT_EQ(j["decisions"].size(), 1u);
  EXPECT_EQ(j["decisions"][0]["reason"], "created");

  auto report = [&](const std::string& node, const std::string& state, std::int64_t gen) {
    cluster::ReplicaStatus st;
    st.volume = "m";
    st.node = node;
    st.state = state;
    st.generation = gen;
    st.size = 1ULL << 30;
    st.role = node == "n1" ? "owner" : "peer";
    ASSERT_TRUE(cat.report_replica(st));
  };
  report("n1", "in-sync", 1);
  report("n2", "in-sync", 1);
  j = parse(call("GET", "/v1/volumes/m"));
  EXPECT_EQ(j["paths"].size(), 2u);
  EXPECT_EQ(j["replicas"][0]["role"], "owner");
  EXPECT_EQ(j["replicas"][1]["member"], true);
  // n1 removes n2 (n2 still claims in-sync in its stale report: it no longer gets a path), then n1
  // is lost too: a rolling failure that only the operator can end.
  auto set = cat.insync("m");
  ASSERT_TRUE(set);
  ASSERT_TRUE(cat.change_insync(*set, {"n1"}, "n1", "peer n2 lost: link timeout"));
  j = parse(call("GET", "/v1/volumes/m"));
  ASSERT_EQ(j["paths"].size(), 1u);
  EXPECT_EQ(j["paths"][0]["node"], "n1");
  EXPECT_EQ(j["replicas"][1]["member"], false);
  report("n1", "failed", 1);
  report("n2", "outdated", 1);

  r = call("POST", "/v1/volumes/m/promote", R"({"node":"n2"})");
  ASSERT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(parse(r)["error"]["field"], "accept_data_loss");
  EXPECT_NE(
      parse(r)["error"]["message"].get<std::string>().find("writes acknowledged by n1 after generation 1"),
      std::string::npos)
      << r.body;
  EXPECT_EQ(cat.insync("m")->generation, 2);
  r = call("POST", "/v1/volumes/m/promote",
           R"({"node":"n2","accept_data_loss":true,"reason":"site a lost"})");
  ASSERT_EQ(r.status, 200) << r.body;
  auto now = cat.insync("m");
  ASSERT_TRUE(now);
  EXPECT_EQ(now->generation, 3);
  EXPECT_EQ(now->members, std::vector<std::string>{"n2"});
  EXPECT_EQ(now->owner, "n2");
  EXPECT_EQ(now->decided_by, "api");
  auto ds = cat.decisions("m");
  ASSERT_TRUE(ds);
  ASSERT_EQ(ds->size(), 3u);
  ASSERT_EQ(ds->back().may_lose.size(), 1u);
  EXPECT_NE(ds->back().may_lose[0].find("writes acknowledged by n1 after generation 1"), std::string::npos);
  j = parse(r);
  EXPECT_EQ(j["insync"]["members"], (json{"n2"}));
  EXPECT_EQ(j["decisions"].size(), 3u);
  r = call("POST", "/v1/volumes/m/promote", R"({"node":"n2","accept_data_loss":true})");
  EXPECT_EQ(r.status, 409) << r.body;
}

TEST_F(ClusterApi, ADrainedNodeIsListedWhileDownAndResumeRemovesTheRecord) {
  auto r = call("POST", "/v1/nodes/n1/drain", R"({"reason":"kernel upgrade"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["drain"]["reason"], "drain of n1: kernel upgrade");
  EXPECT_EQ(parse(r)["drain"]["state"], "drained");  // no volume holds it in a set
  // Stopped for its upgrade: the leased node record goes, the drain stays, and the node is listed.
  ASSERT_TRUE(client.del(std::string(cluster::kRoot) + "nodes/n1"));
  json list = parse(call("GET", "/v1/nodes"));
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "n1");
  EXPECT_EQ(list[0]["alive"], false);
  EXPECT_EQ(list[0]["drain"]["by"], "api");
  EXPECT_EQ(call("GET", "/v1/nodes/n1").status, 200);
  ASSERT_EQ(call("POST", "/v1/nodes/n1/resume", "{}").status, 200);
  EXPECT_TRUE(parse(call("GET", "/v1/nodes")).empty());
  EXPECT_EQ(call("POST", "/v1/nodes/n1/resume", "{}").status, 404);
}
