// Record slots, open/create, crash recovery and the activity log of ReplicaMeta. The bitmap's
// bit operations and block I/O are in meta_bitmap.cpp.
#include <algorithm>
#include <bit>
#include <cstring>
#include <ranges>

#include "duplex/base/crc32c.h"
#include "duplex/mirror/meta_format.h"
#include "duplex/mirror/replica_meta.h"

namespace duplex::mirror {

namespace f = format;

namespace {

std::uint64_t bitmap_blocks_for(std::uint64_t size, std::uint32_t granularity) {
  const std::uint64_t bits = (size + granularity - 1) / granularity;
  return std::max<std::uint64_t>(1, (bits + f::kBitmapBitsPerBlock - 1) / f::kBitmapBitsPerBlock);
}

std::uint64_t bitmap_offset_for(std::uint32_t al_blocks) {
  return f::kAlOffset + std::uint64_t{al_blocks} * f::kBlock;
}

bool valid_state(std::uint8_t s) { return s >= 1 && s <= 3; }

// Checks what the caller may choose; "" when fine.
std::string check_record(const MetaRecord& r) {
  if (r.size == 0) return "volume size 0";
  if (!std::has_single_bit(r.granularity) || r.granularity < 4096 || r.granularity > (1u << 20))
    return fmt::format("granularity {} is not a power of two in [4 KiB, 1 MiB]", r.granularity);
  if (!valid_state(static_cast<std::uint8_t>(r.state))) return "unknown replica state";
  if (r.node.size() >= f::kNameBytes || r.peer.size() >= f::kNameBytes)
    return fmt::format("node names are limited to {} bytes", f::kNameBytes - 1);
  if (r.node.find('\0') != std::string::npos || r.peer.find('\0') != std::string::npos)
    return "node names cannot contain NUL";
  return {};
}

std::string check_options(const MetaOptions& o, std::uint64_t size, std::uint32_t granularity) {
  if (!std::has_single_bit(o.al_extent) || o.al_extent < granularity)
    return fmt::format("activity-log extent {} is not a power of two >= the granularity", o.al_extent);
  if (o.al_capacity == 0 || o.al_capacity > f::kAlMaxExtents)
    return fmt::format("activity-log capacity {} not in [1, {}]", o.al_capacity, f::kAlMaxExtents);
  if (o.al_blocks < 2 || o.al_blocks > 1024)
    return fmt::format("activity-log ring of {} blocks", o.al_blocks);
  if ((size - 1) / o.al_extent > 0xffffffffu) return "volume too large for 32-bit extent numbers";
  return {};
}

void put_name(char (&dst)[f::kNameBytes], const std::string& s) {
  std::memset(dst, 0, sizeof dst);
  std::memcpy(dst, s.data(), std::min<std::size_t>(s.size(), sizeof dst - 1));
}

std::vector<std::byte> encode_record(const MetaRecord& r, const MetaOptions& o, std::uint64_t seq) {
  std::vector<std::byte> buf(f::kBlock);
  auto* b = reinterpret_cast<f::RecordBlock*>(buf.data());
  std::memcpy(b->magic, f::kRecordMagic, sizeof b->magic);
  b->version = f::kVersion;
  b->block_size = f::kBlock;
  b->seq = seq;
  std::memcpy(b->volume_uuid, r.volume.bytes.data(), 16);
  b->volume_size = r.size;
  b->granularity = r.granularity;
  b->state = static_cast<std::uint8_t>(r.state);
  b->flags = (r.bitmap_complete ? f::kFlagBitmapComplete : 0) | (r.clean ? f::kFlagClean : 0);
  b->generation = r.generation;
  b->resync_cursor = r.resync_cursor;
  b->al_extent = o.al_extent;
  b->al_capacity = o.al_capacity;
  b->al_blocks = o.al_blocks;
  b->bitmap_offset = bitmap_offset_for(o.al_blocks);
  b->bitmap_blocks = bitmap_blocks_for(r.size, r.granularity);
  put_name(b->node, r.node);
  put_name(b->peer, r.peer);
  b->crc = crc32c(buf.data(), offsetof(f::RecordBlock, crc));
  return buf;
}

struct Decoded {
  MetaRecord rec;
  MetaOptions opts;
  std::uint64_t seq = 0;
};

// The record in one slot, or why it is not one: {errc, reason}.
std::variant<Decoded, std::pair<Errc, std::string>> decode_record(std::span<const std::byte> buf) {
  using Bad = std::pair<Errc, std::string>;
  const auto* b = reinterpret_cast<const f::RecordBlock*>(buf.data());
  if (std::memcmp(b->magic, f::kRecordMagic, sizeof b->magic) != 0) return Bad{Errc::invalid, "bad magic"};
  if (b->crc != crc32c(buf.data(), offsetof(f::RecordBlock, crc))) return Bad{Errc::corrupt, "bad CRC"};
  if (b->version != f::kVersion)
    return Bad{Errc::version, fmt::format("format version {} (this build reads {})",
                                          std::uint32_t{b->version}, f::kVersion)};
  Decoded d;
  d.seq = b->seq;
  std::memcpy(d.rec.volume.bytes.data(), b->volume_uuid, 16);
  d.rec.size = b->volume_size;
  d.rec.granularity = b->granularity;
  d.rec.state = static_cast<ReplicaState>(b->state);
  d.rec.generation = b->generation;
  d.rec.resync_cursor = b->resync_cursor;
  d.rec.bitmap_complete = (b->flags & f::kFlagBitmapComplete) != 0;
  d.rec.clean = (b->flags & f::kFlagClean) != 0;
  if (b->node[f::kNameBytes - 1] != 0 || b->peer[f::kNameBytes - 1] != 0)
    return Bad{Errc::corrupt, "unterminated node name"};
  d.rec.node = b->node;
  d.rec.peer = b->peer;
  d.opts.al_extent = b->al_extent;
  d.opts.al_capacity = b->al_capacity;
  d.opts.al_blocks = b->al_blocks;
  if (b->block_size != f::kBlock || (b->flags & ~f::kKnownFlags) != 0 || !valid_state(b->state))
    return Bad{Errc::corrupt, "invalid block size, flags or state"};
  if (std::string e = check_record(d.rec); !e.empty()) return Bad{Errc::corrupt, e};
  if (std::string e = check_options(d.opts, d.rec.size, d.rec.granularity); !e.empty())
    return Bad{Errc::corrupt, e};
  if (b->bitmap_offset != bitmap_offset_for(d.opts.al_blocks) ||
      b->bitmap_blocks != bitmap_blocks_for(d.rec.size, d.rec.granularity))
    return Bad{Errc::corrupt, "layout does not match the volume size"};
  return d;
}

}  // namespace

std::string_view to_string(ReplicaState s) {
  switch (s) {
    case ReplicaState::in_sync: return "in-sync";
    case ReplicaState::outdated: return "outdated";
    case ReplicaState::inconsistent: return "inconsistent";
  }
  return "unknown";
}

std::uint64_t ReplicaMeta::required_bytes(std::uint64_t volume_size, std::uint32_t granularity,
                                          MetaOptions o) {
  if (granularity == 0) return 0;
  return bitmap_offset_for(o.al_blocks) + bitmap_blocks_for(volume_size, granularity) * f::kBlock;
}

ReplicaMeta::ReplicaMeta(BlockDevice* dev, MetaRecord rec, MetaOptions o)
    : dev_(dev), rec_(std::move(rec)), opts_(o) {
  bitmap_blocks_ = bitmap_blocks_for(rec_.size, rec_.granularity);
  words_.assign(bitmap_blocks_ * (f::kBitmapBytesPerBlock / 8), 0);
  unsaved_.assign(bitmap_blocks_, false);
}

ReplicaMeta::~ReplicaMeta() = default;

Status ReplicaMeta::bad(Errc c, std::string_view what) const {
  return Status::error(c, "{}: mirror metadata: {}", dev_->name(), what);
}

Task<Result<std::unique_ptr<ReplicaMeta>>> ReplicaMeta::create(BlockDevice* dev, MetaRecord rec,
                                                               MetaOptions o) {
  if (std::string e = check_record(rec); !e.empty())
    co_return Status::error(Errc::invalid, "{}: mirror metadata: {}", dev->name(), e);
  if (std::string e = check_options(o, rec.size, rec.granularity); !e.empty())
    co_return Status::error(Errc::invalid, "{}: mirror metadata: {}", dev->name(), e);
  const std::uint64_t need = required_bytes(rec.size, rec.granularity, o);
  if (dev->size() < need)
    co_return Status::error(Errc::no_space, "{}: mirror metadata needs {} bytes, the file has {}",
                            dev->name(), need, dev->size());
  rec.clean = false;  // open from now on
  std::unique_ptr<ReplicaMeta> m(new ReplicaMeta(dev, rec, o));
  // The slots and the ring are zeroed and the bitmap written before the first record exists: a
  // cut create leaves no valid record (open refuses), never a record over stale blocks.
  {
    std::vector<std::byte> zero(bitmap_offset_for(o.al_blocks));
    DPX_CO_TRY(co_await dev->write(0, zero));
  }
  for (std::uint64_t b = 0; b < m->bitmap_blocks_; ++b) m->unsaved_[b] = true;
  {
    co_await m->io_.lock();
    AsyncUnlock u{m->io_};
    DPX_CO_TRY(co_await m->persist_locked());  // + flush
    m->record_slot_ = 1;                       // so the first record goes to slot 0
    DPX_CO_TRY(co_await m->write_record(rec));
  }
  co_return std::move(m);
}

Task<Result<std::unique_ptr<ReplicaMeta>>> ReplicaMeta::open(BlockDevice* dev) {
  if (dev->size() < 2 * std::uint64_t{f::kBlock})
    co_return Status::error(Errc::invalid, "{}: not a mirror metadata file ({} bytes)", dev->name(),
                            dev->size());
  std::vector<std::byte> buf(2 * std::size_t{f::kBlock});
  DPX_CO_TRY(co_await dev->read(0, buf));
  std::optional<Decoded> best;
  int best_slot = 0;
  std::pair<Errc, std::string> why[2];
  for (int s = 0; s < 2; ++s) {
    auto d = decode_record(
        std::span<const std::byte>(buf).subspan(static_cast<std::size_t>(s) * f::kBlock, f::kBlock));
    if (auto* bad = std::get_if<1>(&d)) {
      why[s] = std::move(*bad);
      continue;
    }
    auto& ok = std::get<0>(d);
    if (!best || ok.seq > best->seq) {
      best = std::move(ok);
      best_slot = s;
    }
  }
  if (!best) {
    // Both slots with a wrong magic: not ours at all. Otherwise name the worst reason.
    Errc c = why[0].first == Errc::invalid && why[1].first == Errc::invalid ? Errc::invalid : Errc::corrupt;
    if (why[0].first == Errc::version || why[1].first == Errc::version) c = Errc::version;
    co_return Status::error(c, "{}: mirror metadata record: no valid slot (slot 0: {}; slot 1: {})",
                            dev->name(), why[0].second, why[1].second);
  }
  const std::uint64_t need = required_bytes(best->rec.size, best->rec.granularity, best->opts);
  if (dev->size() < need)
    co_return Status::error(Errc::corrupt,
                            "{}: mirror metadata: file truncated ({} bytes, the record needs {})",
                            dev->name(), dev->size(), need);
  std::unique_ptr<ReplicaMeta> m(new ReplicaMeta(dev, best->rec, best->opts));
  m->record_seq_ = best->seq;
  m->record_slot_ = best_slot;
  co_await m->io_.lock();
  AsyncUnlock u{m->io_};
  DPX_CO_TRY(co_await m->load_bitmap());
  DPX_CO_TRY(co_await m->load_al());
  if (!m->rec_.clean) {
    // A crash: a write in flight may have reached one replica only, in any hot extent.
    m->recovered_ = true;
    for (std::uint32_t e : m->lru_) m->mark_dirty(std::uint64_t{e} * m->opts_.al_extent, m->opts_.al_extent);
  }
  // Bits from the log and blocks that failed their CRC (all dirty) are made durable now.
  DPX_CO_TRY(co_await m->persist_locked());
  if (m->rec_.clean) {
    MetaRecord r = m->rec_;
    r.clean = false;
    DPX_CO_TRY(co_await m->write_record(std::move(r)));
  }
  co_return std::move(m);
}

Task<Status> ReplicaMeta::write_record(MetaRecord r) {
  const int slot = 1 - record_slot_;
  const std::uint64_t seq = record_seq_ + 1;
  std::vector<std::byte> buf = encode_record(r, opts_, seq);
  DPX_CO_TRY(co_await dev_->write(f::kRecordOffset[slot], buf));
  DPX_CO_TRY(co_await dev_->flush());
  rec_ = std::move(r);
  record_slot_ = slot;
  record_seq_ = seq;
  co_return Status::ok();
}

Task<Status> ReplicaMeta::update(MetaRecord r) {
  if (std::string e = check_record(r); !e.empty()) co_return bad(Errc::invalid, e);
  if (r.volume != rec_.volume || r.size != rec_.size || r.granularity != rec_.granularity)
    co_return bad(Errc::invalid, "update cannot change the volume, its size or the granularity");
  co_await io_.lock();
  AsyncUnlock u{io_};
  if (closed_) co_return bad(Errc::shutdown, "used after close()");
  co_return co_await write_record(std::move(r));
}

// --- activity log ---

Task<Status> ReplicaMeta::load_al() {
  std::vector<std::byte> buf(std::uint64_t{opts_.al_blocks} * f::kBlock);
  DPX_CO_TRY(co_await dev_->read(f::kAlOffset, buf));
  const std::byte* best = nullptr;
  std::uint64_t best_seq = 0;
  for (std::uint32_t i = 0; i < opts_.al_blocks; ++i) {
    std::byte* blk = buf.data() + std::uint64_t{i} * f::kBlock;
    auto* h = reinterpret_cast<f::AlHeader*>(blk);
    if (h->magic != f::kAlMagic || h->version != f::kVersion || h->count > f::kAlMaxExtents) continue;
    const std::uint32_t crc = h->crc;
    h->crc = 0;
    if (crc != crc32c(blk, f::kBlock) || h->seq % opts_.al_blocks != i) continue;
    if (h->seq > best_seq) {
      best_seq = h->seq;
      best = blk;
    }
  }
  al_seq_ = best_seq;
  if (!best) co_return Status::ok();  // never written, or emptied by create
  const auto* h = reinterpret_cast<const f::AlHeader*>(best);
  const std::uint64_t extents = (rec_.size - 1) / opts_.al_extent + 1;
  for (std::uint32_t i = 0; i < h->count; ++i) {
    const std::uint32_t e = load_le<std::uint32_t>(best + sizeof(f::AlHeader) + 4 * std::size_t{i});
    if (e >= extents || hot_.contains(e))
      co_return bad(Errc::corrupt,
                    fmt::format("activity log block seq {}: extent {} invalid or repeated", best_seq, e));
    hot_.emplace(e, lru_.insert(lru_.end(), e));
  }
  co_return Status::ok();
}

Task<Status> ReplicaMeta::write_al(std::vector<std::uint32_t> extents) {
  const std::uint64_t seq = al_seq_ + 1;
  std::vector<std::byte> buf(f::kBlock);
  auto* h = reinterpret_cast<f::AlHeader*>(buf.data());
  h->magic = f::kAlMagic;
  h->version = static_cast<std::uint16_t>(f::kVersion);
  h->seq = seq;
  h->count = static_cast<std::uint32_t>(extents.size());
  for (std::size_t i = 0; i < extents.size(); ++i)
    store_le(buf.data() + sizeof(f::AlHeader) + 4 * i, extents[i]);
  h->crc = crc32c(buf.data(), buf.size());
  DPX_CO_TRY(co_await dev_->write(f::kAlOffset + (seq % opts_.al_blocks) * f::kBlock, buf));
  DPX_CO_TRY(co_await dev_->flush());
  al_seq_ = seq;
  co_return Status::ok();
}

Task<Status> ReplicaMeta::begin_write(std::uint64_t offset, std::uint64_t length) {
  co_return co_await make_hot(offset, length, nullptr, Writes::unpinned);
}

Task<Status> ReplicaMeta::log_ahead(std::uint64_t offset, std::uint64_t length) {
  co_return co_await make_hot(offset, length, nullptr, Writes::none);
}

Task<Result<ReplicaMeta::WritePin>> ReplicaMeta::pin_write(std::uint64_t offset, std::uint64_t length) {
  WritePin pin;
  DPX_CO_TRY(co_await make_hot(offset, length, &pin, Writes::pinned));
  co_return pin;
}

// Counts the extents a writer waits for while it waits for io_, so that the writer holding io_
// can log them in its own update.
struct ReplicaMeta::Wanted {
  ReplicaMeta* m;
  std::uint32_t e0, e1;
  Wanted(ReplicaMeta* meta, std::uint32_t first, std::uint32_t last) : m(meta), e0(first), e1(last) {
    for (std::uint32_t e = e0; e <= e1; ++e) ++m->wanted_[e];
  }
  Wanted(const Wanted&) = delete;
  Wanted& operator=(const Wanted&) = delete;
  ~Wanted() {
    for (std::uint32_t e = e0; e <= e1; ++e) {
      auto it = m->wanted_.find(e);
      if (--it->second == 0) m->wanted_.erase(it);
    }
  }
};

Task<Status> ReplicaMeta::make_hot(std::uint64_t offset, std::uint64_t length, WritePin* pin, Writes writes) {
  if (length == 0) co_return Status::ok();
  if (offset >= rec_.size || length > rec_.size - offset)
    co_return bad(Errc::out_of_range,
                  fmt::format("write of {} bytes at {} beyond the volume end {}", length, offset, rec_.size));
  const std::uint32_t e0 = static_cast<std::uint32_t>(offset / opts_.al_extent);
  const std::uint32_t e1 = static_cast<std::uint32_t>((offset + length - 1) / opts_.al_extent);
  const std::uint32_t own = e1 - e0 + 1;
  auto is_own = [&](std::uint32_t e) { return e >= e0 && e <= e1; };
  if (own > opts_.al_capacity)
    co_return bad(Errc::invalid,
                  fmt::format("a write of {} bytes spans more extents than the activity log holds ({})",
                              length, opts_.al_capacity));
  // The pin is taken while nothing else can run, here or under io_ below: between a log update
  // and the pin, a writer that io_ hands over to could otherwise evict the extents again.
  auto hot = [&] {
    if (!touch_if_hot(e0, e1)) return false;
    if (pin) *pin = pin_extents(e0, e1);
    if (writes == Writes::unpinned)
      for (std::uint32_t e = e0; e <= e1; ++e) written_at_[e] = kUnknownEnd;
    return true;
  };
  // Hot: touch (most recently used) and go. Only durable extents are hot.
  if (hot()) co_return Status::ok();
  const Wanted wanted(this, e0, e1);
  co_await io_.lock();
  AsyncUnlock u{io_};
  if (closed_) co_return bad(Errc::shutdown, "used after close()");
  if (hot()) co_return Status::ok();  // another writer's update logged them meanwhile

  std::vector<std::uint32_t> cold;
  for (std::uint32_t e = e0; e <= e1; ++e) {
    auto it = hot_.find(e);
    if (it == hot_.end())
      cold.push_back(e);
    else
      lru_.splice(lru_.end(), lru_, it->second);  // not evicted below
  }
  // Group commit: the cold extents other writers are waiting for (io_'s queue) join this update,
  // so a burst of writes to cold extents costs one log write and one flush, not one each. Only as
  // many join as can be logged without evicting this writer's own extents or a pinned one, and at
  // most a quarter of the log, so that one update never sweeps the log.
  {
    std::size_t evictable = 0;
    for (std::uint32_t e : lru_)
      if (!pins_.contains(e) && !is_own(e)) ++evictable;
    const std::size_t room = opts_.al_capacity > hot_.size() ? opts_.al_capacity - hot_.size() : 0;
    const std::size_t free_slots = room + evictable > cold.size() ? room + evictable - cold.size() : 0;
    std::size_t join = std::min<std::size_t>({free_slots, opts_.al_capacity / 4, opts_.al_capacity - own});
    for (const auto& [e, waiters] : wanted_) {
      if (join == 0) break;
      if (is_own(e) || hot_.contains(e)) continue;
      cold.push_back(e);
      --join;
    }
  }
  // Evict from the LRU end. They leave the hot set first, so a concurrent begin_write on them
  // waits for this update instead of trusting the log that is about to drop them.
  std::vector<std::uint32_t> evicted;
  for (auto it = lru_.begin(); it != lru_.end() && hot_.size() + cold.size() > opts_.al_capacity;) {
    const std::uint32_t e = *it;
    // A pinned write is in flight there: it stays covered. This writer's own extents stay too.
    if (pins_.contains(e) || is_own(e)) {
      ++it;
      continue;
    }
    it = lru_.erase(it);
    hot_.erase(e);
    evicted.push_back(e);
  }
  // Everything left is pinned: the log grows past its capacity while it fits in a block.
  if (hot_.size() + cold.size() > format::kAlMaxExtents) {
    for (std::uint32_t e : std::views::reverse(evicted))  // back, in order: still durable
      hot_.emplace(e, lru_.insert(lru_.begin(), e));
    co_return bad(Errc::busy,
                  fmt::format("activity log full: {} extents pinned by writes in flight", pins_.size()));
  }
  // Their data must be durable before the log stops covering them: flushed, unless an earlier
  // flush that started after their last write ended did it already.
  const bool flushed = std::ranges::all_of(evicted, [&](std::uint32_t e) {
    auto it = written_at_.find(e);
    return it == written_at_.end() || it->second < flushed_;
  });
  if (!flushed && before_evict_) {
    const std::uint64_t id = ++flushes_started_;
    if (Status st = co_await before_evict_(); !st.is_ok()) {
      for (std::uint32_t e : std::views::reverse(evicted))  // back, in order: still covered
        hot_.emplace(e, lru_.insert(lru_.begin(), e));
      co_return bad(st.code(), fmt::format("flushing the data before the activity log drops {} extent(s): {}",
                                           evicted.size(), st.message()));
    }
    flushed_ = std::max(flushed_, id);
  }
  for (std::uint32_t e : evicted) written_at_.erase(e);
  if (!evicted.empty()) {
    // The log stops covering these extents: their RAM-only dirty bits must be durable first.
    std::vector<std::uint64_t> blocks;
    const std::uint64_t nbits = bits();
    for (std::uint32_t e : evicted) {
      const std::uint64_t b0 = std::uint64_t{e} * opts_.al_extent / rec_.granularity;
      const std::uint64_t b1 = std::min(nbits, (std::uint64_t{e} + 1) * opts_.al_extent / rec_.granularity);
      for (std::uint64_t blk = b0 / f::kBitmapBitsPerBlock; blk <= (b1 - 1) / f::kBitmapBitsPerBlock; ++blk)
        if (unsaved_[blk]) blocks.push_back(blk);
    }
    std::sort(blocks.begin(), blocks.end());
    blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
    if (!blocks.empty()) DPX_CO_TRY(co_await write_bitmap_blocks(std::move(blocks)));
  }
  std::vector<std::uint32_t> next(lru_.begin(), lru_.end());
  next.insert(next.end(), cold.begin(), cold.end());
  DPX_CO_TRY(co_await write_al(std::move(next)));
  for (std::uint32_t e : cold) hot_.emplace(e, lru_.insert(lru_.end(), e));
  ++al_updates_;
  al_extents_logged_ += cold.size();
  if (pin) *pin = pin_extents(e0, e1);  // all hot now: the eviction above skipped them
  if (writes == Writes::unpinned)
    for (std::uint32_t e = e0; e <= e1; ++e) written_at_[e] = kUnknownEnd;
  co_return Status::ok();
}

std::optional<ReplicaMeta::WritePin> ReplicaMeta::try_pin_hot(std::uint64_t offset, std::uint64_t length) {
  if (length == 0 || offset >= rec_.size || length > rec_.size - offset) return std::nullopt;
  const auto e0 = static_cast<std::uint32_t>(offset / opts_.al_extent);
  const auto e1 = static_cast<std::uint32_t>((offset + length - 1) / opts_.al_extent);
  if (!touch_if_hot(e0, e1)) return std::nullopt;
  return pin_extents(e0, e1);
}

bool ReplicaMeta::touch_if_hot(std::uint32_t e0, std::uint32_t e1) {
  for (std::uint32_t e = e0; e <= e1; ++e)
    if (!hot_.contains(e)) return false;
  for (std::uint32_t e = e0; e <= e1; ++e) lru_.splice(lru_.end(), lru_, hot_.find(e)->second);
  return true;
}

ReplicaMeta::WritePin ReplicaMeta::pin_extents(std::uint32_t e0, std::uint32_t e1) {
  for (std::uint32_t e = e0; e <= e1; ++e) ++pins_[e];
  return WritePin(this, e0, e1);
}

void ReplicaMeta::WritePin::release() {
  if (!m_) return;
  m_->writes_done(e0_, e1_);
  m_ = nullptr;
}

// A pinned write ended: a flush that starts from now on makes it durable.
void ReplicaMeta::writes_done(std::uint32_t e0, std::uint32_t e1) {
  for (std::uint32_t e = e0; e <= e1; ++e) {
    auto it = pins_.find(e);
    if (--it->second == 0) pins_.erase(it);
    auto& at = written_at_[e];
    if (at != kUnknownEnd) at = flushes_started_;
  }
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> ReplicaMeta::hot_ranges() const {
  std::vector<std::uint32_t> ext(lru_.begin(), lru_.end());
  std::sort(ext.begin(), ext.end());
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (std::uint32_t e : ext) {
    const std::uint64_t off = std::uint64_t{e} * opts_.al_extent;
    const std::uint64_t len = std::min<std::uint64_t>(opts_.al_extent, rec_.size - off);
    if (!out.empty() && out.back().first + out.back().second == off)
      out.back().second += len;
    else
      out.emplace_back(off, len);
  }
  return out;
}

Task<Status> ReplicaMeta::clear_activity_log() {
  co_await io_.lock();
  AsyncUnlock u{io_};
  if (closed_) co_return bad(Errc::shutdown, "used after close()");
  lru_.clear();  // first: concurrent writers wait for the new log
  hot_.clear();
  DPX_CO_TRY(co_await persist_locked());
  co_return co_await write_al({});
}

Task<Status> ReplicaMeta::close() {
  co_await io_.lock();
  AsyncUnlock u{io_};
  if (closed_) co_return bad(Errc::shutdown, "used after close()");
  lru_.clear();
  hot_.clear();
  DPX_CO_TRY(co_await persist_locked());
  DPX_CO_TRY(co_await write_al({}));
  MetaRecord r = rec_;
  r.clean = true;
  DPX_CO_TRY(co_await write_record(std::move(r)));
  closed_ = true;  // a later log update would not be replayed: the record says clean
  co_return Status::ok();
}

}  // namespace duplex::mirror
