// Creating and opening pools, commits (journal) and checkpoints.
#include <algorithm>
#include <cstring>
#include <ctime>

#include "duplex/base/crc32c.h"
#include "pool_impl.h"

namespace duplex::store {

namespace {
using format::Superblock;

std::uint32_t superblock_crc(const Superblock& sb) { return crc32c(&sb, offsetof(Superblock, crc)); }

std::string sb_name(const Superblock& sb) { return std::string(sb.name, strnlen(sb.name, sizeof sb.name)); }

std::uint64_t random_u64() {
  const Uuid u = Uuid::random();
  std::uint64_t v;
  std::memcpy(&v, u.bytes.data(), 8);
  return v;
}

std::uint64_t now_unix() { return static_cast<std::uint64_t>(std::time(nullptr)); }

// Which of the two superblock copies to trust; an error names what is wrong with both.
Result<Superblock> pick_superblock(const std::string& dev, const std::byte* raw) {
  Superblock sb[2];
  std::memcpy(&sb[0], raw, sizeof(Superblock));
  std::memcpy(&sb[1], raw + format::kBlock, sizeof(Superblock));
  std::string why[2];
  int best = -1;
  bool any_magic = false;
  for (int i = 0; i < 2; ++i) {
    if (std::memcmp(sb[i].magic, format::kSuperMagic, 8) != 0) {
      why[i] = "no pool magic";
      continue;
    }
    any_magic = true;
    if (superblock_crc(sb[i]) != sb[i].crc) {
      why[i] = fmt::format("checksum mismatch (stored {:#010x}, computed {:#010x})",
                           static_cast<std::uint32_t>(sb[i].crc), superblock_crc(sb[i]));
      continue;
    }
    if (sb[i].version != format::kVersion) {
      return Status::error(
          Errc::version,
          "pool {} on {}: format version {} (superblock at offset {}); this build reads version {}",
          sb_name(sb[i]), dev, static_cast<std::uint32_t>(sb[i].version), format::kSuperblockOffset[i],
          format::kVersion);
    }
    if (best < 0 || sb[i].seq > sb[best].seq) best = i;
  }
  if (best >= 0) return sb[best];
  if (!any_magic)
    return Status::error(Errc::invalid, "{} is not a Duplex pool (no superblock magic at offsets 0 and 4096)",
                         dev);
  return Status::error(Errc::corrupt,
                       "pool on {}: both superblocks are invalid: offset 0: {}; offset 4096: {}", dev, why[0],
                       why[1]);
}
}  // namespace

PoolImpl::PoolImpl(BlockDevice& dev, const format::Superblock& sb, bool read_only)
    : dev_(dev),
      sb_(sb),
      read_only_(read_only),
      name_(sb_name(sb)),
      cs_(sb.cluster_size),
      data_offset_(sb.data_offset),
      journal_blocks_(sb.journal_bytes / format::kBlock),
      cat_(name_, sb.cluster_size, sb.cluster_count),
      zero_cluster_(sb.cluster_size) {
  alloc_.reset(sb.cluster_count);
}

// NOLINTNEXTLINE(cppcoreguidelines-avoid-reference-coroutine-parameters): the device outlives the pool
Task<Result<std::unique_ptr<Pool>>> Pool::create(BlockDevice& dev, PoolOptions opts) {
  const std::uint32_t cs = opts.cluster_size;
  if (cs < 4096 || cs > (4u << 20) || (cs & (cs - 1)))
    co_return Status::error(Errc::invalid, "pool {}: cluster size {} is not a power of two in [4 KiB, 4 MiB]",
                            opts.name, cs);
  if (opts.name.empty() || opts.name.size() >= sizeof(Superblock::name))
    co_return Status::error(Errc::invalid, "pool name '{}' must be 1..63 bytes", opts.name);
  std::uint64_t jb = opts.journal_bytes ? opts.journal_bytes
                                        : std::clamp<std::uint64_t>(dev.size() / 128, 256 << 10, 64 << 20);
  jb = std::max<std::uint64_t>(jb / format::kBlock * format::kBlock, std::uint64_t{4} * format::kBlock);
  const std::uint64_t data_offset = (format::kJournalOffset + jb + cs - 1) / cs * cs;
  if (dev.size() < data_offset + 16ull * cs)
    co_return Status::error(Errc::no_space, "pool {}: device {} of {} bytes is too small (needs at least {})",
                            opts.name, dev.name(), dev.size(), data_offset + 16ull * cs);
  Superblock sb{};
  std::memcpy(sb.magic, format::kSuperMagic, 8);
  sb.version = format::kVersion;
  sb.block_size = format::kBlock;
  sb.seq = 0;
  const Uuid uuid = Uuid::random();
  std::memcpy(sb.pool_uuid, uuid.bytes.data(), 16);
  std::memcpy(sb.name, opts.name.data(), opts.name.size());
  sb.device_bytes = dev.size();
  sb.cluster_size = cs;
  sb.journal_offset = format::kJournalOffset;
  sb.journal_bytes = jb;
  sb.data_offset = data_offset;
  sb.cluster_count = (dev.size() - data_offset) / cs;
  sb.checkpoint_cluster = format::kNoCluster;
  // A random generation: journal blocks a former pool left on this device never replay here.
  sb.journal_gen = random_u64();
  sb.created_unix = now_unix();

  // Erase both superblock slots and the first journal block before anything else.
  AlignedBuffer zeros(std::size_t{3} * format::kBlock);
  DPX_CO_TRY(co_await dev.write(0, zeros.span()));
  auto pool = std::make_unique<PoolImpl>(dev, sb, false);
  for (std::uint64_t pc = 0; pc < sb.cluster_count; ++pc) pool->alloc_.set_free(pc);
  pool->watch_catalogue();
  co_await pool->meta_.lock();
  Status st = co_await pool->checkpoint_locked();
  pool->meta_.unlock();
  if (!st) co_return st;
  co_return std::unique_ptr<Pool>(std::move(pool));
}

// NOLINTNEXTLINE(cppcoreguidelines-avoid-reference-coroutine-parameters): the device outlives the pool
Task<Result<std::unique_ptr<Pool>>> Pool::open(BlockDevice& dev, OpenOptions opts) {
  if (dev.size() < std::uint64_t{2} * format::kBlock)
    co_return Status::error(Errc::invalid, "{} ({} bytes) is too small to hold a Duplex pool", dev.name(),
                            dev.size());
  AlignedBuffer raw(std::size_t{2} * format::kBlock);
  DPX_CO_TRY(co_await dev.read(0, raw.span()));
  auto sb = pick_superblock(dev.name(), raw.data());
  if (!sb) co_return sb.status();
  const Superblock& s = *sb;
  const std::string name = sb_name(s);
  const std::uint32_t cs = s.cluster_size;
  if (s.flags != 0 || cs < 4096 || (cs & (cs - 1)) || s.journal_offset != format::kJournalOffset ||
      s.journal_bytes % format::kBlock || s.data_offset < s.journal_offset + s.journal_bytes ||
      s.data_offset % cs || s.cluster_count == 0)
    co_return Status::error(Errc::corrupt, "pool {} on {}: superblock geometry is inconsistent", name,
                            dev.name());
  const std::uint64_t need = s.data_offset + s.cluster_count * cs;
  if (dev.size() < need)
    co_return Status::error(
        Errc::corrupt,
        "pool {} on {}: device is {} bytes but the pool needs {} (truncated? formatted for {})", name,
        dev.name(), dev.size(), need, static_cast<std::uint64_t>(s.device_bytes));
  auto pool = std::make_unique<PoolImpl>(dev, s, opts.read_only);
  DPX_CO_TRY(co_await pool->load());
  co_return std::unique_ptr<Pool>(std::move(pool));
}

Task<Status> PoolImpl::load() {
  // 1. The checkpoint chain.
  std::vector<std::byte> payload;
  std::uint64_t pc = sb_.checkpoint_cluster;
  const std::uint64_t chain = sb_.checkpoint_clusters;
  AlignedBuffer cbuf(cs_);
  for (std::uint64_t i = 0; i < chain; ++i) {
    if (pc >= cat_.cluster_count())
      co_return Status::error(Errc::corrupt, "pool {}: checkpoint cluster #{} points to {} beyond the pool",
                              name_, i, pc);
    DPX_CO_TRY(co_await dev_.read(phys(pc), cbuf.span()));
    format::CheckpointHeader h;
    std::memcpy(&h, cbuf.data(), sizeof h);
    const std::uint32_t stored = h.crc;
    std::memset(cbuf.data() + offsetof(format::CheckpointHeader, crc), 0, 4);
    const bool sane = h.payload_bytes <= cs_ - sizeof h;
    if (h.magic != format::kCheckpointMagic || h.version != format::kVersion || !sane ||
        crc32c(cbuf.data(), sizeof h + h.payload_bytes) != stored || h.superblock_seq != sb_.seq ||
        h.index != i)
      co_return Status::error(
          Errc::corrupt,
          "pool {}: checkpoint cluster #{} at offset {} is invalid (bad magic, checksum or sequence)", name_,
          i, phys(pc));
    payload.insert(payload.end(), cbuf.data() + sizeof h, cbuf.data() + sizeof h + h.payload_bytes);
    ckpt_clusters_.push_back(pc);
    pc = h.next_cluster;
  }
  if (chain > 0 && (payload.size() != sb_.checkpoint_bytes ||
                    crc32c(payload.data(), payload.size()) != sb_.checkpoint_crc))
    co_return Status::error(Errc::corrupt, "pool {}: checkpoint payload checksum mismatch ({} bytes)", name_,
                            payload.size());
  if (chain > 0) DPX_CO_TRY(cat_.deserialize(payload));

  // 2. The journal of the current generation, up to its first invalid block.
  AlignedBuffer blk(format::kBlock);
  std::uint64_t seq = 0;
  for (; seq < journal_blocks_; ++seq) {
    DPX_CO_TRY(co_await dev_.read(format::kJournalOffset + seq * format::kBlock, blk.span()));
    BlockState state = check_journal_block(blk.span(), sb_.journal_gen, seq);
    if (state == BlockState::end) break;
    if (state == BlockState::torn) {
      // A torn tail is the normal trace of a crash during a commit; a bad block with a valid
      // successor is damage in the middle, and replaying around it would be guessing.
      if (seq + 1 < journal_blocks_) {
        AlignedBuffer next(format::kBlock);
        DPX_CO_TRY(co_await dev_.read(format::kJournalOffset + (seq + 1) * format::kBlock, next.span()));
        if (check_journal_block(next.span(), sb_.journal_gen, seq + 1) == BlockState::valid)
          co_return Status::error(
              Errc::corrupt,
              "pool {}: journal block {} at offset {} has a bad checksum but later blocks are valid", name_,
              seq, format::kJournalOffset + seq * format::kBlock);
      }
      break;
    }
    auto n = replay_journal_block(blk.span(), cat_, seq);
    if (!n) co_return n.status();
    replayed_ += *n;
  }
  journal_seq_ = seq;

  // 3. Derived state: reference counts and the free map.
  cat_.recount_refs();
  for (std::uint64_t c : ckpt_clusters_) alloc_.pin(c);  // keep them off the free map below
  for (std::uint64_t c = 0; c < cat_.cluster_count(); ++c)
    if (cat_.refs(c) == 0 &&
        std::find(ckpt_clusters_.begin(), ckpt_clusters_.end(), c) == ckpt_clusters_.end())
      alloc_.set_free(c);
  for (std::uint64_t c : ckpt_clusters_) alloc_.unpin(c);
  watch_catalogue();

  // 4. Start from a clean journal so a later crash never meets this run's tail.
  if (!read_only_) {
    co_await meta_.lock();
    Status st = co_await checkpoint_locked();
    meta_.unlock();
    DPX_CO_TRY(st);
  }
  co_return Status::ok();
}

void PoolImpl::watch_catalogue() {
  cat_.set_on_zero([this](std::uint64_t c) { alloc_.defer(c, tag_); });
  cat_.set_on_unshare([this](std::uint64_t c) { unshared_.push_back({c, tag_}); });
}

// Everything changed under tags up to `tag` is durable now.
void PoolImpl::release_durable(std::uint64_t tag) {
  alloc_.release(tag);
  std::size_t keep = 0;
  for (auto& u : unshared_) {
    if (u.tag <= tag)
      cat_.clear_unshared(u.pc);
    else
      unshared_[keep++] = u;
  }
  unshared_.resize(keep);
  for (auto it = floor_tags_.begin(); it != floor_tags_.end();) {
    if (it->second <= tag) {
      if (Object* v = cat_.get(it->first)) v->durable_floor = 0;
      it = floor_tags_.erase(it);
    } else {
      ++it;
    }
  }
}

Task<Status> PoolImpl::write_superblock(format::Superblock sb) {
  sb.crc = 0;
  sb.crc = superblock_crc(sb);
  AlignedBuffer buf(format::kBlock);
  std::memcpy(buf.data(), &sb, sizeof sb);
  DPX_CO_TRY(co_await dev_.write(format::kSuperblockOffset[sb.seq % 2], buf.span()));
  co_return co_await dev_.flush();
}

Task<Status> PoolImpl::checkpoint_locked() {
  // Serialize and take the records in one synchronous step: the checkpoint is exactly the state
  // after every record taken so far, and later records go to the next journal generation.
  std::vector<std::byte> payload = cat_.serialize();
  records_ = JournalRecords{};
  const std::uint64_t tag = tag_++;

  DPX_CO_TRY(co_await dev_.flush());  // everything the state points to is durable first
  const std::uint64_t per = cs_ - sizeof(format::CheckpointHeader);
  const std::uint64_t n = std::max<std::uint64_t>(1, (payload.size() + per - 1) / per);
  std::vector<std::uint64_t> chain;
  for (std::uint64_t i = 0; i < n; ++i) {
    auto pc = alloc_.allocate();
    if (!pc) {
      for (auto c : chain) alloc_.set_free(c);
      Status st = Status::error(Errc::no_space,
                                "pool {}: no free cluster for the metadata checkpoint ({} needed)", name_, n);
      fail(st);
      co_return st;
    }
    chain.push_back(*pc);
  }
  format::Superblock sb = sb_;
  sb.seq = sb_.seq + 1;
  AlignedBuffer cbuf(cs_);
  for (std::uint64_t i = 0; i < n; ++i) {
    cbuf.zero();
    const std::uint64_t off = i * per;
    const std::uint64_t len =
        std::min<std::uint64_t>(per, payload.size() - std::min<std::uint64_t>(off, payload.size()));
    format::CheckpointHeader h{};
    h.magic = format::kCheckpointMagic;
    h.version = static_cast<std::uint16_t>(format::kVersion);
    h.superblock_seq = sb.seq;
    h.index = i;
    h.next_cluster = i + 1 < n ? chain[i + 1] : format::kNoCluster;
    h.payload_bytes = static_cast<std::uint32_t>(len);
    h.crc = 0;
    std::memcpy(cbuf.data(), &h, sizeof h);
    if (len) std::memcpy(cbuf.data() + sizeof h, payload.data() + off, len);
    h.crc = crc32c(cbuf.data(), sizeof h + len);
    std::memcpy(cbuf.data(), &h, sizeof h);
    if (Status st = co_await dev_.write(phys(chain[i]), cbuf.span()); !st) {
      for (auto c : chain) alloc_.set_free(c);
      fail(st);
      co_return st;
    }
  }
  if (Status st = co_await dev_.flush(); !st) {
    fail(st);
    co_return st;
  }
  sb.checkpoint_cluster = chain.front();
  sb.checkpoint_clusters = n;
  sb.checkpoint_bytes = payload.size();
  sb.checkpoint_crc = crc32c(payload.data(), payload.size());
  sb.journal_gen = sb_.journal_gen + 1;
  if (Status st = co_await write_superblock(sb); !st) {
    fail(st);
    co_return st;
  }
  sb_ = sb;
  sb_.crc = 0;
  journal_seq_ = 0;
  // The previous chain is unreachable now (the other superblock copy points one further back).
  for (auto c : ckpt_clusters_) alloc_.set_free(c);
  ckpt_clusters_ = std::move(chain);
  release_durable(tag);
  co_return Status::ok();
}

Task<Status> PoolImpl::commit() {
  // Nothing to journal and no commit running: every write this caller depends on has its
  // metadata durable already, so a device flush is all it needs, and such flushes may overlap
  // (the kernel merges them) instead of queueing behind each other.
  if (records_.empty() && !meta_.locked() && failed_.is_ok()) {
    Status st = co_await dev_.flush();
    if (!st) fail(st);
    co_return st;
  }
  const std::uint64_t ticket = ++commit_requests_;
  co_await meta_.lock();
  if (commit_covered_ >= ticket) {  // a commit that started after our request has finished
    Status done = failed_.is_ok() ? last_commit_ : failed_;
    meta_.unlock();
    co_return done;
  }
  const std::uint64_t covers = commit_requests_;
  Status st = failed_;
  if (st) {
    JournalRecords taken = std::move(records_);
    records_ = JournalRecords{};
    const std::uint64_t tag = tag_++;
    st = co_await dev_.flush();
    if (st && !taken.empty()) {
      const std::uint64_t blocks = taken.blocks_needed();
      if (journal_seq_ + blocks <= journal_blocks_) {
        AlignedBuffer buf = taken.pack(sb_.journal_gen, journal_seq_);
        st = co_await dev_.write(format::kJournalOffset + journal_seq_ * format::kBlock, buf.span());
        if (st) st = co_await dev_.flush();
        if (st)
          journal_seq_ += blocks;
        else
          fail(st);
      } else {
        st = co_await checkpoint_locked();
      }
    }
    if (st) release_durable(tag);
  }
  commit_covered_ = covers;
  last_commit_ = st;
  meta_.unlock();
  co_return st;
}

void PoolImpl::fail(const Status& s) {
  // Metadata in memory is ahead of the device and can no longer be made durable: refuse writes
  // rather than acknowledge what a restart would lose.
  if (failed_.is_ok())
    failed_ = Status::error(s.code(), "pool {} stopped accepting writes: {}", name_, s.message());
}

Task<Status> PoolImpl::flush() {
  if (read_only_) co_return Status::ok();
  co_return co_await commit();
}

Task<Status> PoolImpl::close() {
  if (read_only_ || closed_) co_return Status::ok();
  co_await meta_.lock();
  Status st = failed_;
  if (st) st = co_await checkpoint_locked();
  meta_.unlock();
  closed_ = st.is_ok();
  co_return st;
}

// ---------------------------------------------------------------- queries

ObjectInfo PoolImpl::to_info(const Object& o, bool usage) const {
  ObjectInfo i;
  i.id = o.id;
  i.kind = o.kind;
  i.name = o.name;
  i.uuid = o.uuid;
  i.size = o.size;
  i.origin = o.origin;
  i.epoch = o.epoch;
  i.created_unix = o.created;
  if (o.kind == ObjectKind::volume) i.mapped_bytes = o.mapped * cs_;
  if (usage) {
    i.mapped_bytes = cat_.mapped_clusters(o) * cs_;
    i.exclusive_bytes = cat_.exclusive_clusters(o) * cs_;
  }
  return i;
}

PoolInfo PoolImpl::info() const {
  PoolInfo p;
  p.name = name_;
  std::memcpy(p.uuid.bytes.data(), sb_.pool_uuid, 16);
  p.device = dev_.name();
  p.cluster_size = cs_;
  p.device_bytes = dev_.size();
  p.data_clusters = cat_.cluster_count();
  p.free_clusters = alloc_.free_count();
  p.metadata_clusters = ckpt_clusters_.size();
  p.epoch = cat_.epoch();
  p.journal_bytes = sb_.journal_bytes;
  p.journal_used_bytes = journal_seq_ * format::kBlock;
  return p;
}

std::vector<ObjectInfo> PoolImpl::list() const {
  std::vector<ObjectInfo> out;
  for (const auto& [id, o] : cat_.objects()) out.push_back(to_info(*o, true));
  std::sort(out.begin(), out.end(), [](const ObjectInfo& a, const ObjectInfo& b) { return a.id < b.id; });
  return out;
}

Result<ObjectInfo> PoolImpl::stat(ObjectId id) const {
  const Object* o = cat_.get(id);
  if (!o) return Status::error(Errc::not_found, "pool {}: no object with id {}", name_, id);
  return to_info(*o, true);
}

Result<ObjectId> PoolImpl::find(const std::string& name) const {
  const Object* o = cat_.find(name);
  if (!o) return Status::error(Errc::not_found, "pool {}: no volume or snapshot named '{}'", name_, name);
  return o->id;
}

CheckReport PoolImpl::check() const {
  CheckReport r;
  r.replayed_journal_records = replayed_;
  cat_.check(r, ckpt_clusters_);
  std::uint64_t free = 0;
  for (std::uint64_t pc = 0; pc < cat_.cluster_count(); ++pc) {
    if (!alloc_.is_free(pc)) continue;
    ++free;
    if (cat_.refs(pc) != 0)
      r.errors.push_back(fmt::format("pool {}: cluster {} is on the free map but referenced", name_, pc));
    if (std::find(ckpt_clusters_.begin(), ckpt_clusters_.end(), pc) != ckpt_clusters_.end())
      r.errors.push_back(fmt::format("pool {}: checkpoint cluster {} is on the free map", name_, pc));
  }
  r.free_clusters = free;
  const std::uint64_t accounted = free + r.used_clusters + ckpt_clusters_.size() + alloc_.deferred_count();
  if (accounted != cat_.cluster_count() && r.errors.empty())
    r.errors.push_back(
        fmt::format("pool {}: {} clusters accounted for (free {}, used {}, metadata {}, deferred {}) of {}",
                    name_, accounted, free, r.used_clusters, ckpt_clusters_.size(), alloc_.deferred_count(),
                    cat_.cluster_count()));
  return r;
}

}  // namespace duplex::store
