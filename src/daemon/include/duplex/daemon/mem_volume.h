#pragma once
// A BlockVolume in memory: the model the NBD tests and fuzzers run against, and the daemon's
// `memory` export type (protocol benchmarks without a disk). Allocation is tracked per 4 KiB
// block; snapshot() keeps a copy so changed_since() can answer exactly.
#include <algorithm>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "duplex/volume/block_volume.h"

namespace duplex::daemon {

class MemVolume final : public volume::BlockVolume {
 public:
  static constexpr std::uint64_t kBlock = 4096;
  MemVolume(std::string name, std::uint64_t size, bool read_only = false)
      : name_(std::move(name)),
        size_(size),
        ro_(read_only),
        data_(size),
        alloc_((size + kBlock - 1) / kBlock) {}

  const std::string& name() const override { return name_; }
  Uuid uuid() const override { return uuid_; }
  std::uint64_t size() const override { return size_; }
  bool read_only() const override { return ro_; }
  std::uint32_t preferred_block_size() const override { return 4096; }

  Task<Status> read(std::uint64_t off, std::span<std::byte> buf) override {
    if (!in_range(off, buf.size())) co_return range_error(off, buf.size());
    if (fail_reads) co_return Status::error(Errc::io_error, "injected read error");
    std::memcpy(buf.data(), data_.data() + off, buf.size());
    co_return Status::ok();
  }
  Task<Status> write(std::uint64_t off, std::span<const std::byte> buf, bool fua) override {
    if (ro_) co_return Status::error(Errc::read_only, "{} is read-only", name_);
    if (!in_range(off, buf.size())) co_return range_error(off, buf.size());
    if (fail_writes) co_return Status::error(Errc::io_error, "injected write error");
    std::memcpy(data_.data() + off, buf.data(), buf.size());
    mark(off, buf.size(), true);
    ++writes;
    if (fua) ++fua_writes;
    co_return Status::ok();
  }
  Task<Status> flush() override {
    ++flushes;
    co_return Status::ok();
  }
  Task<Status> trim(std::uint64_t off, std::uint64_t len) override { return zero(off, len, false, false); }
  Task<Status> write_zeroes(std::uint64_t off, std::uint64_t len, bool no_unmap, bool fua) override {
    return zero(off, len, no_unmap, fua);
  }
  Result<std::vector<volume::Extent>> block_status(std::uint64_t off, std::uint64_t len) const override {
    if (!in_range(off, len)) return range_error(off, len);
    return runs(off, len, [&](std::uint64_t b) { return alloc_[b] != 0; }, true);
  }
  Result<std::vector<volume::Extent>> changed_since(const std::string& snap, std::uint64_t off,
                                                    std::uint64_t len) const override {
    if (!in_range(off, len)) return range_error(off, len);
    auto it = snaps_.find(snap);
    if (it == snaps_.end()) return Status::error(Errc::not_found, "no snapshot {}@{}", name_, snap);
    const auto& old = it->second;
    return runs(
        off, len,
        [&](std::uint64_t b) {
          const std::uint64_t s = b * kBlock, n = std::min(kBlock, size_ - s);
          return std::memcmp(old.data() + s, data_.data() + s, n) != 0;
        },
        false);
  }

  void snapshot(const std::string& snap) { snaps_[snap] = data_; }
  std::vector<std::string> snapshots() const {
    std::vector<std::string> v;
    v.reserve(snaps_.size());
    for (const auto& [k, _] : snaps_) v.push_back(k);
    return v;
  }
  std::span<const std::byte> bytes() const { return data_; }

  bool fail_reads = false, fail_writes = false;
  unsigned flushes = 0, writes = 0, fua_writes = 0;

 private:
  bool in_range(std::uint64_t off, std::uint64_t len) const { return off <= size_ && len <= size_ - off; }
  Status range_error(std::uint64_t off, std::uint64_t len) const {
    return Status::error(Errc::out_of_range, "{}: {}+{} beyond {}", name_, off, len, size_);
  }
  void mark(std::uint64_t off, std::uint64_t len, bool v) {
    if (len == 0) return;
    for (std::uint64_t b = off / kBlock; b <= (off + len - 1) / kBlock; ++b) {
      if (v) {
        alloc_[b] = 1;
      } else {
        // Only whole blocks become holes.
        const std::uint64_t s = b * kBlock, e = std::min(s + kBlock, size_);
        if (s >= off && e <= off + len) alloc_[b] = 0;
      }
    }
  }
  Task<Status> zero(std::uint64_t off, std::uint64_t len, bool no_unmap, bool fua) {
    if (ro_) co_return Status::error(Errc::read_only, "{} is read-only", name_);
    if (!in_range(off, len)) co_return range_error(off, len);
    std::memset(data_.data() + off, 0, len);
    mark(off, len, no_unmap);
    if (fua) ++fua_writes;
    co_return Status::ok();
  }
  template <typename Pred>
  std::vector<volume::Extent> runs(std::uint64_t off, std::uint64_t len, Pred pred, bool alloc_ctx) const {
    std::vector<volume::Extent> out;
    std::uint64_t pos = off;
    const std::uint64_t end = off + len;
    while (pos < end) {
      const std::uint64_t b = pos / kBlock;
      const std::uint64_t stop = std::min(end, (b + 1) * kBlock);
      const bool a = pred(b);
      const bool z = alloc_ctx ? !a : false;
      if (!out.empty() && out.back().allocated == a && out.back().zero == z)
        out.back().length += stop - pos;
      else
        out.push_back({pos, stop - pos, a, z});
      pos = stop;
    }
    return out;
  }

  std::string name_;
  Uuid uuid_ = Uuid::random();
  std::uint64_t size_;
  bool ro_;
  std::vector<std::byte> data_;
  std::vector<std::uint8_t> alloc_;
  std::map<std::string, std::vector<std::byte>> snaps_;
};

}  // namespace duplex::daemon
