// The volume catalogue against real etcd: validation naming the field, placement on live nodes
// with room, every serving decision a compare-and-swap (stale edits and concurrent creates lose),
// the delete and snapshot lifecycles through settle(), garbage under a key skipped, and a
// 3-member cluster losing one member (creates work) and then the majority (Errc::unavailable).
#include "duplex/cluster/catalogue.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "etcd_cluster.h"

namespace duplex::cluster {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kGiB = 1ULL << 30;

EtcdOptions opts(const test::EtcdCluster& c, std::chrono::milliseconds timeout = 2000ms) {
  EtcdOptions o;
  o.endpoints = c.endpoints();
  o.timeout = timeout;
  return o;
}

// A node as duplexd would register it (without a lease: the test plays the node).
void add_node(Etcd& e, const std::string& name, const std::string& site) {
  ASSERT_TRUE(e.put(std::string(kRoot) + "nodes/" + name, R"({"site":")" + site + R"(","pid":1})"));
}

void add_pool(Catalogue& c, const std::string& node, const std::string& pool, std::uint64_t free) {
  PoolRecord p;
  p.node = node;
  p.name = pool;
  p.uuid = "u-" + node + "-" + pool;
  p.size = 100 * kGiB;
  p.free = free;
  p.cluster_size = 65536;
  ASSERT_TRUE(c.report_pool(p));
}

VolumeSpec spec(const std::string& name, std::uint64_t size = kGiB) {
  VolumeSpec s;
  s.name = name;
  s.size = size;
  return s;
}

// What the node holding the replica reports after applying the record.
void report(Catalogue& c, const VolumeRecord& v, const std::string& state,
            std::vector<std::string> snaps = {}) {
  ReplicaStatus st;
  st.volume = v.name;
  st.node = v.replicas.at(0);
  st.state = state;
  st.generation = v.generation;
  st.size = v.size;
  st.snapshots = std::move(snaps);
  ASSERT_TRUE(c.report_replica(st));
}

void wait_for_quorum(Etcd& e) {
  for (int i = 0; i < 100 && !e.get("/duplex/probe"); ++i) std::this_thread::sleep_for(100ms);
}

struct OneNode : ::testing::Test {
  test::EtcdCluster etcd{1};
  Etcd e{opts(etcd)};
  Catalogue cat{e};
  void SetUp() override {
    add_node(e, "n1", "s1");
    add_pool(cat, "n1", "p1", 50 * kGiB);
  }
};

TEST_F(OneNode, CreateListShowAndDuplicate) {
  auto v = cat.create_volume(spec("v1"));
  ASSERT_TRUE(v) << v.status().to_string();
  EXPECT_EQ(v->state, VolumeState::creating);
  EXPECT_EQ(v->replicas, std::vector<std::string>{"n1"});
  EXPECT_EQ(v->pool, "p1");
  EXPECT_EQ(v->generation, 1);
  EXPECT_FALSE(v->uuid.empty());
  EXPECT_GT(v->mod_revision, 0);
  auto shown = cat.volume("v1");
  ASSERT_TRUE(shown);
  EXPECT_EQ(shown->uuid, v->uuid);
  EXPECT_EQ(shown->size, kGiB);
  EXPECT_EQ(shown->mod_revision, v->mod_revision);
  ASSERT_TRUE(cat.create_volume(spec("v2", 8192)));
  auto all = cat.volumes();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].name, "v1");
  EXPECT_EQ((*all)[1].name, "v2");
  auto dup = cat.create_volume(spec("v1"));
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.status().code(), Errc::exists) << dup.status().to_string();
  EXPECT_EQ(cat.volume("nope").status().code(), Errc::not_found);
  // The export of a volume without an exports/ key is the default: both front-ends, read-write.
  auto ex = cat.export_of("v1");
  ASSERT_TRUE(ex);
  EXPECT_TRUE(ex->nbd && ex->iscsi);
  EXPECT_EQ(ex->default_access, Access::read_write);
  EXPECT_EQ(ex->mod_revision, 0);
}

TEST_F(OneNode, BadInputIsInvalidNamingTheField) {
  auto expect_invalid = [](const Result<VolumeRecord>& r, const std::string& field) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), Errc::invalid) << r.status().to_string();
    EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().to_string();
  };
  expect_invalid(cat.create_volume(spec("bad/name")), "name");
  expect_invalid(cat.create_volume(spec("")), "name");
  expect_invalid(cat.create_volume(spec("-x")), "name");
  expect_invalid(cat.create_volume(spec(std::string(64, 'a'))), "name");
  expect_invalid(cat.create_volume(spec("v", 0)), "size");
  expect_invalid(cat.create_volume(spec("v", 4097)), "size");
  auto s = spec("v");
  s.replicas = 3;
  expect_invalid(cat.create_volume(s), "replicas");
  s.replicas = 2;
  auto two = cat.create_volume(s);
  ASSERT_FALSE(two);
  EXPECT_EQ(two.status().code(), Errc::unsupported);
  EXPECT_NE(two.status().message().find("mirroring"), std::string::npos);
  s = spec("v");
  s.clone_of = "nosnap";
  expect_invalid(cat.create_volume(s), "clone_of");
  EXPECT_TRUE(cat.volumes()->empty());
}

TEST_F(OneNode, GrowOnlyAndStaleGrowLoses) {
  auto v = cat.create_volume(spec("g"));
  ASSERT_TRUE(v);
  auto shrink = cat.grow_volume("g", kGiB / 2);
  ASSERT_FALSE(shrink);
  EXPECT_EQ(shrink.status().code(), Errc::invalid);
  EXPECT_NE(shrink.status().message().find("size"), std::string::npos);
  EXPECT_EQ(cat.grow_volume("g", kGiB + 1).status().code(), Errc::invalid);
  EXPECT_EQ(cat.grow_volume("missing", 2 * kGiB).status().code(), Errc::not_found);
  // Two editors read generation 1; the first grow wins, the second (stale) one loses.
  auto fresh = cat.grow_volume("g", 2 * kGiB, 1);
  ASSERT_TRUE(fresh) << fresh.status().to_string();
  EXPECT_EQ(fresh->generation, 2);
  auto stale = cat.grow_volume("g", 3 * kGiB, 1);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.status().code(), Errc::conflict);
  EXPECT_EQ(cat.volume("g")->size, 2 * kGiB);
  // A stale revision (someone wrote between read and write) loses too: simulate with a raw put.
  auto before = cat.volume("g");
  ASSERT_TRUE(before);
  ASSERT_TRUE(
      e.put(std::string(kRoot) + "volumes/g", e.get(std::string(kRoot) + "volumes/g")->kvs.at(0).value));
  auto t = e.txn({Compare::unchanged_since(std::string(kRoot) + "volumes/g", before->mod_revision)}, {});
  ASSERT_TRUE(t);
  EXPECT_FALSE(t->succeeded);
  auto again = cat.grow_volume("g", 4 * kGiB);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->generation, 3);
}

TEST_F(OneNode, ConcurrentCreatesOfOneNameExactlyOneWins) {
  for (int round = 0; round < 5; ++round) {
    const std::string name = "race" + std::to_string(round);
    std::atomic<int> won{0}, exists{0}, other{0};
    auto go = [&] {
      Etcd mine(opts(etcd));
      Catalogue c(mine);
      auto r = c.create_volume(spec(name));
      if (r)
        ++won;
      else if (r.status().code() == Errc::exists)
        ++exists;
      else
        ++other;
    };
    std::thread a(go), b(go);
    a.join();
    b.join();
    EXPECT_EQ(won.load(), 1);
    EXPECT_EQ(exists.load(), 1);
    EXPECT_EQ(other.load(), 0);
  }
}

TEST_F(OneNode, DeleteLifecycleThroughSettle) {
  auto v = cat.create_volume(spec("d"));
  ASSERT_TRUE(v);
  ASSERT_TRUE(cat.settle("d"));
  EXPECT_EQ(cat.volume("d")->state, VolumeState::creating);  // no report yet
  report(cat, *v, "creating");
  ASSERT_TRUE(cat.settle("d"));
  EXPECT_EQ(cat.volume("d")->state, VolumeState::creating);
  report(cat, *v, "in-sync");
  ASSERT_TRUE(cat.settle("d"));
  ASSERT_TRUE(cat.settle("d"));  // idempotent
  EXPECT_EQ(cat.volume("d")->state, VolumeState::ready);
  ASSERT_TRUE(cat.create_snapshot("d", "s1"));
  ExportRecord ex;
  ex.volume = "d";
  ex.nbd = false;
  ASSERT_TRUE(cat.set_export(ex));

  auto del = cat.delete_volume("d", "test");
  ASSERT_TRUE(del);
  EXPECT_EQ(del->state, VolumeState::deleting);
  EXPECT_EQ(cat.delete_volume("d")->state, VolumeState::deleting);  // idempotent
  EXPECT_EQ(cat.grow_volume("d", 2 * kGiB).status().code(), Errc::invalid);
  EXPECT_EQ(cat.create_snapshot("d", "s2").status().code(), Errc::invalid);
  ASSERT_TRUE(cat.settle("d"));
  EXPECT_TRUE(cat.volume("d"));  // the replica still holds it
  report(cat, *del, "deleted");
  ASSERT_TRUE(cat.settle("d"));
  EXPECT_EQ(cat.volume("d").status().code(), Errc::not_found);
  EXPECT_TRUE(cat.snapshots("d")->empty());
  EXPECT_TRUE(cat.replicas("d")->empty());
  EXPECT_EQ(cat.export_of("d")->mod_revision, 0);
  // The name is free again.
  EXPECT_TRUE(cat.create_volume(spec("d")));
}

TEST_F(OneNode, SnapshotLifecycleAndClonePlacement) {
  // A second node with more room: a clone must still go where the snapshot is.
  add_node(e, "n2", "s2");
  auto v = cat.create_volume(spec("src"));
  ASSERT_TRUE(v);
  EXPECT_EQ(v->replicas.at(0), "n1");
  add_pool(cat, "n2", "p2", 90 * kGiB);
  report(cat, *v, "in-sync");
  ASSERT_TRUE(cat.settle("src"));
  auto s = cat.create_snapshot("src", "s1");
  ASSERT_TRUE(s) << s.status().to_string();
  EXPECT_EQ(s->state, SnapshotState::creating);
  EXPECT_EQ(cat.create_snapshot("src", "s1").status().code(), Errc::exists);
  EXPECT_EQ(cat.create_snapshot("nope", "s1").status().code(), Errc::not_found);
  EXPECT_EQ(cat.create_snapshot("src", "bad name").status().code(), Errc::invalid);
  // A clone of a snapshot that is not ready yet is refused.
  auto c0 = spec("c0", 0);
  c0.clone_of = "src@s1";
  EXPECT_EQ(cat.create_volume(c0).status().code(), Errc::invalid);
  report(cat, *v, "in-sync", {"s1"});
  ASSERT_TRUE(cat.settle("src"));
  auto snaps = cat.snapshots("src");
  ASSERT_TRUE(snaps);
  ASSERT_EQ(snaps->size(), 1u);
  EXPECT_EQ((*snaps)[0].state, SnapshotState::ready);

  auto clone = cat.create_volume(c0);
  ASSERT_TRUE(clone) << clone.status().to_string();
  EXPECT_EQ(clone->replicas, std::vector<std::string>{"n1"});
  EXPECT_EQ(clone->pool, "p1");
  EXPECT_EQ(clone->size, kGiB);
  EXPECT_EQ(clone->clone_of, "src@s1");
  auto missing = spec("c1", 0);
  missing.clone_of = "src@nope";
  EXPECT_EQ(cat.create_volume(missing).status().code(), Errc::not_found);
  // A fresh volume goes to the pool with the most free bytes.
  auto fresh = cat.create_volume(spec("f"));
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->replicas.at(0), "n2");

  auto d = cat.delete_snapshot("src", "s1");
  ASSERT_TRUE(d);
  EXPECT_EQ(d->state, SnapshotState::deleting);
  ASSERT_TRUE(cat.settle("src"));
  EXPECT_EQ(cat.snapshots("src")->size(), 1u);  // still listed by the replica
  report(cat, *v, "in-sync", {});
  ASSERT_TRUE(cat.settle("src"));
  EXPECT_TRUE(cat.snapshots("src")->empty());
  EXPECT_EQ(cat.delete_snapshot("src", "s1").status().code(), Errc::not_found);
}

TEST_F(OneNode, PlacementBySiteAndFreeSpaceAndOnlyOnLiveNodes) {
  add_node(e, "n2", "s2");
  add_node(e, "n3", "s2");
  add_pool(cat, "n2", "p1", 10 * kGiB);
  add_pool(cat, "n3", "p1", 20 * kGiB);
  add_pool(cat, "n4", "p1", 99 * kGiB);  // n4 is not alive: its report is stale
  auto a = cat.create_volume(spec("a"));
  ASSERT_TRUE(a);
  EXPECT_EQ(a->replicas.at(0), "n1");  // 50 GiB free
  auto site = spec("b");
  site.preferred_site = "s2";
  auto b = cat.create_volume(site);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->replicas.at(0), "n3");
  EXPECT_EQ(b->preferred_site, "s2");
  site.name = "c";
  site.preferred_site = "s9";
  auto c = cat.create_volume(site);
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), Errc::no_space);
  EXPECT_NE(c.status().message().find("s9"), std::string::npos);
  // Thin provisioning overcommits, but a full pool is never chosen.
  add_pool(cat, "n1", "p1", 0);
  add_pool(cat, "n2", "p1", 0);
  add_pool(cat, "n3", "p1", 0);
  auto full = cat.create_volume(spec("d", 1000 * kGiB));
  ASSERT_FALSE(full);
  EXPECT_EQ(full.status().code(), Errc::no_space);
  add_pool(cat, "n2", "p1", 4096);
  auto over = cat.create_volume(spec("d", 1000 * kGiB));
  ASSERT_TRUE(over) << over.status().to_string();
  EXPECT_EQ(over->replicas.at(0), "n2");
}

TEST(Catalogue, NoLiveNodeIsNoSpace) {
  test::EtcdCluster etcd(1);
  Etcd e(opts(etcd));
  Catalogue cat(e);
  auto r = cat.create_volume(spec("v"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::no_space);
  EXPECT_NE(r.status().message().find("no live node"), std::string::npos);
  add_node(e, "n1", "s1");
  r = cat.create_volume(spec("v"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::no_space);
  EXPECT_NE(r.status().message().find("pool"), std::string::npos);
}

TEST_F(OneNode, GarbageUnderKeysIsSkippedNotACrash) {
  ASSERT_TRUE(cat.create_volume(spec("good")));
  const std::string root = kRoot;
  ASSERT_TRUE(e.put(root + "volumes/junk", "{not json"));
  ASSERT_TRUE(e.put(root + "volumes/arr", "[1,2]"));
  ASSERT_TRUE(e.put(root + "volumes/types", R"({"uuid":5,"size":"big","state":"ready","pool":"p1"})"));
  ASSERT_TRUE(e.put(root + "nodes/bad", "\xff\xfe"));
  ASSERT_TRUE(e.put(root + "pools/n1/weird", R"({"free":-5,"size":1.5})"));
  ASSERT_TRUE(e.put(root + "replicas/good/n1", "null"));
  ASSERT_TRUE(e.put(root + "exports/good", R"({"acl":{"iqn.x":"all","iqn.y":7},"nbd":"yes"})"));
  auto vs = cat.volumes();
  ASSERT_TRUE(vs);
  ASSERT_EQ(vs->size(), 1u);
  EXPECT_EQ((*vs)[0].name, "good");
  EXPECT_EQ(cat.volume("junk").status().code(), Errc::corrupt);
  auto ns = cat.nodes();
  ASSERT_TRUE(ns);
  EXPECT_EQ(ns->size(), 1u);
  auto ps = cat.pools();
  ASSERT_TRUE(ps);
  ASSERT_EQ(ps->size(), 2u);
  EXPECT_TRUE(cat.replicas("good")->empty());
  ASSERT_TRUE(cat.settle("good"));
  ASSERT_TRUE(cat.settle("junk"));
  // Unreadable ACL entries never widen access; a field of the wrong type keeps its default.
  auto ex = cat.export_of("good");
  ASSERT_TRUE(ex);
  EXPECT_EQ(ex->acl.at("iqn.x"), Access::none);
  EXPECT_EQ(ex->acl.at("iqn.y"), Access::none);
  EXPECT_TRUE(ex->nbd);
  // Placement still works with garbage around.
  EXPECT_TRUE(cat.create_volume(spec("next")));
}

TEST_F(OneNode, ExportAndAclAreCompareAndSwap) {
  auto v = cat.create_volume(spec("x"));
  ASSERT_TRUE(v);
  ExportRecord ex;
  ex.volume = "x";
  ex.iscsi = true;
  ex.nbd = false;
  ex.default_access = Access::none;
  ex.acl["iqn.2026-11.io.client:a"] = Access::read_write;
  ex.acl["iqn.2026-11.io.client:b"] = Access::read_only;
  auto first = cat.set_export(ex, 0);  // 0: expects no export yet
  ASSERT_TRUE(first) << first.status().to_string();
  auto read = cat.export_of("x");
  ASSERT_TRUE(read);
  EXPECT_FALSE(read->nbd);
  EXPECT_EQ(read->default_access, Access::none);
  EXPECT_EQ(read->acl.at("iqn.2026-11.io.client:b"), Access::read_only);
  EXPECT_EQ(read->mod_revision, first->mod_revision);
  EXPECT_EQ(cat.volume("x")->generation, 2);
  // Two editors read the same revision; only the first wins.
  ex.acl.erase("iqn.2026-11.io.client:b");
  ASSERT_TRUE(cat.set_export(ex, read->mod_revision));
  auto stale = cat.set_export(ex, read->mod_revision);
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.status().code(), Errc::conflict);
  EXPECT_EQ(cat.volume("x")->generation, 3);
  ex.acl["bad initiator"] = Access::read_only;
  EXPECT_EQ(cat.set_export(ex).status().code(), Errc::invalid);
  ex.volume = "missing";
  ex.acl.clear();
  EXPECT_EQ(cat.set_export(ex).status().code(), Errc::not_found);
}

TEST(Catalogue, ThreeMembersCreateWithoutOneAndRefuseWithoutMajority) {
  test::EtcdCluster c(3);
  Etcd e(opts(c, 1500ms));
  Catalogue cat(e);
  add_node(e, "n1", "s1");
  add_pool(cat, "n1", "p1", 50 * kGiB);
  c.kill(0);
  // If m0 led, the survivors elect a new leader first (election timeout 500 ms): until then
  // nothing is decided, which is correct; what matters is that two of three then decide.
  wait_for_quorum(e);
  auto a = cat.create_volume(spec("a"));
  ASSERT_TRUE(a) << a.status().to_string();
  c.kill(1);
  auto b = cat.create_volume(spec("b"));
  ASSERT_FALSE(b);
  EXPECT_EQ(b.status().code(), Errc::unavailable) << b.status().to_string();
  c.start(1);
  ASSERT_TRUE(c.wait_healthy(1));
  wait_for_quorum(e);
  // "b" may or may not have been committed late (unavailable = not confirmed); either way the
  // catalogue decides again from what it reads.
  auto again = cat.create_volume(spec("b"));
  EXPECT_TRUE(again || again.status().code() == Errc::exists) << again.status().to_string();
  auto d = cat.create_volume(spec("d"));
  ASSERT_TRUE(d) << d.status().to_string();
  EXPECT_TRUE(cat.volume("a"));
}

}  // namespace
}  // namespace duplex::cluster
