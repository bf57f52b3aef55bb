// Damaged pools: every corruption of a superblock, checkpoint or journal block is refused with
// Errc::corrupt and a message naming the pool, the structure and the offset; another format
// version is Errc::version; nothing is guessed around and no garbage is ever returned.
#include <gtest/gtest.h>

#include <cstring>

#include "duplex/base/crc32c.h"
#include "duplex/store/format.h"
#include "store_test_util.h"

namespace duplex::test {
namespace {

namespace fmtd = store::format;
using store::ObjectId;
using store::Pool;

constexpr std::uint64_t KiB = 1024, MiB = 1024 * 1024;

// A pool with history, closed cleanly (checkpoint) or left with journal records to replay.
struct Fixture {
  FakeDisk disk{32 * MiB, "corrupt-disk"};
  ObjectId vol = 0, snap = 0;
  std::vector<std::byte> data = pattern(300 * KiB, 17, 0);

  explicit Fixture(bool close) {
    store::PoolOptions o;
    o.name = "p-corrupt";
    o.cluster_size = 64 * KiB;
    auto pool = must(run(Pool::create(disk, o)), "create");
    vol = must(run(pool->create_volume("v", 8 * MiB)));
    must(run(pool->write(vol, 5000, data)));
    snap = must(run(pool->snapshot(vol, "s")));
    // Several flushes with mapping changes: more than one journal block.
    for (int i = 0; i < 40; ++i) {
      auto d = pattern(4096, 100 + i, 0);
      must(run(pool->write(vol, 2 * MiB + i * 128 * KiB, d)));
      must(run(pool->flush()));
    }
    if (close) must(run(pool->close()));
    pool.reset();
    disk = disk.durable_copy();
  }

  fmtd::Superblock superblock(int copy) const {
    fmtd::Superblock sb;
    disk.peek(fmtd::kSuperblockOffset[copy], {reinterpret_cast<std::byte*>(&sb), sizeof sb});
    return sb;
  }
  void put_superblock(int copy, fmtd::Superblock sb, bool fix_crc) {
    if (fix_crc) sb.crc = crc32c(&sb, offsetof(fmtd::Superblock, crc));
    disk.poke(fmtd::kSuperblockOffset[copy], {reinterpret_cast<const std::byte*>(&sb), sizeof sb});
  }
  void flip(std::uint64_t offset) {
    std::byte b;
    disk.peek(offset, {&b, 1});
    b ^= std::byte{0x20};
    disk.poke(offset, {&b, 1});
  }
  // The superblock the pool would pick: valid CRC, highest seq.
  fmtd::Superblock current() const {
    auto a = superblock(0), b = superblock(1);
    auto valid = [](const fmtd::Superblock& s) {
      return std::memcmp(s.magic, fmtd::kSuperMagic, 8) == 0 &&
             crc32c(&s, offsetof(fmtd::Superblock, crc)) == s.crc;
    };
    if (!valid(a)) return b;
    if (!valid(b)) return a;
    return std::uint64_t{a.seq} >= std::uint64_t{b.seq} ? a : b;
  }
  // Journal blocks of the current generation, in order: their device offsets.
  std::vector<std::uint64_t> journal_blocks() const {
    auto sb = current();
    std::vector<std::uint64_t> out;
    for (std::uint64_t off = sb.journal_offset; off + fmtd::kBlock <= sb.journal_offset + sb.journal_bytes;
         off += fmtd::kBlock) {
      fmtd::JournalHeader h;
      disk.peek(off, {reinterpret_cast<std::byte*>(&h), sizeof h});
      if (h.magic == fmtd::kJournalMagic && std::uint64_t{h.journal_gen} == std::uint64_t{sb.journal_gen})
        out.push_back(off);
    }
    return out;
  }
};

void expect_corrupt(FakeDisk& disk, const std::string& structure, std::vector<std::uint64_t> offsets,
                    bool names_pool = true) {
  auto r = run(Pool::open(disk));
  ASSERT_FALSE(r) << "a damaged " << structure << " was accepted";
  const Status st = r.status();
  EXPECT_EQ(st.code(), Errc::corrupt) << st.to_string();
  const std::string& msg = st.message();
  EXPECT_NE(msg.find(structure), std::string::npos) << "message should name the " << structure << ": " << msg;
  if (names_pool) {
    EXPECT_TRUE(msg.find("p-corrupt") != std::string::npos || msg.find("corrupt-disk") != std::string::npos)
        << "message should name the pool: " << msg;
  }
  bool offset_named = false;
  for (auto o : offsets) offset_named |= msg.find(std::to_string(o)) != std::string::npos;
  EXPECT_TRUE(offset_named) << "message should name the offset ("
                            << fmt::format("{}", fmt::join(offsets, " or ")) << "): " << msg;
  // A read-only open (duplex-fsck) refuses it the same way.
  store::OpenOptions ro;
  ro.read_only = true;
  EXPECT_EQ(run(Pool::open(disk, ro)).status().code(), Errc::corrupt);
}

TEST(PoolCorruption, IntactFixtureOpens) {
  for (bool close : {true, false}) {
    Fixture f(close);
    auto p = must(run(Pool::open(f.disk)));
    std::vector<std::byte> got(f.data.size());
    must(run(p->read(f.snap, 5000, got)));
    EXPECT_EQ(got, f.data);
    EXPECT_TRUE(p->check().ok());
    if (!close) {
      EXPECT_GT(p->check().replayed_journal_records, 0u);
    }
  }
}

TEST(PoolCorruption, OneDamagedSuperblockIsSurvivedTheOtherIsUsed) {
  for (int copy : {0, 1}) {
    Fixture f(true);
    f.flip(fmtd::kSuperblockOffset[copy] + 200);
    auto p = run(Pool::open(f.disk));
    ASSERT_TRUE(p) << "copy " << copy << ": " << p.status().to_string();
    std::vector<std::byte> got(f.data.size());
    must(run((*p)->read(f.vol, 5000, got)));
    EXPECT_EQ(got, f.data);
  }
}

TEST(PoolCorruption, BothSuperblocksDamagedIsCorrupt) {
  for (std::uint64_t at : {16u, 200u, 4000u, 4095u}) {
    Fixture f(true);
    f.flip(fmtd::kSuperblockOffset[0] + at);
    f.flip(fmtd::kSuperblockOffset[1] + at);
    // The name inside is not trusted any more: the device names the pool.
    expect_corrupt(f.disk, "superblock", {0, 4096}, /*names_pool=*/true);
  }
}

TEST(PoolCorruption, OtherFormatVersionIsVersionError) {
  Fixture f(true);
  for (int copy : {0, 1}) {
    auto sb = f.superblock(copy);
    sb.version = fmtd::kVersion + 1;
    f.put_superblock(copy, sb, /*fix_crc=*/true);
  }
  auto r = run(Pool::open(f.disk));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::version) << r.status().to_string();
  EXPECT_NE(r.status().message().find(std::to_string(fmtd::kVersion + 1)), std::string::npos)
      << "names the version found: " << r.status().message();
}

TEST(PoolCorruption, CheckpointDamageIsCorrupt) {
  Fixture f(true);
  auto sb = f.current();
  ASSERT_NE(std::uint64_t{sb.checkpoint_cluster}, fmtd::kNoCluster);
  const std::uint64_t off = sb.data_offset + sb.checkpoint_cluster * std::uint64_t{sb.cluster_size};
  for (std::uint64_t at : {std::uint64_t{4}, std::uint64_t{sizeof(fmtd::CheckpointHeader) + 30}}) {
    Fixture g(true);
    g.flip(off + at);
    expect_corrupt(g.disk, "checkpoint", {off, std::uint64_t{sb.checkpoint_cluster}});
  }
}

TEST(PoolCorruption, JournalBlockDamageBeforeValidBlocksIsCorrupt) {
  Fixture f(false);
  auto blocks = f.journal_blocks();
  ASSERT_GE(blocks.size(), 2u) << "the fixture should leave several journal blocks";
  for (std::size_t i : {std::size_t{0}, blocks.size() / 2}) {
    if (i + 1 >= blocks.size()) continue;
    Fixture g(false);
    g.flip(blocks[i] + sizeof(fmtd::JournalHeader) + 3);
    expect_corrupt(g.disk, "journal", {blocks[i], (blocks[i] - fmtd::kJournalOffset) / fmtd::kBlock});
  }
}

TEST(PoolCorruption, NoGarbageAfterRandomByteFlipsInMetadata) {
  // Flip bytes anywhere in the metadata area: open either refuses (corrupt/version) or the pool
  // it gives reads the right data. It never returns someone else's bytes.
  Fixture base(false);
  auto sb = base.current();
  const std::uint64_t meta_end = sb.journal_offset + sb.journal_bytes;
  std::uint64_t refused = 0, accepted = 0;
  for (std::uint64_t i = 0; i < 300; ++i) {
    Fixture f = base;
    const std::uint64_t at = mix64(i) % meta_end;
    f.flip(at);
    auto p = run(Pool::open(f.disk));
    if (!p) {
      ++refused;
      EXPECT_TRUE(p.status().code() == Errc::corrupt || p.status().code() == Errc::version)
          << "flip at " << at << ": " << p.status().to_string();
      continue;
    }
    ++accepted;
    std::vector<std::byte> got(f.data.size());
    if (run((*p)->read(f.snap, 5000, got))) {
      EXPECT_EQ(got, f.data) << "flip at " << at << " changed data";
    }
  }
  EXPECT_GT(refused + accepted, 0u);
}

}  // namespace
}  // namespace duplex::test
