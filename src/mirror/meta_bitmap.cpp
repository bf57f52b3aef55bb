// The dirty bitmap of ReplicaMeta: bit operations in RAM, per-block tracking of unsaved changes,
// and the block I/O (a block that fails its check on load reads as all dirty).
#include <algorithm>
#include <bit>

#include "duplex/base/crc32c.h"
#include "duplex/mirror/meta_format.h"
#include "duplex/mirror/replica_meta.h"

namespace duplex::mirror {

namespace f = format;

namespace {

constexpr std::uint64_t kWordsPerBlock = f::kBitmapBytesPerBlock / 8;  // 510
static_assert(f::kBitmapBytesPerBlock % 8 == 0);
// Blocks per device write when persisting runs of blocks (1 MiB).
constexpr std::uint64_t kMaxRun = 256;

std::uint64_t word_mask(std::uint64_t lo, std::uint64_t hi) {  // bits [lo, hi) of one word, hi <= 64
  const std::uint64_t upper = hi == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << hi) - 1;
  return upper & ~((std::uint64_t{1} << lo) - 1);
}

}  // namespace

void ReplicaMeta::set_bits(std::uint64_t first, std::uint64_t end) {
  end = std::min(end, bits());
  for (std::uint64_t b = first; b < end;) {
    const std::uint64_t w = b / 64, lo = b % 64, hi = std::min<std::uint64_t>(64, lo + (end - b));
    const std::uint64_t m = word_mask(lo, hi);
    const std::uint64_t added = m & ~words_[w];
    if (added) {
      words_[w] |= added;
      set_count_ += std::popcount(added);
      unsaved_[w / kWordsPerBlock] = true;
    }
    b += hi - lo;
  }
}

void ReplicaMeta::clear_bits(std::uint64_t first, std::uint64_t end) {
  end = std::min(end, bits());
  for (std::uint64_t b = first; b < end;) {
    const std::uint64_t w = b / 64, lo = b % 64, hi = std::min<std::uint64_t>(64, lo + (end - b));
    const std::uint64_t removed = word_mask(lo, hi) & words_[w];
    if (removed) {
      words_[w] &= ~removed;
      set_count_ -= std::popcount(removed);
      unsaved_[w / kWordsPerBlock] = true;
    }
    b += hi - lo;
  }
}

bool ReplicaMeta::test_bit(std::uint64_t b) const { return (words_[b / 64] >> (b % 64)) & 1; }

void ReplicaMeta::mark_dirty(std::uint64_t offset, std::uint64_t length) {
  if (length == 0 || offset >= rec_.size) return;
  const std::uint64_t end = offset + std::min(length, rec_.size - offset);
  set_bits(offset / rec_.granularity, (end + rec_.granularity - 1) / rec_.granularity);
}

void ReplicaMeta::clear_dirty(std::uint64_t offset, std::uint64_t length) {
  if (length == 0 || offset >= rec_.size) return;
  const std::uint64_t end = offset + std::min(length, rec_.size - offset);
  // Inwards: a bit only partly covered keeps the rest of its region dirty.
  const std::uint64_t first = (offset + rec_.granularity - 1) / rec_.granularity;
  const std::uint64_t last = end == rec_.size ? bits() : end / rec_.granularity;
  if (first < last) clear_bits(first, last);
}

void ReplicaMeta::mark_all_dirty() { set_bits(0, bits()); }

bool ReplicaMeta::is_dirty(std::uint64_t offset, std::uint64_t length) const {
  if (length == 0 || offset >= rec_.size) return false;
  const std::uint64_t end = offset + std::min(length, rec_.size - offset);
  const std::uint64_t first = offset / rec_.granularity, last = (end - 1) / rec_.granularity;
  for (std::uint64_t b = first; b <= last;) {
    const std::uint64_t w = b / 64, lo = b % 64, hi = std::min<std::uint64_t>(64, lo + (last + 1 - b));
    if (words_[w] & word_mask(lo, hi)) return true;
    b += hi - lo;
  }
  return false;
}

std::uint64_t ReplicaMeta::dirty_bytes() const {
  std::uint64_t n = set_count_ * rec_.granularity;
  const std::uint64_t nbits = bits();
  if (nbits && test_bit(nbits - 1)) n -= nbits * rec_.granularity - rec_.size;  // the partial last bit
  return n;
}

std::optional<std::pair<std::uint64_t, std::uint64_t>> ReplicaMeta::next_dirty(std::uint64_t from,
                                                                               std::uint64_t max_len) const {
  if (max_len == 0 || from >= rec_.size) return std::nullopt;
  const std::uint64_t nbits = bits(), g = rec_.granularity;
  // The first set bit at or after from's bit.
  std::uint64_t b = from / g;
  for (;;) {
    if (b >= nbits) return std::nullopt;
    const std::uint64_t w = words_[b / 64] & ~((std::uint64_t{1} << (b % 64)) - 1);
    if (w) {
      b = b / 64 * 64 + std::countr_zero(w);
      break;
    }
    b = (b / 64 + 1) * 64;
  }
  if (b >= nbits) return std::nullopt;
  const std::uint64_t start = std::max(from, b * g);
  const std::uint64_t limit = start + std::min(max_len, rec_.size - start);
  // The first clear bit after it, not looking past the limit.
  std::uint64_t c = b;
  while (c < nbits && c * g < limit) {
    const std::uint64_t w = ~words_[c / 64] & ~((std::uint64_t{1} << (c % 64)) - 1);
    if (w) {
      c = c / 64 * 64 + std::countr_zero(w);
      break;
    }
    c = (c / 64 + 1) * 64;
  }
  const std::uint64_t end = std::min({c * g, limit, rec_.size});
  return std::pair{start, end - start};
}

std::uint64_t ReplicaMeta::unsaved_bitmap_blocks() const {
  return static_cast<std::uint64_t>(std::count(unsaved_.begin(), unsaved_.end(), true));
}

Task<Status> ReplicaMeta::load_bitmap() {
  const std::uint64_t base = f::kAlOffset + std::uint64_t{opts_.al_blocks} * f::kBlock;
  std::vector<std::byte> buf;
  std::vector<std::uint64_t> bad_blocks;
  for (std::uint64_t first = 0; first < bitmap_blocks_; first += kMaxRun) {
    const std::uint64_t n = std::min(kMaxRun, bitmap_blocks_ - first);
    buf.resize(n * f::kBlock);
    DPX_CO_TRY(co_await dev_->read(base + first * f::kBlock, buf));
    for (std::uint64_t i = 0; i < n; ++i) {
      std::byte* blk = buf.data() + i * f::kBlock;
      auto* h = reinterpret_cast<f::BitmapHeader*>(blk);
      const std::uint32_t crc = h->crc;
      h->crc = 0;
      const std::uint64_t idx = first + i;
      if (h->magic != f::kBitmapMagic || h->index != idx || crc != crc32c(blk, f::kBlock)) {
        bad_blocks.push_back(idx);
        continue;
      }
      for (std::uint64_t k = 0; k < kWordsPerBlock; ++k) {
        std::uint64_t w = load_le<std::uint64_t>(blk + sizeof(f::BitmapHeader) + 8 * k);
        const std::uint64_t wi = idx * kWordsPerBlock + k;
        // Bits past the volume's end are not ours (a block written before a resize has none).
        if ((wi + 1) * 64 > bits()) w &= wi * 64 >= bits() ? 0 : word_mask(0, bits() - wi * 64);
        words_[wi] = w;
        set_count_ += std::popcount(w);
      }
    }
  }
  // Never lose a dirty bit: a block that cannot be read back counts as all dirty (more to copy).
  for (std::uint64_t idx : bad_blocks)
    set_bits(idx * f::kBitmapBitsPerBlock, (idx + 1) * f::kBitmapBitsPerBlock);
  co_return Status::ok();
}

Task<Status> ReplicaMeta::write_bitmap_blocks(std::vector<std::uint64_t> blocks) {
  const std::uint64_t base = f::kAlOffset + std::uint64_t{opts_.al_blocks} * f::kBlock;
  std::vector<std::byte> buf;
  for (std::size_t i = 0; i < blocks.size();) {
    // A run of consecutive blocks is one device write.
    std::size_t j = i + 1;
    while (j < blocks.size() && j - i < kMaxRun && blocks[j] == blocks[j - 1] + 1) ++j;
    buf.assign((j - i) * f::kBlock, std::byte{0});
    for (std::size_t k = i; k < j; ++k) {
      std::byte* blk = buf.data() + (k - i) * f::kBlock;
      auto* h = reinterpret_cast<f::BitmapHeader*>(blk);
      h->magic = f::kBitmapMagic;
      h->index = static_cast<std::uint32_t>(blocks[k]);
      for (std::uint64_t w = 0; w < kWordsPerBlock; ++w)
        store_le(blk + sizeof(f::BitmapHeader) + 8 * w, words_[blocks[k] * kWordsPerBlock + w]);
      h->crc = crc32c(blk, f::kBlock);
      // Cleared at snapshot time: a bit set while the write is in flight marks it unsaved again.
      unsaved_[blocks[k]] = false;
    }
    Status st = co_await dev_->write(base + blocks[i] * f::kBlock, buf);
    if (!st) {
      for (std::size_t k = i; k < blocks.size(); ++k) unsaved_[blocks[k]] = true;
      co_return st;
    }
    i = j;
  }
  Status st = co_await dev_->flush();
  if (!st)
    for (std::uint64_t b : blocks) unsaved_[b] = true;
  co_return st;
}

Task<Status> ReplicaMeta::persist_locked() {
  std::vector<std::uint64_t> blocks;
  for (std::uint64_t b = 0; b < unsaved_.size(); ++b)
    if (unsaved_[b]) blocks.push_back(b);
  if (blocks.empty()) co_return Status::ok();
  co_return co_await write_bitmap_blocks(std::move(blocks));
}

Task<Status> ReplicaMeta::persist() {
  co_await io_.lock();
  AsyncUnlock u{io_};
  if (closed_) co_return bad(Errc::shutdown, "used after close()");
  co_return co_await persist_locked();
}

Task<Status> ReplicaMeta::resize(std::uint64_t new_size) {
  co_await io_.lock();
  AsyncUnlock u{io_};
  if (closed_) co_return bad(Errc::shutdown, "used after close()");
  if (new_size < rec_.size)
    co_return bad(Errc::invalid, fmt::format("cannot shrink from {} to {} bytes", rec_.size, new_size));
  if (new_size == rec_.size) co_return Status::ok();
  if ((new_size - 1) / opts_.al_extent > 0xffffffffu)
    co_return bad(Errc::invalid, "volume too large for 32-bit extent numbers");
  const std::uint64_t need = required_bytes(new_size, rec_.granularity, opts_);
  if (dev_->size() < need)
    co_return bad(Errc::no_space,
                  fmt::format("a volume of {} bytes needs {} bytes of metadata, the file has {}", new_size,
                              need, dev_->size()));
  const std::uint64_t old_blocks = bitmap_blocks_;
  const std::uint64_t new_blocks =
      (need - (f::kAlOffset + std::uint64_t{opts_.al_blocks} * f::kBlock)) / f::kBlock;
  if (new_blocks > old_blocks) {
    words_.resize(new_blocks * kWordsPerBlock, 0);
    unsaved_.resize(new_blocks, true);
    bitmap_blocks_ = new_blocks;
  }
  // The new blocks are durable before the record that makes them part of the bitmap.
  DPX_CO_TRY(co_await persist_locked());
  MetaRecord r = rec_;
  r.size = new_size;
  co_return co_await write_record(std::move(r));
}

}  // namespace duplex::mirror
