#include "fake_disk.h"

#include <algorithm>
#include <cstring>
#include <random>

namespace duplex::test {

FakeDisk::FakeDisk(std::uint64_t size, std::string name)
    : size_(size), name_(std::move(name)), durable_((size + kSector - 1) / kSector) {}

const FakeDisk::BlockPtr& FakeDisk::current(std::uint64_t sector) const {
  auto it = pending_.find(sector);
  return it != pending_.end() ? it->second.back() : durable_[sector];
}

Status FakeDisk::check_range(const char* what, std::uint64_t offset, std::uint64_t length) const {
  if (offset > size_ || length > size_ - offset)
    return Status::error(Errc::out_of_range, "{}: {} of {} bytes at {} beyond device end {}", name_, what,
                         length, offset, size_);
  return Status::ok();
}

Status FakeDisk::admit(const char* what, std::uint64_t offset, std::uint64_t& kind_counter,
                       std::uint64_t fail_at) {
  const bool was_crashed = crashed();
  ++counters_.ops;
  ++kind_counter;
  if (was_crashed) {
    ++counters_.failed;
    return Status::error(Errc::io_error, "{}: {} at {}: device lost power (simulated)", name_, what, offset);
  }
  if (kind_counter == fail_at) {
    ++counters_.failed;
    return Status::error(Errc::io_error, "{}: {} at {}: injected I/O error", name_, what, offset);
  }
  return Status::ok();
}

void FakeDisk::apply(std::uint64_t offset, std::uint64_t length, std::span<const std::byte> bytes,
                     std::byte fill) {
  std::uint64_t done = 0;
  while (done < length) {
    const std::uint64_t pos = offset + done;
    const std::uint64_t sector = pos / kSector;
    const std::uint64_t in = pos % kSector;
    const std::uint64_t n = std::min<std::uint64_t>(kSector - in, length - done);
    auto block = std::make_shared<Block>(kSector);
    if (n < kSector) {
      // A partial-sector write is a read-modify-write of the sector: the sector stays atomic.
      if (const BlockPtr& old = current(sector)) std::memcpy(block->data(), old->data(), kSector);
    }
    if (bytes.empty())
      std::memset(block->data() + in, static_cast<int>(fill), n);
    else
      std::memcpy(block->data() + in, bytes.data() + done, n);
    pending_[sector].push_back(std::move(block));
    done += n;
  }
}

Task<Status> FakeDisk::read(std::uint64_t offset, std::span<std::byte> buf) {
  Status st = admit("read", offset, counters_.reads, fail_read_at_);
  if (st) st = check_range("read", offset, buf.size());
  if (!st) co_return st;
  peek(offset, buf);
  counters_.bytes_read += buf.size();
  co_return Status::ok();
}

Task<Status> FakeDisk::write(std::uint64_t offset, std::span<const std::byte> buf) {
  // The write in flight when the power is cut may have reached the cache in part: it is cached
  // (power_loss drops it or tears it) although the caller sees it fail.
  const bool in_flight_at_cut = crash_at_ != kNever && counters_.ops == crash_at_;
  Status st = admit("write", offset, counters_.writes, fail_write_at_);
  const Status range = check_range("write", offset, buf.size());
  if (st && !range) st = range;
  if (st && read_only_)
    st = Status::error(Errc::read_only, "{}: write at {} on a read-only device", name_, offset);
  if (!st) {
    if (in_flight_at_cut && range && !read_only_) apply(offset, buf.size(), buf, std::byte{0});
    co_return st;
  }
  apply(offset, buf.size(), buf, std::byte{0});
  counters_.bytes_written += buf.size();
  if (record_writes_) write_log_.push_back({offset, buf.size()});
  co_return Status::ok();
}

Task<Status> FakeDisk::flush() {
  Status st = admit("flush", 0, counters_.flushes, fail_flush_at_);
  if (!st) co_return st;
  for (auto& [sector, versions] : pending_) durable_[sector] = std::move(versions.back());
  pending_.clear();
  if (counters_.flushes == crash_flush_at_) crash_at_ = counters_.ops;
  co_return Status::ok();
}

Task<Status> FakeDisk::discard(std::uint64_t offset, std::uint64_t length) {
  Status st = admit("discard", offset, counters_.discards, kNever);
  if (st) st = check_range("discard", offset, length);
  if (st && read_only_)
    st = Status::error(Errc::read_only, "{}: discard at {} on a read-only device", name_, offset);
  if (!st) co_return st;
  apply(offset, length, {}, discard_garbage_ ? std::byte{0xDB} : std::byte{0});
  co_return Status::ok();
}

void FakeDisk::power_loss(PowerLoss mode, std::uint64_t seed) {
  if (mode == PowerLoss::RandomSubset) {
    // Sorted so that a seed reproduces the same outcome whatever the hash table's order.
    std::vector<std::uint64_t> sectors;
    sectors.reserve(pending_.size());
    for (const auto& [sector, versions] : pending_) sectors.push_back(sector);
    std::sort(sectors.begin(), sectors.end());
    std::mt19937_64 rng(seed);
    for (std::uint64_t sector : sectors) {
      auto& versions = pending_[sector];
      // 0 keeps the durable content; i > 0 keeps the i-th unflushed version.
      const std::uint64_t pick = std::uniform_int_distribution<std::uint64_t>(0, versions.size())(rng);
      if (pick > 0) durable_[sector] = versions[pick - 1];
    }
  }
  pending_.clear();
  crash_at_ = crash_flush_at_ = kNever;
}

FakeDisk FakeDisk::durable_copy() const {
  FakeDisk copy(size_, name_);
  copy.durable_ = durable_;
  copy.discard_garbage_ = discard_garbage_;
  return copy;
}

FakeDisk FakeDisk::truncated_copy(std::uint64_t new_size) const {
  FakeDisk copy(new_size, name_);
  for (std::uint64_t s = 0; s < copy.durable_.size() && s < durable_.size(); ++s)
    copy.durable_[s] = current(s);
  return copy;
}

void FakeDisk::clear_faults() {
  fail_read_at_ = fail_write_at_ = fail_flush_at_ = crash_at_ = crash_flush_at_ = kNever;
  read_only_ = false;
}

void FakeDisk::reset_counters() {
  counters_ = {};
  write_log_.clear();
  // Pending fault positions are relative to the counters: re-arming is the caller's business.
  fail_read_at_ = fail_write_at_ = fail_flush_at_ = crash_at_ = crash_flush_at_ = kNever;
}

void FakeDisk::peek(std::uint64_t offset, std::span<std::byte> buf) const {
  std::uint64_t done = 0;
  while (done < buf.size()) {
    const std::uint64_t pos = offset + done;
    const std::uint64_t sector = pos / kSector;
    const std::uint64_t in = pos % kSector;
    const std::uint64_t n = std::min<std::uint64_t>(kSector - in, buf.size() - done);
    if (const BlockPtr& b = current(sector))
      std::memcpy(buf.data() + done, b->data() + in, n);
    else
      std::memset(buf.data() + done, 0, n);
    done += n;
  }
}

void FakeDisk::poke(std::uint64_t offset, std::span<const std::byte> bytes) {
  auto patch = [&](BlockPtr& b, std::uint64_t sector) {
    auto copy = std::make_shared<Block>(kSector);
    if (b) std::memcpy(copy->data(), b->data(), kSector);
    const std::uint64_t lo = std::max(offset, sector * kSector);
    const std::uint64_t hi = std::min(offset + bytes.size(), (sector + 1) * kSector);
    std::memcpy(copy->data() + (lo - sector * kSector), bytes.data() + (lo - offset), hi - lo);
    b = std::move(copy);
  };
  if (bytes.empty()) return;
  for (std::uint64_t s = offset / kSector; s <= (offset + bytes.size() - 1) / kSector; ++s) {
    patch(durable_[s], s);
    if (auto it = pending_.find(s); it != pending_.end())
      for (BlockPtr& v : it->second) patch(v, s);
  }
}

bool FakeDisk::same_content(const FakeDisk& other) const {
  if (size_ != other.size_) return false;
  static const Block kZero(kSector);
  for (std::uint64_t s = 0; s < durable_.size(); ++s) {
    const BlockPtr& a = current(s);
    const BlockPtr& b = other.current(s);
    if (a == b) continue;
    const Block& x = a ? *a : kZero;
    const Block& y = b ? *b : kZero;
    const std::uint64_t n = std::min<std::uint64_t>(kSector, size_ - s * kSector);
    if (std::memcmp(x.data(), y.data(), n) != 0) return false;
  }
  return true;
}

}  // namespace duplex::test
