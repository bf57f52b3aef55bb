// ReplicaMeta on the fake disk: record slots under power cuts, the activity log's I/O on the hot
// and cold paths, crash recovery, the bitmap against a model, LRU eviction under randomized power
// cuts, corruption and resize.
#include <gtest/gtest.h>
#include <unistd.h>

#include <coroutine>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <random>
#include <set>

#include "duplex/mirror/meta_format.h"
#include "duplex/mirror/replica_meta.h"
#include "duplex/reactor/uring_device.h"
#include "fake_disk.h"

namespace duplex::mirror {
namespace {

using test::FakeDisk;
using test::PowerLoss;

template <typename T>
T run(Task<T> t) {
  return sync_wait(std::move(t));
}

constexpr std::uint64_t kMiB = 1 << 20;

MetaRecord make_rec(std::uint64_t size, std::uint32_t granularity = 4096) {
  MetaRecord r;
  r.volume = Uuid::random();
  r.size = size;
  r.granularity = granularity;
  r.generation = 7;
  r.node = "node-a";
  r.peer = "node-b";
  return r;
}

std::unique_ptr<ReplicaMeta> must(Result<std::unique_ptr<ReplicaMeta>> r) {
  if (!r) throw std::runtime_error(r.status().to_string());
  return std::move(*r);
}

bool same(const MetaRecord& a, const MetaRecord& b) {
  return a.volume == b.volume && a.size == b.size && a.granularity == b.granularity &&
         a.generation == b.generation && a.state == b.state && a.node == b.node && a.peer == b.peer &&
         a.bitmap_complete == b.bitmap_complete && a.resync_cursor == b.resync_cursor;
}

TEST(ReplicaMeta, CreateOpenRoundTrip) {
  MetaRecord rec = make_rec(100 * kMiB + 512);
  rec.state = ReplicaState::outdated;
  rec.bitmap_complete = false;
  rec.resync_cursor = 12345;
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  EXPECT_TRUE(same(m->record(), rec));
  EXPECT_FALSE(m->record().clean);
  ASSERT_TRUE(run(m->close()));
  m.reset();
  disk.power_loss(PowerLoss::DropAll);
  m = must(run(ReplicaMeta::open(&disk)));
  EXPECT_TRUE(same(m->record(), rec));
  EXPECT_FALSE(m->recovered_from_crash());
  EXPECT_FALSE(m->record().clean);  // open clears it durably
  m.reset();
  disk.power_loss(PowerLoss::DropAll);
  m = must(run(ReplicaMeta::open(&disk)));
  EXPECT_TRUE(m->recovered_from_crash());
  EXPECT_EQ(to_string(ReplicaState::in_sync), "in-sync");
  EXPECT_EQ(to_string(ReplicaState::outdated), "outdated");
  EXPECT_EQ(to_string(ReplicaState::inconsistent), "inconsistent");
}

TEST(ReplicaMeta, CreateRefusesBadArguments) {
  FakeDisk disk(1 * kMiB);
  MetaRecord r = make_rec(64 * kMiB, 3000);
  EXPECT_EQ(run(ReplicaMeta::create(&disk, r)).status().code(), Errc::invalid);
  r = make_rec(64 * kMiB);
  r.node = std::string(64, 'x');
  EXPECT_EQ(run(ReplicaMeta::create(&disk, r)).status().code(), Errc::invalid);
  r = make_rec(64 * 1024 * kMiB);  // needs more than 1 MiB of bitmap
  EXPECT_EQ(run(ReplicaMeta::create(&disk, r)).status().code(), Errc::no_space);
}

TEST(ReplicaMeta, UpdateSurvivesPowerCutAfterReturn) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  for (int i = 0; i < 5; ++i) {  // both slots in turn
    MetaRecord r = m->record();
    r.generation = 100 + i;
    r.state = i % 2 ? ReplicaState::outdated : ReplicaState::inconsistent;
    r.resync_cursor = i * 4096;
    ASSERT_TRUE(run(m->update(r)));
    EXPECT_EQ(m->record().generation, 100u + i);
    disk.power_loss(PowerLoss::RandomSubset, i);
    auto o = must(run(ReplicaMeta::open(&disk)));
    EXPECT_TRUE(same(o->record(), r)) << i;
  }
  MetaRecord bad = m->record();
  bad.size *= 2;
  EXPECT_EQ(run(m->update(bad)).code(), Errc::invalid);
}

// The power goes at every point of an update, with every way the cache can be lost: open finds
// the old record or the new one, never anything else.
TEST(ReplicaMeta, PowerCutDuringUpdateLeavesOldOrNew) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk base(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  must(run(ReplicaMeta::create(&base, rec)));
  int saw_old = 0, saw_new = 0;
  for (int step = 0; step < 4; ++step) {  // successive updates, alternating slots
    for (std::uint64_t cut = 0; cut < 3; ++cut) {
      for (std::uint64_t seed = 0; seed < 20; ++seed) {
        FakeDisk disk = base;
        auto m = must(run(ReplicaMeta::open(&disk)));
        const MetaRecord old = m->record();
        MetaRecord next = old;
        next.generation = old.generation + 1;
        disk.crash_after(cut);
        Status st = run(m->update(next));
        m.reset();
        disk.power_loss(PowerLoss::RandomSubset, seed);
        auto o = must(run(ReplicaMeta::open(&disk)));
        if (st) {
          ASSERT_TRUE(same(o->record(), next));
        } else if (same(o->record(), old)) {
          ++saw_old;
        } else {
          ASSERT_TRUE(same(o->record(), next)) << "cut " << cut << " seed " << seed;
          ++saw_new;
        }
      }
    }
    auto m = must(run(ReplicaMeta::open(&base)));
    MetaRecord next = m->record();
    next.generation += 10;
    ASSERT_TRUE(run(m->update(next)));
  }
  EXPECT_GT(saw_old, 0);
  EXPECT_GT(saw_new, 0);
}

TEST(ReplicaMeta, BeginWriteColdWritesAndFlushesHotDoesNoIo) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  disk.reset_counters();
  ASSERT_TRUE(run(m->begin_write(4096, 8192)));
  EXPECT_EQ(disk.counters().writes, 1u);
  EXPECT_EQ(disk.counters().flushes, 1u);
  EXPECT_EQ(disk.unflushed_sectors(), 0u);  // durable before it returned
  disk.reset_counters();
  ASSERT_TRUE(run(m->begin_write(0, 4 * kMiB)));  // the same extent
  ASSERT_TRUE(run(m->begin_write(3 * kMiB, 4096)));
  EXPECT_EQ(disk.counters().ops, 0u);
  ASSERT_TRUE(run(m->begin_write(4 * kMiB - 1, 2)));  // one hot, one cold: one AL update
  EXPECT_EQ(disk.counters().writes, 1u);
  EXPECT_EQ(disk.counters().flushes, 1u);
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> want{{0, 8 * kMiB}};
  EXPECT_EQ(m->hot_ranges(), want);
  EXPECT_EQ(run(m->begin_write(64 * kMiB, 1)).code(), Errc::out_of_range);
}

TEST(ReplicaMeta, FailedActivityLogUpdateLeavesExtentCold) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  disk.fail_nth_flush(1);
  EXPECT_FALSE(run(m->begin_write(8 * kMiB, 4096)));
  EXPECT_TRUE(m->hot_ranges().empty());
  disk.reset_counters();
  ASSERT_TRUE(run(m->begin_write(8 * kMiB, 4096)));  // tried again, with I/O
  EXPECT_EQ(disk.counters().flushes, 1u);
  EXPECT_EQ(m->hot_ranges().size(), 1u);
}

TEST(ReplicaMeta, CrashMarksActivityLogDirtyCleanCloseDoesNot) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  {
    auto m = must(run(ReplicaMeta::create(&disk, rec)));
    ASSERT_TRUE(run(m->close()));
  }
  {
    auto m = must(run(ReplicaMeta::open(&disk)));
    ASSERT_TRUE(run(m->begin_write(9 * kMiB + 100, 4096)));
    // ... the data write reached this replica only; the power goes, no close().
  }
  disk.power_loss(PowerLoss::DropAll);
  {
    auto m = must(run(ReplicaMeta::open(&disk)));
    EXPECT_TRUE(m->recovered_from_crash());
    EXPECT_TRUE(m->is_dirty(9 * kMiB + 100, 1));
    EXPECT_EQ(m->dirty_bytes(), 4 * kMiB);  // the whole extent [8, 12) MiB
    EXPECT_EQ(m->next_dirty(0, 64 * kMiB), (std::pair<std::uint64_t, std::uint64_t>{8 * kMiB, 4 * kMiB}));
    // The recovered bits were persisted at open: a second crash keeps them.
  }
  disk.power_loss(PowerLoss::DropAll);
  {
    auto m = must(run(ReplicaMeta::open(&disk)));
    EXPECT_EQ(m->dirty_bytes(), 4 * kMiB);
    m->clear_dirty(0, 64 * kMiB);  // resynced
    ASSERT_TRUE(run(m->begin_write(20 * kMiB, 4096)));
    ASSERT_TRUE(run(m->close()));
  }
  disk.power_loss(PowerLoss::DropAll);
  auto m = must(run(ReplicaMeta::open(&disk)));
  EXPECT_FALSE(m->recovered_from_crash());
  EXPECT_EQ(m->dirty_bytes(), 0u);
  EXPECT_TRUE(m->hot_ranges().empty());
  // After close() the record says clean: a log update then would never be replayed.
  ASSERT_TRUE(run(m->close()));
  EXPECT_EQ(run(m->begin_write(0, 4096)).code(), Errc::shutdown);
  EXPECT_EQ(run(m->persist()).code(), Errc::shutdown);
}

TEST(ReplicaMeta, ActivityLogSurvivesRingWrap) {
  MetaRecord rec = make_rec(256 * kMiB);
  MetaOptions o;
  o.al_blocks = 3;
  o.al_capacity = 5;
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity, o));
  auto m = must(run(ReplicaMeta::create(&disk, rec, o)));
  for (int e : {3, 9, 1, 20, 33, 2, 9, 40, 41})
    ASSERT_TRUE(run(m->begin_write(std::uint64_t(e) * 4 * kMiB, 4096)));
  // LRU: 3, 9, 1, 20, 33 | +2 evicts 3 | 9 touched | +40 evicts 1 | +41 evicts 20 -> {33, 2, 9, 40, 41}
  const auto hot = m->hot_ranges();
  disk.power_loss(PowerLoss::DropAll);
  auto o2 = must(run(ReplicaMeta::open(&disk)));
  EXPECT_EQ(o2->hot_ranges(), hot);
  std::vector<std::pair<std::uint64_t, std::uint64_t>> want{{2 * 4 * kMiB, 4 * kMiB},
                                                            {9 * 4 * kMiB, 4 * kMiB},
                                                            {33 * 4 * kMiB, 4 * kMiB},
                                                            {40 * 4 * kMiB, 8 * kMiB}};
  EXPECT_EQ(hot, want);
}

TEST(ReplicaMeta, PinnedExtentIsNeverEvicted) {
  MetaRecord rec = make_rec(64 * kMiB);
  MetaOptions o;
  o.al_capacity = 2;
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity, o));
  auto m = must(run(ReplicaMeta::create(&disk, rec, o)));
  auto pin = run(m->pin_write(100, 4096));  // extent 0: a write whose peer stalls
  ASSERT_TRUE(pin);
  for (int e = 1; e <= 5; ++e) ASSERT_TRUE(run(m->begin_write(e * 4 * kMiB, 1)));
  using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  EXPECT_EQ(m->hot_ranges(), (Ranges{{0, 4 * kMiB}, {20 * kMiB, 4 * kMiB}}));
  // The peer is declared gone: the write's range is marked dirty, still covered by the log.
  m->mark_dirty(100, 4096);
  FakeDisk cut = disk.durable_copy();
  EXPECT_TRUE(must(run(ReplicaMeta::open(&cut)))->is_dirty(100, 1));
  pin->release();
  ASSERT_TRUE(run(m->begin_write(24 * kMiB, 1)));  // now extent 0 (least recently used) goes
  EXPECT_EQ(m->hot_ranges(), (Ranges{{20 * kMiB, 8 * kMiB}}));
  cut = disk.durable_copy();
  EXPECT_TRUE(must(run(ReplicaMeta::open(&cut)))->is_dirty(100, 1));  // persisted before eviction
}

// A log of two extents (128 MiB volume) whose data flush before an eviction is counted, and
// fails while `fail` is set.
struct TwoExtentLog {
  static MetaOptions options() {
    MetaOptions o;
    o.al_capacity = 2;
    return o;
  }
  MetaRecord rec = make_rec(128 * kMiB);
  FakeDisk disk{ReplicaMeta::required_bytes(rec.size, rec.granularity, options())};
  std::unique_ptr<ReplicaMeta> m = must(run(ReplicaMeta::create(&disk, rec, options())));
  int flushes = 0;
  bool fail = false;
  TwoExtentLog() {
    m->set_before_evict([this]() -> Task<Status> {
      ++flushes;
      co_return fail ? Status::error(Errc::io_error, "test: data flush failed") : Status::ok();
    });
  }
};

TEST(ReplicaMeta, EvictionFlushesTheDataFirstAndAFailedFlushKeepsTheExtent) {
  TwoExtentLog log;
  auto& m = log.m;
  int& flushes = log.flushes;
  bool& fail = log.fail;
  ASSERT_TRUE(run(m->begin_write(0, 1)));
  ASSERT_TRUE(run(m->begin_write(4 * kMiB, 1)));
  EXPECT_EQ(flushes, 0) << "no eviction yet";
  using Ranges = std::vector<std::pair<std::uint64_t, std::uint64_t>>;
  fail = true;
  EXPECT_FALSE(run(m->begin_write(8 * kMiB, 1)));
  EXPECT_EQ(flushes, 1);
  EXPECT_EQ(m->hot_ranges(), (Ranges{{0, 8 * kMiB}})) << "a failed flush evicts nothing";
  fail = false;
  ASSERT_TRUE(run(m->begin_write(8 * kMiB, 1)));
  EXPECT_EQ(flushes, 2);
  EXPECT_EQ(m->hot_ranges(), (Ranges{{4 * kMiB, 8 * kMiB}}));
  ASSERT_TRUE(run(m->begin_write(4 * kMiB, 1)));
  EXPECT_EQ(flushes, 2) << "a hot extent costs nothing";
}

// An eviction flushes the data only when an evicted extent holds a write that ended after the
// last flush started; a write still in flight pins its extent; a write under a bare begin_write
// (its end unknown) always takes the flush; a range logged ahead (log_ahead) holds no write.
TEST(ReplicaMeta, EvictionSkipsTheFlushWhenAnEarlierOneCoveredTheEvictedWrites) {
  TwoExtentLog log;
  auto& m = log.m;
  const int& flushes = log.flushes;
  // A pinned write to extent `e`, ended (its pin released) at once.
  auto write = [&](std::uint64_t e) {
    auto pin = run(m->pin_write(e * 4 * kMiB, 4096));
    ASSERT_TRUE(pin) << pin.status().to_string();
  };
  write(0);
  write(1);
  write(2);  // evicts 0, written since no flush: flushed
  EXPECT_EQ(flushes, 1);
  write(3);  // evicts 1, whose write ended before that flush started
  EXPECT_EQ(flushes, 1) << "covered by the earlier flush";
  write(4);  // evicts 2, written (ended) after the flush started
  EXPECT_EQ(flushes, 2);
  // In flight: extent 5's pin is held, so the next evictions go around it.
  auto held = run(m->pin_write(5 * 4 * kMiB, 4096));
  ASSERT_TRUE(held);
  EXPECT_EQ(flushes, 2) << "evicted 3, which ended before flush 2 started";
  write(6);  // evicts 4 (ended after flush 2 started): flushed; 5 is pinned
  EXPECT_EQ(flushes, 3);
  held->release();  // 5's write ends now, after flush 3
  write(7);         // evicts 5, the least recently used: flushed
  EXPECT_EQ(flushes, 4);
  // Logged ahead and never written: nothing to flush when it goes.
  ASSERT_TRUE(run(m->log_ahead(8 * 4 * kMiB, 4096)));  // evicts 6 (ended before flush 4 started)
  EXPECT_EQ(flushes, 4);
  ASSERT_TRUE(run(m->log_ahead(9 * 4 * kMiB, 4096)));  // evicts 7, ended after flush 4 started
  EXPECT_EQ(flushes, 5);
  ASSERT_TRUE(run(m->log_ahead(10 * 4 * kMiB, 4096)));  // evicts 8: never written
  EXPECT_EQ(flushes, 5) << "a range logged ahead holds no write";
  // A bare begin_write's extent: its write has no known end, so its eviction always flushes.
  ASSERT_TRUE(run(m->begin_write(11 * 4 * kMiB, 4096)));  // evicts 9: never written
  EXPECT_EQ(flushes, 5);
  write(12);  // evicts 10: never written
  write(13);  // evicts 11 (bare begin_write)
  EXPECT_EQ(flushes, 6);
  EXPECT_EQ(m->evict_flushes(), 6u);
}

TEST(ReplicaMeta, AllPinnedLogGrowsToOneBlockThenRefuses) {
  MetaRecord rec = make_rec(128 * kMiB);
  MetaOptions o;
  o.al_extent = 64 * 1024;  // 2048 extents
  o.al_capacity = 1;
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity, o));
  auto m = must(run(ReplicaMeta::create(&disk, rec, o)));
  std::vector<ReplicaMeta::WritePin> pins;
  for (std::uint64_t e = 0; e < format::kAlMaxExtents; ++e) {
    auto p = run(m->pin_write(e * o.al_extent, 1));
    ASSERT_TRUE(p) << e << ": " << p.status().to_string();
    pins.push_back(std::move(*p));
  }
  EXPECT_EQ(m->hot_ranges().size(), 1u);  // one run of 1016 extents
  EXPECT_EQ(m->hot_ranges()[0].second, format::kAlMaxExtents * std::uint64_t{o.al_extent});
  auto refused = run(m->pin_write(2000 * std::uint64_t{o.al_extent}, 1));
  EXPECT_EQ(refused.status().code(), Errc::busy);
  EXPECT_EQ(m->hot_ranges()[0].second, format::kAlMaxExtents * std::uint64_t{o.al_extent});  // nothing lost
  pins.clear();
  ASSERT_TRUE(run(m->begin_write(2000 * std::uint64_t{o.al_extent}, 1)));
  EXPECT_EQ(m->hot_ranges().size(), 1u);  // back to capacity: only the new extent
  FakeDisk cut = disk.durable_copy();
  EXPECT_EQ(must(run(ReplicaMeta::open(&cut)))->hot_ranges(), m->hot_ranges());
}

// The bitmap against a model of one bool per granule, with the documented rounding (outwards for
// mark and is_dirty, inwards for clear except at the volume's end).
TEST(ReplicaMeta, BitmapMatchesModelAtBoundaries) {
  const std::uint32_t g = 4096;
  const std::uint64_t size = 300 * std::uint64_t{g} + 100;  // a partial last bit, several words
  MetaRecord rec = make_rec(size, g);
  MetaOptions o;
  o.al_extent = 64 * 1024;
  FakeDisk disk(ReplicaMeta::required_bytes(size, g, o));
  auto m = must(run(ReplicaMeta::create(&disk, rec, o)));
  const std::uint64_t nbits = 301;
  std::vector<bool> model(nbits);
  auto model_bytes = [&] {
    std::uint64_t n = 0;
    for (std::uint64_t b = 0; b < nbits; ++b)
      if (model[b]) n += std::min<std::uint64_t>(g, size - b * g);
    return n;
  };
  // Fixed edge cases first.
  m->mark_dirty(0, 1);
  EXPECT_TRUE(m->is_dirty(4095, 1));
  EXPECT_FALSE(m->is_dirty(4096, 1));
  EXPECT_EQ(m->dirty_bytes(), 4096u);
  m->clear_dirty(1, 4096);  // does not cover bit 0 whole
  EXPECT_TRUE(m->is_dirty(0, 1));
  m->clear_dirty(0, 4095);
  EXPECT_TRUE(m->is_dirty(0, 1));
  m->clear_dirty(0, 4096);
  EXPECT_FALSE(m->is_dirty(0, size));
  m->mark_dirty(size - 1, 1);
  EXPECT_EQ(m->dirty_bytes(), 100u);
  EXPECT_EQ(m->next_dirty(0, size), (std::pair<std::uint64_t, std::uint64_t>{300 * g, 100}));
  m->clear_dirty(300 * g, 100);  // reaches the end: the partial bit goes
  EXPECT_EQ(m->dirty_bytes(), 0u);
  m->mark_dirty(63 * g + 5, 2 * g);  // bits 63..65 across a word boundary
  EXPECT_EQ(m->next_dirty(0, size), (std::pair<std::uint64_t, std::uint64_t>{63 * g, 3 * g}));
  EXPECT_EQ(m->next_dirty(64 * g + 7, size),
            (std::pair<std::uint64_t, std::uint64_t>{64 * g + 7, 2 * g - 7}));
  EXPECT_EQ(m->next_dirty(0, 5000), (std::pair<std::uint64_t, std::uint64_t>{63 * g, 5000}));
  EXPECT_EQ(m->next_dirty(66 * g, size), std::nullopt);
  m->mark_all_dirty();
  EXPECT_EQ(m->dirty_bytes(), size);
  EXPECT_EQ(m->next_dirty(0, ~std::uint64_t{0} / 2), (std::pair<std::uint64_t, std::uint64_t>{0, size}));
  m->clear_dirty(0, size);
  EXPECT_EQ(m->dirty_bytes(), 0u);

  std::mt19937_64 rng(42);
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t off = pick(0, size - 1);
    const std::uint64_t len = pick(1, pick(0, 1) ? 2 * g : 80 * g);
    const std::uint64_t end = std::min(size, off + len);
    const std::uint64_t out_first = off / g, out_last = (end - 1) / g;
    switch (pick(0, 3)) {
      case 0:
        m->mark_dirty(off, len);
        for (std::uint64_t b = out_first; b <= out_last; ++b) model[b] = true;
        break;
      case 1: {
        m->clear_dirty(off, len);
        const std::uint64_t first = (off + g - 1) / g, last = end == size ? nbits : end / g;
        for (std::uint64_t b = first; b < last; ++b) model[b] = false;
        break;
      }
      case 2: {
        bool any = false;
        for (std::uint64_t b = out_first; b <= out_last; ++b) any |= model[b];
        ASSERT_EQ(m->is_dirty(off, len), any) << i;
        break;
      }
      default: {
        const std::uint64_t max_len = pick(1, 100 * g);
        auto got = m->next_dirty(off, max_len);
        std::uint64_t b = off / g;
        while (b < nbits && !model[b]) ++b;
        if (b == nbits) {
          ASSERT_EQ(got, std::nullopt) << i;
          break;
        }
        const std::uint64_t start = std::max(off, b * g);
        std::uint64_t c = b;
        while (c < nbits && model[c]) ++c;
        const std::uint64_t stop = std::min({c * g, size, start + max_len});
        ASSERT_EQ(got, (std::pair<std::uint64_t, std::uint64_t>{start, stop - start})) << i;
      }
    }
    ASSERT_EQ(m->dirty_bytes(), model_bytes()) << i;
  }
  // And the same bits after persist, a power cut and open.
  ASSERT_TRUE(run(m->persist()));
  m.reset();
  disk.power_loss(PowerLoss::RandomSubset, 1);
  auto o2 = must(run(ReplicaMeta::open(&disk)));
  for (std::uint64_t b = 0; b < nbits; ++b) ASSERT_EQ(o2->is_dirty(b * g, 1), model[b]) << b;
}

TEST(ReplicaMeta, PersistedBitsSurvivePowerCutUnpersistedDoNot) {
  MetaRecord rec = make_rec(1024 * kMiB);  // 262144 bits: 9 bitmap blocks
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  m->mark_dirty(0, 4096);
  m->mark_dirty(500 * kMiB, 3 * kMiB);
  m->mark_dirty(1024 * kMiB - 4096, 4096);
  EXPECT_EQ(m->unsaved_bitmap_blocks(), 3u);
  disk.reset_counters();
  ASSERT_TRUE(run(m->persist()));
  EXPECT_EQ(disk.counters().flushes, 1u);
  EXPECT_EQ(m->unsaved_bitmap_blocks(), 0u);
  disk.reset_counters();
  ASSERT_TRUE(run(m->persist()));  // nothing changed: no I/O
  EXPECT_EQ(disk.counters().ops, 0u);
  m->mark_dirty(700 * kMiB, 4096);  // in RAM only, in no hot extent
  m.reset();
  disk.power_loss(PowerLoss::RandomSubset, 3);
  auto o = must(run(ReplicaMeta::open(&disk)));
  EXPECT_EQ(o->dirty_bytes(), 2 * 4096 + 3 * kMiB);
  EXPECT_TRUE(o->is_dirty(0, 1));
  EXPECT_TRUE(o->is_dirty(502 * kMiB, 1));
  EXPECT_TRUE(o->is_dirty(1024 * kMiB - 1, 1));
  EXPECT_FALSE(o->is_dirty(700 * kMiB, 4096));
}

// Randomized power cuts over a workload that makes extents hot (few AL slots: constant eviction),
// marks ranges dirty as if the peer were absent, and persists now and then. After the cut and
// open, every range marked dirty and every range whose begin_write completed is dirty.
TEST(ReplicaMeta, EvictionUnderPowerCutsLosesNoDirtyBit) {
  const std::uint64_t size = 512 * kMiB;  // 5 bitmap blocks, 128 extents
  MetaRecord rec = make_rec(size);
  MetaOptions o;
  o.al_capacity = 4;
  o.al_blocks = 3;
  FakeDisk base(ReplicaMeta::required_bytes(size, rec.granularity, o));
  must(run(ReplicaMeta::create(&base, rec, o)));
  const int trials = std::getenv("DUPLEX_CRASH_TRIALS") ? std::atoi(std::getenv("DUPLEX_CRASH_TRIALS")) : 400;
  std::uint64_t evictions_cut = 0;
  for (int t = 0; t < trials; ++t) {
    std::mt19937_64 rng(t);
    auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
      return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
    };
    FakeDisk disk = base;
    auto m = must(run(ReplicaMeta::open(&disk)));
    std::vector<std::pair<std::uint64_t, std::uint64_t>> must_dirty;
    std::pair<std::uint64_t, std::uint64_t> in_flight{0, 0};
    disk.crash_after(pick(0, 120));
    while (!disk.crashed()) {
      // Writes land in a few hot zones spread over the bitmap blocks, so evictions are common.
      const std::uint64_t zone = pick(0, 9) * 50 * kMiB;
      const std::uint64_t off = zone + pick(0, 12 * kMiB);
      const std::uint64_t len = std::min(pick(1, 3 * kMiB), size - off);
      if (pick(0, 9) == 0) {
        if (!run(m->persist())) break;
        continue;
      }
      if (!run(m->begin_write(off, len))) break;
      // The data write goes on; it completes before the next one begins. On both replicas it
      // needs no bit; if the peer missed it, it is marked dirty.
      in_flight = {off, len};
      if (pick(0, 1)) {
        m->mark_dirty(off, len);
        must_dirty.emplace_back(off, len);
      }
    }
    // The last write may have been in flight at the cut: on one replica only.
    if (in_flight.second) must_dirty.push_back(in_flight);
    evictions_cut += 1;
    m.reset();
    disk.power_loss(PowerLoss::RandomSubset, t);
    auto r = run(ReplicaMeta::open(&disk));
    ASSERT_TRUE(r) << "trial " << t << ": " << r.status().to_string();
    for (auto [off, len] : must_dirty) {
      for (std::uint64_t g = off / 4096; g <= (off + len - 1) / 4096; ++g)
        ASSERT_TRUE((*r)->is_dirty(g * 4096, 1)) << "trial " << t << ": lost dirty bit at " << g * 4096;
    }
  }
  EXPECT_EQ(evictions_cut, static_cast<std::uint64_t>(trials));
}

// The power goes at every point of close(), of the open() that recovers from a crash, and of
// resize(): no dirty bit is lost (RAM-only bits of hot extents included), and a cut resize leaves
// the old size or the new one.
TEST(ReplicaMeta, PowerCutsDuringCloseOpenAndResizeLoseNoBit) {
  const std::uint64_t size = 256 * kMiB, grown = 1024 * kMiB;
  MetaRecord rec = make_rec(size);
  FakeDisk base(ReplicaMeta::required_bytes(grown, rec.granularity));
  {
    auto m = must(run(ReplicaMeta::create(&base, rec)));
    m->mark_dirty(200 * kMiB, 4096);
    ASSERT_TRUE(run(m->persist()));
    ASSERT_TRUE(run(m->begin_write(10 * kMiB, 4096)));
    ASSERT_TRUE(run(m->begin_write(150 * kMiB, 4096)));
    m->mark_dirty(150 * kMiB, 4096);  // RAM only; covered by the log
  }
  auto check = [&](FakeDisk& d, const char* what, std::uint64_t cut, std::uint64_t seed) {
    auto m = must(run(ReplicaMeta::open(&d)));
    EXPECT_TRUE(m->is_dirty(200 * kMiB, 1)) << what << " cut " << cut << " seed " << seed;
    EXPECT_TRUE(m->is_dirty(150 * kMiB, 1)) << what << " cut " << cut << " seed " << seed;
    EXPECT_TRUE(m->record().size == size || m->record().size == grown) << what;
  };
  int completed = 0;
  for (std::uint64_t cut = 0; cut < 40; ++cut) {
    for (std::uint64_t seed = 0; seed < 4; ++seed) {
      // close() of the open object (state as left above: unflushed nothing, bits in RAM lost with
      // the object, so rebuild it the way the engine would see it: open after the crash).
      {
        FakeDisk d = base;
        auto m = must(run(ReplicaMeta::open(&d)));  // recovers: the log's extents are dirty
        ASSERT_TRUE(run(m->begin_write(60 * kMiB, 4096)));
        m->mark_dirty(60 * kMiB, 4096);  // RAM only, in a hot extent not dirty at open
        d.crash_after(cut);
        if (run(m->close())) ++completed;
        m.reset();
        d.power_loss(PowerLoss::RandomSubset, seed);
        check(d, "close", cut, seed);
        auto again = must(run(ReplicaMeta::open(&d)));
        EXPECT_TRUE(again->is_dirty(60 * kMiB, 1)) << "close cut " << cut << " seed " << seed;
      }
      {  // the recovering open itself
        FakeDisk d = base;
        d.crash_after(cut);
        (void)run(ReplicaMeta::open(&d));
        d.power_loss(PowerLoss::RandomSubset, seed);
        check(d, "open", cut, seed);
      }
      {  // resize
        FakeDisk d = base;
        auto m = must(run(ReplicaMeta::open(&d)));
        d.crash_after(cut);
        (void)run(m->resize(grown));
        m.reset();
        d.power_loss(PowerLoss::RandomSubset, seed);
        check(d, "resize", cut, seed);
      }
    }
  }
  EXPECT_GT(completed, 0);  // the cut points reach past the end of close()
}

TEST(ReplicaMeta, CorruptBitmapBlockReadsAllDirty) {
  MetaRecord rec = make_rec(1024 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  m->mark_dirty(0, 4096);
  ASSERT_TRUE(run(m->close()));
  m.reset();
  const std::uint64_t block1 = format::kAlOffset + 8 * format::kBlock + format::kBlock;
  const std::byte flip{0x5a};
  disk.poke(block1 + 1000, std::span(&flip, 1));
  m = must(run(ReplicaMeta::open(&disk)));
  const std::uint64_t per_block = format::kBitmapBitsPerBlock * 4096;
  EXPECT_EQ(m->dirty_bytes(), 4096 + per_block);
  EXPECT_EQ(m->next_dirty(4096, size_t(-1) / 2),
            (std::pair<std::uint64_t, std::uint64_t>{per_block, per_block}));
  EXPECT_EQ(m->unsaved_bitmap_blocks(), 0u);  // rewritten at open
  m.reset();
  disk.power_loss(PowerLoss::DropAll);
  m = must(run(ReplicaMeta::open(&disk)));
  EXPECT_EQ(m->dirty_bytes(), 4096 + per_block);
}

TEST(ReplicaMeta, CorruptRecordSlots) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  {
    auto m = must(run(ReplicaMeta::create(&disk, rec)));
    MetaRecord r = m->record();
    r.generation = 8;
    ASSERT_TRUE(run(m->update(r)));  // slot 1 holds generation 8, slot 0 generation 7
  }
  const std::byte flip{0x01};
  FakeDisk one = disk;
  one.poke(4096 + 100, std::span(&flip, 1));
  auto m = must(run(ReplicaMeta::open(&one)));
  EXPECT_EQ(m->record().generation, 7u);  // the newer slot is bad: the older one serves

  FakeDisk both = disk;
  both.poke(100, std::span(&flip, 1));
  both.poke(4096 + 100, std::span(&flip, 1));
  auto r = run(ReplicaMeta::open(&both));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::corrupt);
  EXPECT_NE(r.status().message().find("fake-disk"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("mirror metadata record"), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("bad CRC"), std::string::npos) << r.status().message();

  FakeDisk magic = disk;
  const std::byte x{'X'};
  magic.poke(0, std::span(&x, 1));
  magic.poke(4096, std::span(&x, 1));
  r = run(ReplicaMeta::open(&magic));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::invalid);
  EXPECT_NE(r.status().message().find("bad magic"), std::string::npos) << r.status().message();

  FakeDisk blank(disk.size());
  EXPECT_EQ(run(ReplicaMeta::open(&blank)).status().code(), Errc::invalid);
}

TEST(ReplicaMeta, ResizeKeepsBits) {
  MetaRecord rec = make_rec(100 * kMiB);
  const std::uint64_t grown = 2000 * kMiB;  // from 1 bitmap block to 17
  FakeDisk disk(ReplicaMeta::required_bytes(grown, rec.granularity));
  auto m = must(run(ReplicaMeta::create(&disk, rec)));
  m->mark_dirty(0, 4096);
  m->mark_dirty(100 * kMiB - 4096, 4096);
  ASSERT_TRUE(run(m->resize(grown)));
  EXPECT_EQ(m->record().size, grown);
  EXPECT_EQ(m->dirty_bytes(), 2 * 4096u);
  EXPECT_FALSE(m->is_dirty(100 * kMiB, grown - 100 * kMiB));
  m->mark_dirty(grown - 1, 1);
  ASSERT_TRUE(run(m->close()));
  m.reset();
  disk.power_loss(PowerLoss::RandomSubset, 9);
  m = must(run(ReplicaMeta::open(&disk)));
  EXPECT_EQ(m->record().size, grown);
  EXPECT_EQ(m->dirty_bytes(), 3 * 4096u);
  EXPECT_TRUE(m->is_dirty(100 * kMiB - 1, 1));
  EXPECT_TRUE(m->is_dirty(grown - 1, 1));
  EXPECT_EQ(run(m->resize(grown * 2)).code(), Errc::no_space);
  EXPECT_EQ(run(m->resize(grown / 2)).code(), Errc::invalid);
}

// A device whose every operation suspends until the test lets it go: concurrent callers of
// ReplicaMeta interleave at each I/O, as on io_uring.
class SlowDisk final : public BlockDevice {
 public:
  explicit SlowDisk(FakeDisk* d) : d_(d) {}
  std::uint64_t size() const override { return d_->size(); }
  const std::string& name() const override { return d_->name(); }
  Task<Status> read(std::uint64_t off, std::span<std::byte> buf) override {
    co_await Defer{this};
    co_return co_await d_->read(off, buf);
  }
  Task<Status> write(std::uint64_t off, std::span<const std::byte> buf) override {
    co_await Defer{this};
    co_return co_await d_->write(off, buf);
  }
  Task<Status> flush() override {
    co_await Defer{this};
    co_return co_await d_->flush();
  }
  Task<Status> discard(std::uint64_t off, std::uint64_t len) override {
    co_await Defer{this};
    co_return co_await d_->discard(off, len);
  }
  // Completes the oldest pending operation; false when none is pending.
  bool step() {
    if (q_.empty()) return false;
    auto h = q_.front();
    q_.pop_front();
    h.resume();
    return true;
  }
  void drain() {
    while (step()) {
    }
  }

 private:
  struct Defer {
    SlowDisk* s;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { s->q_.push_back(h); }
    void await_resume() const noexcept {}
  };
  FakeDisk* d_;
  std::deque<std::coroutine_handle<>> q_;
};

// A ReplicaMeta created on a SlowDisk over a FakeDisk (the creation's I/O stepped through).
struct SlowMeta {
  SlowMeta(const MetaRecord& rec, MetaOptions o = {})
      : disk(ReplicaMeta::required_bytes(rec.size, rec.granularity, o)),
        slow(&disk),
        m(must(sync_wait(ReplicaMeta::create(&slow, rec, o), [this] { ASSERT_TRUE(slow.step()); }))) {}
  FakeDisk disk;
  SlowDisk slow;
  std::unique_ptr<ReplicaMeta> m;
};

// What survives a power cut right now: the hot extents of the durable activity log.
std::vector<std::pair<std::uint64_t, std::uint64_t>> durable_hot(const FakeDisk& disk) {
  FakeDisk copy = disk.durable_copy();
  auto m = must(run(ReplicaMeta::open(&copy)));
  return m->hot_ranges();
}

bool covers(const std::vector<std::pair<std::uint64_t, std::uint64_t>>& ranges, std::uint64_t off) {
  for (auto [o, l] : ranges)
    if (off >= o && off - o < l) return true;
  return false;
}

TEST(ReplicaMeta, ConcurrentBeginWritesReturnOnlyOnceTheLogIsDurable) {
  MetaRecord rec = make_rec(64 * kMiB);
  MetaOptions o;
  o.al_capacity = 2;
  SlowMeta sm(rec, o);
  auto& [disk, slow, m] = sm;

  int done = 0;
  auto check_durable = [&](std::uint64_t off) {
    return [&, off](Status st) {
      ASSERT_TRUE(st) << st.to_string();
      EXPECT_TRUE(covers(durable_hot(disk), off))
          << "begin_write(" << off << ") returned before its extent was durable";
      ++done;
    };
  };
  spawn(m->begin_write(0, 4096), check_durable(0));
  spawn(m->begin_write(8192, 4096), check_durable(8192));  // same extent: must wait, not trust RAM
  EXPECT_EQ(done, 0);
  slow.drain();
  EXPECT_EQ(done, 2);
  spawn(m->begin_write(100, 1), check_durable(100));  // hot now: inline, no I/O
  EXPECT_EQ(done, 3);

  // Eviction in flight: 0 and 4M are hot; 8M evicts 0. A writer to 0 meanwhile waits for it.
  spawn(m->begin_write(4 * kMiB, 1), check_durable(4 * kMiB));
  slow.drain();
  m->mark_dirty(0, 4096);  // RAM only, covered by extent 0 in the log
  spawn(m->begin_write(8 * kMiB, 1), check_durable(8 * kMiB));
  ASSERT_TRUE(slow.step());  // the evicted extent's bitmap block is being written
  spawn(m->begin_write(0, 1), check_durable(0));
  EXPECT_EQ(done, 4);
  slow.drain();
  EXPECT_EQ(done, 6);
  disk.power_loss(PowerLoss::DropAll);
  auto after = must(run(ReplicaMeta::open(&disk)));
  EXPECT_TRUE(after->is_dirty(0, 1));
}

TEST(ReplicaMeta, WritersWaitingForTheLogShareOneUpdate) {
  MetaRecord rec = make_rec(256 * kMiB);
  SlowMeta sm(rec);
  auto& [disk, slow, m] = sm;
  disk.reset_counters();
  int done = 0;
  for (std::uint64_t i = 0; i < 10; ++i)
    spawn(m->begin_write(i * 4 * kMiB + 512, 4096), [&, i](Status st) {
      ASSERT_TRUE(st) << st.to_string();
      EXPECT_TRUE(covers(durable_hot(disk), i * 4 * kMiB)) << "extent " << i << " not durable at return";
      ++done;
    });
  EXPECT_EQ(done, 0);
  slow.drain();
  EXPECT_EQ(done, 10);
  // The first writer's update was in flight when the other nine came: they share the next one.
  EXPECT_EQ(m->al_updates(), 2u);
  EXPECT_EQ(m->al_extents_logged(), 10u);
  EXPECT_EQ(disk.counters().flushes, 2u);
  disk.power_loss(PowerLoss::DropAll);
  auto after = must(run(ReplicaMeta::open(&disk)));
  const std::vector<std::pair<std::uint64_t, std::uint64_t>> want{{0, 40 * kMiB}};
  EXPECT_EQ(after->hot_ranges(), want);
}

TEST(ReplicaMeta, GroupCommitNeverEvictsAPinnedExtentOrTheWritersOwn) {
  MetaRecord rec = make_rec(256 * kMiB);
  MetaOptions o;
  o.al_capacity = 4;
  SlowMeta sm(rec, o);
  auto& [disk, slow, m] = sm;
  // Extents 0 and 1 stay pinned throughout (writes in flight there).
  std::vector<ReplicaMeta::WritePin> held;
  for (std::uint64_t e = 0; e < 2; ++e) {
    auto p = sync_wait(m->pin_write(e * 4 * kMiB, 1), [&] { ASSERT_TRUE(slow.step()); });
    ASSERT_TRUE(p);
    held.push_back(std::move(*p));
  }
  int done = 0;
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    const int n = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < n; ++k) {
      const std::uint64_t e = 2 + rng() % 40;
      spawn(m->pin_write(e * 4 * kMiB, 4096), [&, e](Result<ReplicaMeta::WritePin> p) {
        ASSERT_TRUE(p) << p.status().to_string();
        const auto durable = durable_hot(disk);
        EXPECT_TRUE(covers(durable, e * 4 * kMiB)) << "extent " << e << " not durable while pinned";
        EXPECT_TRUE(covers(durable, 0) && covers(durable, 4 * kMiB)) << "a pinned extent was evicted";
        ++done;
      });
    }
    slow.drain();
  }
  EXPECT_GT(done, 20);
  EXPECT_LT(m->al_updates(), static_cast<std::uint64_t>(done)) << "no update was shared";
  const auto durable = durable_hot(disk);
  EXPECT_TRUE(covers(durable, 0) && covers(durable, 4 * kMiB));
}

TEST(ReplicaMeta, BitSetWhilePersistIsInFlightStaysUnsaved) {
  MetaRecord rec = make_rec(64 * kMiB);
  FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity));
  SlowDisk slow(&disk);
  auto m = must(sync_wait(ReplicaMeta::create(&slow, rec), [&] { ASSERT_TRUE(slow.step()); }));
  m->mark_dirty(0, 4096);
  bool persisted = false;
  spawn(m->persist(), [&](Status st) {
    ASSERT_TRUE(st);
    persisted = true;
  });
  m->mark_dirty(8192, 4096);  // after the block was encoded, before it is written
  slow.drain();
  ASSERT_TRUE(persisted);
  EXPECT_EQ(m->unsaved_bitmap_blocks(), 1u);
  FakeDisk copy = disk.durable_copy();
  auto o = must(run(ReplicaMeta::open(&copy)));
  EXPECT_TRUE(o->is_dirty(0, 1));
  EXPECT_FALSE(o->is_dirty(8192, 1));
  ASSERT_TRUE(sync_wait(m->persist(), [&] { ASSERT_TRUE(slow.step()); }));
  EXPECT_EQ(m->unsaved_bitmap_blocks(), 0u);
}

// Created, reopened larger (a grown volume), resized: inline, and through a ring (the daemon's
// way), where every read, write and fdatasync goes through the ring rather than the loop's thread.
void meta_file_on_disk(Ring* ring) {
  char tmpl[] = "/tmp/duplex-meta-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const std::string path = dir + "/vol.meta";
  auto go = [ring]<typename T>(Task<T> t) {
    return sync_wait(std::move(t), [ring] {
      if (ring) ring->wait();
    });
  };
  MetaRecord rec = make_rec(64 * kMiB);
  {
    auto dev = go(open_meta_file(path, ReplicaMeta::required_bytes(rec.size, rec.granularity), true, ring));
    ASSERT_TRUE(dev) << dev.status().to_string();
    auto m = must(go(ReplicaMeta::create(dev->get(), rec)));
    m->mark_dirty(4 * kMiB, 4096);
    ASSERT_TRUE(go(m->close()));
    EXPECT_EQ(go(open_meta_file(path, 1, true, ring)).status().code(), Errc::exists);
  }
  {
    const std::uint64_t bigger = ReplicaMeta::required_bytes(4 * rec.size, rec.granularity);
    auto dev = go(open_meta_file(path, bigger, false, ring));
    ASSERT_TRUE(dev) << dev.status().to_string();
    EXPECT_EQ((*dev)->size(), bigger);
    auto m = must(go(ReplicaMeta::open(dev->get())));
    EXPECT_TRUE(same(m->record(), rec));
    EXPECT_TRUE(m->is_dirty(4 * kMiB, 1));
    ASSERT_TRUE(go(m->resize(4 * rec.size)));
    ASSERT_TRUE(go(m->close()));
  }
  {
    auto dev = go(open_meta_file(path, 1, false, ring));
    ASSERT_TRUE(dev) << dev.status().to_string();
    auto m = must(go(ReplicaMeta::open(dev->get())));
    EXPECT_EQ(m->record().size, 4 * rec.size) << "the resize is durable";
    EXPECT_TRUE(m->is_dirty(4 * kMiB, 1));
    ASSERT_TRUE(go(m->close()));
  }
  std::filesystem::remove_all(dir);
}

TEST(ReplicaMeta, MetaFileOnDisk) { meta_file_on_disk(nullptr); }

TEST(ReplicaMeta, MetaFileOnDiskThroughARing) {
  if (uring_disabled_by_env()) GTEST_SKIP() << "DUPLEX_NO_URING is set";
  auto r = Ring::create(64);
  if (!r) GTEST_SKIP() << "io_uring unavailable here: " << r.status().to_string();
  meta_file_on_disk(r->get());
  EXPECT_GT((*r)->stats().completed, 10u) << "the metadata went through the ring";
  EXPECT_TRUE((*r)->idle());
}

}  // namespace
}  // namespace duplex::mirror
