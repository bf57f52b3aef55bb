// The data path: reads, writes (in place or copy-on-write), zeroing, and metadata queries.
#include <algorithm>
#include <cstring>
#include <ctime>

#include "pool_impl.h"

namespace duplex::store {

Status PoolImpl::check_range(const Object* o, ObjectId id, const char* op, std::uint64_t offset,
                             std::uint64_t length) const {
  if (!o) return Status::error(Errc::not_found, "pool {}: {} of unknown object id {}", name_, op, id);
  if (offset + length < offset || offset + length > o->size)
    return Status::error(Errc::out_of_range, "pool {}: {} {}: {} bytes at offset {} beyond its end {}", name_,
                         cat_.full_name(*o), op, length, offset, o->size);
  return Status::ok();
}

Status PoolImpl::failed_or_ro() const {
  if (read_only_) return Status::error(Errc::read_only, "pool {} is open read-only", name_);
  return failed_;
}

// ---------------------------------------------------------------- reads

Task<Status> PoolImpl::read(ObjectId id, std::uint64_t offset, std::span<std::byte> buf) {
  const Object* o = cat_.get(id);
  DPX_CO_TRY(check_range(o, id, "read", offset, buf.size()));
  if (offset % cs_ + buf.size() <= cs_) {
    // The common small read: one cluster, no bookkeeping beyond the pin.
    const MapEntry e = cat_.resolve(*o, offset / cs_);
    if (e.pc == kNone) {
      std::memset(buf.data(), 0, buf.size());
      co_return Status::ok();
    }
    alloc_.pin(e.pc);
    Status st = co_await dev_.read(phys(e.pc) + offset % cs_, buf);
    alloc_.unpin(e.pc);
    if (!st)
      co_return Status::error(st.code(), "pool {}: read of {} at offset {}: {}", name_, cat_.full_name(*o),
                              offset, st.message());
    co_return Status::ok();
  }
  // Resolve every cluster now (the map may change while the reads are in flight; what was
  // resolved stays pinned and readable), and merge physically contiguous runs into one I/O.
  struct Run {
    std::uint64_t dev_off;
    std::size_t buf_off;
    std::size_t len;
  };
  std::vector<Run> runs;
  std::vector<std::uint64_t> pinned;
  std::size_t done = 0;
  while (done < buf.size()) {
    const std::uint64_t pos = offset + done;
    const std::uint64_t vc = pos / cs_, in = pos % cs_;
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(cs_ - in, buf.size() - done));
    const MapEntry e = cat_.resolve(*o, vc);
    if (e.pc == kNone) {
      std::memset(buf.data() + done, 0, len);
    } else {
      alloc_.pin(e.pc);
      pinned.push_back(e.pc);
      const std::uint64_t dev_off = phys(e.pc) + in;
      if (!runs.empty() && runs.back().dev_off + runs.back().len == dev_off &&
          runs.back().buf_off + runs.back().len == done)
        runs.back().len += len;
      else
        runs.push_back({dev_off, done, len});
    }
    done += len;
  }
  Status st;
  if (runs.size() == 1) {
    st = co_await dev_.read(runs[0].dev_off, buf.subspan(runs[0].buf_off, runs[0].len));
  } else if (!runs.empty()) {
    std::vector<Task<Status>> ios;
    ios.reserve(runs.size());
    for (const auto& r : runs) ios.push_back(dev_.read(r.dev_off, buf.subspan(r.buf_off, r.len)));
    st = co_await when_all(std::move(ios));
  }
  for (auto pc : pinned) alloc_.unpin(pc);
  if (!st)
    co_return Status::error(st.code(), "pool {}: read of object {} at offset {}: {}", name_, id, offset,
                            st.message());
  co_return Status::ok();
}

// ---------------------------------------------------------------- write admission

Task<Status> PoolImpl::enter_write(ObjectId id) {
  for (;;) {
    DPX_CO_TRY(failed_or_ro());
    const Object* o = cat_.get(id);
    if (!o) co_return Status::error(Errc::not_found, "pool {}: write to unknown object id {}", name_, id);
    if (o->kind != ObjectKind::volume)
      co_return Status::error(Errc::read_only, "pool {}: {} is a snapshot and read-only", name_,
                              cat_.full_name(*o));
    auto& vs = vols_[id];
    if (!vs) vs = std::make_unique<VolState>();
    if (!vs->gated) {
      ++vs->inflight;
      co_return Status::ok();
    }
    co_await vs->gate.wait();
  }
}

void PoolImpl::leave_write(ObjectId id) {
  auto it = vols_.find(id);
  if (it == vols_.end()) return;
  if (--it->second->inflight == 0) it->second->drained.notify_all();
}

Task<void> PoolImpl::drain(ObjectId id) {
  auto& vs = vols_[id];
  if (!vs) vs = std::make_unique<VolState>();
  VolState* v = vs.get();
  co_await v->admin.lock();
  v->gated = true;
  while (v->inflight > 0) co_await v->drained.wait();
}

void PoolImpl::undrain(ObjectId id) {
  auto it = vols_.find(id);
  if (it == vols_.end()) return;
  VolState* v = it->second.get();
  v->gated = false;
  v->gate.notify_all();
  v->admin.unlock();
}

Task<void> PoolImpl::lock_cluster(ClusterKey k) {
  auto& m = locks_[k];
  if (!m) m = std::make_unique<AsyncMutex>();
  co_await m->lock();
}

void PoolImpl::unlock_cluster(ClusterKey k) {
  auto it = locks_.find(k);
  if (!it->second->has_waiters()) {
    locks_.erase(it);
  } else {
    it->second->unlock();  // hands over; must not touch the entry afterwards
  }
}

// ---------------------------------------------------------------- writes

Task<Status> PoolImpl::write_in_place(std::uint64_t pc, std::uint64_t in, std::span<const std::byte> data) {
  alloc_.pin(pc);
  Status st = co_await dev_.write(phys(pc) + in, data);
  alloc_.unpin(pc);
  co_return st;
}

Task<Status> PoolImpl::write_slow(ObjectId id, std::uint64_t vc, std::uint64_t in,
                                  std::span<const std::byte> data) {
  const ClusterKey key{id, vc};
  co_await lock_cluster(key);
  Object* v = cat_.get(id);
  if (cat_.owned(*v, vc)) {
    Status st = co_await write_in_place(v->map[vc].pc, in, data);
    unlock_cluster(key);
    co_return st;
  }
  // Data may not take the clusters the next checkpoint needs: a full pool answers ENOSPC to
  // writers instead of failing its metadata commit.
  const std::uint64_t reserve = 2 * ckpt_clusters_.size() + 4;
  auto pc = alloc_.free_count() > reserve ? alloc_.allocate() : std::nullopt;
  if (!pc) {
    unlock_cluster(key);
    co_return Status::error(Errc::no_space, "pool {}: no free cluster for {} at offset {}", name_, v->name,
                            vc * cs_ + in);
  }
  cat_.ref(*pc);  // reserved until installed
  Status st;
  if (in == 0 && data.size() == cs_) {
    st = co_await dev_.write(phys(*pc), data);
  } else {
    // Copy-on-write (or zero-fill) the part of the cluster this write does not cover.
    AlignedBuffer whole(cs_);
    const std::uint64_t old = v->map[vc].pc;
    if (old != kNone) {
      alloc_.pin(old);
      st = co_await dev_.read(phys(old), whole.span());
      alloc_.unpin(old);
    }
    if (st) {
      std::memcpy(whole.data() + in, data.data(), data.size());
      st = co_await dev_.write(phys(*pc), whole.span());
    }
  }
  if (!st) {
    // Never installed: the cluster goes straight back, nothing durable ever pointed at it.
    if (cat_.refs(*pc) == 1) {
      cat_.set_on_zero(nullptr);
      cat_.unref(*pc);
      watch_catalogue();
      alloc_.set_free(*pc);
    }
    unlock_cluster(key);
    co_return Status::error(st.code(), "pool {}: write to {} at offset {}: {}", name_, v->name, vc * cs_ + in,
                            st.message());
  }
  const std::uint64_t birth = cat_.epoch();
  Status ap = cat_.apply_map(id, vc, *pc, birth, true);
  if (ap)
    records_.add_map(id, vc, *pc, birth);
  else
    fail(ap);
  unlock_cluster(key);
  co_return ap;
}

Task<Status> PoolImpl::write_locked(ObjectId id, std::uint64_t offset, std::span<const std::byte> buf) {
  Object* v = cat_.get(id);
  if (offset % cs_ + buf.size() <= cs_) {
    const std::uint64_t vc = offset / cs_;
    if (cat_.owned(*v, vc)) co_return co_await write_in_place(v->map[vc].pc, offset % cs_, buf);
    co_return co_await write_slow(id, vc, offset % cs_, buf);
  }
  struct Run {
    std::uint64_t dev_off;
    std::size_t buf_off;
    std::size_t len;
  };
  std::vector<Run> runs;
  std::vector<Task<Status>> slow;
  std::size_t done = 0;
  while (done < buf.size()) {
    const std::uint64_t pos = offset + done;
    const std::uint64_t vc = pos / cs_, in = pos % cs_;
    const std::size_t len = static_cast<std::size_t>(std::min<std::uint64_t>(cs_ - in, buf.size() - done));
    if (cat_.owned(*v, vc)) {
      const std::uint64_t dev_off = phys(v->map[vc].pc) + in;
      if (!runs.empty() && runs.back().dev_off + runs.back().len == dev_off &&
          runs.back().buf_off + runs.back().len == done)
        runs.back().len += len;
      else
        runs.push_back({dev_off, done, len});
    } else {
      slow.push_back(write_slow(id, vc, in, buf.subspan(done, len)));
    }
    done += len;
  }
  if (runs.size() == 1 && slow.empty()) {
    // The common case: an overwrite inside owned clusters is one device write, nothing else.
    const std::uint64_t pc = (runs[0].dev_off - data_offset_) / cs_;
    co_return co_await write_in_place(pc, runs[0].dev_off - phys(pc),
                                      buf.subspan(runs[0].buf_off, runs[0].len));
  }
  std::vector<Task<Status>> all = std::move(slow);
  for (const auto& r : runs) {
    const std::uint64_t first = (r.dev_off - data_offset_) / cs_;
    const std::uint64_t last = (r.dev_off + r.len - 1 - data_offset_) / cs_;
    for (std::uint64_t pc = first; pc <= last; ++pc) alloc_.pin(pc);
    all.push_back([](PoolImpl* self, Run r, std::span<const std::byte> data, std::uint64_t first,
                     std::uint64_t last) -> Task<Status> {
      Status st = co_await self->dev_.write(r.dev_off, data);
      for (std::uint64_t pc = first; pc <= last; ++pc) self->alloc_.unpin(pc);
      co_return st;
    }(this, r, buf.subspan(r.buf_off, r.len), first, last));
  }
  co_return co_await when_all(std::move(all));
}

Task<Status> PoolImpl::write(ObjectId id, std::uint64_t offset, std::span<const std::byte> buf, bool fua) {
  Object* o = cat_.get(id);
  DPX_CO_TRY(check_range(o, id, "write", offset, buf.size()));
  // The hot path: an overwrite inside one cluster the volume owns, gate open. One lookup, one
  // device write, no extra coroutine frames.
  if (o->kind == ObjectKind::volume && !buf.empty() && offset % cs_ + buf.size() <= cs_ && failed_.is_ok() &&
      !read_only_ && cat_.owned(*o, offset / cs_)) {
    auto& slot = vols_[id];
    if (!slot) slot = std::make_unique<VolState>();
    VolState* vs = slot.get();
    if (!vs->gated) {
      // Counted in flight like every write, so a snapshot's drain waits for it.
      ++vs->inflight;
      const std::uint64_t pc = o->map[offset / cs_].pc;
      alloc_.pin(pc);
      Status st = co_await dev_.write(phys(pc) + offset % cs_, buf);
      alloc_.unpin(pc);
      leave_write(id);
      if (st && fua) st = co_await commit();
      co_return st;
    }
  }
  DPX_CO_TRY(co_await enter_write(id));
  // Not a conditional expression: GCC 12 mishandles temporaries of co_await inside ?:.
  Status st;
  if (!buf.empty()) st = co_await write_locked(id, offset, buf);
  leave_write(id);
  if (st && fua) st = co_await commit();
  co_return st;
}

Task<Status> PoolImpl::unmap_cluster(ObjectId id, std::uint64_t vc) {
  const ClusterKey key{id, vc};
  co_await lock_cluster(key);
  Object* v = cat_.get(id);
  Status st;
  if (v->map[vc].pc != kNone) {
    const std::uint64_t birth = cat_.epoch();
    st = cat_.apply_map(id, vc, kNone, birth, false);
    if (st)
      records_.add_map(id, vc, kNone, birth);
    else
      fail(st);
  }
  unlock_cluster(key);
  co_return st;
}

Task<Status> PoolImpl::zero_range(ObjectId id, std::uint64_t offset, std::uint64_t length, bool no_unmap) {
  std::uint64_t pos = offset;
  const std::uint64_t end = offset + length;
  while (pos < end) {
    const std::uint64_t vc = pos / cs_, in = pos % cs_;
    const std::uint64_t len = std::min<std::uint64_t>(cs_ - in, end - pos);
    Object* v = cat_.get(id);
    if (!no_unmap && in == 0 && (len == cs_ || pos + len == v->size)) {
      // A whole cluster (or the volume's last, partial one): unmap, the space comes back.
      DPX_CO_TRY(co_await unmap_cluster(id, vc));
    } else if (no_unmap || cat_.resolve(*v, vc).pc != kNone) {
      DPX_CO_TRY(co_await write_locked(id, pos, zero_cluster_.span().subspan(0, len)));
    }
    pos += len;
  }
  co_return Status::ok();
}

Task<Status> PoolImpl::write_zeroes(ObjectId id, std::uint64_t offset, std::uint64_t length, bool no_unmap,
                                    bool fua) {
  DPX_CO_TRY(check_range(cat_.get(id), id, "write zeroes", offset, length));
  DPX_CO_TRY(co_await enter_write(id));
  Status st = co_await zero_range(id, offset, length, no_unmap);
  leave_write(id);
  if (st && fua) st = co_await commit();
  co_return st;
}

Task<Status> PoolImpl::trim(ObjectId id, std::uint64_t offset, std::uint64_t length) {
  return write_zeroes(id, offset, length, false, false);
}

// ---------------------------------------------------------------- metadata queries

namespace {
void push_extent(std::vector<Extent>& out, std::uint64_t off, std::uint64_t len, bool allocated, bool zero) {
  if (!out.empty() && out.back().allocated == allocated && out.back().zero == zero &&
      out.back().offset + out.back().length == off)
    out.back().length += len;
  else
    out.push_back({off, len, allocated, zero});
}
}  // namespace

Result<std::vector<Extent>> PoolImpl::block_status(ObjectId id, std::uint64_t offset,
                                                   std::uint64_t length) const {
  const Object* o = cat_.get(id);
  DPX_TRY(check_range(o, id, "block status", offset, length));
  std::vector<Extent> out;
  std::uint64_t pos = offset;
  while (pos < offset + length) {
    const std::uint64_t vc = pos / cs_;
    const std::uint64_t len = std::min<std::uint64_t>(cs_ - pos % cs_, offset + length - pos);
    const bool mapped = cat_.resolve(*o, vc).pc != kNone;
    push_extent(out, pos, len, mapped, !mapped);
    pos += len;
  }
  return out;
}

std::uint64_t PoolImpl::placement(ObjectId id, std::uint64_t offset) const {
  const Object* o = cat_.get(id);
  if (!o || offset >= o->size) return kUnplaced;
  const std::uint64_t pc = cat_.resolve(*o, offset / cs_).pc;
  return pc == kNone ? kUnplaced : phys(pc) + offset % cs_;
}

Result<std::vector<Extent>> PoolImpl::changed(ObjectId from, ObjectId to, std::uint64_t offset,
                                              std::uint64_t length) const {
  const Object* a = cat_.get(from);
  const Object* b = cat_.get(to);
  if (!a)
    return Status::error(Errc::not_found, "pool {}: changed regions from unknown object id {}", name_, from);
  DPX_TRY(check_range(b, to, "changed regions", offset, length));
  std::vector<Extent> out;
  std::uint64_t pos = offset;
  while (pos < offset + length) {
    const std::uint64_t vc = pos / cs_;
    const std::uint64_t len = std::min<std::uint64_t>(cs_ - pos % cs_, offset + length - pos);
    // Same physical cluster means same bytes: clusters are never rewritten once shared.
    const MapEntry ea = pos < a->size ? cat_.resolve(*a, vc) : MapEntry{};
    const MapEntry eb = cat_.resolve(*b, vc);
    const bool differs = ea.pc != eb.pc;
    push_extent(out, pos, len, differs, eb.pc == kNone);
    pos += len;
  }
  return out;
}

// ---------------------------------------------------------------- catalogue operations

namespace {
std::uint64_t now() { return static_cast<std::uint64_t>(std::time(nullptr)); }
}  // namespace

Task<Result<ObjectId>> PoolImpl::create_volume(std::string name, std::uint64_t size,
                                               std::optional<Uuid> uuid) {
  DPX_CO_TRY(failed_or_ro());
  if (size == 0 || size % 512)
    co_return Status::error(Errc::invalid, "pool {}: volume size {} must be a positive multiple of 512",
                            name_, size);
  if (size / cs_ > cat_.cluster_count() * 1024)
    co_return Status::error(Errc::invalid, "pool {}: volume size {} is beyond 1024 times the pool", name_,
                            size);
  const ObjectId id = cat_.next_id();
  const Uuid u = uuid.value_or(Uuid::random());
  const std::uint64_t created = now();
  DPX_CO_TRY(cat_.apply_create_volume(id, name, size, u, created));
  cat_.take_id();
  records_.add_create_volume(id, size, created, u, name);
  DPX_CO_TRY(co_await commit());
  co_return id;
}

Task<Status> PoolImpl::remove(ObjectId id, bool with_snapshots) {
  DPX_CO_TRY(failed_or_ro());
  const Object* o = cat_.get(id);
  if (!o) co_return Status::error(Errc::not_found, "pool {}: remove of unknown object id {}", name_, id);
  if (o->kind == ObjectKind::volume && !o->snapshots.empty() && !with_snapshots)
    co_return Status::error(Errc::busy, "pool {}: volume {} has {} snapshot(s); remove them first", name_,
                            o->name, o->snapshots.size());
  const bool is_volume = o->kind == ObjectKind::volume;
  if (is_volume) co_await drain(id);
  if (!cat_.get(id)) {  // removed by a concurrent call while we drained
    if (is_volume) undrain(id);
    co_return Status::error(Errc::not_found, "pool {}: object id {} was removed meanwhile", name_, id);
  }
  const ObjectId origin = o->kind == ObjectKind::snapshot ? o->origin : 0;
  const std::uint64_t old_floor = origin ? cat_.get(origin)->epoch : 0;
  Status st = cat_.apply_remove(id);
  if (st) {
    records_.add_remove(id);
    if (origin) {
      Object* v = cat_.get(origin);
      v->durable_floor = std::max(v->durable_floor, old_floor);
      floor_tags_[origin] = tag_;
    }
  }
  if (is_volume) {
    undrain(id);  // waiters wake, find the object gone and fail with not_found
    if (auto it = vols_.find(id);
        it != vols_.end() && it->second->inflight == 0 && !it->second->admin.locked())
      vols_.erase(it);
  }
  DPX_CO_TRY(st);
  co_return co_await commit();
}

Task<Status> PoolImpl::grow(ObjectId id, std::uint64_t new_size) {
  DPX_CO_TRY(failed_or_ro());
  const Object* o = cat_.get(id);
  if (!o || o->kind != ObjectKind::volume)
    co_return Status::error(Errc::not_found, "pool {}: grow of unknown volume id {}", name_, id);
  if (new_size < o->size)
    co_return Status::error(Errc::invalid, "pool {}: volume {} is {} bytes; shrinking to {} is not supported",
                            name_, o->name, o->size, new_size);
  if (new_size % 512)
    co_return Status::error(Errc::invalid, "pool {}: volume size {} must be a multiple of 512", name_,
                            new_size);
  if (new_size == o->size) co_return Status::ok();
  DPX_CO_TRY(cat_.apply_grow(id, new_size));
  records_.add_grow(id, new_size);
  co_return co_await commit();
}

Task<Result<ObjectId>> PoolImpl::snapshot(ObjectId id, std::string snap_name) {
  DPX_CO_TRY(failed_or_ro());
  const Object* o = cat_.get(id);
  if (!o || o->kind != ObjectKind::volume)
    co_return Status::error(Errc::not_found, "pool {}: snapshot of unknown volume id {}", name_, id);
  co_await drain(id);
  if (!cat_.get(id)) {
    undrain(id);
    co_return Status::error(Errc::not_found, "pool {}: volume id {} was removed meanwhile", name_, id);
  }
  const ObjectId sid = cat_.next_id();
  const Uuid u = Uuid::random();
  const std::uint64_t epoch = cat_.epoch(), created = now();
  Status st = cat_.apply_snapshot(id, sid, epoch, snap_name, u, created);
  if (st) {
    cat_.take_id();
    records_.add_snapshot(id, sid, epoch, created, u, snap_name);
  }
  undrain(id);
  DPX_CO_TRY(st);
  DPX_CO_TRY(co_await commit());
  co_return sid;
}

Task<Result<ObjectId>> PoolImpl::clone(ObjectId snap, std::string volume_name, std::optional<Uuid> uuid) {
  DPX_CO_TRY(failed_or_ro());
  const Object* s = cat_.get(snap);
  if (!s || s->kind != ObjectKind::snapshot)
    co_return Status::error(Errc::not_found, "pool {}: clone of unknown snapshot id {}", name_, snap);
  const ObjectId id = cat_.next_id();
  const Uuid u = uuid.value_or(Uuid::random());
  const std::uint64_t epoch = cat_.epoch(), created = now();
  DPX_CO_TRY(cat_.apply_clone(snap, id, epoch, volume_name, u, created));
  cat_.take_id();
  records_.add_clone(snap, id, epoch, created, u, volume_name);
  DPX_CO_TRY(co_await commit());
  co_return id;
}

}  // namespace duplex::store
