#pragma once
// An api::Backend in memory, for the handler's tests and its fuzz target: the catalogue's rules
// (exists, not_found, shrink, generation and revision compares) without etcd. With `apply` set,
// every change counts as applied at once (200/201); without, it stays pending (202).
#include <algorithm>
#include <functional>
#include <map>
#include <string>

#include "duplex/api/backend.h"

namespace duplex::test {

class MemoryBackend final : public api::Backend {
 public:
  bool apply = true;
  std::string metrics_text =
      "# HELP duplex_node_up 1 while the node runs.\n# TYPE duplex_node_up gauge\nduplex_node_up 1\n";
  std::vector<api::NodeView> node_list;
  std::vector<cluster::PoolRecord> pool_list;
  std::function<void()> before_change_insync;  // runs first in change_insync: a racing decider

  api::HealthView health() override { return {"n1", "a", true, true}; }
  Result<std::vector<api::NodeView>> nodes() override { return node_list; }
  Result<std::vector<cluster::PoolRecord>> pools() override { return pool_list; }
  Result<std::vector<api::VolumeView>> volumes() override {
    std::vector<api::VolumeView> out;
    for (const auto& [_, v] : vols_) out.push_back(v);
    return out;
  }
  Result<api::VolumeView> volume(const std::string& name) override {
    auto it = vols_.find(name);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", name);
    return it->second;
  }

  Result<api::Applied<api::VolumeView>> create_volume(const cluster::VolumeSpec& spec, api::Wait w) override {
    if (vols_.count(spec.name)) return Status::error(Errc::exists, "volume {} exists", spec.name);
    std::uint64_t size = spec.size;
    if (!spec.clone_of.empty()) {
      const auto at = spec.clone_of.find('@');
      auto src = vols_.find(spec.clone_of.substr(0, at));
      if (src == vols_.end() || !has_snapshot(src->second, spec.clone_of.substr(at + 1)))
        return Status::error(Errc::not_found, "no snapshot {}", spec.clone_of);
      size = std::max(size, src->second.rec.size);
    }
    if (spec.replicas > 2) return Status::error(Errc::no_space, "no room for {} replicas", spec.replicas);
    api::VolumeView v;
    v.rec.name = spec.name;
    v.rec.uuid = "00000000-0000-4000-8000-" + std::to_string(100000000000 + vols_.size());
    v.rec.size = size;
    v.rec.replicas_wanted = spec.replicas;
    v.rec.replicas = {"n1"};
    v.rec.pool = spec.pool.empty() ? "p0" : spec.pool;
    v.rec.preferred_site = spec.preferred_site;
    v.rec.clone_of = spec.clone_of;
    v.rec.state = done(w) ? cluster::VolumeState::ready : cluster::VolumeState::creating;
    v.exp.rec.volume = spec.name;
    v.exp.iqn = "iqn.2026-11.io.duplex:" + spec.name;
    v.replicas.push_back({"n1", "a", true, std::nullopt});
    if (spec.replicas == 2) {
      v.rec.replicas.push_back("n2");
      v.replicas.push_back({"n2", "b", true, std::nullopt});
    }
    cluster::InSyncRecord set;
    set.volume = spec.name;
    set.uuid = v.rec.uuid;
    set.members = v.rec.replicas;
    set.owner = v.rec.replicas.front();
    set.decided_by = "api";
    set.reason = "created";
    set.mod_revision = ++revision_;
    v.insync = set;
    v.decisions.push_back({1, set.members, "api", "created", "", {}});
    vols_[spec.name] = v;
    return api::Applied<api::VolumeView>{v, done(w)};
  }
  Result<api::Applied<api::VolumeView>> grow_volume(const std::string& name, std::uint64_t size,
                                                    std::int64_t generation, api::Wait w) override {
    auto it = vols_.find(name);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", name);
    auto& v = it->second;
    if (size < v.rec.size) return Status::error(Errc::invalid, "size: volumes only grow");
    if (generation != 0 && generation != v.rec.generation)
      return Status::error(Errc::conflict, "volume {} is at generation {}", name, v.rec.generation);
    v.rec.size = size;
    ++v.rec.generation;
    return api::Applied<api::VolumeView>{v, done(w)};
  }
  Result<api::Applied<api::VolumeView>> delete_volume(const std::string& name, api::Wait w) override {
    auto it = vols_.find(name);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", name);
    if (done(w)) {
      api::VolumeView v = it->second;
      vols_.erase(it);
      return api::Applied<api::VolumeView>{v, true};
    }
    it->second.rec.state = cluster::VolumeState::deleting;
    return api::Applied<api::VolumeView>{it->second, false};
  }
  Result<std::vector<api::SnapshotView>> snapshots(const std::string& volume) override {
    auto it = vols_.find(volume);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", volume);
    return it->second.snapshots;
  }
  Result<api::Applied<api::SnapshotView>> create_snapshot(const std::string& volume, const std::string& snap,
                                                          api::Wait w) override {
    auto it = vols_.find(volume);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", volume);
    if (has_snapshot(it->second, snap))
      return Status::error(Errc::exists, "snapshot {}@{} exists", volume, snap);
    api::SnapshotView s;
    s.rec.volume = volume;
    s.rec.name = snap;
    s.rec.state = done(w) ? cluster::SnapshotState::ready : cluster::SnapshotState::creating;
    it->second.snapshots.push_back(s);
    return api::Applied<api::SnapshotView>{s, done(w)};
  }
  Result<api::Applied<api::SnapshotView>> delete_snapshot(const std::string& volume, const std::string& snap,
                                                          api::Wait w) override {
    auto it = vols_.find(volume);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", volume);
    auto& ss = it->second.snapshots;
    auto s = std::find_if(ss.begin(), ss.end(), [&](const auto& x) { return x.rec.name == snap; });
    if (s == ss.end()) return Status::error(Errc::not_found, "no snapshot {}@{}", volume, snap);
    api::SnapshotView out = *s;
    if (done(w)) {
      ss.erase(s);
    } else {
      s->rec.state = cluster::SnapshotState::deleting;
      out = *s;
    }
    return api::Applied<api::SnapshotView>{out, done(w)};
  }
  Result<api::ExportView> export_of(const std::string& volume) override {
    auto it = vols_.find(volume);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", volume);
    return it->second.exp;
  }
  Result<api::Applied<api::ExportView>> set_export(const cluster::ExportRecord& rec, std::int64_t expected,
                                                   api::Wait w) override {
    auto it = vols_.find(rec.volume);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", rec.volume);
    auto& e = it->second.exp;
    if (expected >= 0 && expected != e.rec.mod_revision)
      return Status::error(Errc::conflict, "export of {} changed", rec.volume);
    e.rec = rec;
    e.rec.mod_revision = ++revision_;
    ++it->second.rec.generation;
    return api::Applied<api::ExportView>{e, done(w)};
  }
  Result<std::int64_t> request_verify(const std::string& volume, bool repair) override {
    if (!vols_.count(volume)) return Status::error(Errc::not_found, "no volume {}", volume);
    verify_requests.emplace_back(volume, repair);
    return static_cast<std::int64_t>(verify_requests.size());
  }
  std::vector<std::pair<std::string, bool>> verify_requests;
  Result<cluster::InSyncRecord> change_insync(const cluster::InSyncRecord& expected,
                                              std::vector<std::string> members, const std::string& decided_by,
                                              const std::string& reason,
                                              std::vector<std::string> may_lose) override {
    if (before_change_insync) before_change_insync();
    auto it = vols_.find(expected.volume);
    if (it == vols_.end()) return Status::error(Errc::not_found, "no volume {}", expected.volume);
    auto& v = it->second;
    if (!v.insync || v.insync->mod_revision != expected.mod_revision)
      return Status::error(Errc::conflict, "the in-sync set of {} changed meanwhile", expected.volume);
    for (const auto& m : members)
      if (std::find(v.rec.replicas.begin(), v.rec.replicas.end(), m) == v.rec.replicas.end())
        return Status::error(Errc::invalid, "members: {} holds no replica", m);
    cluster::InSyncRecord next = *v.insync;
    next.generation = expected.generation + 1;
    next.members = std::move(members);
    next.owner = next.members.at(0);
    next.decided_by = decided_by;
    next.reason = reason;
    next.mod_revision = ++revision_;
    v.insync = next;
    v.decisions.push_back({next.generation, next.members, decided_by, reason, "", std::move(may_lose)});
    return next;
  }
  // Drains live on the node list, as ClusterBackend shows them.
  Result<cluster::DrainRecord> drain_node(const std::string& node, const std::string& by,
                                          const std::string& reason) override {
    cluster::DrainRecord d{node, reason, by, "2026-11-25T04:00:00Z"};
    auto it =
        std::find_if(node_list.begin(), node_list.end(), [&](const auto& n) { return n.rec.name == node; });
    if (it == node_list.end()) {
      node_list.emplace_back();
      it = std::prev(node_list.end());
      it->rec.name = node;
    }
    it->drain = d;
    return d;
  }
  Status resume_node(const std::string& node) override {
    for (auto& n : node_list)
      if (n.rec.name == node && n.drain) {
        n.drain.reset();
        return Status::ok();
      }
    return Status::error(Errc::not_found, "node '{}' is not drained", node);
  }

  std::string metrics() override { return metrics_text; }

  // A volume as stored, for a test to set reports or the in-sync set as the nodes would.
  api::VolumeView& stored(const std::string& volume) { return vols_.at(volume); }

  // Bumps the stored export's revision as a concurrent writer would.
  void touch_export(const std::string& volume) { vols_.at(volume).exp.rec.mod_revision = ++revision_; }

 private:
  bool done(const api::Wait& w) const { return apply && w.wait; }
  static bool has_snapshot(const api::VolumeView& v, const std::string& snap) {
    return std::any_of(v.snapshots.begin(), v.snapshots.end(),
                       [&](const auto& s) { return s.rec.name == snap; });
  }
  std::map<std::string, api::VolumeView> vols_;
  std::int64_t revision_ = 0;
};

}  // namespace duplex::test
