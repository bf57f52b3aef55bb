#pragma once
// Free physical clusters. A cluster whose last reference is dropped is not reusable at once:
// the durable metadata may still point at it until the change is committed, and an I/O may still
// be in flight on it. It waits in `deferred` until both are over (see Pool's commit).
#include <bit>
#include <cstdint>
#include <optional>
#include <vector>

namespace duplex::store {

class Allocator {
 public:
  void reset(std::uint64_t clusters) {
    clusters_ = clusters;
    bits_.assign((clusters + 63) / 64, 0);
    pins_.assign(clusters, 0);
    free_ = 0;
    cursor_ = 0;
    deferred_.clear();
  }
  void set_free(std::uint64_t pc) {
    auto& w = bits_[pc / 64];
    const std::uint64_t m = std::uint64_t{1} << (pc % 64);
    if (!(w & m)) {
      w |= m;
      ++free_;
    }
  }
  bool is_free(std::uint64_t pc) const { return bits_[pc / 64] >> (pc % 64) & 1; }
  std::uint64_t free_count() const { return free_; }
  std::uint64_t deferred_count() const { return deferred_.size(); }

  // Next free cluster at or after the cursor (wrapping): sequential writes get contiguous clusters.
  std::optional<std::uint64_t> allocate() {
    if (free_ == 0) return std::nullopt;
    const std::uint64_t words = bits_.size();
    std::uint64_t w = cursor_ / 64;
    std::uint64_t word = bits_[w] & (~std::uint64_t{0} << (cursor_ % 64));
    for (std::uint64_t i = 0; i <= words; ++i) {
      if (word) {
        const std::uint64_t pc = w * 64 + static_cast<std::uint64_t>(std::countr_zero(word));
        bits_[w] &= ~(std::uint64_t{1} << (pc % 64));
        --free_;
        cursor_ = pc + 1 == clusters_ ? 0 : pc + 1;
        return pc;
      }
      w = (w + 1) % words;
      word = bits_[w];
    }
    return std::nullopt;
  }

  void defer(std::uint64_t pc, std::uint64_t tag) { deferred_.push_back({pc, tag}); }
  // Frees the deferred clusters whose change is durable (tag <= durable) and that no I/O pins.
  void release(std::uint64_t durable) {
    std::size_t keep = 0;
    for (auto& d : deferred_) {
      if (d.tag <= durable && pins_[d.pc] == 0)
        set_free(d.pc);
      else
        deferred_[keep++] = d;
    }
    deferred_.resize(keep);
  }

  void pin(std::uint64_t pc) { ++pins_[pc]; }
  void unpin(std::uint64_t pc) { --pins_[pc]; }

 private:
  struct Deferred {
    std::uint64_t pc;
    std::uint64_t tag;
  };
  std::uint64_t clusters_ = 0;
  std::vector<std::uint64_t> bits_;  // 1 = free
  std::vector<std::uint32_t> pins_;  // in-flight I/Os per cluster
  std::uint64_t free_ = 0;
  std::uint64_t cursor_ = 0;
  std::vector<Deferred> deferred_;
};

}  // namespace duplex::store
