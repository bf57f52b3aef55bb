// The fake disk is the ground truth of every crash test: its cache and power-loss rules are
// checked here so that a store test failure means a store bug.
#include "fake_disk.h"

#include <gtest/gtest.h>

#include <set>
#include <vector>

namespace duplex::test {
namespace {

std::vector<std::byte> fill(std::size_t n, std::uint8_t v) { return std::vector<std::byte>(n, std::byte{v}); }

std::vector<std::byte> read_all(FakeDisk& d, std::uint64_t off, std::size_t n) {
  std::vector<std::byte> out(n);
  Status st = sync_wait(d.read(off, out));
  EXPECT_TRUE(st) << st.to_string();
  return out;
}

TEST(FakeDisk, ReadsSeeLatestWritesAndFreshDiskIsZero) {
  FakeDisk d(64 * 1024);
  EXPECT_EQ(read_all(d, 0, 8192), fill(8192, 0));
  ASSERT_TRUE(sync_wait(d.write(100, fill(5000, 1))));
  ASSERT_TRUE(sync_wait(d.write(200, fill(10, 2))));
  auto got = read_all(d, 0, 8192);
  for (std::size_t i = 0; i < 8192; ++i) {
    const std::uint8_t want = (i >= 200 && i < 210) ? 2 : (i >= 100 && i < 5100) ? 1 : 0;
    ASSERT_EQ(got[i], std::byte{want}) << i;
  }
}

TEST(FakeDisk, DropAllLosesOnlyUnflushedWrites) {
  FakeDisk d(64 * 1024);
  ASSERT_TRUE(sync_wait(d.write(0, fill(8192, 1))));
  ASSERT_TRUE(sync_wait(d.flush()));
  ASSERT_TRUE(sync_wait(d.write(4096, fill(8192, 2))));
  EXPECT_EQ(d.unflushed_sectors(), 2u);
  d.power_loss(PowerLoss::DropAll);
  EXPECT_EQ(read_all(d, 0, 8192), fill(8192, 1));
  EXPECT_EQ(read_all(d, 8192, 4096), fill(4096, 0));
  EXPECT_EQ(d.unflushed_sectors(), 0u);
}

TEST(FakeDisk, RandomSubsetKeepsOnlyVersionsThatWereWrittenAndTearsAcrossSectors) {
  std::set<std::vector<std::uint8_t>> outcomes;
  for (std::uint64_t seed = 0; seed < 200; ++seed) {
    FakeDisk d(64 * 1024);
    ASSERT_TRUE(sync_wait(d.write(0, fill(4 * 4096, 1))));
    ASSERT_TRUE(sync_wait(d.flush()));
    ASSERT_TRUE(sync_wait(d.write(0, fill(4 * 4096, 2))));
    ASSERT_TRUE(sync_wait(d.write(0, fill(4 * 4096, 3))));
    d.power_loss(PowerLoss::RandomSubset, seed);
    std::vector<std::uint8_t> per_sector;
    for (int s = 0; s < 4; ++s) {
      auto b = read_all(d, s * 4096, 4096);
      const std::byte first = b[0];
      // A sector is atomic: never a mix of two versions.
      for (auto x : b) ASSERT_EQ(x, first);
      ASSERT_TRUE(first == std::byte{1} || first == std::byte{2} || first == std::byte{3});
      per_sector.push_back(static_cast<std::uint8_t>(first));
    }
    outcomes.insert(per_sector);
  }
  // Torn writes and intermediate versions both occur.
  EXPECT_GT(outcomes.size(), 20u);
  EXPECT_TRUE(outcomes.count({1, 1, 1, 1}));
  EXPECT_TRUE(outcomes.count({3, 3, 3, 3}));
}

TEST(FakeDisk, SameSeedSameOutcome) {
  auto run = [](std::uint64_t seed) {
    FakeDisk d(256 * 1024);
    for (int i = 0; i < 50; ++i) EXPECT_TRUE(sync_wait(d.write(i * 4096, fill(4096, i + 1))));
    d.power_loss(PowerLoss::RandomSubset, seed);
    return read_all(d, 0, 50 * 4096);
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(FakeDisk, InjectedFaultsFailTheNthOperation) {
  FakeDisk d(64 * 1024);
  d.fail_nth_write(2);
  EXPECT_TRUE(sync_wait(d.write(0, fill(10, 1))));
  Status st = sync_wait(d.write(4096, fill(10, 2)));
  EXPECT_EQ(st.code(), Errc::io_error);
  EXPECT_EQ(read_all(d, 4096, 10), fill(10, 0)) << "a failed write is not applied";
  EXPECT_TRUE(sync_wait(d.write(4096, fill(10, 3))));
  d.fail_nth_flush(1);
  EXPECT_EQ(sync_wait(d.flush()).code(), Errc::io_error);
  EXPECT_TRUE(sync_wait(d.flush()));
  d.fail_nth_read(1);
  std::vector<std::byte> b(10);
  EXPECT_EQ(sync_wait(d.read(0, b)).code(), Errc::io_error);
  EXPECT_EQ(d.counters().failed, 3u);
}

TEST(FakeDisk, CrashAfterFailsEverythingUntilPowerLoss) {
  FakeDisk d(64 * 1024);
  ASSERT_TRUE(sync_wait(d.write(0, fill(4096, 1))));
  ASSERT_TRUE(sync_wait(d.flush()));
  d.crash_after(1);
  EXPECT_FALSE(d.crashed());
  EXPECT_TRUE(sync_wait(d.write(0, fill(4096, 2))));
  EXPECT_TRUE(d.crashed()) << "the power is off once the budget is used up";
  EXPECT_EQ(sync_wait(d.write(4096, fill(4096, 3))).code(), Errc::io_error);
  EXPECT_TRUE(d.crashed());
  EXPECT_EQ(sync_wait(d.flush()).code(), Errc::io_error);
  std::vector<std::byte> b(10);
  EXPECT_EQ(sync_wait(d.read(0, b)).code(), Errc::io_error);
  // The write in flight at the cut sits in the cache: it may survive a partial loss.
  std::set<std::pair<std::uint8_t, std::uint8_t>> seen;
  for (std::uint64_t seed = 0; seed < 40; ++seed) {
    FakeDisk c = d;
    c.power_loss(PowerLoss::RandomSubset, seed);
    EXPECT_FALSE(c.crashed());
    seen.insert({static_cast<std::uint8_t>(read_all(c, 0, 1)[0]),
                 static_cast<std::uint8_t>(read_all(c, 4096, 1)[0])});
  }
  EXPECT_EQ(seen, (std::set<std::pair<std::uint8_t, std::uint8_t>>{{1, 0}, {1, 3}, {2, 0}, {2, 3}}));
  d.power_loss(PowerLoss::DropAll);
  EXPECT_EQ(read_all(d, 0, 4096), fill(4096, 1));
  EXPECT_EQ(read_all(d, 4096, 4096), fill(4096, 0));
}

TEST(FakeDisk, CrashAfterFlushesCutsRightAfterTheNthFlush) {
  FakeDisk d(64 * 1024);
  d.crash_after_flushes(2);
  ASSERT_TRUE(sync_wait(d.write(0, fill(4096, 1))));
  ASSERT_TRUE(sync_wait(d.flush()));
  ASSERT_TRUE(sync_wait(d.write(0, fill(4096, 2))));
  EXPECT_FALSE(d.crashed());
  ASSERT_TRUE(sync_wait(d.flush()));
  EXPECT_TRUE(d.crashed());
  EXPECT_EQ(sync_wait(d.write(4096, fill(4096, 3))).code(), Errc::io_error);
  d.power_loss(PowerLoss::DropAll);
  EXPECT_FALSE(d.crashed());
  EXPECT_EQ(read_all(d, 0, 4096), fill(4096, 2)) << "the second flush completed";
  EXPECT_EQ(read_all(d, 4096, 4096), fill(4096, 0));
}

TEST(FakeDisk, CountersAndWriteLog) {
  FakeDisk d(64 * 1024);
  d.record_writes(true);
  ASSERT_TRUE(sync_wait(d.write(8192, fill(100, 1))));
  ASSERT_TRUE(sync_wait(d.write(0, fill(5000, 1))));
  ASSERT_TRUE(sync_wait(d.flush()));
  ASSERT_TRUE(sync_wait(d.discard(0, 4096)));
  (void)read_all(d, 0, 10);
  EXPECT_EQ(d.counters().writes, 2u);
  EXPECT_EQ(d.counters().bytes_written, 5100u);
  EXPECT_EQ(d.counters().flushes, 1u);
  EXPECT_EQ(d.counters().discards, 1u);
  EXPECT_EQ(d.counters().reads, 1u);
  EXPECT_EQ(d.counters().ops, 5u);
  ASSERT_EQ(d.write_log().size(), 2u);
  EXPECT_EQ(d.write_log()[0].offset, 8192u);
  d.reset_counters();
  EXPECT_EQ(d.counters().ops, 0u);
  EXPECT_TRUE(d.write_log().empty());
}

TEST(FakeDisk, OutOfRangeIsAnErrorNamingTheOffset) {
  FakeDisk d(10000, "disk-x");
  std::vector<std::byte> b(100);
  Status st = sync_wait(d.read(9950, b));
  EXPECT_EQ(st.code(), Errc::out_of_range);
  EXPECT_NE(st.message().find("9950"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("disk-x"), std::string::npos) << st.message();
  EXPECT_EQ(sync_wait(d.write(~std::uint64_t{0} - 10, b)).code(), Errc::out_of_range);
  EXPECT_TRUE(sync_wait(d.read(9900, b))) << "a partial last sector is addressable";
}

TEST(FakeDisk, DiscardModelsUnspecifiedContent) {
  FakeDisk d(64 * 1024);
  ASSERT_TRUE(sync_wait(d.write(0, fill(8192, 1))));
  ASSERT_TRUE(sync_wait(d.flush()));
  d.set_discard_garbage(true);
  ASSERT_TRUE(sync_wait(d.discard(0, 4096)));
  EXPECT_EQ(read_all(d, 0, 4096), fill(4096, 0xDB));
  d.power_loss(PowerLoss::DropAll);
  EXPECT_EQ(read_all(d, 0, 4096), fill(4096, 1)) << "a discard is not durable until flushed";
}

TEST(FakeDisk, CopiesAreIndependentAndPokeCorruptsEveryVersion) {
  FakeDisk d(64 * 1024);
  ASSERT_TRUE(sync_wait(d.write(0, fill(4096, 1))));
  ASSERT_TRUE(sync_wait(d.flush()));
  ASSERT_TRUE(sync_wait(d.write(0, fill(4096, 2))));
  FakeDisk durable = d.durable_copy();
  EXPECT_EQ(read_all(durable, 0, 1), fill(1, 1));
  FakeDisk full = d;
  EXPECT_TRUE(full.same_content(d));
  ASSERT_TRUE(sync_wait(full.write(0, fill(1, 9))));
  EXPECT_FALSE(full.same_content(d));
  EXPECT_EQ(read_all(d, 0, 1), fill(1, 2));
  auto x = fill(2, 0xEE);
  d.poke(4095, x);
  EXPECT_EQ(read_all(d, 4095, 2), fill(2, 0xEE));
  d.power_loss(PowerLoss::DropAll);
  EXPECT_EQ(read_all(d, 4094, 3), (std::vector<std::byte>{std::byte{1}, std::byte{0xEE}, std::byte{0xEE}}));
  FakeDisk small = d.truncated_copy(8192 + 100);
  EXPECT_EQ(small.size(), 8292u);
  EXPECT_EQ(read_all(small, 4095, 1), fill(1, 0xEE));
}

}  // namespace
}  // namespace duplex::test
