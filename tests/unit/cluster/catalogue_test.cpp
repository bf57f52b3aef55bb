// The volume catalogue against real etcd: validation naming the field, placement on live nodes
// with room, every serving decision a compare-and-swap (stale edits and concurrent creates lose),
// the delete and snapshot lifecycles through settle(), garbage under a key skipped, and a
// 3-member cluster losing one member (creates work) and then the majority (Errc::unavailable).
#include "duplex/cluster/catalogue.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <mutex>
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

TEST_F(OneNode, ADrainOutlivesTheNodeRecordUntilResumed) {
  auto d = cat.drain_node("n1", "api", "drain of n1: kernel upgrade");
  ASSERT_TRUE(d) << d.status().to_string();
  EXPECT_EQ(d->node, "n1");
  // Not under the node's lease: the node record going (a stop) leaves the drain.
  ASSERT_TRUE(e.del(std::string(kRoot) + "nodes/n1"));
  auto all = cat.drains();
  ASSERT_TRUE(all);
  ASSERT_EQ(all->size(), 1u);
  EXPECT_EQ(all->front().node, "n1");
  EXPECT_EQ(all->front().reason, "drain of n1: kernel upgrade");
  EXPECT_EQ(all->front().by, "api");
  // A second drain keeps the first time and takes the new reason.
  auto again = cat.drain_node("n1", "api", "drain of n1: firmware");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->at, d->at);
  EXPECT_EQ(cat.drains()->front().reason, "drain of n1: firmware");
  EXPECT_TRUE(cat.resume_node("n1"));
  EXPECT_TRUE(cat.drains()->empty());
  EXPECT_EQ(cat.resume_node("n1").code(), Errc::not_found);
  EXPECT_EQ(cat.drain_node("bad/name", "api", "x").status().code(), Errc::invalid);
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
  s.replicas = 2;  // one live node: a mirror has nowhere to put its second replica
  auto two = cat.create_volume(s);
  ASSERT_FALSE(two);
  EXPECT_EQ(two.status().code(), Errc::no_space) << two.status().to_string();
  EXPECT_NE(two.status().message().find("replicas"), std::string::npos);
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

// --- the in-sync set and its decisions ---

// Three live nodes: two in s1, one (the smallest) in s2.
struct TwoSites : ::testing::Test {
  test::EtcdCluster etcd{1};
  Etcd e{opts(etcd)};
  Catalogue cat{e};
  void SetUp() override {
    add_node(e, "n1", "s1");
    add_node(e, "n2", "s1");
    add_node(e, "n3", "s2");
    add_pool(cat, "n1", "p1", 50 * kGiB);
    add_pool(cat, "n2", "p1", 60 * kGiB);
    add_pool(cat, "n3", "p1", 10 * kGiB);
  }
  VolumeRecord mirrored(const std::string& name, const std::string& site = {}) {
    auto s = spec(name);
    s.replicas = 2;
    s.preferred_site = site;
    auto v = cat.create_volume(s);
    EXPECT_TRUE(v) << v.status().to_string();
    return v ? *v : VolumeRecord{};
  }
};

TEST_F(TwoSites, CreateMirroredPlacesOnTwoSitesAndWritesGenerationOne) {
  const auto v = mirrored("m");
  // The roomiest pool first (n2, s1), its mirror in the other site even though n1 has more room.
  EXPECT_EQ(v.replicas, (std::vector<std::string>{"n2", "n3"}));
  EXPECT_EQ(v.replicas_wanted, 2u);
  EXPECT_EQ(v.pool, "p1");
  auto set = cat.insync("m");
  ASSERT_TRUE(set) << set.status().to_string();
  EXPECT_EQ(set->volume, "m");
  EXPECT_EQ(set->uuid, v.uuid);
  EXPECT_EQ(set->generation, 1);
  EXPECT_EQ(set->members, v.replicas);
  EXPECT_EQ(set->owner, "n2");
  EXPECT_EQ(set->reason, "created");
  // One transaction: the volume and its set were written at the same revision.
  EXPECT_EQ(set->mod_revision, v.mod_revision);
  auto ds = cat.decisions("m");
  ASSERT_TRUE(ds);
  ASSERT_EQ(ds->size(), 1u);
  EXPECT_EQ((*ds)[0].generation, 1);
  EXPECT_EQ((*ds)[0].members, v.replicas);
  EXPECT_EQ((*ds)[0].reason, "created");
  EXPECT_TRUE((*ds)[0].may_lose.empty());

  // The preferred site's node first, and it owns.
  const auto w = mirrored("w", "s2");
  EXPECT_EQ(w.replicas, (std::vector<std::string>{"n3", "n2"}));
  EXPECT_EQ(cat.insync("w")->owner, "n3");
  // An unmirrored volume gets its set too: one member.
  auto one = cat.create_volume(spec("one"));
  ASSERT_TRUE(one);
  auto s1 = cat.insync("one");
  ASSERT_TRUE(s1);
  EXPECT_EQ(s1->members, one->replicas);
  EXPECT_EQ(s1->owner, one->replicas.at(0));
  EXPECT_EQ(cat.insync("nope").status().code(), Errc::not_found);
}

TEST_F(TwoSites, OneSiteLeftGivesTwoNodesOfItWithANoteAndOneNodeIsNoSpace) {
  ASSERT_TRUE(e.del(std::string(kRoot) + "nodes/n3"));  // s2's only node is down
  const auto v = mirrored("m");
  EXPECT_EQ(v.replicas, (std::vector<std::string>{"n2", "n1"}));
  EXPECT_NE(v.reason.find("both replicas in site 's1'"), std::string::npos) << v.reason;
  ASSERT_TRUE(e.del(std::string(kRoot) + "nodes/n1"));
  auto s = spec("x");
  s.replicas = 2;
  auto r = cat.create_volume(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::no_space);
  EXPECT_NE(r.status().message().find("two live nodes"), std::string::npos) << r.status().to_string();
  EXPECT_NE(r.status().message().find("n2/p1"), std::string::npos) << r.status().to_string();
  // A full pool does not count as room.
  add_node(e, "n3", "s2");
  add_pool(cat, "n3", "p1", 0);
  EXPECT_EQ(cat.create_volume(s).status().code(), Errc::no_space);
}

TEST_F(TwoSites, ACloneOfAMirroredVolumeIsMirroredOnTheSameNodes) {
  const auto v = mirrored("src");
  for (const auto& n : v.replicas) {
    ReplicaStatus st;
    st.volume = "src";
    st.node = n;
    st.state = "in-sync";
    st.generation = v.generation;
    st.size = v.size;
    st.snapshots = {"s"};
    ASSERT_TRUE(cat.report_replica(st));
  }
  ASSERT_TRUE(cat.settle("src"));
  ASSERT_TRUE(cat.create_snapshot("src", "s"));
  ASSERT_TRUE(cat.settle("src"));
  auto c = spec("c", 0);
  c.clone_of = "src@s";
  auto clone = cat.create_volume(c);
  ASSERT_TRUE(clone) << clone.status().to_string();
  EXPECT_EQ(clone->replicas, v.replicas);
  EXPECT_EQ(clone->replicas_wanted, 2u);
  EXPECT_EQ(cat.insync("c")->members, v.replicas);
}

TEST_F(TwoSites, ChangeInSyncIsACompareAndSwapLoggedAsADecision) {
  const auto v = mirrored("m");
  auto gen1 = cat.insync("m");
  ASSERT_TRUE(gen1);
  // The owner's site is lost: n3 removes n2 and becomes the owner.
  auto gen2 = cat.change_insync(*gen1, {"n3"}, "n3", "peer n2 lost: link timeout");
  ASSERT_TRUE(gen2) << gen2.status().to_string();
  EXPECT_EQ(gen2->generation, 2);
  EXPECT_EQ(gen2->members, std::vector<std::string>{"n3"});
  EXPECT_EQ(gen2->owner, "n3");
  EXPECT_EQ(gen2->decided_by, "n3");
  EXPECT_FALSE(gen2->at.empty());
  auto read = cat.insync("m");
  ASSERT_TRUE(read);
  EXPECT_EQ(read->generation, 2);
  EXPECT_EQ(read->mod_revision, gen2->mod_revision);
  EXPECT_EQ(read->reason, "peer n2 lost: link timeout");
  // The same decision taken on the stale record loses: the caller must re-read.
  auto stale = cat.change_insync(*gen1, {"n2"}, "n2", "peer n3 lost");
  ASSERT_FALSE(stale);
  EXPECT_EQ(stale.status().code(), Errc::conflict) << stale.status().to_string();
  EXPECT_NE(stale.status().message().find("generation 2"), std::string::npos);
  EXPECT_EQ(cat.insync("m")->members, std::vector<std::string>{"n3"});
  // Back to both: members are stored in placement order whatever order they were given in, and
  // the owner is the preferred site's node again.
  auto gen3 = cat.change_insync(*read, {"n3", "n2"}, "n2", "resync done", {"nothing"});
  ASSERT_TRUE(gen3) << gen3.status().to_string();
  EXPECT_EQ(gen3->members, v.replicas);
  EXPECT_EQ(gen3->owner, "n2");
  // A grow meanwhile changes the volume's record but not the set: the change still goes through.
  ASSERT_TRUE(cat.grow_volume("m", 2 * kGiB));
  auto gen4 = cat.change_insync(*gen3, {"n2"}, "n2", "peer n3 lost");
  ASSERT_TRUE(gen4) << gen4.status().to_string();
  EXPECT_EQ(gen4->generation, 4);

  auto ds = cat.decisions("m");
  ASSERT_TRUE(ds);
  ASSERT_EQ(ds->size(), 4u);
  for (std::size_t i = 0; i < ds->size(); ++i)
    EXPECT_EQ((*ds)[i].generation, static_cast<std::int64_t>(i + 1));
  EXPECT_EQ((*ds)[1].members, std::vector<std::string>{"n3"});
  EXPECT_EQ((*ds)[1].decided_by, "n3");
  EXPECT_EQ((*ds)[2].may_lose, std::vector<std::string>{"nothing"});
  EXPECT_EQ((*ds)[3].reason, "peer n3 lost");
}

TEST_F(TwoSites, MembersMustBeANonEmptySubsetOfTheReplicas) {
  mirrored("m");
  auto set = cat.insync("m");
  ASSERT_TRUE(set);
  auto expect_invalid = [&](std::vector<std::string> members) {
    auto r = cat.change_insync(*set, members, "api", "test");
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().code(), Errc::invalid) << r.status().to_string();
    EXPECT_EQ(r.status().message().rfind("members:", 0), 0u) << r.status().to_string();
  };
  expect_invalid({"n1"});  // alive, but holds no replica of m
  expect_invalid({});
  expect_invalid({"n2", "n2"});
  expect_invalid({"bad/name"});
  EXPECT_EQ(cat.insync("m")->generation, 1);
  EXPECT_EQ(cat.decisions("m")->size(), 1u);
  InSyncRecord ghost = *set;
  ghost.volume = "ghost";
  EXPECT_EQ(cat.change_insync(ghost, {"n2"}, "api", "test").status().code(), Errc::not_found);
  // A record of an older volume of the same name (another uuid) decides nothing.
  InSyncRecord old = *set;
  old.uuid = "00000000-0000-4000-8000-000000000000";
  EXPECT_EQ(cat.change_insync(old, {"n2"}, "api", "test").status().code(), Errc::conflict);
}

TEST_F(TwoSites, TwoRacingDecisionsExactlyOneWins) {
  mirrored("m");
  for (int round = 0; round < 5; ++round) {
    auto base = cat.insync("m");
    ASSERT_TRUE(base);
    std::atomic<int> won{0}, conflict{0}, other{0};
    std::string winner_members;
    std::mutex mu;
    auto go = [&](std::string node) {
      Etcd mine(opts(etcd));
      Catalogue c(mine);
      // Each node, having lost its peer, tries to remove it.
      auto r = c.change_insync(*base, {node}, node, "peer lost");
      if (r) {
        ++won;
        std::lock_guard<std::mutex> l(mu);
        winner_members = r->members.at(0);
      } else if (r.status().code() == Errc::conflict) {
        ++conflict;
      } else {
        ++other;
      }
    };
    std::thread a(go, "n2"), b(go, "n3");
    a.join();
    b.join();
    EXPECT_EQ(won.load(), 1);
    EXPECT_EQ(conflict.load(), 1);
    EXPECT_EQ(other.load(), 0);
    auto now = cat.insync("m");
    ASSERT_TRUE(now);
    EXPECT_EQ(now->generation, base->generation + 1);
    EXPECT_EQ(now->members, std::vector<std::string>{winner_members});
    // Both back for the next round.
    ASSERT_TRUE(cat.change_insync(*now, {"n2", "n3"}, "test", "resynced"));
  }
  EXPECT_EQ(cat.decisions("m")->size(), 11u);
}

TEST_F(TwoSites, OnlyTheLastHundredDecisionsAreKept) {
  mirrored("m");
  auto set = cat.insync("m");
  ASSERT_TRUE(set);
  for (int i = 0; i < 104; ++i) {
    auto next = cat.change_insync(*set, {i % 2 ? std::string("n2") : std::string("n3")}, "test", "flap");
    ASSERT_TRUE(next) << next.status().to_string();
    set = next;
  }
  EXPECT_EQ(set->generation, 105);
  auto ds = cat.decisions("m");
  ASSERT_TRUE(ds);
  ASSERT_EQ(ds->size(), 100u);
  EXPECT_EQ(ds->front().generation, 6);
  EXPECT_EQ(ds->back().generation, 105);
}

TEST_F(TwoSites, DeleteRemovesTheSetAndItsDecisions) {
  const auto v = mirrored("m");
  ASSERT_TRUE(cat.change_insync(*cat.insync("m"), {"n2"}, "n2", "peer lost"));
  ASSERT_TRUE(cat.request_verify("m", false));
  auto del = cat.delete_volume("m", "test");
  ASSERT_TRUE(del);
  // Deleting: the set can no longer change.
  EXPECT_EQ(cat.change_insync(*cat.insync("m"), {"n2", "n3"}, "n2", "resynced").status().code(),
            Errc::invalid);
  for (const auto& n : v.replicas) {
    ReplicaStatus st;
    st.volume = "m";
    st.node = n;
    st.state = "deleted";
    ASSERT_TRUE(cat.report_replica(st));
    ASSERT_TRUE(cat.settle("m"));
  }
  EXPECT_EQ(cat.volume("m").status().code(), Errc::not_found);
  EXPECT_EQ(cat.insync("m").status().code(), Errc::not_found);
  EXPECT_TRUE(cat.decisions("m")->empty());
  // A verify asked of the old volume must not run on a new one of the same name.
  EXPECT_EQ(cat.verify_request("m").status().code(), Errc::not_found);
  // Created again: a fresh set at generation 1 with a new uuid.
  const auto again = mirrored("m");
  EXPECT_NE(again.uuid, v.uuid);
  EXPECT_EQ(cat.insync("m")->generation, 1);
  EXPECT_EQ(cat.decisions("m")->size(), 1u);
}

TEST_F(TwoSites, ReplicaReportsReadTheMirrorFieldsLeniently) {
  mirrored("m");
  ReplicaStatus st;
  st.volume = "m";
  st.node = "n3";
  st.state = "resyncing";
  st.role = "peer";
  st.resync_rate = 1.5e8;
  st.resync_eta_seconds = 12.5;
  st.resync_bytes_total = 1000;
  st.resync_bytes_done = 250;
  st.verify_mismatches = 3;
  st.last_event = "resync from n2: 1 extent dirty";
  ASSERT_TRUE(cat.report_replica(st));
  // An older node's report has none of them.
  ASSERT_TRUE(e.put(std::string(kRoot) + "replicas/m/n2", R"({"state":"in-sync","generation":1})"));
  auto rs = cat.replicas("m");
  ASSERT_TRUE(rs);
  ASSERT_EQ(rs->size(), 2u);
  const auto& old = (*rs)[0];
  EXPECT_EQ(old.node, "n2");
  EXPECT_EQ(old.role, "");
  EXPECT_EQ(old.resync_eta_seconds, -1);
  EXPECT_EQ(old.verify_mismatches, 0u);
  const auto& r = (*rs)[1];
  EXPECT_EQ(r.role, "peer");
  EXPECT_EQ(r.resync_rate, 1.5e8);
  EXPECT_EQ(r.resync_eta_seconds, 12.5);
  EXPECT_EQ(r.resync_bytes_total, 1000u);
  EXPECT_EQ(r.resync_bytes_done, 250u);
  EXPECT_EQ(r.verify_mismatches, 3u);
  EXPECT_EQ(r.last_event, "resync from n2: 1 extent dirty");
}

// The member that leads, read from each member's status (the gateway's uint64s are strings).
int leader_of(test::EtcdCluster& c) {
  for (int i = 0; i < c.size(); ++i) {
    EtcdOptions o;
    o.endpoints = {c.endpoint(i)};
    Etcd one(o);
    auto r = one.call("/v3/maintenance/status", "{}");
    if (!r) continue;
    auto j = nlohmann::json::parse(*r, nullptr, false);
    if (j.is_discarded()) continue;
    const std::string self = j["header"].value("member_id", std::string{});
    if (!self.empty() && self == j.value("leader", std::string{})) return i;
  }
  return -1;
}

TEST(Catalogue, InSyncChangeWithoutMajorityIsUnavailableAndDecidesNothing) {
  test::EtcdCluster c(3);
  Etcd e(opts(c, 1500ms));
  Catalogue cat(e);
  add_node(e, "n1", "s1");
  add_node(e, "n2", "s2");
  add_pool(cat, "n1", "p1", 50 * kGiB);
  add_pool(cat, "n2", "p1", 50 * kGiB);
  auto s = spec("m");
  s.replicas = 2;
  ASSERT_TRUE(cat.create_volume(s));
  auto set = cat.insync("m");
  ASSERT_TRUE(set);
  // Leave one follower alone: it has no leader, so it drops the proposal (a lone leader could
  // hold it in its log and commit it once a majority returns: "not confirmed", not "not done").
  int leader = -1;
  for (int i = 0; i < 50 && (leader = leader_of(c)) < 0; ++i) std::this_thread::sleep_for(100ms);
  ASSERT_GE(leader, 0);
  const int other = (leader + 1) % 3;
  c.kill(leader);
  c.kill(other);
  auto r = cat.change_insync(*set, {"n1"}, "n1", "peer lost");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::unavailable) << r.status().to_string();
  c.start(leader);
  c.start(other);
  ASSERT_TRUE(c.wait_healthy(leader));
  ASSERT_TRUE(c.wait_healthy(other));
  wait_for_quorum(e);
  auto after = cat.insync("m");
  ASSERT_TRUE(after) << after.status().to_string();
  EXPECT_EQ(after->generation, 1);
  EXPECT_EQ(after->members, set->members);
  EXPECT_EQ(after->mod_revision, set->mod_revision);
  EXPECT_EQ(cat.decisions("m")->size(), 1u);
  // With a majority back, the decision can be taken.
  EXPECT_TRUE(cat.change_insync(*after, {"n1"}, "n1", "peer lost"));
}

}  // namespace
}  // namespace duplex::cluster
