#include "duplex/api/cluster_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

namespace duplex::api {

ClusterBackend::ClusterBackend(cluster::Catalogue& catalogue, LocalNode& node, ClusterBackendOptions opts)
    : cat_(catalogue), node_(node), opts_(std::move(opts)) {}

HealthView ClusterBackend::health() {
  return HealthView{node_.name(), node_.site(), node_.etcd_ok(), node_.lease_ok()};
}

Result<std::vector<NodeView>> ClusterBackend::nodes() {
  auto recs = cat_.nodes();
  if (!recs) return recs.status();
  std::vector<NodeView> out;
  out.reserve(recs->size());
  // A node's record lives under its lease: present means alive.
  for (auto& r : *recs) out.push_back(NodeView{std::move(r), true, std::nullopt});
  auto drains = cat_.drains();
  if (!drains) return drains.status();
  for (auto& d : *drains) {
    auto it = std::find_if(out.begin(), out.end(), [&](const NodeView& n) { return n.rec.name == d.node; });
    if (it == out.end()) {
      // Down for its maintenance: still part of the cluster, and still drained.
      NodeView down;
      down.rec.name = d.node;
      it = out.insert(out.end(), std::move(down));
    }
    it->drain = std::move(d);
  }
  return out;
}

Result<cluster::DrainRecord> ClusterBackend::drain_node(const std::string& node, const std::string& by,
                                                        const std::string& reason) {
  return cat_.drain_node(node, by, reason);
}

Status ClusterBackend::resume_node(const std::string& node) { return cat_.resume_node(node); }

Result<std::vector<cluster::PoolRecord>> ClusterBackend::pools() { return cat_.pools(); }

Result<VolumeView> ClusterBackend::view(const cluster::VolumeRecord& rec,
                                        const std::vector<NodeView>& nodes) {
  VolumeView v;
  v.rec = rec;
  auto reports = cat_.replicas(rec.name);
  if (!reports) return reports.status();
  auto snaps = cat_.snapshots(rec.name);
  if (!snaps) return snaps.status();
  auto exp = cat_.export_of(rec.name);
  if (!exp) return exp.status();
  auto set = cat_.insync(rec.name);
  if (set) {
    v.insync = std::move(*set);
  } else if (set.status().code() != Errc::not_found) {
    return set.status();
  }
  auto ds = cat_.decisions(rec.name);
  if (!ds) return ds.status();
  const std::size_t skip = ds->size() > kDecisionsShown ? ds->size() - kDecisionsShown : 0;
  v.decisions.assign(std::make_move_iterator(ds->begin() + static_cast<std::ptrdiff_t>(skip)),
                     std::make_move_iterator(ds->end()));

  auto find_node = [&](const std::string& name) -> const NodeView* {
    for (const auto& n : nodes) {
      if (n.rec.name == name) return &n;
    }
    return nullptr;
  };
  std::string base_iqn;
  for (const auto& name : rec.replicas) {
    ReplicaView r;
    r.node = name;
    if (const NodeView* n = find_node(name)) {
      r.alive = n->alive;
      r.site = n->rec.site;
      if (base_iqn.empty()) base_iqn = n->rec.base_iqn;
    }
    for (const auto& s : *reports) {
      if (s.node == name) r.report = s;
    }
    // Only members of the in-sync set serve data: a replica the set left out may miss writes.
    const bool member = !v.insync || std::find(v.insync->members.begin(), v.insync->members.end(), name) !=
                                         v.insync->members.end();
    if (member && r.alive && r.report && r.report->state == "in-sync") {
      const NodeView* n = find_node(name);
      PathView p{name, {}, {}};
      if (exp->nbd && !n->rec.nbd.empty()) p.nbd = fmt::format("nbd://{}/{}", n->rec.nbd.front(), rec.name);
      if (exp->iscsi && !n->rec.iscsi.empty()) {
        const std::string& iqn = n->rec.base_iqn.empty() ? opts_.default_base_iqn : n->rec.base_iqn;
        p.iscsi = fmt::format("iscsi://{}/{}:{}/0", n->rec.iscsi.front(), iqn, rec.name);
      }
      v.paths.push_back(std::move(p));
    }
    v.replicas.push_back(std::move(r));
  }
  v.exp = ExportView{std::move(*exp),
                     fmt::format("{}:{}", base_iqn.empty() ? opts_.default_base_iqn : base_iqn, rec.name)};
  std::string nbd_base;
  for (const auto& p : v.paths) {
    if (!p.nbd.empty()) {
      nbd_base = p.nbd;
      break;
    }
  }
  for (auto& s : *snaps) {
    SnapshotView sv{std::move(s), {}};
    if (!nbd_base.empty() && sv.rec.state == cluster::SnapshotState::ready)
      sv.nbd = nbd_base + "@" + sv.rec.name;
    v.snapshots.push_back(std::move(sv));
  }
  return v;
}

Result<VolumeView> ClusterBackend::view(const std::string& name) {
  auto rec = cat_.volume(name);
  if (!rec) return rec.status();
  auto ns = nodes();
  if (!ns) return ns.status();
  return view(*rec, *ns);
}

Result<std::vector<VolumeView>> ClusterBackend::volumes() {
  auto recs = cat_.volumes();
  if (!recs) return recs.status();
  auto ns = nodes();
  if (!ns) return ns.status();
  std::vector<VolumeView> out;
  for (const auto& r : *recs) {
    auto v = view(r, *ns);
    // A volume deleted between the two reads is simply not listed.
    if (!v && v.status().code() == Errc::not_found) continue;
    if (!v) return v.status();
    out.push_back(std::move(*v));
  }
  return out;
}

Result<VolumeView> ClusterBackend::volume(const std::string& name) { return view(name); }

template <typename Done>
Result<bool> ClusterBackend::poll_until(const std::string& volume, Wait w, Done done) {
  if (!w.wait) return false;
  const auto deadline = std::chrono::steady_clock::now() + w.timeout;
  while (true) {
    // Settling is idempotent and any node may do it; a failure here (etcd briefly unreachable,
    // the volume already gone) only means this turn learns nothing new.
    (void)cat_.settle(volume);
    Result<bool> r = done();
    if (!r || *r) return r;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline || cancelled_.load(std::memory_order_relaxed)) return false;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(opts_.poll, deadline - now));
  }
}

Result<bool> ClusterBackend::replicas_applied(const std::string& volume, std::int64_t generation,
                                              std::uint64_t size) {
  auto rec = cat_.volume(volume);
  if (!rec) return rec.status();
  auto reports = cat_.replicas(volume);
  if (!reports) return reports.status();
  for (const auto& name : rec->replicas) {
    auto it = std::find_if(reports->begin(), reports->end(), [&](const auto& s) { return s.node == name; });
    if (it == reports->end() || it->generation < generation || it->size < size) return false;
  }
  return true;
}

Result<Applied<VolumeView>> ClusterBackend::create_volume(const cluster::VolumeSpec& spec, Wait w) {
  auto rec = cat_.create_volume(spec);
  if (!rec) return rec.status();
  auto done = poll_until(spec.name, w, [&]() -> Result<bool> {
    auto cur = cat_.volume(spec.name);
    if (!cur) return cur.status();
    return cur->state == cluster::VolumeState::ready;
  });
  if (!done) return done.status();
  auto v = view(spec.name);
  if (!v) return v.status();
  return Applied<VolumeView>{std::move(*v), *done};
}

Result<Applied<VolumeView>> ClusterBackend::grow_volume(const std::string& name, std::uint64_t size,
                                                        std::int64_t expected_generation, Wait w) {
  auto rec = cat_.grow_volume(name, size, expected_generation);
  if (!rec) return rec.status();
  const std::int64_t generation = rec->generation;
  auto done = poll_until(name, w, [&] { return replicas_applied(name, generation, size); });
  if (!done) return done.status();
  auto v = view(name);
  if (!v) return v.status();
  return Applied<VolumeView>{std::move(*v), *done};
}

Result<Applied<VolumeView>> ClusterBackend::delete_volume(const std::string& name, Wait w) {
  auto before = view(name);
  if (!before) return before.status();
  auto rec = cat_.delete_volume(name, "api: delete");
  if (!rec) return rec.status();
  auto done = poll_until(name, w, [&]() -> Result<bool> {
    auto cur = cat_.volume(name);
    if (cur) return false;
    if (cur.status().code() == Errc::not_found) return true;
    return cur.status();
  });
  if (!done) return done.status();
  if (*done) return Applied<VolumeView>{std::move(*before), true};
  auto v = view(name);
  if (!v && v.status().code() == Errc::not_found) return Applied<VolumeView>{std::move(*before), true};
  if (!v) return v.status();
  return Applied<VolumeView>{std::move(*v), false};
}

Result<std::vector<SnapshotView>> ClusterBackend::snapshots(const std::string& volume) {
  auto v = view(volume);
  if (!v) return v.status();
  return std::move(v->snapshots);
}

namespace {
Result<SnapshotView> find_snapshot(std::vector<SnapshotView>& snaps, const std::string& volume,
                                   const std::string& snap) {
  for (auto& s : snaps) {
    if (s.rec.name == snap) return std::move(s);
  }
  return Status::error(Errc::not_found, "no snapshot {}@{}", volume, snap);
}
}  // namespace

Result<Applied<SnapshotView>> ClusterBackend::create_snapshot(const std::string& volume,
                                                              const std::string& snap, Wait w) {
  auto rec = cat_.create_snapshot(volume, snap);
  if (!rec) return rec.status();
  auto done = poll_until(volume, w, [&]() -> Result<bool> {
    auto snaps = cat_.snapshots(volume);
    if (!snaps) return snaps.status();
    for (const auto& s : *snaps) {
      if (s.name == snap) return s.state == cluster::SnapshotState::ready;
    }
    return Status::error(Errc::not_found, "snapshot {}@{} vanished while being created", volume, snap);
  });
  if (!done) return done.status();
  auto snaps = snapshots(volume);
  if (!snaps) return snaps.status();
  auto s = find_snapshot(*snaps, volume, snap);
  if (!s) return s.status();
  return Applied<SnapshotView>{std::move(*s), *done};
}

Result<Applied<SnapshotView>> ClusterBackend::delete_snapshot(const std::string& volume,
                                                              const std::string& snap, Wait w) {
  auto rec = cat_.delete_snapshot(volume, snap);
  if (!rec) return rec.status();
  auto done = poll_until(volume, w, [&]() -> Result<bool> {
    auto snaps = cat_.snapshots(volume);
    if (!snaps) return snaps.status().code() == Errc::not_found ? Result<bool>(true) : snaps.status();
    return std::none_of(snaps->begin(), snaps->end(), [&](const auto& s) { return s.name == snap; });
  });
  if (!done) return done.status();
  SnapshotView last{std::move(*rec), {}};
  if (!*done) {
    auto snaps = snapshots(volume);
    if (snaps) {
      if (auto s = find_snapshot(*snaps, volume, snap)) last = std::move(*s);
    }
  }
  return Applied<SnapshotView>{std::move(last), *done};
}

Result<ExportView> ClusterBackend::export_of(const std::string& volume) {
  auto v = view(volume);
  if (!v) return v.status();
  return std::move(v->exp);
}

Result<Applied<ExportView>> ClusterBackend::set_export(const cluster::ExportRecord& rec,
                                                       std::int64_t expected_revision, Wait w) {
  auto set = cat_.set_export(rec, expected_revision);
  if (!set) return set.status();
  // The export change bumped the volume's generation: applied once every replica reports it.
  auto vol = cat_.volume(rec.volume);
  if (!vol) return vol.status();
  const std::int64_t generation = vol->generation;
  auto done = poll_until(rec.volume, w, [&] { return replicas_applied(rec.volume, generation, 0); });
  if (!done) return done.status();
  auto e = export_of(rec.volume);
  if (!e) return e.status();
  return Applied<ExportView>{std::move(*e), *done};
}

}  // namespace duplex::api
