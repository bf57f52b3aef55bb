// Real io_uring on real temp files (O_DIRECT on the test machine's ext4): the Ring's batching,
// back-pressure and completion paths, the UringDevice's bounce/RMW paths, and the inline fallback,
// which must behave the same.
#include "duplex/reactor/uring.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "duplex/base/buffer.h"
#include "duplex/reactor/file_device.h"
#include "duplex/reactor/uring_device.h"

namespace duplex {
namespace {

namespace fs = std::filesystem;

std::vector<std::byte> pattern(std::size_t n, std::uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

class UringTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto r = Ring::create(64);
    if (!r) GTEST_SKIP() << "io_uring unavailable here: " << r.status().to_string();
    ring_ = std::move(*r);
    dir_ = fs::path(::testing::TempDir()) / ("duplex-uring-" + std::to_string(::getpid()) + "-" +
                                             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (ring_) {
      EXPECT_TRUE(ring_->idle());
    }
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  std::string path(const std::string& n) const { return (dir_ / n).string(); }

  template <typename T>
  T run(Task<T> t, Ring* ring = nullptr) {
    Ring* r = ring ? ring : ring_.get();
    return sync_wait(std::move(t), [r] { r->wait(); });
  }
  // Spins the ring until `pending` drops to zero (for spawn()ed batches).
  void drain(const int& pending, Ring* ring = nullptr) {
    Ring* r = ring ? ring : ring_.get();
    while (pending > 0) r->wait();
  }

  std::unique_ptr<UringDevice> open_dev(const std::string& name, std::uint64_t size, Ring* ring = nullptr) {
    DeviceOptions o;
    o.create = true;
    o.create_size = size;
    auto d = UringDevice::open(path(name), o, ring ? *ring : *ring_);
    EXPECT_TRUE(d.is_ok()) << d.status().to_string();
    return d ? std::move(*d) : nullptr;
  }

  std::unique_ptr<Ring> ring_;
  fs::path dir_;
};

TEST_F(UringTest, CreateReportsUnsupportedWhenTheKernelRefuses) {
  // More entries than the kernel allows (32768) without IORING_SETUP_CLAMP: io_uring_queue_init
  // fails exactly as it does under seccomp, and callers must see `unsupported` to fall back.
  auto r = Ring::create(1u << 20);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Errc::unsupported);
}

TEST_F(UringTest, RoundTripAtManyQueueDepths) {
  constexpr std::size_t kBlock = 4096;
  auto dev = open_dev("rt.img", 8 << 20);
  ASSERT_TRUE(dev);
  EXPECT_TRUE(dev->direct());
  for (int qd : {1, 2, 8, 32, 128, 512}) {
    SCOPED_TRACE(qd);
    std::vector<std::vector<std::byte>> data;
    std::vector<AlignedBuffer> bufs;
    for (int i = 0; i < qd; ++i) {
      data.push_back(pattern(kBlock, static_cast<std::uint32_t>(qd * 1000 + i)));
      bufs.emplace_back(kBlock);
      std::memcpy(bufs.back().data(), data.back().data(), kBlock);
    }
    const auto before = ring_->stats();
    int pending = qd;
    int failures = 0;
    for (int i = 0; i < qd; ++i)
      spawn(dev->write(static_cast<std::uint64_t>(i) * 2 * kBlock, bufs[i].span()), [&](Status s) {
        failures += !s.is_ok();
        --pending;
      });
    drain(pending);
    ASSERT_EQ(failures, 0);
    const auto after = ring_->stats();
    EXPECT_EQ(after.submitted - before.submitted, static_cast<std::uint64_t>(qd));
    // Batching: a burst that fits the SQ goes to the kernel in one io_uring_enter; a larger one
    // is admitted as completions free room, never one syscall per I/O.
    const auto calls = after.submit_calls - before.submit_calls;
    if (qd <= static_cast<int>(ring_->sq_entries()))
      EXPECT_EQ(calls, 1u);
    else
      EXPECT_LT(calls, static_cast<std::uint64_t>(qd) / 2);

    for (auto& b : bufs) b.zero();
    pending = qd;
    for (int i = 0; i < qd; ++i)
      spawn(dev->read(static_cast<std::uint64_t>(i) * 2 * kBlock, bufs[i].span()), [&](Status s) {
        failures += !s.is_ok();
        --pending;
      });
    drain(pending);
    ASSERT_EQ(failures, 0);
    for (int i = 0; i < qd; ++i)
      ASSERT_EQ(std::memcmp(bufs[i].data(), data[i].data(), kBlock), 0) << "block " << i;
  }
}

TEST_F(UringTest, LargeTransfersRoundTrip) {
  auto dev = open_dev("big.img", 16 << 20);
  ASSERT_TRUE(dev);
  auto data = pattern(5 << 20, 7);
  AlignedBuffer b(data.size());
  std::memcpy(b.data(), data.data(), data.size());
  ASSERT_TRUE(run(dev->write(1 << 20, b.span())).is_ok());
  b.zero();
  ASSERT_TRUE(run(dev->read(1 << 20, b.span())).is_ok());
  EXPECT_EQ(std::memcmp(b.data(), data.data(), data.size()), 0);
}

TEST_F(UringTest, UnalignedBuffersOffsetsAndLengthsMatchAModel) {
  constexpr std::size_t kSize = 1 << 20;
  auto dev = open_dev("un.img", kSize);
  ASSERT_TRUE(dev);
  std::vector<std::byte> model(kSize);
  std::mt19937 rng(42);
  std::vector<std::byte> scratch(70000);
  for (int i = 0; i < 300; ++i) {
    const std::size_t len = 1 + rng() % 20000;
    const std::size_t off = rng() % (kSize - len);
    const std::size_t mis = rng() % 7;  // buffer address misalignment
    std::span<std::byte> buf(scratch.data() + mis, len);
    if (rng() % 2) {
      auto d = pattern(len, static_cast<std::uint32_t>(i));
      std::copy(d.begin(), d.end(), buf.begin());
      ASSERT_TRUE(run(dev->write(off, buf)).is_ok()) << "write " << off << "+" << len;
      std::copy(d.begin(), d.end(), model.begin() + static_cast<std::ptrdiff_t>(off));
    } else {
      ASSERT_TRUE(run(dev->read(off, buf)).is_ok()) << "read " << off << "+" << len;
      ASSERT_TRUE(std::equal(buf.begin(), buf.end(), model.begin() + static_cast<std::ptrdiff_t>(off)))
          << "read " << off << "+" << len;
    }
  }
  EXPECT_GT(dev->stats().rmw_writes, 0u);
  EXPECT_GT(dev->stats().bounced_reads, 0u);
  // Memory misaligned only: copied, not read-modify-written.
  const auto rmw = dev->stats().rmw_writes;
  auto d = pattern(8192, 99);
  std::copy(d.begin(), d.end(), scratch.begin() + 3);
  ASSERT_TRUE(run(dev->write(8192, std::span<const std::byte>(scratch.data() + 3, 8192))).is_ok());
  EXPECT_EQ(dev->stats().rmw_writes, rmw);
  EXPECT_GT(dev->stats().bounced_writes, 0u);
}

TEST_F(UringTest, ConcurrentSubSectorWritesToOneSectorAllSurvive) {
  auto dev = open_dev("rmw.img", 1 << 20);
  ASSERT_TRUE(dev);
  // 16 writers of 32 distinct bytes each in the same 512-byte sector, all in flight at once: the
  // per-device RMW lock keeps one writer's read-modify-write from undoing another's.
  std::vector<std::vector<std::byte>> parts;
  int pending = 16;
  int failures = 0;
  for (int i = 0; i < 16; ++i) parts.push_back(pattern(32, static_cast<std::uint32_t>(500 + i)));
  for (int i = 0; i < 16; ++i)
    spawn(dev->write(4096 + i * 32, parts[i]), [&](Status s) {
      failures += !s.is_ok();
      --pending;
    });
  drain(pending);
  ASSERT_EQ(failures, 0);
  std::vector<std::byte> back(512);
  ASSERT_TRUE(run(dev->read(4096, back)).is_ok());
  for (int i = 0; i < 16; ++i)
    EXPECT_TRUE(std::equal(parts[i].begin(), parts[i].end(), back.begin() + i * 32)) << "writer " << i;
}

TEST_F(UringTest, ShortFileReadsStopAtEofAndDeviceReadsZeroes) {
  // Ring level: read returns how much there was.
  const std::string p = path("short.bin");
  {
    int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    ASSERT_GE(fd, 0);
    auto d = pattern(10000, 3);
    ASSERT_EQ(::pwrite(fd, d.data(), d.size(), 0), 10000);
    std::vector<std::byte> buf(16384);
    auto n = run(ring_->read(fd, 0, buf));
    ASSERT_TRUE(n.is_ok());
    EXPECT_EQ(*n, 10000u);
    EXPECT_TRUE(std::equal(d.begin(), d.end(), buf.begin()));
    auto past = run(ring_->read(fd, 20000, buf));
    ASSERT_TRUE(past.is_ok());
    EXPECT_EQ(*past, 0u);
    ::close(fd);
  }
  // Device level: a pool file cut shorter than its recorded size reads as zeroes past the cut.
  auto dev = open_dev("cut.img", 65536);
  ASSERT_TRUE(dev);
  auto d = pattern(65536, 4);
  AlignedBuffer b(65536);
  std::memcpy(b.data(), d.data(), d.size());
  ASSERT_TRUE(run(dev->write(0, b.span())).is_ok());
  ASSERT_EQ(::truncate(path("cut.img").c_str(), 8192), 0);
  b.zero();
  ASSERT_TRUE(run(dev->read(0, b.span())).is_ok());
  EXPECT_EQ(std::memcmp(b.data(), d.data(), 8192), 0);
  EXPECT_TRUE(std::all_of(b.data() + 8192, b.data() + 65536, [](std::byte x) { return x == std::byte{0}; }));
}

TEST_F(UringTest, FlushAndReadOnly) {
  auto dev = open_dev("fl.img", 1 << 20);
  ASSERT_TRUE(dev);
  AlignedBuffer b(4096);
  ASSERT_TRUE(run(dev->write(0, b.span())).is_ok());
  const auto before = ring_->stats().submitted;
  EXPECT_TRUE(run(dev->flush()).is_ok());
  EXPECT_EQ(ring_->stats().submitted, before + 1);  // the fdatasync went through the ring
  dev.reset();

  DeviceOptions o;
  o.read_only = true;
  auto ro = UringDevice::open(path("fl.img"), o, *ring_);
  ASSERT_TRUE(ro.is_ok()) << ro.status().to_string();
  EXPECT_EQ(run((*ro)->write(0, b.span())).code(), Errc::read_only);
  EXPECT_EQ(run((*ro)->discard(0, 4096)).code(), Errc::read_only);
  EXPECT_TRUE(run((*ro)->read(0, b.span())).is_ok());
  EXPECT_TRUE(run((*ro)->flush()).is_ok());
}

TEST_F(UringTest, DiscardPunchesHoles) {
  constexpr std::size_t kSize = 4 << 20;
  auto dev = open_dev("punch.img", kSize);
  ASSERT_TRUE(dev);
  AlignedBuffer b(kSize);
  auto d = pattern(kSize, 5);
  std::memcpy(b.data(), d.data(), kSize);
  ASSERT_TRUE(run(dev->write(0, b.span())).is_ok());
  ASSERT_TRUE(run(dev->flush()).is_ok());
  struct stat before{};
  ASSERT_EQ(::stat(path("punch.img").c_str(), &before), 0);
  ASSERT_TRUE(run(dev->discard(1 << 20, 2 << 20)).is_ok());
  struct stat after{};
  ASSERT_EQ(::stat(path("punch.img").c_str(), &after), 0);
  EXPECT_LE(after.st_blocks, before.st_blocks - (2 << 20) / 512);
  EXPECT_EQ(after.st_size, before.st_size);  // KEEP_SIZE
  b.zero();
  ASSERT_TRUE(run(dev->read(0, b.span())).is_ok());
  EXPECT_EQ(std::memcmp(b.data(), d.data(), 1 << 20), 0);
  // ext4 reads a hole as zeroes (the contract does not promise it; this checks the punch happened).
  EXPECT_TRUE(
      std::all_of(b.data() + (1 << 20), b.data() + (3 << 20), [](std::byte x) { return x == std::byte{0}; }));
  EXPECT_EQ(std::memcmp(b.data() + (3 << 20), d.data() + (3 << 20), 1 << 20), 0);
}

TEST_F(UringTest, OutOfRangeAndKernelErrorsAreValues) {
  auto dev = open_dev("oor.img", 1 << 20);
  ASSERT_TRUE(dev);
  AlignedBuffer b(8192);
  EXPECT_EQ(run(dev->read((1 << 20) - 4096, b.span())).code(), Errc::out_of_range);
  EXPECT_EQ(run(dev->write((1 << 20) - 4096, b.span())).code(), Errc::out_of_range);
  EXPECT_EQ(run(dev->write(~std::uint64_t{0} - 100, b.span())).code(), Errc::out_of_range);  // wraps
  EXPECT_EQ(run(dev->discard(1 << 20, 1)).code(), Errc::out_of_range);
  EXPECT_TRUE(run(dev->read((1 << 20) - 8192, b.span())).is_ok());

  // An error the kernel reports in the CQE becomes a Status, never a crash.
  auto bad = run(ring_->read(-1, 0, b.span()));
  ASSERT_FALSE(bad.is_ok());
  EXPECT_EQ(bad.status().code(), Errc::read_only);  // EBADF
  EXPECT_FALSE(run(ring_->write(-1, 0, b.span())).is_ok());
  EXPECT_FALSE(run(ring_->fdatasync(-1)).is_ok());
  // O_DIRECT with a misaligned offset, straight to the ring (the device would have bounced it).
  // Written data first: ext4 serves a misaligned direct read of a hole without complaint.
  ASSERT_TRUE(run(dev->write(0, b.span())).is_ok());
  auto misaligned = run(ring_->read(dev->fd(), 100, b.span().first(4096)));
  ASSERT_FALSE(misaligned.is_ok());
  EXPECT_EQ(misaligned.status().code(), Errc::invalid);
}

Task<Status> write_then_verify(UringDevice& dev, std::uint64_t off, std::uint32_t seed) {
  AlignedBuffer b(4096);
  auto d = pattern(4096, seed);
  std::memcpy(b.data(), d.data(), 4096);
  DPX_CO_TRY(co_await dev.write(off, b.span()));
  b.zero();
  DPX_CO_TRY(co_await dev.read(off, b.span()));
  if (std::memcmp(b.data(), d.data(), 4096) != 0)
    co_return Status::error(Errc::corrupt, "mismatch at {}", off);
  co_return Status::ok();
}

TEST_F(UringTest, ThousandConcurrentOpsThroughATinyRing) {
  // 4 SQ / 8 CQ entries and 1000 operations at once: SQ-full flushes and the backlog carry them.
  auto tiny = Ring::create(4);
  ASSERT_TRUE(tiny.is_ok());
  auto dev = open_dev("k.img", 8 << 20, tiny->get());
  ASSERT_TRUE(dev);
  int pending = 1000;
  int failures = 0;
  for (int i = 0; i < 1000; ++i)
    spawn(write_then_verify(*dev, static_cast<std::uint64_t>(i) * 4096, static_cast<std::uint32_t>(i)),
          [&](Status s) {
            if (!s.is_ok()) {
              ++failures;
              ADD_FAILURE() << s.to_string();
            }
            --pending;
          });
  EXPECT_LE((*tiny)->in_flight(), (*tiny)->cq_entries());
  EXPECT_GT((*tiny)->backlog(), 0u);
  drain(pending, tiny->get());
  EXPECT_EQ(failures, 0);
  EXPECT_TRUE((*tiny)->idle());
  EXPECT_EQ((*tiny)->stats().completed, 2000u);
  EXPECT_GT((*tiny)->stats().backlogged, 0u);
}

TEST_F(UringTest, EventFdSignalsCompletionsAndPollDrainsIt) {
  auto efd = ring_->event_fd();
  ASSERT_TRUE(efd.is_ok()) << efd.status().to_string();
  EXPECT_EQ(*ring_->event_fd(), *efd);  // registered once
  auto dev = open_dev("ev.img", 1 << 20);
  ASSERT_TRUE(dev);
  AlignedBuffer b(4096);
  bool done = false;
  spawn(dev->write(0, b.span()), [&](Status s) {
    EXPECT_TRUE(s.is_ok());
    done = true;
  });
  EXPECT_FALSE(done);
  EXPECT_EQ(ring_->flush_submissions(), 1u);
  // What an Asio loop does: sleep until the eventfd is readable, then poll().
  pollfd p{*efd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  EXPECT_EQ(ring_->poll(), 1u);
  EXPECT_TRUE(done);
  p.revents = 0;
  EXPECT_EQ(::poll(&p, 1, 0), 0);  // drained
}

TEST_F(UringTest, PollSpinCatchesCompletionsWithoutSleeping) {
  auto dev = open_dev("spin.img", 1 << 20);
  ASSERT_TRUE(dev);
  AlignedBuffer b(4096);
  EXPECT_EQ(ring_->poll_spin(std::chrono::milliseconds(1)), 0u);  // nothing in flight: returns at once
  bool done = false;
  spawn(dev->write(0, b.span()), [&](Status s) {
    EXPECT_TRUE(s.is_ok());
    done = true;
  });
  // A generous budget: the point is that completions are reaped while spinning, not the timing.
  unsigned n = 0;
  for (int i = 0; i < 100 && !done; ++i) n += ring_->poll_spin(std::chrono::milliseconds(100));
  EXPECT_TRUE(done);
  EXPECT_EQ(n, 1u);
}

// The same sequence of unaligned writes, discards and reads through io_uring and through the
// inline fallback must leave the same bytes.
Task<Status> script(BlockDevice& dev, std::vector<std::byte>& out) {
  std::mt19937 rng(1234);
  std::vector<std::byte> buf(40000);
  for (int i = 0; i < 200; ++i) {
    const std::size_t len = 1 + rng() % 30000;
    const std::size_t off = rng() % (dev.size() - len);
    const unsigned kind = rng() % 8;
    if (kind == 0) {
      DPX_CO_TRY(co_await dev.discard(off / 4096 * 4096, 4096));
      // discard leaves contents unspecified: overwrite so both devices agree again
      std::vector<std::byte> z(4096);
      DPX_CO_TRY(co_await dev.write(off / 4096 * 4096, z));
    } else if (kind < 5) {
      auto d = pattern(len, static_cast<std::uint32_t>(i));
      DPX_CO_TRY(co_await dev.write(off, d));
    } else {
      DPX_CO_TRY(co_await dev.read(off, std::span<std::byte>(buf.data() + 1, len)));
    }
    if (i % 50 == 0) DPX_CO_TRY(co_await dev.flush());
  }
  out.resize(dev.size());
  DPX_CO_TRY(co_await dev.read(0, out));
  co_return Status::ok();
}

TEST_F(UringTest, FallbackBehavesTheSame) {
  constexpr std::uint64_t kSize = 1 << 20;
  DeviceOptions o;
  o.create = true;
  o.create_size = kSize;
  auto u = open_block_device(path("u.img"), o, ring_.get());
  ASSERT_TRUE(u.is_ok()) << u.status().to_string();
  ASSERT_NE(dynamic_cast<UringDevice*>(u->get()), nullptr);

  auto f = open_block_device(path("f.img"), o, nullptr);
  ASSERT_TRUE(f.is_ok());
  ASSERT_NE(dynamic_cast<FileDevice*>(f->get()), nullptr);

  // The environment switch wins over a working ring.
  ::setenv("DUPLEX_NO_URING", "1", 1);
  auto e = open_block_device(path("e.img"), o, ring_.get());
  ::unsetenv("DUPLEX_NO_URING");
  ASSERT_TRUE(e.is_ok());
  ASSERT_NE(dynamic_cast<FileDevice*>(e->get()), nullptr);
  o.use_uring = false;
  auto opt = open_block_device(path("o.img"), o, ring_.get());
  ASSERT_TRUE(opt.is_ok());
  ASSERT_NE(dynamic_cast<FileDevice*>(opt->get()), nullptr);

  std::vector<std::byte> via_uring, via_file, via_env;
  Status s1 = run(script(**u, via_uring));
  ASSERT_TRUE(s1.is_ok()) << s1.to_string();
  // Inline devices never suspend: no poll function is needed.
  Status s2 = sync_wait(script(**f, via_file));
  ASSERT_TRUE(s2.is_ok()) << s2.to_string();
  Status s3 = sync_wait(script(**e, via_env));
  ASSERT_TRUE(s3.is_ok()) << s3.to_string();
  EXPECT_TRUE(via_uring == via_file);
  EXPECT_TRUE(via_env == via_file);

  // Both refuse a second opener of the same pool.
  o.create = false;
  o.use_uring = true;
  EXPECT_EQ(open_block_device(path("u.img"), o, ring_.get()).status().code(), Errc::busy);
  EXPECT_EQ(open_block_device(path("f.img"), o, nullptr).status().code(), Errc::busy);
}

}  // namespace
}  // namespace duplex
