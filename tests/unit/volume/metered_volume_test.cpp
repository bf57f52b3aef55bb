// MeteredVolume forwards to the volume it wraps and records counts, bytes, errors and latency
// buckets; VolumeStats' histogram bounds are inclusive (Prometheus `le`).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "duplex/volume/metered_volume.h"

using namespace duplex;
using namespace duplex::volume;
using namespace std::chrono_literals;

namespace {

// The smallest in-memory volume: bytes in a vector, failures and a delay on demand.
class TinyVolume final : public BlockVolume {
 public:
  explicit TinyVolume(std::uint64_t size) : data_(size) {}
  const std::string& name() const override { return name_; }
  Uuid uuid() const override { return uuid_; }
  std::uint64_t size() const override { return data_.size(); }
  bool read_only() const override { return false; }
  std::uint32_t preferred_block_size() const override { return 4096; }
  Task<Status> read(std::uint64_t off, std::span<std::byte> buf) override {
    if (fail) co_return Status::error(Errc::io_error, "injected");
    if (off + buf.size() > data_.size()) co_return Status::error(Errc::out_of_range, "beyond the end");
    std::this_thread::sleep_for(delay);
    std::memcpy(buf.data(), data_.data() + off, buf.size());
    co_return Status::ok();
  }
  Task<Status> write(std::uint64_t off, std::span<const std::byte> buf, bool) override {
    if (fail) co_return Status::error(Errc::io_error, "injected");
    if (off + buf.size() > data_.size()) co_return Status::error(Errc::out_of_range, "beyond the end");
    std::memcpy(data_.data() + off, buf.data(), buf.size());
    co_return Status::ok();
  }
  Task<Status> flush() override {
    ++flushes;
    co_return fail ? Status::error(Errc::io_error, "injected") : Status::ok();
  }
  Task<Status> trim(std::uint64_t off, std::uint64_t len) override { return zero(off, len); }
  Task<Status> write_zeroes(std::uint64_t off, std::uint64_t len, bool, bool) override {
    return zero(off, len);
  }
  Result<std::vector<Extent>> block_status(std::uint64_t off, std::uint64_t len) const override {
    return std::vector<Extent>{{off, len, true, false}};
  }
  Result<std::vector<Extent>> changed_since(const std::string& snap, std::uint64_t,
                                            std::uint64_t) const override {
    return Status::error(Errc::not_found, "no snapshot {}", snap);
  }
  bool fail = false;
  std::chrono::microseconds delay{0};
  int flushes = 0;

 private:
  Task<Status> zero(std::uint64_t off, std::uint64_t len) {
    if (off + len > data_.size()) co_return Status::error(Errc::out_of_range, "beyond the end");
    std::memset(data_.data() + off, 0, len);
    co_return Status::ok();
  }
  std::string name_ = "tiny";
  Uuid uuid_ = Uuid::random();
  std::vector<std::byte> data_;
};

std::uint64_t total(const HistogramSnapshot& h) {
  std::uint64_t n = 0;
  for (auto b : h.buckets) n += b;
  return n;
}

}  // namespace

TEST(VolumeStats, BucketBoundsAreInclusive) {
  VolumeStats s;
  s.record(IoOp::read, 512, true, 50us);  // exactly the first bound
  s.record(IoOp::read, 512, true, 51us);  // the second bucket
  s.record(IoOp::read, 512, true, 10s);   // exactly the last bound
  s.record(IoOp::read, 512, true, 11s);   // +Inf
  s.record(IoOp::write, 0, true, 0ns);    // fastest possible
  const auto snap = s.snapshot();
  const auto& r = snap.latency[*latency_index(IoOp::read)];
  EXPECT_EQ(r.buckets[0], 1u);
  EXPECT_EQ(r.buckets[1], 1u);
  EXPECT_EQ(r.buckets[kLatencyBoundsNs.size() - 1], 1u);
  EXPECT_EQ(r.buckets[kLatencyBoundsNs.size()], 1u);
  EXPECT_EQ(r.count, 4u);
  EXPECT_EQ(r.sum_ns, (50'000u + 51'000u + 10'000'000'000u + 11'000'000'000u));
  EXPECT_EQ(snap.latency[*latency_index(IoOp::write)].buckets[0], 1u);
  EXPECT_EQ(snap.op(IoOp::read).ops, 4u);
  EXPECT_EQ(snap.op(IoOp::read).bytes, 2048u);
}

TEST(VolumeStats, OnlyReadWriteFlushAreTimed) {
  EXPECT_TRUE(latency_index(IoOp::read));
  EXPECT_TRUE(latency_index(IoOp::write));
  EXPECT_TRUE(latency_index(IoOp::flush));
  EXPECT_FALSE(latency_index(IoOp::trim));
  EXPECT_FALSE(latency_index(IoOp::write_zeroes));
  VolumeStats s;
  s.record(IoOp::trim, 4096, true, 1ms);
  const auto snap = s.snapshot();
  EXPECT_EQ(snap.op(IoOp::trim).ops, 1u);
  for (const auto& h : snap.latency) EXPECT_EQ(h.count, 0u);
}

TEST(MeteredVolume, ForwardsAndCounts) {
  auto inner = std::make_unique<TinyVolume>(1 << 20);
  TinyVolume* tiny = inner.get();
  auto stats = std::make_shared<VolumeStats>();
  MeteredVolume v(std::move(inner), stats);
  EXPECT_EQ(v.size(), 1u << 20);
  EXPECT_EQ(v.name(), "tiny");
  EXPECT_EQ(&v.inner(), tiny);

  std::vector<std::byte> buf(8192, std::byte{0x5a});
  ASSERT_TRUE(sync_wait(v.write(4096, buf, false)));
  ASSERT_TRUE(sync_wait(v.write(0, std::span<const std::byte>(buf).first(512), true)));
  std::vector<std::byte> back(8192);
  ASSERT_TRUE(sync_wait(v.read(4096, back)));
  EXPECT_EQ(back, buf);  // the data really went through the inner volume
  ASSERT_TRUE(sync_wait(v.flush()));
  EXPECT_EQ(tiny->flushes, 1);
  ASSERT_TRUE(sync_wait(v.trim(0, 4096)));
  ASSERT_TRUE(sync_wait(v.write_zeroes(0, 8192, false, false)));

  auto s = stats->snapshot();
  EXPECT_EQ(s.op(IoOp::write).ops, 2u);
  EXPECT_EQ(s.op(IoOp::write).bytes, 8192u + 512u);
  EXPECT_EQ(s.op(IoOp::read).ops, 1u);
  EXPECT_EQ(s.op(IoOp::read).bytes, 8192u);
  EXPECT_EQ(s.op(IoOp::flush).ops, 1u);
  EXPECT_EQ(s.op(IoOp::trim).ops, 1u);
  EXPECT_EQ(s.op(IoOp::write_zeroes).ops, 1u);
  for (const auto& o : s.ops) EXPECT_EQ(o.errors, 0u);
  EXPECT_EQ(total(s.latency[*latency_index(IoOp::write)]), 2u);
  EXPECT_EQ(s.latency[*latency_index(IoOp::write)].count, 2u);
  EXPECT_EQ(total(s.latency[*latency_index(IoOp::flush)]), 1u);

  // Errors count as operations and errors, move no bytes, and are still timed.
  tiny->fail = true;
  EXPECT_EQ(sync_wait(v.read(0, back)).code(), Errc::io_error);
  EXPECT_EQ(sync_wait(v.flush()).code(), Errc::io_error);
  tiny->fail = false;
  EXPECT_EQ(sync_wait(v.write((1 << 20) - 10, buf, false)).code(), Errc::out_of_range);
  s = stats->snapshot();
  EXPECT_EQ(s.op(IoOp::read).ops, 2u);
  EXPECT_EQ(s.op(IoOp::read).errors, 1u);
  EXPECT_EQ(s.op(IoOp::read).bytes, 8192u);
  EXPECT_EQ(s.op(IoOp::flush).errors, 1u);
  EXPECT_EQ(s.op(IoOp::write).errors, 1u);
  EXPECT_EQ(s.latency[*latency_index(IoOp::read)].count, 2u);
}

TEST(MeteredVolume, SlowReadLandsInALaterBucket) {
  auto inner = std::make_unique<TinyVolume>(4096);
  inner->delay = 3ms;
  auto stats = std::make_shared<VolumeStats>();
  MeteredVolume v(std::move(inner), stats);
  std::vector<std::byte> buf(512);
  ASSERT_TRUE(sync_wait(v.read(0, buf)));
  const auto h = stats->snapshot().latency[*latency_index(IoOp::read)];
  // >= 3 ms: nothing in the buckets up to 2.5 ms (index 5), one somewhere above.
  for (std::size_t i = 0; i <= 5; ++i) EXPECT_EQ(h.buckets[i], 0u) << "bucket " << i;
  EXPECT_EQ(total(h), 1u);
  EXPECT_GE(h.sum_ns, 3'000'000u);
}
