#include "catalogue.h"

#include <algorithm>
#include <cstring>

#include "duplex/base/endian.h"

namespace duplex::store {

namespace {
bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 255) return false;
  for (char c : n) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                    c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return n != "." && n != "..";
}

std::uint64_t last_snapshot_epoch(const Catalogue& c, const Object& v) {
  if (v.snapshots.empty()) return 0;
  return c.get(v.snapshots.back())->epoch;
}
}  // namespace

Catalogue::Catalogue(std::string pool_name, std::uint32_t cluster_size, std::uint64_t cluster_count)
    : pool_name_(std::move(pool_name)),
      cluster_size_(cluster_size),
      cluster_count_(cluster_count),
      refs_(cluster_count, 0),
      unshare_pending_(cluster_count, 0) {}

Status Catalogue::corrupt(std::string what) const {
  return Status::error(Errc::corrupt, "pool {}: {}", pool_name_, what);
}

const Object* Catalogue::get(ObjectId id) const {
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : it->second.get();
}
Object* Catalogue::get(ObjectId id) {
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : it->second.get();
}

std::string Catalogue::full_name(const Object& o) const {
  if (o.kind == ObjectKind::volume) return o.name;
  const Object* v = get(o.origin);
  return (v ? v->name : std::string("?")) + "@" + o.name;
}

const Object* Catalogue::find(const std::string& full) const {
  auto it = names_.find(full);
  return it == names_.end() ? nullptr : get(it->second);
}

void Catalogue::index_name(const Object& o) { names_[full_name(o)] = o.id; }

void Catalogue::unref(std::uint64_t pc) {
  const std::uint32_t left = --refs_[pc];
  if (left == 0 && on_zero_) on_zero_(pc);
  if (left == 1 && on_unshare_) {
    unshare_pending_[pc] = 1;
    on_unshare_(pc);
  }
}

void Catalogue::recount_refs() {
  std::fill(refs_.begin(), refs_.end(), 0);
  for (const auto& [id, o] : objects_) {
    if (o->kind != ObjectKind::volume) continue;
    for (const auto& e : o->map)
      if (e.pc != kNone) ++refs_[e.pc];
    for (const auto& [vc, list] : o->history)
      for (const auto& h : list) ++refs_[h.pc];
  }
}

Status Catalogue::apply_create_volume(ObjectId id, const std::string& name, std::uint64_t size,
                                      const Uuid& uuid, std::uint64_t created) {
  if (id == 0 || objects_.count(id)) return corrupt(fmt::format("create of volume id {} that exists", id));
  if (!valid_name(name))
    return Status::error(Errc::invalid, "pool {}: invalid volume name '{}'", pool_name_, name);
  if (names_.count(name)) return Status::error(Errc::exists, "pool {}: volume {} exists", pool_name_, name);
  auto o = std::make_unique<Object>();
  o->id = id;
  o->kind = ObjectKind::volume;
  o->name = name;
  o->uuid = uuid;
  o->size = size;
  o->created = created;
  o->map.resize(clusters_for(size));
  index_name(*o);
  objects_.emplace(id, std::move(o));
  next_id_ = std::max(next_id_, id + 1);
  return Status::ok();
}

void Catalogue::release_volume(Object& v) {
  for (auto& e : v.map)
    if (e.pc != kNone) unref(e.pc);
  for (auto& [vc, list] : v.history)
    for (auto& h : list) unref(h.pc);
  v.map.clear();
  v.history.clear();
  v.mapped = 0;
}

void Catalogue::drop_history_unseen(Object& v) {
  std::vector<std::uint64_t> epochs;
  epochs.reserve(v.snapshots.size());
  for (ObjectId s : v.snapshots) epochs.push_back(get(s)->epoch);
  for (auto it = v.history.begin(); it != v.history.end();) {
    auto& list = it->second;
    std::erase_if(list, [&](const HistEntry& h) {
      auto t = std::lower_bound(epochs.begin(), epochs.end(), h.birth);
      const bool seen = t != epochs.end() && *t < h.until;
      if (!seen) unref(h.pc);
      return !seen;
    });
    it = list.empty() ? v.history.erase(it) : std::next(it);
  }
}

Status Catalogue::apply_remove(ObjectId id) {
  Object* o = get(id);
  if (!o) return corrupt(fmt::format("remove of unknown object id {}", id));
  if (o->kind == ObjectKind::snapshot) {
    Object* v = get(o->origin);
    if (!v) return corrupt(fmt::format("snapshot {} has no volume {}", id, o->origin));
    names_.erase(full_name(*o));
    std::erase(v->snapshots, id);
    objects_.erase(id);
    drop_history_unseen(*v);
    v->epoch = std::max(v->base_epoch, last_snapshot_epoch(*this, *v));
    return Status::ok();
  }
  for (ObjectId s : std::vector<ObjectId>(o->snapshots)) {
    names_.erase(full_name(*get(s)));
    objects_.erase(s);
  }
  o->snapshots.clear();
  release_volume(*o);
  names_.erase(o->name);
  objects_.erase(id);
  return Status::ok();
}

Status Catalogue::apply_grow(ObjectId id, std::uint64_t size) {
  Object* v = get(id);
  if (!v || v->kind != ObjectKind::volume) return corrupt(fmt::format("grow of unknown volume id {}", id));
  if (size < v->size)
    return corrupt(fmt::format("grow of volume {} from {} to smaller {}", v->name, v->size, size));
  v->size = size;
  v->map.resize(clusters_for(size));
  return Status::ok();
}

Status Catalogue::apply_snapshot(ObjectId volume, ObjectId snap_id, std::uint64_t epoch,
                                 const std::string& name, const Uuid& uuid, std::uint64_t created) {
  Object* v = get(volume);
  if (!v || v->kind != ObjectKind::volume)
    return corrupt(fmt::format("snapshot of unknown volume id {}", volume));
  if (epoch != epoch_)
    return corrupt(fmt::format("snapshot at epoch {} but pool epoch is {}", epoch, epoch_));
  if (snap_id == 0 || objects_.count(snap_id)) return corrupt(fmt::format("snapshot id {} exists", snap_id));
  if (!valid_name(name))
    return Status::error(Errc::invalid, "pool {}: invalid snapshot name '{}'", pool_name_, name);
  if (names_.count(v->name + "@" + name))
    return Status::error(Errc::exists, "pool {}: snapshot {}@{} exists", pool_name_, v->name, name);
  auto s = std::make_unique<Object>();
  s->id = snap_id;
  s->kind = ObjectKind::snapshot;
  s->name = name;
  s->uuid = uuid;
  s->size = v->size;
  s->origin = volume;
  s->epoch = epoch;
  s->created = created;
  index_name(*s);
  objects_.emplace(snap_id, std::move(s));
  v->snapshots.push_back(snap_id);
  v->epoch = epoch;
  epoch_ = epoch + 1;
  next_id_ = std::max(next_id_, snap_id + 1);
  return Status::ok();
}

Status Catalogue::apply_clone(ObjectId snapshot, ObjectId new_id, std::uint64_t epoch,
                              const std::string& name, const Uuid& uuid, std::uint64_t created) {
  const Object* s = get(snapshot);
  if (!s || s->kind != ObjectKind::snapshot)
    return corrupt(fmt::format("clone of unknown snapshot id {}", snapshot));
  if (epoch != epoch_) return corrupt(fmt::format("clone at epoch {} but pool epoch is {}", epoch, epoch_));
  if (Status st = apply_create_volume(new_id, name, s->size, uuid, created); !st) return st;
  Object* c = get(new_id);
  c->origin = snapshot;
  for (std::uint64_t vc = 0; vc < c->map.size(); ++vc) {
    MapEntry e = resolve(*s, vc);
    c->map[vc] = e;
    if (e.pc != kNone) {
      ++refs_[e.pc];
      ++c->mapped;
    }
  }
  c->epoch = epoch;
  c->base_epoch = epoch;
  epoch_ = epoch + 1;
  return Status::ok();
}

Status Catalogue::apply_map(ObjectId volume, std::uint64_t vc, std::uint64_t pc, std::uint64_t birth,
                            bool reserved) {
  Object* v = get(volume);
  if (!v || v->kind != ObjectKind::volume)
    return corrupt(fmt::format("map for unknown volume id {}", volume));
  if (vc >= v->map.size())
    return corrupt(
        fmt::format("map of volume {} cluster {} beyond its {} clusters", v->name, vc, v->map.size()));
  if (pc != kNone && pc >= cluster_count_)
    return corrupt(fmt::format("map of volume {} cluster {} to physical cluster {} beyond {}", v->name, vc,
                               pc, cluster_count_));
  if (birth != epoch_) return corrupt(fmt::format("map at epoch {} but pool epoch is {}", birth, epoch_));
  MapEntry& e = v->map[vc];
  if (pc != kNone && pc == e.pc)
    return corrupt(fmt::format("volume {} cluster {} remapped to itself", v->name, vc));
  if (e.pc != kNone) {
    if (!v->snapshots.empty() && e.birth <= last_snapshot_epoch(*this, *v)) {
      v->history[vc].push_back({e.pc, e.birth, birth});
    } else {
      unref(e.pc);
    }
    --v->mapped;
  }
  e = {pc, birth};
  if (pc != kNone) {
    if (!reserved) ++refs_[pc];
    ++v->mapped;
  }
  return Status::ok();
}

MapEntry Catalogue::resolve(const Object& o, std::uint64_t vc) const {
  if (o.kind == ObjectKind::volume) return vc < o.map.size() ? o.map[vc] : MapEntry{};
  if (vc >= clusters_for(o.size)) return {};
  const Object* v = get(o.origin);
  const MapEntry& e = v->map[vc];
  if (e.birth <= o.epoch) return e;
  auto it = v->history.find(vc);
  if (it == v->history.end()) return {};
  const auto& list = it->second;
  // Last entry born at or before the snapshot; it is the one if it was still live then.
  auto h = std::upper_bound(list.begin(), list.end(), o.epoch,
                            [](std::uint64_t s, const HistEntry& x) { return s < x.birth; });
  if (h == list.begin()) return {};
  --h;
  if (o.epoch < h->until) return {h->pc, h->birth};
  return {};
}

std::uint64_t Catalogue::mapped_clusters(const Object& o) const {
  if (o.kind == ObjectKind::volume) return o.mapped;
  std::uint64_t n = 0;
  for (std::uint64_t vc = 0, end = clusters_for(o.size); vc < end; ++vc)
    if (resolve(o, vc).pc != kNone) ++n;
  return n;
}

std::uint64_t Catalogue::exclusive_clusters(const Object& o) const {
  std::uint64_t n = 0;
  if (o.kind == ObjectKind::volume) {
    const std::uint64_t last = last_snapshot_epoch(*this, o);
    for (const auto& e : o.map)
      if (e.pc != kNone && refs_[e.pc] == 1 && (o.snapshots.empty() || e.birth > last)) ++n;
    return n;
  }
  const Object* v = get(o.origin);
  std::vector<std::uint64_t> others;
  for (ObjectId s : v->snapshots)
    if (s != o.id) others.push_back(get(s)->epoch);
  for (const auto& [vc, list] : v->history)
    for (const auto& h : list) {
      if (!(h.birth <= o.epoch && o.epoch < h.until) || refs_[h.pc] != 1) continue;
      auto t = std::lower_bound(others.begin(), others.end(), h.birth);
      if (t == others.end() || *t >= h.until) ++n;
    }
  return n;
}

// ---------------------------------------------------------------- checkpoint payload

namespace {
template <typename T>
void put(std::vector<std::byte>& out, const T& v) {
  const auto* p = reinterpret_cast<const std::byte*>(&v);
  out.insert(out.end(), p, p + sizeof(T));
}
}  // namespace

std::vector<std::byte> Catalogue::serialize() const {
  std::vector<std::byte> out;
  format::CheckpointState st{};
  st.epoch = epoch_;
  st.next_id = next_id_;
  st.objects = objects_.size();
  put(out, st);
  std::vector<ObjectId> ids;
  ids.reserve(objects_.size());
  for (const auto& [id, o] : objects_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (ObjectId id : ids) {
    const Object& o = *get(id);
    format::ObjectRecord r{};
    r.id = o.id;
    r.origin = o.origin;
    r.size = o.size;
    r.epoch = o.epoch;
    r.base_epoch = o.base_epoch;
    r.created_unix = o.created;
    std::memcpy(r.uuid, o.uuid.bytes.data(), 16);
    std::uint64_t entries = 0, hist = 0;
    for (const auto& e : o.map)
      if (e.pc != kNone || e.birth != 0) ++entries;
    for (const auto& [vc, list] : o.history) hist += list.size();
    r.map_entries = entries;
    r.history_entries = hist;
    r.name_length = static_cast<std::uint16_t>(o.name.size());
    r.kind = static_cast<std::uint8_t>(o.kind);
    put(out, r);
    const auto* np = reinterpret_cast<const std::byte*>(o.name.data());
    out.insert(out.end(), np, np + o.name.size());
    for (std::uint64_t vc = 0; vc < o.map.size(); ++vc) {
      const auto& e = o.map[vc];
      if (e.pc == kNone && e.birth == 0) continue;
      format::MapEntryRecord m{};
      m.vcluster = vc;
      m.pcluster = e.pc;
      m.birth = e.birth;
      put(out, m);
    }
    std::vector<std::uint64_t> vcs;
    vcs.reserve(o.history.size());
    for (const auto& [vc, list] : o.history) vcs.push_back(vc);
    std::sort(vcs.begin(), vcs.end());
    for (auto vc : vcs)
      for (const auto& h : o.history.at(vc)) {
        format::HistoryEntryRecord hr{};
        hr.vcluster = vc;
        hr.pcluster = h.pc;
        hr.birth = h.birth;
        hr.until = h.until;
        put(out, hr);
      }
  }
  return out;
}

Status Catalogue::deserialize(std::span<const std::byte> in) {
  std::size_t pos = 0;
  auto take = [&](void* dst, std::size_t n) -> bool {
    if (in.size() - pos < n) return false;
    std::memcpy(dst, in.data() + pos, n);
    pos += n;
    return true;
  };
  format::CheckpointState st{};
  if (!take(&st, sizeof st)) return corrupt("checkpoint truncated in its header");
  epoch_ = st.epoch;
  next_id_ = st.next_id;
  objects_.clear();
  names_.clear();
  const std::uint64_t count = st.objects;
  std::vector<std::pair<ObjectId, ObjectId>> snap_links;  // (volume, snapshot)
  for (std::uint64_t i = 0; i < count; ++i) {
    format::ObjectRecord r{};
    if (!take(&r, sizeof r)) return corrupt(fmt::format("checkpoint truncated at object {}", i));
    auto o = std::make_unique<Object>();
    o->id = r.id;
    o->kind = static_cast<ObjectKind>(r.kind);
    if (r.kind != 1 && r.kind != 2)
      return corrupt(fmt::format("checkpoint object {} has kind {}", o->id, r.kind));
    o->name.resize(r.name_length);
    if (!take(o->name.data(), r.name_length)) return corrupt("checkpoint truncated in a name");
    o->origin = r.origin;
    o->size = r.size;
    o->epoch = r.epoch;
    o->base_epoch = r.base_epoch;
    o->created = r.created_unix;
    std::memcpy(o->uuid.bytes.data(), r.uuid, 16);
    if (o->id == 0 || objects_.count(o->id))
      return corrupt(fmt::format("checkpoint repeats object id {}", o->id));
    if (o->kind == ObjectKind::volume) {
      o->map.resize(clusters_for(o->size));
      for (std::uint64_t k = 0; k < r.map_entries; ++k) {
        format::MapEntryRecord m{};
        if (!take(&m, sizeof m)) return corrupt(fmt::format("checkpoint truncated in map of {}", o->name));
        const std::uint64_t vc = m.vcluster, pc = m.pcluster;
        if (vc >= o->map.size() || (pc != kNone && pc >= cluster_count_))
          return corrupt(
              fmt::format("checkpoint map of {} has cluster {} -> {} out of range", o->name, vc, pc));
        o->map[vc] = {pc, m.birth};
        if (pc != kNone) ++o->mapped;
      }
      for (std::uint64_t k = 0; k < r.history_entries; ++k) {
        format::HistoryEntryRecord h{};
        if (!take(&h, sizeof h))
          return corrupt(fmt::format("checkpoint truncated in history of {}", o->name));
        const std::uint64_t vc = h.vcluster, pc = h.pcluster;
        if (vc >= o->map.size() || pc >= cluster_count_)
          return corrupt(
              fmt::format("checkpoint history of {} has cluster {} -> {} out of range", o->name, vc, pc));
        o->history[vc].push_back({pc, h.birth, h.until});
      }
    } else if (r.map_entries != 0 || r.history_entries != 0) {
      return corrupt(fmt::format("checkpoint snapshot {} carries a map", o->id));
    }
    objects_.emplace(o->id, std::move(o));
  }
  if (pos != in.size()) return corrupt(fmt::format("checkpoint has {} trailing bytes", in.size() - pos));
  // Link snapshots to volumes in epoch order, then index names.
  for (auto& [id, o] : objects_) {
    if (o->kind != ObjectKind::snapshot) continue;
    Object* v = get(o->origin);
    if (!v || v->kind != ObjectKind::volume)
      return corrupt(fmt::format("checkpoint snapshot {} refers to missing volume {}", id, o->origin));
    v->snapshots.push_back(id);
  }
  for (auto& [id, o] : objects_) {
    std::sort(o->snapshots.begin(), o->snapshots.end(),
              [&](ObjectId a, ObjectId b) { return get(a)->epoch < get(b)->epoch; });
  }
  for (auto& [id, o] : objects_) {
    const std::string n = full_name(*o);
    if (names_.count(n)) return corrupt(fmt::format("checkpoint repeats name {}", n));
    names_[n] = id;
  }
  recount_refs();
  return Status::ok();
}

// ---------------------------------------------------------------- consistency check

void Catalogue::check(CheckReport& r, const std::vector<std::uint64_t>& reserved) const {
  auto err = [&](std::string s) { r.errors.push_back(fmt::format("pool {}: {}", pool_name_, std::move(s))); };
  std::vector<std::uint32_t> counted(cluster_count_, 0);
  r.objects = objects_.size();
  for (const auto& [id, op] : objects_) {
    const Object& o = *op;
    if (id != o.id) err(fmt::format("object key {} holds id {}", id, o.id));
    if (id >= next_id_) err(fmt::format("object id {} not below next id {}", id, next_id_));
    auto nit = names_.find(full_name(o));
    if (nit == names_.end() || nit->second != id)
      err(fmt::format("object {} ({}) not indexed by name", id, o.name));
    if (o.kind == ObjectKind::snapshot) {
      const Object* v = get(o.origin);
      if (!v || v->kind != ObjectKind::volume) {
        err(fmt::format("snapshot {} has no volume {}", o.name, o.origin));
        continue;
      }
      if (std::find(v->snapshots.begin(), v->snapshots.end(), id) == v->snapshots.end())
        err(fmt::format("snapshot {} not listed by its volume {}", o.name, v->name));
      if (o.epoch >= epoch_)
        err(fmt::format("snapshot {} epoch {} not below pool epoch {}", o.name, o.epoch, epoch_));
      if (o.size > v->size) err(fmt::format("snapshot {} larger than its volume", o.name));
      continue;
    }
    if (o.map.size() != clusters_for(o.size))
      err(fmt::format("volume {} map has {} clusters for size {}", o.name, o.map.size(), o.size));
    std::uint64_t mapped = 0;
    for (std::uint64_t vc = 0; vc < o.map.size(); ++vc) {
      const auto& e = o.map[vc];
      if (e.birth > epoch_)
        err(fmt::format("volume {} cluster {} born at future epoch {}", o.name, vc, e.birth));
      if (e.pc == kNone) continue;
      ++mapped;
      if (e.pc >= cluster_count_) {
        err(fmt::format("volume {} cluster {} maps to {} beyond the pool", o.name, vc, e.pc));
        continue;
      }
      ++counted[e.pc];
      ++r.mapped_entries;
    }
    if (mapped != o.mapped)
      err(fmt::format("volume {} counts {} mapped clusters, has {}", o.name, o.mapped, mapped));
    std::uint64_t prev_epoch = 0;
    std::vector<std::uint64_t> epochs;
    for (ObjectId s : o.snapshots) {
      const Object* so = get(s);
      if (!so || so->kind != ObjectKind::snapshot || so->origin != id) {
        err(fmt::format("volume {} lists snapshot {} that is not its own", o.name, s));
        continue;
      }
      if (so->epoch <= prev_epoch && !epochs.empty())
        err(fmt::format("volume {} snapshots out of order", o.name));
      prev_epoch = so->epoch;
      epochs.push_back(so->epoch);
    }
    const std::uint64_t want_f = std::max(o.base_epoch, epochs.empty() ? 0 : epochs.back());
    if (o.epoch != want_f)
      err(fmt::format("volume {} frozen epoch {} should be {}", o.name, o.epoch, want_f));
    for (const auto& [vc, list] : o.history) {
      if (vc >= o.map.size()) err(fmt::format("volume {} history for cluster {} beyond its end", o.name, vc));
      std::uint64_t last_until = 0;
      for (const auto& h : list) {
        ++r.history_entries;
        if (h.pc >= cluster_count_) {
          err(fmt::format("volume {} history cluster {} maps to {} beyond the pool", o.name, vc, h.pc));
          continue;
        }
        ++counted[h.pc];
        if (h.birth >= h.until || h.until > epoch_ || h.birth < last_until)
          err(fmt::format("volume {} history of cluster {} has bad interval [{}, {})", o.name, vc, h.birth,
                          h.until));
        last_until = h.until;
        auto t = std::lower_bound(epochs.begin(), epochs.end(), h.birth);
        if (t == epochs.end() || *t >= h.until)
          err(fmt::format("volume {} history of cluster {} [{}, {}) is seen by no snapshot (leak)", o.name,
                          vc, h.birth, h.until));
      }
      if (vc < o.map.size() && !list.empty() && o.map[vc].birth < last_until)
        err(fmt::format("volume {} cluster {} live mapping older than its history", o.name, vc));
    }
  }
  for (std::uint64_t pc : reserved) {
    if (pc >= cluster_count_) {
      err(fmt::format("checkpoint cluster {} beyond the pool", pc));
      continue;
    }
    if (counted[pc]) err(fmt::format("checkpoint cluster {} is also mapped by a volume", pc));
  }
  for (std::uint64_t pc = 0; pc < cluster_count_; ++pc) {
    if (counted[pc] != refs_[pc])
      err(fmt::format("cluster {} has reference count {} but {} references", pc, refs_[pc], counted[pc]));
    if (counted[pc]) ++r.used_clusters;
  }
  if (r.errors.size() > 100) r.errors.resize(100);
}

}  // namespace duplex::store
