// The thin store's promises, one by one: thin volumes, zeroes where nothing was written, space
// returned by trim, read-only snapshots that never change, O(1) snapshots, sharing clones,
// changed regions from metadata, the cost of an overwrite, restart after close and after a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>

#include "store_test_util.h"

namespace duplex::test {
namespace {

using store::Extent;
using store::ObjectId;
using store::ObjectKind;
using store::Pool;
using store::PoolOptions;

constexpr std::uint64_t KiB = 1024, MiB = 1024 * 1024;

// A pool on a fake disk, with the model of each object's content.
class PoolTest : public ::testing::Test {
 protected:
  void make(std::uint64_t device_bytes = 64 * MiB, std::uint32_t cluster = 64 * KiB) {
    disk = std::make_unique<FakeDisk>(device_bytes, "pool-test-disk");
    PoolOptions o;
    o.name = "p1";
    o.cluster_size = cluster;
    cs = cluster;
    pool = must(run(Pool::create(*disk, o)), "Pool::create");
  }
  void reopen_clean() {
    must(run(pool->close()), "close");
    pool.reset();
    pool = must(run(Pool::open(*disk)), "Pool::open after close");
  }
  void reopen_after_power_loss(PowerLoss mode = PowerLoss::DropAll, std::uint64_t seed = 0) {
    pool.reset();
    disk->power_loss(mode, seed);
    pool = must(run(Pool::open(*disk)), "Pool::open after power loss");
  }
  ObjectId volume(const std::string& name, std::uint64_t size) {
    ObjectId id = must(run(pool->create_volume(name, size)), "create_volume");
    ModelObject& m = model[id];
    m.id = id;
    m.name = name;
    m.resize(size);
    return id;
  }
  ObjectId snapshot(ObjectId vol, const std::string& name) {
    ObjectId id = must(run(pool->snapshot(vol, name)), "snapshot");
    ModelObject& m = model[id];
    m.id = id;
    m.kind = ObjectKind::snapshot;
    m.name = model[vol].name + "@" + name;
    m.parent = vol;
    m.size = model[vol].size;
    m.sectors = model[vol].frozen();
    return id;
  }
  ObjectId clone(ObjectId snap, const std::string& name) {
    ObjectId id = must(run(pool->clone(snap, name)), "clone");
    ModelObject& m = model[id];
    m.id = id;
    m.name = name;
    m.size = model[snap].size;
    m.sectors = model[snap].frozen();
    return id;
  }
  std::vector<std::byte> write(ObjectId id, std::uint64_t off, std::uint64_t len, bool fua = false) {
    auto data = pattern(len, stamp++, off);
    must(run(pool->write(id, off, data, fua)), "write");
    model[id].write(off, len, data.data());
    model[id].make_durable(off, len);  // these tests check content, not durability
    return data;
  }
  void zero(ObjectId id, std::uint64_t off, std::uint64_t len, bool trim, bool no_unmap = false) {
    must(trim ? run(pool->trim(id, off, len)) : run(pool->write_zeroes(id, off, len, no_unmap)), "zero");
    model[id].write(off, len, nullptr);
    model[id].make_durable(off, len);
  }
  std::vector<std::byte> read(ObjectId id, std::uint64_t off, std::uint64_t len) {
    std::vector<std::byte> b(len);
    must(run(pool->read(id, off, b)), "read");
    return b;
  }
  // Every object the model knows reads exactly as the model says.
  void expect_model() {
    for (const auto& [id, m] : model) EXPECT_EQ(compare_object(*pool, m, false), "") << m.name;
  }
  void expect_check() {
    auto r = pool->check();
    EXPECT_TRUE(r.ok()) << fmt::format("{}", fmt::join(r.errors, "\n"));
  }
  std::uint64_t free_clusters() const { return pool->info().free_clusters; }

  std::unique_ptr<FakeDisk> disk;
  std::unique_ptr<Pool> pool;
  std::map<ObjectId, ModelObject> model;
  std::uint64_t stamp = 1;
  std::uint64_t cs = 0;
};

// ---------------------------------------------------------------- volumes

TEST_F(PoolTest, VolumesCreateListGrowDelete) {
  make();
  const ObjectId a = volume("a", 1 * MiB);
  const ObjectId b = volume("b", 3 * MiB + 4 * KiB);
  EXPECT_NE(a, b);
  auto list = pool->list();
  ASSERT_EQ(list.size(), 2u);
  std::set<std::string> names;
  for (auto& o : list) names.insert(o.name);
  EXPECT_EQ(names, (std::set<std::string>{"a", "b"}));

  auto sa = must(pool->stat(a));
  EXPECT_EQ(sa.kind, ObjectKind::volume);
  EXPECT_EQ(sa.size, 1 * MiB);
  EXPECT_EQ(sa.mapped_bytes, 0u) << "a new volume is thin";
  EXPECT_FALSE(sa.uuid.is_nil());
  EXPECT_EQ(must(pool->find("b")), b);
  EXPECT_EQ(must(pool->stat(b)).size, 3 * MiB + 4 * KiB);

  EXPECT_EQ(run(pool->create_volume("a", MiB)).status().code(), Errc::exists);
  EXPECT_EQ(pool->find("nope").status().code(), Errc::not_found);
  EXPECT_EQ(pool->stat(9999).status().code(), Errc::not_found);

  write(a, MiB - 100, 100);
  must(run(pool->grow(a, 2 * MiB)), "grow");
  model[a].resize(2 * MiB);
  EXPECT_EQ(must(pool->stat(a)).size, 2 * MiB);
  write(a, 2 * MiB - 5000, 5000);
  EXPECT_FALSE(run(pool->grow(a, MiB))) << "shrinking is not growing";
  EXPECT_EQ(must(pool->stat(a)).size, 2 * MiB);

  must(run(pool->remove(b)), "remove");
  model.erase(b);
  EXPECT_EQ(pool->stat(b).status().code(), Errc::not_found);
  EXPECT_EQ(pool->find("b").status().code(), Errc::not_found);
  EXPECT_EQ(run(pool->remove(b)).code(), Errc::not_found);
  ASSERT_EQ(pool->list().size(), 1u);
  const ObjectId c = volume("b", MiB);
  EXPECT_GT(c, b) << "object ids are never reused";
  expect_model();
  expect_check();
  reopen_clean();
  expect_model();
  EXPECT_EQ(pool->list().size(), 2u);
  expect_check();
}

TEST_F(PoolTest, UnwrittenRangesReadZeroesAndAreNotAllocated) {
  make();
  const ObjectId v = volume("v", 4 * MiB);
  EXPECT_TRUE(all_zero(read(v, 0, 4 * MiB)));
  EXPECT_TRUE(all_zero(read(v, 12345, 6789)));
  auto bs = must(pool->block_status(v, 0, 4 * MiB));
  ASSERT_EQ(bs.size(), 1u);
  EXPECT_EQ(bs[0].offset, 0u);
  EXPECT_EQ(bs[0].length, 4 * MiB);
  EXPECT_FALSE(bs[0].allocated);
  EXPECT_TRUE(bs[0].zero);
}

TEST_F(PoolTest, TrimAndWriteZeroesReadZeroesAndReturnSpace) {
  make();
  const std::uint64_t free0 = free_clusters();
  const ObjectId v = volume("v", 8 * MiB);
  write(v, 0, 16 * cs);
  must(run(pool->flush()));
  EXPECT_EQ(free_clusters(), free0 - 16);
  EXPECT_EQ(must(pool->stat(v)).mapped_bytes, 16 * cs);

  zero(v, 0, 8 * cs, /*trim=*/true);
  zero(v, 8 * cs, 4 * cs, /*trim=*/false);
  must(run(pool->flush()));
  EXPECT_EQ(free_clusters(), free0 - 4) << "whole trimmed/zeroed clusters are returned";
  EXPECT_EQ(must(pool->stat(v)).mapped_bytes, 4 * cs);
  expect_model();

  // Partial clusters: zero-written, their neighbours intact.
  zero(v, 12 * cs + 100, 1000, true);
  zero(v, 13 * cs + cs / 2, cs, false);
  expect_model();
  // no_unmap keeps the cluster allocated but it still reads zeroes.
  zero(v, 15 * cs, cs, false, /*no_unmap=*/true);
  must(run(pool->flush()));
  expect_model();
  EXPECT_EQ(free_clusters(), free0 - 4);
  // Trimming what was never written costs nothing and changes nothing.
  zero(v, 100 * cs, 10 * cs, true);
  EXPECT_EQ(free_clusters(), free0 - 4);
  expect_check();
  reopen_clean();
  expect_model();
  EXPECT_EQ(free_clusters(), free0 - 4);
  must(run(pool->remove(v)));
  model.clear();
  must(run(pool->flush()));
  EXPECT_EQ(free_clusters(), free0) << "deleting a volume returns all of its space";
  expect_check();
}

TEST_F(PoolTest, BlockStatusFollowsWritesAndTrims) {
  make(64 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 2 * MiB);
  write(v, 2 * cs, 3 * cs);
  write(v, 10 * cs + 7, 1);  // one byte allocates its cluster
  zero(v, 3 * cs, cs, true);
  auto bs = must(pool->block_status(v, 0, 2 * MiB));
  // Runs are contiguous, ascending and cover exactly the range.
  std::uint64_t pos = 0;
  std::vector<bool> alloc(2 * MiB / cs);
  for (const Extent& e : bs) {
    EXPECT_EQ(e.offset, pos);
    EXPECT_GT(e.length, 0u);
    if (!e.allocated) {
      EXPECT_TRUE(e.zero);
    }
    for (std::uint64_t c = e.offset / cs; c < (e.offset + e.length + cs - 1) / cs; ++c)
      alloc[c] = e.allocated;
    pos += e.length;
  }
  EXPECT_EQ(pos, 2 * MiB);
  for (std::uint64_t c = 0; c < alloc.size(); ++c)
    EXPECT_EQ(alloc[c], c == 2 || c == 4 || c == 10) << "cluster " << c;
  // A sub-range answer covers exactly the sub-range.
  auto part = must(pool->block_status(v, cs + 5, 2 * cs));
  ASSERT_FALSE(part.empty());
  EXPECT_EQ(part.front().offset, cs + 5);
  EXPECT_EQ(part.back().offset + part.back().length, 3 * cs + 5);
  EXPECT_EQ(pool->block_status(v, 2 * MiB - 1, 2).status().code(), Errc::out_of_range);
}

TEST_F(PoolTest, PlacementIsWhereTheDataLiesNotWhereItIsInTheVolume) {
  make(64 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 2 * MiB);
  // Written back to front: the clusters are allocated in write order, so placement descends.
  write(v, 9 * cs, cs);
  write(v, 5 * cs, cs);
  write(v, 1 * cs, cs);
  const auto p9 = pool->placement(v, 9 * cs), p5 = pool->placement(v, 5 * cs), p1 = pool->placement(v, cs);
  EXPECT_LT(p9, p5);
  EXPECT_LT(p5, p1);
  EXPECT_EQ(pool->placement(v, 5 * cs + 100), p5 + 100) << "within a cluster, in byte order";
  EXPECT_EQ(pool->placement(v, 0), Pool::kUnplaced) << "never written";
  EXPECT_EQ(pool->placement(v, 2 * MiB), Pool::kUnplaced) << "past the end";
  EXPECT_EQ(pool->placement(v + 1000, 0), Pool::kUnplaced) << "no such object";
}

TEST_F(PoolTest, GrowLeavesSnapshotsAndClonesAtTheirSize) {
  make();
  const ObjectId v = volume("v", MiB);
  write(v, MiB - 5000, 5000);
  const ObjectId s1 = snapshot(v, "s1");
  must(run(pool->grow(v, 3 * MiB + 4 * KiB)), "grow");
  model[v].resize(3 * MiB + 4 * KiB);
  EXPECT_TRUE(all_zero(read(v, MiB, 2 * MiB + 4 * KiB))) << "the grown part reads zeroes";
  write(v, MiB - 100, 300000);  // across the old end
  const ObjectId s2 = snapshot(v, "s2");
  const ObjectId c1 = clone(s1, "c1");
  EXPECT_EQ(must(pool->stat(s1)).size, MiB);
  EXPECT_EQ(must(pool->stat(s2)).size, 3 * MiB + 4 * KiB);
  EXPECT_EQ(must(pool->stat(c1)).size, MiB);
  std::vector<std::byte> b(10);
  EXPECT_EQ(run(pool->read(s1, MiB - 5, b)).code(), Errc::out_of_range);
  EXPECT_EQ(run(pool->write(c1, MiB - 5, b)).code(), Errc::out_of_range);
  expect_model();
  reopen_clean();
  expect_model();
  expect_check();
}

// The cluster names a clone's identity (every replica serves the same UUID); it survives a reopen.
TEST_F(PoolTest, CloneTakesTheUuidItIsGiven) {
  make();
  const ObjectId v = volume("v", MiB);
  write(v, 0, 4096);
  const ObjectId s = snapshot(v, "s");
  const Uuid want = Uuid::random();
  const ObjectId c = must(run(pool->clone(s, "c", want)), "clone");
  model[c].id = c;
  model[c].name = "c";
  model[c].size = MiB;
  model[c].sectors = model[s].frozen();
  EXPECT_EQ(pool->uuid_of(c), want);
  const ObjectId other = clone(s, "d");
  EXPECT_NE(pool->uuid_of(other), want);
  EXPECT_FALSE(pool->uuid_of(other).is_nil());
  reopen_clean();
  EXPECT_EQ(must(pool->stat(c)).uuid, want);
  expect_model();
}

TEST_F(PoolTest, BadNamesAreRefused) {
  make();
  const ObjectId v = volume("v", MiB);
  for (const std::string& bad : {std::string(), std::string("a@b"), std::string(300, 'x')}) {
    auto r = run(pool->create_volume(bad, MiB));
    EXPECT_FALSE(r) << "volume name '" << bad.substr(0, 20) << "' accepted";
    auto s = run(pool->snapshot(v, bad));
    EXPECT_FALSE(s) << "snapshot name '" << bad.substr(0, 20) << "' accepted";
  }
  EXPECT_EQ(pool->list().size(), 1u);
  expect_check();
}

TEST_F(PoolTest, FuaWritesAndZeroesSurviveAPowerLossWithoutFlush) {
  make();
  const ObjectId v = volume("v", 4 * MiB);
  write(v, 0, 2 * cs);
  must(run(pool->flush()));
  write(v, cs / 2, cs, /*fua=*/true);           // partly in place, partly new
  write(v, 10 * cs + 7, 3 * cs, /*fua=*/true);  // new clusters
  must(run(pool->write_zeroes(v, 0, 4096, false, /*fua=*/true)));
  model[v].write(0, 4096, nullptr);
  model[v].make_durable(0, 4096);
  reopen_after_power_loss(PowerLoss::DropAll);
  expect_model();
  expect_check();
}

// ---------------------------------------------------------------- the cost of writes

TEST_F(PoolTest, OverwriteOfAnOwnedClusterIsOneDataWriteAndNoMetadataWrite) {
  make(64 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 4 * MiB);
  write(v, 3 * cs, cs);
  must(run(pool->flush()));
  for (auto [off, len] : {std::pair{3 * cs, cs}, {3 * cs + 4096, 8192}, {3 * cs + 10, 100}}) {
    disk->reset_counters();
    disk->record_writes(true);
    write(v, off, len);
    EXPECT_EQ(disk->counters().writes, 1u) << "overwrite " << off << "+" << len;
    must(run(pool->flush()));
    // The flush makes the data durable; there is no mapping change to journal.
    EXPECT_EQ(disk->counters().writes, 1u) << "overwrite " << off << "+" << len << " wrote metadata at flush";
    EXPECT_GE(disk->counters().flushes, 1u);
    ASSERT_FALSE(disk->write_log().empty());
    EXPECT_LE(disk->write_log()[0].length, std::max<std::uint64_t>(len + 2 * 4096, 4096));
  }
  expect_model();
  disk->record_writes(false);
  // And it is durable.
  reopen_after_power_loss();
  expect_model();
}

TEST_F(PoolTest, FlushWithNothingDirtyWritesNothing) {
  make();
  const ObjectId v = volume("v", MiB);
  write(v, 0, 100);
  must(run(pool->flush()));
  disk->reset_counters();
  must(run(pool->flush()));
  EXPECT_EQ(disk->counters().writes, 0u);
}

// ---------------------------------------------------------------- snapshots

TEST_F(PoolTest, SnapshotsAreReadOnly) {
  make();
  const ObjectId v = volume("v", MiB);
  write(v, 0, 5000);
  const ObjectId s = snapshot(v, "s");
  auto data = pattern(100, 77);
  EXPECT_EQ(run(pool->write(s, 0, data)).code(), Errc::read_only);
  EXPECT_EQ(run(pool->write(s, 0, data, true)).code(), Errc::read_only);
  EXPECT_EQ(run(pool->trim(s, 0, cs)).code(), Errc::read_only);
  EXPECT_EQ(run(pool->write_zeroes(s, 0, cs)).code(), Errc::read_only);
  EXPECT_FALSE(run(pool->grow(s, 2 * MiB)));
  EXPECT_FALSE(run(pool->snapshot(s, "x"))) << "a snapshot of a snapshot is not a thing";
  auto st = must(pool->stat(s));
  EXPECT_EQ(st.kind, ObjectKind::snapshot);
  EXPECT_EQ(st.origin, v);
  EXPECT_EQ(st.name, "s");
  EXPECT_EQ(must(pool->find("v@s")), s);
  EXPECT_EQ(run(pool->snapshot(v, "s")).status().code(), Errc::exists);
  expect_model();
}

TEST_F(PoolTest, TwoHundredFiftySnapshotsEachKeepTheirContent) {
  make(128 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 2 * MiB);
  std::mt19937_64 rng(42);
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  std::vector<ObjectId> snaps;
  for (int i = 0; i < 250; ++i) {
    for (int w = 0; w < 2; ++w) {
      const std::uint64_t off = pick(0, 2 * MiB - 1);
      write(v, off, std::min<std::uint64_t>(pick(1, cs + 100), 2 * MiB - off));
    }
    if (i % 17 == 0) zero(v, pick(0, 31) * cs, cs, true);
    snaps.push_back(snapshot(v, fmt::format("s{}", i)));
  }
  EXPECT_EQ(pool->list().size(), 251u);
  expect_model();
  expect_check();
  reopen_clean();
  expect_model();
  // Deleting every other snapshot changes none of the rest.
  for (std::size_t i = 0; i < snaps.size(); i += 2) {
    must(run(pool->remove(snaps[i])), "remove snapshot");
    model.erase(snaps[i]);
  }
  expect_model();
  expect_check();
  reopen_after_power_loss();
  expect_model();
  expect_check();
}

TEST_F(PoolTest, SnapshotCostDoesNotDependOnVolumeFullness) {
  auto snapshot_cost = [&](std::uint64_t bytes_written) {
    make(64 * MiB, 64 * KiB);
    const ObjectId v = volume("v", 32 * MiB);
    for (std::uint64_t off = 0; off < bytes_written; off += MiB) write(v, off, MiB);
    must(run(pool->flush()));
    disk->reset_counters();
    snapshot(v, "snap");
    return disk->counters();
  };
  const IoCounters empty = snapshot_cost(0);
  const IoCounters full = snapshot_cost(32 * MiB);
  EXPECT_EQ(empty.writes, full.writes);
  EXPECT_EQ(empty.bytes_written, full.bytes_written);
  EXPECT_EQ(empty.flushes, full.flushes);
  EXPECT_EQ(full.reads, 0u) << "a snapshot reads nothing";
  EXPECT_LE(full.bytes_written, 64 * KiB) << "a snapshot is a journal record, not a copy";
  // And so is the first write after it: one cluster copied, whatever the volume's size.
}

TEST_F(PoolTest, CloneOfOneGiBSnapshotAllocatesNothingUntilWritten) {
  make(1 * 1024 * MiB + 64 * MiB, 1 * MiB);
  const std::uint64_t size = 1024 * MiB;
  const ObjectId v = must(run(pool->create_volume("big", size)));
  std::vector<std::byte> chunk(4 * MiB);
  fill_pattern(chunk, 5, 0);
  for (std::uint64_t off = 0; off < size; off += chunk.size()) must(run(pool->write(v, off, chunk)), "fill");
  const ObjectId s = must(run(pool->snapshot(v, "s")));
  must(run(pool->flush()));
  const std::uint64_t free_before = free_clusters();
  disk->reset_counters();
  const ObjectId c = must(run(pool->clone(s, "c")));
  EXPECT_EQ(free_clusters(), free_before) << "a clone shares every cluster";
  EXPECT_LT(disk->counters().bytes_written, 16 * MiB) << "a clone copies no data";
  EXPECT_EQ(must(pool->stat(c)).mapped_bytes, size);
  EXPECT_EQ(must(pool->stat(c)).exclusive_bytes, 0u);
  EXPECT_EQ(read(c, 7 * MiB + 3, 1000), read(s, 7 * MiB + 3, 1000));
  // A write to the clone allocates exactly the clusters it touches and changes nothing else.
  auto before_v = read(v, 0, 2 * MiB);
  auto data = pattern(1500 * KiB, 99, 100);
  must(run(pool->write(c, 100, data)));
  must(run(pool->flush()));
  EXPECT_EQ(free_clusters(), free_before - 2);
  EXPECT_EQ(read(c, 100, data.size()), data);
  EXPECT_EQ(read(v, 0, 2 * MiB), before_v);
  EXPECT_EQ(read(s, 0, 2 * MiB), before_v);
  expect_check();
}

TEST_F(PoolTest, ClonesAreWritableAndIndependent) {
  make();
  const ObjectId v = volume("v", 2 * MiB);
  write(v, 0, 2 * MiB);
  const ObjectId s = snapshot(v, "s");
  const ObjectId c = clone(s, "c");
  auto ci = must(pool->stat(c));
  EXPECT_EQ(ci.kind, ObjectKind::volume);
  EXPECT_EQ(ci.origin, s);
  EXPECT_EQ(ci.size, 2 * MiB);
  write(c, 5, 3 * cs);
  write(v, cs, 100);
  expect_model();
  // A clone can be snapshotted and cloned in turn.
  const ObjectId cs1 = snapshot(c, "cs1");
  const ObjectId cc = clone(cs1, "cc");
  write(cc, 0, 10);
  expect_model();
  // Deleting its snapshot and its volume never changes the clone.
  EXPECT_FALSE(run(pool->remove(v, false))) << "a volume with snapshots is not removed by default";
  must(run(pool->remove(v, true)), "remove with snapshots");
  model.erase(v);
  model.erase(s);
  EXPECT_EQ(pool->stat(s).status().code(), Errc::not_found);
  expect_model();
  expect_check();
  reopen_after_power_loss();
  expect_model();
  expect_check();
}

TEST_F(PoolTest, DeletingASnapshotChangesNoOtherObjectAndReturnsItsSpace) {
  make();
  const std::uint64_t free0 = free_clusters();
  const ObjectId v = volume("v", 4 * MiB);
  write(v, 0, 4 * MiB);
  const ObjectId s1 = snapshot(v, "s1");
  write(v, 0, 8 * cs);  // 8 clusters now exclusive to s1
  const ObjectId s2 = snapshot(v, "s2");
  write(v, 4 * cs, 8 * cs);  // 4 exclusive to s2 (4..7), 4 shared by s2 and s1 (8..11)
  const ObjectId c = clone(s1, "c");
  write(c, 20 * cs, 2 * cs);
  must(run(pool->flush()));
  const std::uint64_t used = free0 - free_clusters();
  EXPECT_EQ(used, 64u + 8 + 8 + 2);
  EXPECT_EQ(must(pool->stat(s2)).exclusive_bytes, 4 * cs);

  // s2's exclusive clusters come back; everything else reads the same.
  must(run(pool->remove(s2)));
  model.erase(s2);
  must(run(pool->flush()));
  EXPECT_EQ(free0 - free_clusters(), used - 4);
  expect_model();
  // Everything s1 sees is still seen by the clone (it shares s1's clusters) or by v: nothing
  // comes back, and nothing changes.
  must(run(pool->remove(s1)));
  model.erase(s1);
  must(run(pool->flush()));
  EXPECT_EQ(free0 - free_clusters(), used - 4);
  expect_model();
  // The clone was the last to see the original clusters 0..11: they come back with its own 2.
  must(run(pool->remove(c)));
  model.erase(c);
  must(run(pool->flush()));
  EXPECT_EQ(free0 - free_clusters(), 64u) << "only v's clusters are left";
  EXPECT_EQ(must(pool->stat(v)).exclusive_bytes, 64 * cs);
  expect_model();
  expect_check();
  reopen_clean();
  expect_model();
  EXPECT_EQ(free0 - free_clusters(), 64u);
  expect_check();
}

// ---------------------------------------------------------------- changed regions

// The changed() answer as a set of clusters, checked for shape on the way.
std::set<std::uint64_t> changed_clusters(const std::vector<Extent>& ex, std::uint64_t off, std::uint64_t len,
                                         std::uint64_t cs) {
  std::set<std::uint64_t> out;
  std::uint64_t pos = off;
  for (const Extent& e : ex) {
    EXPECT_EQ(e.offset, pos);
    pos += e.length;
    if (e.allocated)
      for (std::uint64_t c = e.offset / cs; c < (e.offset + e.length + cs - 1) / cs; ++c) out.insert(c);
  }
  EXPECT_EQ(pos, off + len) << "extents must cover the range exactly";
  return out;
}

TEST_F(PoolTest, ChangedRegionsComeFromMetadataAndMatchWhatWasWritten) {
  make(64 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 4 * MiB);
  write(v, 0, 4 * MiB);
  const ObjectId s1 = snapshot(v, "s1");
  write(v, 3 * cs, 2 * cs);    // clusters 3, 4
  write(v, 10 * cs, cs);       // 10
  zero(v, 20 * cs, cs, true);  // 20: trimmed, differs
  const ObjectId s2 = snapshot(v, "s2");
  write(v, 30 * cs + 100, 10);  // 30, unaligned
  write(v, 3 * cs, cs);         // 3 again
  must(run(pool->flush()));

  disk->reset_counters();
  const std::uint64_t size = 4 * MiB;
  auto c12 = changed_clusters(must(pool->changed(s1, s2, 0, size)), 0, size, cs);
  EXPECT_EQ(c12, (std::set<std::uint64_t>{3, 4, 10, 20}));
  auto c2v = changed_clusters(must(pool->changed(s2, v, 0, size)), 0, size, cs);
  EXPECT_EQ(c2v, (std::set<std::uint64_t>{3, 30}));
  auto c1v = changed_clusters(must(pool->changed(s1, v, 0, size)), 0, size, cs);
  EXPECT_EQ(c1v, (std::set<std::uint64_t>{3, 4, 10, 20, 30}));
  auto none = changed_clusters(must(pool->changed(s2, s2, 0, size)), 0, size, cs);
  EXPECT_TRUE(none.empty());
  // A sub-range is answered for exactly that sub-range.
  auto part = changed_clusters(must(pool->changed(s1, s2, 4 * cs + 1, 7 * cs)), 4 * cs + 1, 7 * cs, cs);
  EXPECT_EQ(part, (std::set<std::uint64_t>{4, 10}));
  EXPECT_EQ(disk->counters().reads, 0u) << "changed() reads no data";
  EXPECT_EQ(pool->changed(s1, v, 0, size + 1).status().code(), Errc::out_of_range);
}

TEST_F(PoolTest, ChangedRegionsAgreeWithTheDataForRandomWrites) {
  make(64 * MiB, 16 * KiB);
  const std::uint64_t size = 2 * MiB;
  const ObjectId v = volume("v", size);
  std::mt19937_64 rng(7);
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  for (int round = 0; round < 6; ++round) {
    const ObjectId a = snapshot(v, fmt::format("a{}", round));
    for (int i = 0; i < 12; ++i) {
      const std::uint64_t off = pick(0, size - 1);
      const std::uint64_t len = std::min<std::uint64_t>(pick(1, 3 * cs), size - off);
      if (i % 5 == 4)
        zero(v, off, len, true);
      else
        write(v, off, len);
    }
    const ObjectId b = snapshot(v, fmt::format("b{}", round));
    auto got = changed_clusters(must(pool->changed(a, b, 0, size)), 0, size, cs);
    // Every cluster whose bytes differ must be reported (a superset is allowed).
    auto da = read(a, 0, size), db = read(b, 0, size);
    for (std::uint64_t c = 0; c < size / cs; ++c) {
      const bool differs = !std::equal(da.begin() + c * cs, da.begin() + (c + 1) * cs, db.begin() + c * cs);
      if (differs) {
        EXPECT_TRUE(got.count(c)) << "round " << round << " cluster " << c << " differs but is not reported";
      }
    }
  }
}

// ---------------------------------------------------------------- restart

TEST_F(PoolTest, ReopenAfterCleanCloseAndAfterCrash) {
  make(32 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 4 * MiB);
  write(v, 100, 3 * cs);
  const ObjectId s = snapshot(v, "s");
  write(v, 0, 10);
  const ObjectId c = clone(s, "c");
  write(c, 2 * cs, cs);
  reopen_clean();
  expect_model();
  EXPECT_EQ(pool->info().name, "p1");
  EXPECT_EQ(pool->info().journal_used_bytes, 0u) << "a clean close leaves an empty journal";
  expect_check();

  // Crash with flushed and FUA writes (must survive) and an unflushed one (may go).
  write(v, 5 * cs, cs);
  must(run(pool->flush()));
  write(c, 9 * cs + 1, 5000, /*fua=*/true);
  auto lost = pattern(cs, 1234, 0);
  must(run(pool->write(v, 7 * cs, lost)));
  reopen_after_power_loss(PowerLoss::DropAll);
  expect_model();  // the model holds only durable writes for v's 7th cluster: zeroes
  EXPECT_GT(pool->check().replayed_journal_records, 0u) << "the crash left journal records to replay";
  expect_check();
  // Reopening again (after the checkpoint open writes) changes nothing.
  reopen_after_power_loss(PowerLoss::DropAll);
  expect_model();
  expect_check();
}

// Found by the crash test (seed 1000946): a cluster shared by a volume and a clone stops being
// shared when the clone copies-on-write, but only in memory until the next journal commit. If
// the volume then overwrites it in place and the power goes after the data flush but before the
// journal block lands, the clone's durable map still points at the cluster: it must not show the
// volume's new data.
TEST_F(PoolTest, NoInPlaceOverwriteOfAClusterThatDurableMetadataStillSharesWithAClone) {
  for (std::uint32_t cluster : {4096u, 64u * 1024}) {
    SCOPED_TRACE(cluster);
    model.clear();
    make(16 * MiB, cluster);
    const ObjectId v = volume("v", MiB);
    write(v, 0, cs);
    const ObjectId s = snapshot(v, "s");
    const ObjectId c = clone(s, "c");
    must(run(pool->remove(s)), "remove snapshot");  // v's frozen epoch goes back: cluster 0 looks owned
    model.erase(s);
    must(run(pool->flush()));
    auto clone_before = read(c, 0, cs);
    auto b = pattern(cs, 501, 0);
    must(run(pool->write(c, 0, b)));  // copy-on-write: v's cluster is v's alone, in memory
    auto cdata = pattern(cs, 502, 0);
    must(run(pool->write(v, 0, cdata)));
    // The power goes after the commit's data flush and before its journal block is durable.
    disk->reset_counters();
    disk->crash_after(1);
    EXPECT_FALSE(run(pool->flush()));
    reopen_after_power_loss(PowerLoss::DropAll);
    auto got = read(c, 0, cs);
    EXPECT_TRUE(got == clone_before || got == b) << "the clone shows the volume's unflushed write";
    expect_check();
  }
}

// A cluster freed by a trim is still mapped by the durable metadata until the trim is
// committed: handing it to another write before then lets a crash show that write's data in the
// trimmed volume.
TEST_F(PoolTest, TrimmedClusterIsNotReusedBeforeTheTrimIsDurable) {
  make(2 * MiB, 4096);
  const ObjectId v = volume("v", 16 * MiB);  // thin: larger than the pool
  const ObjectId w = volume("w", MiB);
  std::uint64_t c = 0;
  for (;; ++c) {
    auto d = pattern(cs, 1000 + c, c * cs);
    Status st = run(pool->write(v, c * cs, d));
    if (!st) {
      ASSERT_EQ(st.code(), Errc::no_space) << st.to_string();
      break;
    }
    model[v].write(c * cs, cs, d.data());
  }
  model[v].make_durable();
  must(run(pool->flush()));
  auto before = read(v, 0, 8 * cs);
  must(run(pool->trim(v, 0, 8 * cs)));  // frees 8 clusters, in memory
  auto wd = pattern(8 * cs, 77, 0);
  Status wst = run(pool->write(w, 0, wd));  // no_space is right; so is any cluster but those 8
  // The power goes after the commit's data flush, before its journal block.
  disk->reset_counters();
  disk->crash_after(1);
  (void)run(pool->flush());
  reopen_after_power_loss(PowerLoss::DropAll);
  auto after = read(v, 0, 8 * cs);
  EXPECT_TRUE(after == before || all_zero(after))
      << "the trimmed range shows other data after the crash (w's write " << (wst ? "succeeded" : "failed")
      << ")";
  expect_check();
}

TEST_F(PoolTest, ReadOnlyOpenRefusesIoAndWritesNothing) {
  make();
  const ObjectId v = volume("v", MiB);
  write(v, 0, 5000);
  must(run(pool->flush()));
  pool.reset();  // crash-like: leaves a journal to replay
  disk->power_loss(PowerLoss::DropAll);
  disk->set_read_only(true);
  disk->reset_counters();
  store::OpenOptions oo;
  oo.read_only = true;
  pool = must(run(Pool::open(*disk, oo)), "read-only open");
  expect_model();
  auto data = pattern(10, 3);
  EXPECT_EQ(run(pool->write(v, 0, data)).code(), Errc::read_only);
  EXPECT_EQ(run(pool->trim(v, 0, 4096)).code(), Errc::read_only);
  EXPECT_EQ(run(pool->create_volume("w", MiB)).status().code(), Errc::read_only);
  EXPECT_EQ(run(pool->snapshot(v, "s")).status().code(), Errc::read_only);
  expect_check();
  EXPECT_EQ(disk->counters().writes, 0u);
  EXPECT_EQ(disk->counters().discards, 0u);
}

// ---------------------------------------------------------------- bad input

TEST_F(PoolTest, IoBeyondTheEndIsOutOfRangeNamingTheOffset) {
  make();
  const ObjectId v = volume("v", MiB);
  std::vector<std::byte> b(4096);
  Status st = run(pool->read(v, MiB - 100, b));
  EXPECT_EQ(st.code(), Errc::out_of_range);
  EXPECT_NE(st.message().find(std::to_string(MiB - 100)), std::string::npos) << st.message();
  st = run(pool->write(v, MiB, b));
  EXPECT_EQ(st.code(), Errc::out_of_range);
  EXPECT_NE(st.message().find(std::to_string(MiB)), std::string::npos) << st.message();
  EXPECT_EQ(run(pool->write(v, ~std::uint64_t{0} - 100, b)).code(), Errc::out_of_range) << "overflow";
  EXPECT_EQ(run(pool->trim(v, MiB - 4096, 8192)).code(), Errc::out_of_range);
  EXPECT_EQ(run(pool->write_zeroes(v, 2 * MiB, 1)).code(), Errc::out_of_range);
  EXPECT_EQ(run(pool->read(12345, 0, b)).code(), Errc::not_found);
  // Nothing was changed by the refused calls.
  EXPECT_TRUE(all_zero(read(v, 0, MiB)));
  EXPECT_TRUE(run(pool->read(v, MiB - 4096, b))) << "the last bytes are readable";
}

TEST_F(PoolTest, NoSpaceIsAnErrorAndTrimMakesRoomAgain) {
  make(8 * MiB, 64 * KiB);
  const ObjectId v = volume("v", 64 * MiB);  // thin: more than the pool holds
  const std::uint64_t free0 = free_clusters();
  ASSERT_GT(free0, 4u);
  Status st;
  std::uint64_t written = 0;
  auto chunk = pattern(cs, 1);
  for (std::uint64_t c = 0; c < free0 + 2; ++c) {
    st = run(pool->write(v, c * cs, chunk));
    if (!st) break;
    ++written;
  }
  EXPECT_EQ(st.code(), Errc::no_space);
  // The pool keeps a few clusters back for its next checkpoint; free_clusters counts them.
  EXPECT_LE(written, free0);
  EXPECT_GE(written + 16, free0);
  EXPECT_NE(st.message().find("p1"), std::string::npos) << "names the pool: " << st.message();
  EXPECT_EQ(read(v, 0, cs), chunk) << "earlier writes are intact";
  must(run(pool->trim(v, 0, 4 * cs)));
  must(run(pool->flush()));
  EXPECT_TRUE(run(pool->write(v, written * cs, chunk))) << "trimmed space is usable again";
  expect_check();
}

TEST_F(PoolTest, DeviceErrorsAreReportedNotHidden) {
  make();
  const ObjectId v = volume("v", MiB);
  write(v, 0, cs);
  must(run(pool->flush()));
  auto data = pattern(cs, 42);
  disk->fail_nth_write(1);
  EXPECT_EQ(run(pool->write(v, 0, data)).code(), Errc::io_error);
  disk->fail_nth_flush(1);
  Status fl = run(pool->flush());
  EXPECT_EQ(fl.code(), Errc::io_error);
  disk->fail_nth_read(1);
  std::vector<std::byte> b(100);
  EXPECT_EQ(run(pool->read(v, 0, b)).code(), Errc::io_error);
  disk->clear_faults();
  // The pool may refuse further writes after a failed flush, but it never returns wrong data:
  // reads give the old or the new content of the failed write, nothing else.
  std::vector<std::byte> got(cs);
  if (run(pool->read(v, 0, got))) {
    std::vector<std::byte> old(cs);
    model[v].current_bytes(0, old);
    EXPECT_TRUE(got == old || got == data);
  }
}

TEST(PoolCreate, RejectsBadOptionsAndTinyDevices) {
  FakeDisk tiny(64 * KiB, "tiny");
  PoolOptions o;
  auto r = run(Pool::create(tiny, o));
  EXPECT_FALSE(r);
  FakeDisk disk(16 * MiB, "d");
  o.cluster_size = 3000;
  EXPECT_EQ(run(Pool::create(disk, o)).status().code(), Errc::invalid);
  o.cluster_size = 8 * MiB;
  EXPECT_EQ(run(Pool::create(disk, o)).status().code(), Errc::invalid);
}

TEST(PoolOpen, BlankAndForeignDevicesAreRefusedClearly) {
  FakeDisk blank(16 * MiB, "blank-disk");
  auto r = run(Pool::open(blank));
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("blank-disk"), std::string::npos) << r.status().to_string();
  FakeDisk junk(16 * MiB, "junk-disk");
  auto bytes = pattern(64 * KiB, 9);
  junk.poke(0, bytes);
  auto j = run(Pool::open(junk));
  ASSERT_FALSE(j);
  EXPECT_TRUE(j.status().code() == Errc::corrupt || j.status().code() == Errc::invalid ||
              j.status().code() == Errc::version)
      << j.status().to_string();
}

TEST(PoolOpen, TruncatedDeviceIsAClearError) {
  FakeDisk disk(32 * MiB, "full");
  PoolOptions o;
  auto p = must(run(Pool::create(disk, o)));
  const ObjectId v = must(run(p->create_volume("v", 16 * MiB)));
  auto data = pattern(8 * MiB, 3);
  must(run(p->write(v, 0, data)));
  must(run(p->close()));
  p.reset();
  for (std::uint64_t size : {16 * MiB, 4 * MiB, 8 * KiB + 512}) {
    FakeDisk cut = disk.truncated_copy(size);
    auto r = run(Pool::open(cut));
    ASSERT_FALSE(r) << "a pool cut to " << size << " bytes opened";
    EXPECT_FALSE(r.status().message().empty());
    EXPECT_NE(r.status().message().find("full"), std::string::npos)
        << "names the device: " << r.status().to_string();
  }
}

}  // namespace
}  // namespace duplex::test
