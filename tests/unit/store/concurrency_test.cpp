// The store under real suspension: every other store test runs on the inline FakeDisk, where no
// two coroutines ever interleave. Here a pool sits on an io_uring device (O_DIRECT file) and 32
// writers run at once on disjoint regions (so the model is exact), with trims and a snapshot
// taken mid-run; afterwards the volume and the snapshot must match the model byte for byte and
// the metadata must pass the full check.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <memory>
#include <random>

#include "duplex/reactor/uring.h"
#include "duplex/reactor/uring_device.h"
#include "duplex/store/pool.h"

namespace duplex {
namespace {

TEST(PoolConcurrency, ThirtyTwoWritersOnIoUring) {
  char path[] = "/var/tmp/duplex-concurrency-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  unlink(path);
  auto ring = Ring::create(256);
  if (!ring && ring.status().code() == Errc::unsupported) GTEST_SKIP() << "no io_uring here";
  ASSERT_TRUE(ring);
  DeviceOptions o;
  o.create = true;
  o.create_size = 160ull << 20;
  auto dev = open_block_device(path, o, ring->get());
  ASSERT_TRUE(dev) << dev.status().to_string();
  auto poll = [&] { (*ring)->wait(); };
  store::PoolOptions po;
  po.cluster_size = 16384;
  auto pool = std::move(sync_wait(store::Pool::create(**dev, po), poll)).value();
  const std::uint64_t vs = 64ull << 20, slots = 32, slot_bytes = vs / slots;
  const auto v = sync_wait(pool->create_volume("v", vs), poll).value();

  std::vector<std::uint8_t> model(vs, 0), at_snapshot;
  std::mt19937_64 rng(7);
  int issued = 0, inflight = 0, errors = 0;
  const int total = 6000;
  store::ObjectId snap = 0;
  bool snapping = false;
  std::function<void(std::uint64_t)> next = [&](std::uint64_t s) {
    if (issued >= total || snapping) return;
    ++issued;
    ++inflight;
    const std::uint64_t len = (1 + rng() % 8) * 4096 + (rng() % 2 ? 0 : 512);
    const std::uint64_t off = s * slot_bytes + (rng() % ((slot_bytes - len) / 512)) * 512;
    if (rng() % 16 == 0) {
      std::memset(model.data() + off, 0, len);
      spawn(pool->trim(v, off, len), [&, s](Status st) {
        --inflight;
        errors += !st;
        next(s);
      });
      return;
    }
    auto b = std::make_shared<std::vector<std::byte>>(len);
    for (auto& x : *b) x = static_cast<std::byte>(rng());
    std::memcpy(model.data() + off, b->data(), len);
    spawn(pool->write(v, off, *b, rng() % 64 == 0), [&, b, s](Status st) {
      --inflight;
      errors += !st;
      next(s);
    });
  };
  for (std::uint64_t s = 0; s < slots; ++s) next(s);
  // Mid-run: stop issuing, let writes drain, snapshot, then continue.
  while (issued < total / 2) (*ring)->wait();
  snapping = true;
  while (inflight > 0) (*ring)->wait();
  at_snapshot = model;
  snap = sync_wait(pool->snapshot(v, "mid"), poll).value();
  snapping = false;
  for (std::uint64_t s = 0; s < slots; ++s) next(s);
  while (inflight > 0 || issued < total) {
    (*ring)->wait();
    if (inflight == 0 && issued < total)
      for (std::uint64_t s = 0; s < slots; ++s) next(s);
  }
  EXPECT_EQ(errors, 0);
  ASSERT_TRUE(sync_wait(pool->flush(), poll));

  std::vector<std::byte> got(vs);
  ASSERT_TRUE(sync_wait(pool->read(v, 0, got), poll));
  EXPECT_EQ(0, std::memcmp(got.data(), model.data(), vs)) << "the volume differs from the model";
  ASSERT_TRUE(sync_wait(pool->read(snap, 0, got), poll));
  EXPECT_EQ(0, std::memcmp(got.data(), at_snapshot.data(), vs)) << "the snapshot differs from the model";
  const auto report = pool->check();
  for (const auto& e : report.errors) ADD_FAILURE() << e;
  ASSERT_TRUE(sync_wait(pool->close(), poll));
  pool.reset();
  dev->reset();
  unlink(path);
}

}  // namespace
}  // namespace duplex
