#include "duplex/daemon/daemon.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <thread>

#include <spdlog/spdlog.h>
#include <asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include "duplex/api/cluster_backend.h"
#include "duplex/api/server.h"
#include "duplex/cluster/node_agent.h"
#include "duplex/daemon/catalogue_arbiter.h"
#include "duplex/daemon/iscsi_targets.h"
#include "duplex/daemon/mem_volume.h"
#include "duplex/daemon/mirror_listener.h"
#include "duplex/daemon/node_metrics.h"
#include "duplex/daemon/pr_store.h"
#include "duplex/daemon/reconciler.h"
#include "duplex/daemon/shared_volume.h"
#include "duplex/iscsi/portal.h"
#include "duplex/iscsi/target.h"
#include "duplex/mirror/mirror_volume.h"
#include "duplex/mirror/replica_meta.h"
#include "duplex/nbd/server.h"
#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/listen.h"
#include "duplex/reactor/uring.h"
#include "duplex/reactor/uring_device.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/scsi/reservations.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "duplex/volume/metered_volume.h"

namespace duplex::daemon {

namespace {

struct PoolState {
  PoolConfig cfg;
  int loop = 0;
  std::unique_ptr<BlockDevice> dev;
  std::unique_ptr<store::Pool> pool;
};

struct Entry {
  nbd::ExportInfo info;
  std::unique_ptr<volume::BlockVolume> vol;
};

// Built at startup; with [cluster] the reconciler adds and removes entries at runtime, so every
// lookup takes the lock (entries_ is touched without it only before the front-ends start). A
// removed entry moves to retired_ and lives until shutdown: a session that opened it keeps a valid
// BlockVolume, whose I/O fails with not_found once the pool object is gone.
class Catalogue final : public nbd::ExportCatalogue {
 public:
  std::optional<nbd::ExportInfo> lookup(std::string_view name) const override {
    std::shared_lock lk(mu_);
    if (name.empty()) name = default_;
    for (const auto& e : entries_)
      if (e.info.name == name) return e.info;
    return std::nullopt;
  }
  std::vector<nbd::ExportInfo> list() const override {
    std::shared_lock lk(mu_);
    std::vector<nbd::ExportInfo> v;
    v.reserve(entries_.size());
    for (const auto& e : entries_) v.push_back(e.info);
    return v;
  }
  volume::BlockVolume* volume(const std::string& name) override {
    std::shared_lock lk(mu_);
    for (auto& e : entries_)
      if (e.info.name == name) return e.vol.get();
    return nullptr;
  }
  Entry* find_locked(const std::string& name) {
    for (auto& e : entries_)
      if (e.info.name == name) return &e;
    return nullptr;
  }
  void retire_locked(const std::string& name) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->info.name == name) {
        retired_.push_back(std::move(*it));
        entries_.erase(it);
        return;
      }
  }
  std::size_t size() const {
    std::shared_lock lk(mu_);
    return entries_.size();
  }
  mutable std::shared_mutex mu_;
  std::vector<Entry> entries_;
  std::vector<Entry> retired_;
  std::string default_;
};

// The iSCSI targets: built at startup, changed at runtime by the reconciler under the lock. A
// Target is immutable once published (sessions hold pointers to it): a change publishes a new one
// and retires the old, which stays alive until shutdown.
class IscsiCatalogue final : public iscsi::TargetCatalogue {
 public:
  const iscsi::Target* find(std::string_view iqn) const override {
    std::shared_lock lk(mu_);
    for (const auto& t : targets_)
      if (t->name == iqn) return t.get();
    return nullptr;
  }
  std::vector<const iscsi::Target*> targets() const override {
    std::shared_lock lk(mu_);
    std::vector<const iscsi::Target*> v;
    v.reserve(targets_.size());
    for (const auto& t : targets_) v.push_back(t.get());
    return v;
  }
  void retire_locked(const std::string& iqn) {
    for (auto it = targets_.begin(); it != targets_.end(); ++it)
      if ((*it)->name == iqn) {
        retired_.push_back(std::move(*it));
        targets_.erase(it);
        return;
      }
  }
  std::size_t size() const {
    std::shared_lock lk(mu_);
    return targets_.size();
  }
  mutable std::shared_mutex mu_;
  std::vector<std::unique_ptr<iscsi::Target>> targets_;
  std::vector<std::unique_ptr<iscsi::Target>> retired_;
};

iscsi::Access iscsi_access(cluster::Access a) {
  switch (a) {
    case cluster::Access::none: return iscsi::Access::none;
    case cluster::Access::read_only: return iscsi::Access::read_only;
    case cluster::Access::read_write: return iscsi::Access::read_write;
  }
  return iscsi::Access::none;
}

bool same_target(const iscsi::Target& a, const iscsi::Target& b) {
  if (a.default_access != b.default_access || a.acl != b.acl || a.luns.size() != b.luns.size()) return false;
  for (std::size_t i = 0; i < a.luns.size(); ++i)
    if (a.luns[i].lu != b.luns[i].lu) return false;
  return true;
}

std::string_view access_name(iscsi::Access a) {
  switch (a) {
    case iscsi::Access::none: return "none";
    case iscsi::Access::read_only: return "read-only";
    case iscsi::Access::read_write: return "read-write";
  }
  return "?";
}

// VPD 0x80 serial: the volume UUID as 32 hex digits, identical on every node that serves it.
// The pool volume behind a served volume (every served volume is wrapped in a MeteredVolume).
volume::LocalVolume* local_of(volume::BlockVolume* v) {
  if (auto* m = dynamic_cast<volume::MeteredVolume*>(v)) v = &m->inner();
  return dynamic_cast<volume::LocalVolume*>(v);
}

std::string serial_of(const Uuid& u) {
  std::string s;
  for (char ch : u.to_string())
    if (ch != '-') s.push_back(ch);
  return s;
}

}  // namespace

// What apply() found in the pool for one cluster volume (written on the pool's loop, read by the
// reconciler's thread for publish(): under Impl::applied_mu).
struct AppliedObjects {
  int loop = 0;
  store::Pool* pool = nullptr;
  std::string pool_name;
  store::ObjectId id = 0;
  std::uint64_t size = 0;
  bool created = false;  // this apply created the pool object (a new volume's first replica here)
  std::map<std::string, std::pair<store::ObjectId, std::uint64_t>> snapshots;  // name -> id, size
};

// A mirrored volume's replica on this node (replicas = 2): its MirrorVolume over the pool object,
// the metadata file under it and the arbiter. Built and stopped by the reconciler's thread on the
// pool's loop; looked up by the mirror listener (loop 0) under Impl::mirrors_mu. A slot is never
// destroyed before shutdown: a retired one stays for the sessions and link handlers that still
// hold its volume.
struct MirrorSlot {
  std::string volume;
  std::string uuid;
  int loop = 0;
  store::ObjectId id = 0;
  std::string meta_path;
  // Declared before `vol`, so destroyed after it: the ReplicaMeta inside points at this device.
  std::unique_ptr<BlockDevice> meta_dev;
  std::shared_ptr<CatalogueArbiter> arbiter;
  std::shared_ptr<mirror::MirrorVolume> vol;
  // The online verify: the request taken (reconciler thread), and its outcome (on the loop).
  std::atomic<std::int64_t> verify_taken{0};
  std::int64_t verify_request = 0;
  std::string verify_state, verify_error;
  std::uint64_t verify_checked = 0, verify_mismatches = 0, verify_repaired = 0;
  // Drain (on the loop): a step_down in progress, and why the last one was refused (logged once).
  bool stepping_down = false;
  std::string drain_refused;
};

// Where each node's mirror port is (node records), read by the mirrors' dialers on their loops.
struct PeerBook {
  std::mutex mu;
  std::map<std::string, std::string> addrs;  // node -> "host:port"
  // Nodes drained for maintenance (drains/<node>) -> the drain's reason: the replicas there
  // step out of the in-sync sets, the peers' owners do not add them back.
  std::map<std::string, std::string> drained;
};

namespace {

// The MirrorVolume an entry's volume forwards to, if any (entries are MeteredVolume-wrapped).
const volume::BlockVolume* shared_target(volume::BlockVolume* v) {
  if (auto* m = dynamic_cast<volume::MeteredVolume*>(v)) v = &m->inner();
  auto* sv = dynamic_cast<SharedVolume*>(v);
  return sv ? sv->target() : nullptr;
}

// The MirrorVolume a front-end serves, sharing ownership of its whole slot (the metadata device
// must outlive the volume).
std::shared_ptr<mirror::MirrorVolume> served(const std::shared_ptr<MirrorSlot>& slot) {
  return {slot, slot->vol.get()};
}

}  // namespace

struct Daemon::Impl final : ReconcilerHost, api::LocalNode {
  Config cfg;
  std::unique_ptr<LoopGroup> loops;
  std::vector<std::unique_ptr<Ring>> rings;  // per loop, null where io_uring is unavailable
  std::vector<PoolState> pools;
  Catalogue cat;
  std::unique_ptr<nbd::Server> server;
  // iSCSI: one LogicalUnit per export some target uses (over the export's BlockVolume, on its
  // loop), the targets, and the portal. Destroyed portal first, then the LUs, then the volumes.
  std::map<std::string, std::unique_ptr<scsi::LogicalUnit>> lus;  // export name -> LU
  std::vector<TargetPlan> iscsi_plans;
  IscsiCatalogue iscsi_targets;
  std::unique_ptr<iscsi::Portal> portal;
  std::unique_ptr<cluster::NodeAgent> agent;  // [cluster]: this node's liveness key in etcd
  std::unique_ptr<Reconciler> reconciler;     // [cluster]: applies the volume catalogue here
  std::atomic<bool> reconciler_stop{false};   // abandons waits on a loop (shutdown runs on loop 0)
  std::mutex applied_mu;
  std::map<std::string, AppliedObjects> applied;           // cluster volume -> its objects here
  std::mutex publish_mu;                                   // one publish/unpublish at a time
  std::map<std::string, std::set<std::string>> published;  // cluster volume -> export names
  // export name -> (the volume it serves, the LU), for exports the reconciler published
  std::map<std::string, std::pair<volume::BlockVolume*, std::unique_ptr<scsi::LogicalUnit>>> dyn_lus;
  std::map<std::string, Entry> iscsi_only;  // volumes of exports with nbd = false (no NBD entry)
  std::vector<std::unique_ptr<scsi::LogicalUnit>> retired_lus;
  // I/O statistics per export name, kept across re-publishing (a grow or an export change
  // replaces the volume object, not its counters).
  std::mutex stats_mu;
  std::map<std::string, std::shared_ptr<volume::VolumeStats>> stats;
  std::unique_ptr<cluster::Etcd> api_etcd;  // [api]: the API's own etcd client and catalogue
  std::unique_ptr<cluster::Catalogue> api_catalogue;
  std::unique_ptr<api::LocalNode> api_node;
  std::unique_ptr<api::ClusterBackend> api_backend;
  std::unique_ptr<api::Server> api_server;
  // Volumes and exports this node's configuration (or command line) declares: with [cluster],
  // the only pool objects served before the reconciler has read the catalogue.
  std::set<std::string> declared;
  std::atomic<bool> etcd_answered{false};
  // Mirrored volumes (replicas = 2) held here, by volume name; the listener finds them by uuid.
  std::mutex mirrors_mu;
  std::map<std::string, std::shared_ptr<MirrorSlot>> mirrors;
  std::vector<std::shared_ptr<MirrorSlot>> retired_mirrors;
  std::shared_ptr<PeerBook> peer_book = std::make_shared<PeerBook>();
  std::unique_ptr<MirrorListener> mirror_listener;
  std::shared_ptr<const TlsContext> mirror_tls;  // [mirror] tls = "on": every link, both ways
  std::unique_ptr<asio::signal_set> signals;
  bool stopping = false;
  int exit_code = 0;

  std::unique_ptr<volume::BlockVolume> metered(const std::string& name,
                                               std::unique_ptr<volume::BlockVolume> v) {
    std::lock_guard lk(stats_mu);
    auto& st = stats[name];
    if (!st) st = std::make_shared<volume::VolumeStats>();
    return std::make_unique<volume::MeteredVolume>(std::move(v), st);
  }

  // Runs a startup task for the pool of loop `l` before the loops run.
  template <typename T>
  T startup_wait(int l, Task<T> t) {
    Ring* r = rings[static_cast<std::size_t>(l)].get();
    return sync_wait(std::move(t), [r] {
      if (r) r->wait();
    });
  }

  Status open_pool(PoolState& ps) {
    const auto& pc = ps.cfg;
    struct stat st{};
    const bool exists = ::stat(pc.path.c_str(), &st) == 0;
    if (!exists && pc.create_size == 0)
      return Status::error(Errc::not_found, "pool {}: {} does not exist (set create_size to create it)",
                           pc.name, pc.path);
    DeviceOptions o;
    o.create = !exists;
    o.create_size = pc.create_size;
    o.direct = pc.direct;
    o.use_uring = pc.io != "sync";
    Ring* ring = rings[static_cast<std::size_t>(ps.loop)].get();
    if (pc.io == "uring" && !ring)
      return Status::error(Errc::unsupported, "pool {}: io = \"uring\" but io_uring is not available",
                           pc.name);
    auto dev = open_block_device(pc.path, o, o.use_uring ? ring : nullptr);
    if (!dev) {
      if (dev.status().code() == Errc::busy)
        return Status::error(Errc::busy,
                             "pool {}: {} is in use by another process (is another duplexd running?)",
                             pc.name, pc.path);
      return Status::error(dev.status().code(), "pool {}: {}", pc.name, dev.status().message());
    }
    ps.dev = std::move(*dev);
    if (!exists) {
      store::PoolOptions po;
      po.name = pc.name;
      po.cluster_size = pc.cluster_size;
      auto p = startup_wait(ps.loop, store::Pool::create(*ps.dev, po));
      if (!p) {
        ps.dev.reset();
        ::unlink(pc.path.c_str());
        return Status::error(p.status().code(), "pool {}: cannot create: {}", pc.name, p.status().message());
      }
      ps.pool = std::move(*p);
      spdlog::info("event=pool.created pool={} path={} size={}", pc.name, pc.path, pc.create_size);
    } else {
      auto p = startup_wait(ps.loop, store::Pool::open(*ps.dev));
      if (!p)
        return Status::error(p.status().code(), "pool {}: cannot open: {}", pc.name, p.status().message());
      ps.pool = std::move(*p);
    }
    const auto info = ps.pool->info();
    spdlog::info("event=pool.open pool={} path={} device_bytes={} free_clusters={} io={} loop={}", pc.name,
                 pc.path, info.device_bytes, info.free_clusters, ring && o.use_uring ? "io_uring" : "sync",
                 ps.loop);
    return Status::ok();
  }

  Status ensure_volume(const VolumeConfig& v) {
    for (auto& ps : pools) {
      if (ps.cfg.name != v.pool) continue;
      if (auto id = ps.pool->find(v.name); id) {
        auto info = ps.pool->stat(*id);
        if (info && info->size != v.size)
          spdlog::warn("event=volume.size_mismatch volume={} configured={} actual={}", v.name, v.size,
                       info->size);
        return Status::ok();
      }
      auto r = startup_wait(ps.loop, ps.pool->create_volume(v.name, v.size));
      if (!r) return Status::error(r.status().code(), "volume {}: {}", v.name, r.status().message());
      spdlog::info("event=volume.created pool={} volume={} size={}", v.pool, v.name, v.size);
      return Status::ok();
    }
    return Status::error(Errc::not_found, "volume {}: pool '{}' is not configured", v.name, v.pool);
  }

  Status ensure_snapshot(const std::string& full) {
    const auto at = full.find('@');
    if (at == std::string::npos || at == 0 || at + 1 == full.size())
      return Status::error(Errc::invalid, "--snapshot '{}': expected VOLUME@SNAPSHOT", full);
    const std::string vol = full.substr(0, at), snap = full.substr(at + 1);
    for (auto& ps : pools) {
      auto id = ps.pool->find(vol);
      if (!id) continue;
      if (ps.pool->find(full)) return Status::ok();
      auto r = startup_wait(ps.loop, ps.pool->snapshot(*id, snap));
      if (!r) return Status::error(r.status().code(), "snapshot {}: {}", full, r.status().message());
      spdlog::info("event=snapshot.created pool={} snapshot={}", ps.cfg.name, full);
      return Status::ok();
    }
    return Status::error(Errc::not_found, "--snapshot {}: no volume named {}", full, vol);
  }

  Status build_catalogue() {
    std::map<std::string, std::string> owner;  // export name -> pool
    auto add = [&](Entry e, const std::string& pool) -> Status {
      auto [it, fresh] = owner.emplace(e.info.name, pool);
      if (!fresh)
        return Status::error(Errc::exists, "export '{}' exists in pools {} and {}", e.info.name, it->second,
                             pool);
      cat.entries_.push_back(std::move(e));
      return Status::ok();
    };
    for (auto& ps : pools) {
      const auto objs = ps.pool->list();
      std::map<store::ObjectId, const store::ObjectInfo*> by_id;
      for (const auto& o : objs) by_id[o.id] = &o;
      for (const auto& o : objs) {
        std::string name = o.name;
        std::vector<std::string> snaps;
        store::ObjectId vol_id = o.kind == store::ObjectKind::volume ? o.id : o.origin;
        if (o.kind == store::ObjectKind::snapshot) {
          auto it = by_id.find(o.origin);
          if (it == by_id.end()) continue;
          name = it->second->name + "@" + o.name;
        }
        for (const auto& s : objs)
          if (s.kind == store::ObjectKind::snapshot && s.origin == vol_id &&
              (o.kind == store::ObjectKind::volume || s.epoch < o.epoch))
            snaps.push_back(s.name);
        // With [cluster], the catalogue's volumes are published by the reconciler only, with their
        // export records (access, ACLs) read first: serving them here, before those records are
        // known, would let any initiator write to a volume its ACL makes read-only. The node
        // serves at startup only what its own configuration declares.
        if (!cfg.etcd.empty()) {
          const std::string vol = o.kind == store::ObjectKind::snapshot ? by_id.at(o.origin)->name : o.name;
          if (!declared.count(vol) && !declared.count(name)) continue;
        }
        Entry e;
        e.info.name = name;
        e.info.size = o.size;
        e.info.read_only = o.kind == store::ObjectKind::snapshot;
        e.info.snapshots = snaps;
        e.info.loop = ps.loop;
        e.info.description = fmt::format("{} {} in pool {} ({})",
                                         o.kind == store::ObjectKind::snapshot ? "snapshot" : "volume", name,
                                         ps.cfg.name, o.uuid.to_string());
        e.vol = metered(name, std::make_unique<volume::LocalVolume>(*ps.pool, o.id, name, e.info.read_only));
        e.info.preferred_block = e.vol->preferred_block_size();
        DPX_TRY(add(std::move(e), ps.cfg.name));
      }
    }
    for (const auto& m : cfg.memory_exports) {
      Entry e;
      e.info.name = m.name;
      e.info.size = m.size;
      e.info.loop = 0;
      e.info.description = "in-memory volume (contents are lost when duplexd stops)";
      e.vol = metered(m.name, std::make_unique<MemVolume>(m.name, m.size));
      DPX_TRY(add(std::move(e), "(memory)"));
    }
    if (!cfg.exports.empty()) {
      // An explicit list: only these, with their options.
      std::vector<Entry> keep;
      for (const auto& x : cfg.exports) {
        bool found = false;
        for (auto& e : cat.entries_) {
          if (e.info.name != x.name || !e.vol) continue;
          e.info.read_only = e.info.read_only || x.read_only;
          if (x.read_only && !e.vol->read_only()) {
            // LocalVolume with the forced read-only flag.
            if (auto* lv = local_of(e.vol.get())) {
              for (auto& ps : pools)
                if (ps.cfg.name == owner[e.info.name])
                  e.vol = metered(e.info.name, std::make_unique<volume::LocalVolume>(*ps.pool, lv->object(),
                                                                                     e.info.name, true));
            }
          }
          if (!x.description.empty()) e.info.description = x.description;
          keep.push_back(std::move(e));
          found = true;
          break;
        }
        if (!found)
          return Status::error(Errc::not_found, "[[export]] '{}': no such volume or snapshot", x.name);
      }
      cat.entries_ = std::move(keep);
    }
    cat.default_ = cfg.default_export;
    if (cat.default_.empty()) {
      // The only writable volume, if there is exactly one, is the default export.
      std::string only;
      int n = 0;
      for (const auto& e : cat.entries_)
        if (!e.info.read_only) {
          only = e.info.name;
          ++n;
        }
      if (n == 1) cat.default_ = only;
    } else if (!cat.lookup(cat.default_)) {
      return Status::error(Errc::not_found, "nbd.default_export '{}' is not an export", cat.default_);
    }
    return Status::ok();
  }

  // The iSCSI side: targets from the configuration (or one per export), a LogicalUnit per export
  // they use with its persistent-reservation state restored, then the catalogue the portal serves.
  Status build_iscsi() {
    const auto& ic = cfg.iscsi;
    if (ic.listen.empty()) return Status::ok();
    std::vector<ExportView> views;
    views.reserve(cat.entries_.size());
    for (const auto& e : cat.entries_) views.push_back({e.info.name, e.info.read_only || e.vol->read_only()});
    auto plans = plan_iscsi_targets(ic, views);
    if (!plans) return plans.status();
    iscsi_plans = std::move(*plans);

    PrStore prs(cfg.state_dir);
    if (auto st = prs.prepare(); !st)
      return Status::error(st.code(), "state_dir {}: {}", cfg.state_dir, st.message());
    auto entry = [&](const std::string& name) -> Entry* {
      for (auto& e : cat.entries_)
        if (e.info.name == name) return &e;
      return nullptr;
    };
    for (const auto& plan : iscsi_plans) {
      for (const auto& name : plan.luns) {
        if (lus.count(name)) continue;
        Entry* e = entry(name);
        if (!e) return Status::error(Errc::not_found, "iSCSI target {}: no export '{}'", plan.name, name);
        scsi::LuConfig lc;
        lc.serial = serial_of(e->vol->uuid());
        lc.block_size = 512;
        lc.relative_port = 1;
        lc.tpg_id = ic.tpgt;
        // An export in several targets has one LU: its VPD 0x83 names the first target's port.
        lc.target_port_name = fmt::format("{},t,0x{:04x}", plan.name, ic.tpgt);
        lc.port_groups = {scsi::TargetPortGroup{ic.tpgt, scsi::AluaState::active_optimized, false, {1}}};
        auto lu = std::make_unique<scsi::LogicalUnit>(*e->vol, lc);
        // APTPL state lives with pool volumes only: an in-memory export is gone after a restart.
        if (local_of(e->vol.get())) DPX_TRY(restore_pr(prs, name, *e->vol, *lu));
        lus.emplace(name, std::move(lu));
      }
    }
    for (const auto& plan : iscsi_plans) {
      iscsi::Target t;
      t.name = plan.name;
      t.alias = plan.alias;
      t.acl = plan.acl;
      t.default_access = plan.default_access;
      t.chap = plan.chap;
      for (std::size_t i = 0; i < plan.luns.size(); ++i) {
        const Entry* e = entry(plan.luns[i]);
        t.luns.push_back(iscsi::Lun{i, lus.at(plan.luns[i]).get(), e->info.loop});
      }
      t.loop = t.luns.front().loop;
      spdlog::info("event=iscsi.target target={} luns={} default_access={} acl={} chap={}", t.name,
                   fmt::join(plan.luns, ","), access_name(t.default_access), t.acl.size(),
                   !t.chap                 ? "none"
                   : t.chap->target_secret ? "mutual"
                                           : "one-way");
      iscsi_targets.targets_.push_back(std::make_unique<iscsi::Target>(std::move(t)));
    }
    return Status::ok();
  }

  // Restores APTPL reservations saved by an earlier run and installs the hook that saves them.
  static Status restore_pr(const PrStore& prs, const std::string& name, const volume::BlockVolume& vol,
                           scsi::LogicalUnit& lu) {
    const Uuid id = vol.uuid();
    auto saved = prs.load(id);
    if (!saved) return Status::error(saved.status().code(), "export {}: {}", name, saved.status().message());
    const auto& now = lu.reservations().state();
    if (*saved && (now.generation != 0 || !now.registrations.empty())) {
      // The mirror's peer already gave this LU the volume's current reservations (newer than
      // anything this node saved before it stopped).
      spdlog::info("event=pr.from_peer export={} registrations={} reserved={} generation={}", name,
                   now.registrations.size(), now.holder.has_value(), now.generation);
    } else if (*saved) {
      if ((*saved)->aptpl) {
        spdlog::info("event=pr.restored export={} file={} registrations={} reserved={} generation={}", name,
                     prs.path(id), (*saved)->registrations.size(), (*saved)->holder.has_value(),
                     (*saved)->generation);
        lu.reservations().restore(std::move(**saved));
      } else {
        // Never written by us (a state without APTPL removes the file); do not resurrect it.
        spdlog::warn("event=pr.ignored export={} file={} reason=\"APTPL is not set in the saved state\"",
                     name, prs.path(id));
        DPX_TRY(prs.remove(id));
      }
    }
    // Called on the LU's event loop after every reservation change, before the PERSISTENT RESERVE
    // OUT is answered: an error undoes the change and fails the command, so what an initiator was
    // told survives a restart. The write is synchronous (a few hundred bytes, fsync, rename, fsync
    // of the directory): it stalls that loop for the fsyncs, acceptable while PR OUT is rare
    // (cluster start, failover).
    lu.set_persist_hook([prs, id, name](const scsi::PrState& s) -> Status {
      const Status st = s.aptpl ? prs.save(id, s) : prs.remove(id);
      if (!st)
        spdlog::error("event=pr.persist_failed export={} aptpl={} error=\"{}\"", name, s.aptpl, st.message());
      else
        spdlog::debug("event=pr.persisted export={} aptpl={} registrations={} generation={}", name, s.aptpl,
                      s.registrations.size(), s.generation);
      return st;
    });
    return Status::ok();
  }

  // --- ReconcilerHost: called from the reconciler's worker thread ---

  PoolState* pool_named(const std::string& name) {
    for (auto& ps : pools)
      if (ps.cfg.name == name) return &ps;
    return nullptr;
  }

  // Runs `t` on loop `l` and waits for it from this (non-loop) thread. Shutdown runs on loop 0
  // and stops the reconciler: the wait is abandoned then (the task still completes on its loop).
  template <typename T>
  Result<T> on_loop(int l, Task<Result<T>> t) {
    struct Shared {
      std::mutex m;
      std::condition_variable cv;
      std::optional<Result<T>> out;
    };
    auto sh = std::make_shared<Shared>();
    auto task = std::make_shared<Task<Result<T>>>(std::move(t));
    loops->at(l).post([sh, task] {
      spawn(std::move(*task), [sh](Result<T> r) {
        std::lock_guard lk(sh->m);
        sh->out.emplace(std::move(r));
        sh->cv.notify_all();
      });
    });
    std::unique_lock lk(sh->m);
    while (!sh->out) {
      if (reconciler_stop.load()) return Status::error(Errc::shutdown, "duplexd is stopping");
      sh->cv.wait_for(lk, std::chrono::milliseconds(100));
    }
    return std::move(*sh->out);
  }

  std::vector<std::string> pool_names() override {
    std::vector<std::string> v;
    v.reserve(pools.size());
    for (const auto& ps : pools) v.push_back(ps.cfg.name);
    return v;
  }

  static Task<Result<cluster::PoolRecord>> pool_report_on_loop(store::Pool* p) {
    const auto info = p->info();
    cluster::PoolRecord r;
    r.name = info.name;
    r.uuid = info.uuid.to_string();
    r.cluster_size = info.cluster_size;
    r.size = info.data_clusters * info.cluster_size;
    r.free = info.free_clusters * info.cluster_size;
    r.volumes = 0;
    for (const auto& o : p->list())
      if (o.kind == store::ObjectKind::volume) ++r.volumes;
    co_return r;
  }

  Result<cluster::PoolRecord> pool_report(const std::string& name) override {
    PoolState* ps = pool_named(name);
    if (!ps) return Status::error(Errc::not_found, "pool '{}' is not configured here", name);
    auto r = on_loop(ps->loop, pool_report_on_loop(ps->pool.get()));
    if (r) r->name = name;  // the configured name is the one the catalogue uses
    return r;
  }

  // On the pool's loop: the pool's catalogue is only touched there.
  static Task<Result<AppliedObjects>> apply_on_loop(store::Pool* p, cluster::VolumeRecord v,
                                                    std::vector<cluster::SnapshotRecord> snaps,
                                                    bool mirrored) {
    const auto want = Uuid::parse(v.uuid);
    if (!want) co_return Status::error(Errc::invalid, "volume {}: uuid '{}' is not a UUID", v.name, v.uuid);
    AppliedObjects out;
    auto id = p->find(v.name);
    if (!id) {
      if (!v.clone_of.empty()) {
        auto sid = p->find(v.clone_of);
        if (!sid)
          co_return Status::error(Errc::not_found, "volume {}: clone source {} is not in the pool", v.name,
                                  v.clone_of);
        id = co_await p->clone(*sid, v.name, want);
      } else {
        id = co_await p->create_volume(v.name, v.size, want);
      }
      if (!id) co_return id.status();
      out.created = true;
      spdlog::info("event=reconciler.created volume={} uuid={} size={} clone_of={}", v.name, v.uuid, v.size,
                   v.clone_of);
    } else if (p->uuid_of(*id) != *want) {
      // Same name, another volume (made by hand or by [[volume]]): never serve it as this one.
      co_return Status::error(Errc::exists,
                              "volume {}: the pool holds a volume of that name with uuid {}, not {}", v.name,
                              p->uuid_of(*id).to_string(), v.uuid);
    }
    if (p->size_of(*id) < v.size) {
      // A mirrored volume's pool object grows first (it can then hold the new size); the size it
      // serves moves only when its mirror commits the grow with the peer (ensure_mirror).
      DPX_CO_TRY(co_await p->grow(*id, v.size));
      spdlog::info("event=reconciler.grown volume={} size={}{}", v.name, v.size,
                   mirrored ? " (the replica; the mirror commits the served size)" : "");
    }
    for (const auto& s : snaps) {
      const std::string full = v.name + "@" + s.name;
      auto sid = p->find(full);
      if (s.state == cluster::SnapshotState::deleting) {
        if (sid) {
          DPX_CO_TRY(co_await p->remove(*sid));
          spdlog::info("event=reconciler.snapshot_deleted snapshot={}", full);
        }
      } else if (!sid) {
        auto r = co_await p->snapshot(*id, s.name);
        if (!r) co_return r.status();
        spdlog::info("event=reconciler.snapshot_created snapshot={}", full);
      }
    }
    out.pool = p;
    out.id = *id;
    out.size = p->size_of(*id);
    for (const auto& o : p->list())
      if (o.kind == store::ObjectKind::snapshot && o.origin == *id) out.snapshots[o.name] = {o.id, o.size};
    co_return out;
  }

  Result<AppliedVolume> apply(const cluster::VolumeRecord& v,
                              const std::vector<cluster::SnapshotRecord>& snaps,
                              const std::optional<cluster::InSyncRecord>& insync) override {
    PoolState* ps = pool_named(v.pool);
    if (!ps)
      return Status::error(Errc::not_found, "volume {}: pool '{}' is not configured on this node", v.name,
                           v.pool);
    const bool mirrored = v.replicas.size() > 1;
    auto r = on_loop(ps->loop, apply_on_loop(ps->pool.get(), v, snaps, mirrored));
    if (!r) return r.status();
    if (mirrored) {
      r->loop = ps->loop;
      r->pool_name = ps->cfg.name;
      DPX_TRY(ensure_mirror(v, *r, insync));
      // The front-ends serve what the mirror serves: the old size until both replicas hold the
      // new one (a grow in progress), not the pool object's.
      if (auto slot = mirror_slot(v.name)) r->size = slot->vol->size();
    }
    r->loop = ps->loop;
    r->pool_name = ps->cfg.name;
    AppliedVolume out;
    out.size = r->size;
    for (const auto& [name, obj] : r->snapshots) out.snapshots.push_back(name);
    // Allocated bytes: a stat walks the object's map, so it runs on the loop too.
    store::Pool* p = ps->pool.get();
    const store::ObjectId id = r->id;
    auto st = on_loop(ps->loop, [](store::Pool* pp, store::ObjectId oid) -> Task<Result<store::ObjectInfo>> {
      co_return pp->stat(oid);
    }(p, id));
    if (st) out.allocated_bytes = st->mapped_bytes;
    std::lock_guard lk(applied_mu);
    applied[v.name] = std::move(*r);
    return out;
  }

  // The removed object's uuid ("" if there was none): its mirror metadata file goes with it.
  static Task<Result<std::string>> remove_on_loop(store::Pool* p, std::string name) {
    auto id = p->find(name);
    if (!id) co_return std::string();
    const std::string uuid = p->uuid_of(*id).to_string();
    DPX_CO_TRY(co_await p->remove(*id, true));
    co_return uuid;
  }

  Status remove(const std::string& pool, const std::string& volume) override {
    drop_mirror(volume);
    PoolState* ps = pool_named(pool);
    if (!ps) return Status::ok();  // nothing of it can be here
    auto r = on_loop(ps->loop, remove_on_loop(ps->pool.get(), volume));
    if (!r) return r.status();
    if (!r->empty()) {
      const std::string meta = cfg.state_dir + "/mirror/" + *r + ".meta";
      if (::unlink(meta.c_str()) == 0)
        spdlog::info("event=mirror.meta_removed volume={} file={}", volume, meta);
    }
    std::lock_guard lk(applied_mu);
    applied.erase(volume);
    return Status::ok();
  }

  // --- mirrored volumes (replicas = 2) ---

  std::shared_ptr<MirrorSlot> mirror_slot(const std::string& volume) {
    std::lock_guard lk(mirrors_mu);
    auto it = mirrors.find(volume);
    return it == mirrors.end() ? nullptr : it->second;
  }

  // Builds and starts this node's MirrorVolume of `v` unless it runs already (reconciler thread).
  Status ensure_mirror(const cluster::VolumeRecord& v, const AppliedObjects& a,
                       const std::optional<cluster::InSyncRecord>& insync) {
    if (auto cur = mirror_slot(v.name)) {
      if (cur->uuid == v.uuid && cur->id == a.id) {
        // The set may have changed behind the engine (an operator's promote): let it re-read.
        if (insync) {
          const auto gen = static_cast<std::uint64_t>(insync->generation);
          loops->at(cur->loop).post([cur, gen] { spawn(reload_on_loop(cur->vol, gen)); });
        }
        if (v.size > cur->vol->size()) {
          auto g = on_loop(cur->loop, grow_mirror_on_loop(cur, v.size));
          if (!g) return Status::error(g.status().code(), "volume {}: {}", v.name, g.status().message());
        }
        return Status::ok();
      }
      drop_mirror(v.name);  // another volume under that name (deleted and created again)
    }
    if (cfg.mirror_listen.empty())
      return Status::error(Errc::invalid,
                           "volume {} is mirrored but this node has no [cluster] mirror_listen: its peer "
                           "cannot reach it",
                           v.name);
    if (!insync)
      return Status::error(Errc::not_found, "volume {}: no in-sync record in etcd (insync/{})", v.name,
                           v.name);
    if (insync->uuid != v.uuid)
      return Status::error(Errc::conflict, "volume {}: the in-sync record is for uuid {}, not {}", v.name,
                           insync->uuid, v.uuid);
    std::string peer;
    for (const auto& n : v.replicas)
      if (n != cfg.node_name) peer = n;
    if (peer.empty() || v.replicas.size() != 2)
      return Status::error(Errc::unsupported, "volume {}: replicas {} (a mirror has exactly two nodes)",
                           v.name, fmt::join(v.replicas, ","));
    auto slot = std::make_shared<MirrorSlot>();
    slot->volume = v.name;
    slot->uuid = v.uuid;
    slot->loop = a.loop;
    slot->id = a.id;
    auto r = on_loop(a.loop, make_mirror_on_loop(slot, v, a, *insync, peer));
    if (!r) {
      if (r.status().code() == Errc::shutdown) {
        // Abandoned wait: the task may still be running on the loop; keep what it uses.
        std::lock_guard lk(mirrors_mu);
        retired_mirrors.push_back(std::move(slot));
      } else {
        // A failed start spawned nothing and was stopped: drop it on its own loop (its pieces
        // belong there), so that a retry every pass does not pile up engines and arbiter threads.
        loops->at(a.loop).post([s = std::move(slot)] {});
      }
      return r.status();
    }
    std::lock_guard lk(mirrors_mu);
    mirrors[v.name] = slot;
    return Status::ok();
  }

  // On the pool's loop: the replica's metadata (created on first use, else opened with crash
  // recovery), the engine, and its start (reads the in-sync set through the arbiter).
  Task<Result<bool>> make_mirror_on_loop(std::shared_ptr<MirrorSlot> slot, cluster::VolumeRecord v,
                                         AppliedObjects a, cluster::InSyncRecord set, std::string peer) {
    const std::string dir = cfg.state_dir + "/mirror";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec)
      co_return Status::error(Errc::io_error, "volume {}: cannot create {}: {}", v.name, dir, ec.message());
    auto uuid = Uuid::parse(v.uuid);
    if (!uuid) co_return Status::error(Errc::invalid, "volume {}: uuid '{}' is not a UUID", v.name, v.uuid);
    slot->meta_path = dir + "/" + v.uuid + ".meta";
    const std::uint64_t need = mirror::ReplicaMeta::required_bytes(a.size, 4096);
    std::unique_ptr<mirror::ReplicaMeta> meta;
    // The loop's ring, as its pool's: a log update then waits for its fdatasync without holding
    // up the loop (none where io_uring is off or unavailable: inline I/O as before).
    const PoolState* ps = pool_named(a.pool_name);
    Ring* meta_ring = ps && ps->cfg.io == "sync" ? nullptr : rings[static_cast<std::size_t>(a.loop)].get();
    struct stat sb{};
    if (::stat(slot->meta_path.c_str(), &sb) != 0) {
      const bool member =
          std::find(set.members.begin(), set.members.end(), cfg.node_name) != set.members.end();
      mirror::MetaRecord rec;
      rec.volume = *uuid;
      rec.size = a.size;
      rec.generation = static_cast<std::uint64_t>(set.generation);
      rec.node = cfg.node_name;
      rec.peer = peer;
      // Only a replica created with the volume, as a member, holds every acknowledged write; a
      // replica made later (or whose metadata was lost) must be resynced before it serves.
      rec.state = member && a.created ? mirror::ReplicaState::in_sync : mirror::ReplicaState::outdated;
      rec.bitmap_complete = true;
      // Created under a temporary name and renamed into place: a crash mid-create leaves no
      // half-formatted file that open() would refuse on every later start.
      const std::string tmp = slot->meta_path + ".new";
      ::unlink(tmp.c_str());
      auto dev = co_await mirror::open_meta_file(tmp, need, true, meta_ring);
      if (!dev) co_return Status::error(dev.status().code(), "volume {}: {}", v.name, dev.status().message());
      auto m = co_await mirror::ReplicaMeta::create(dev->get(), rec);
      if (!m) co_return Status::error(m.status().code(), "volume {}: {}", v.name, m.status().message());
      if (::rename(tmp.c_str(), slot->meta_path.c_str()) != 0)
        co_return Status::error(Errc::io_error, "volume {}: rename {}: {}", v.name, tmp,
                                std::strerror(errno));
      if (int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY); dfd >= 0) {
        (void)::fsync(dfd);
        ::close(dfd);
      }
      slot->meta_dev = std::move(*dev);
      meta = std::move(*m);
      spdlog::info("event=mirror.meta_created volume={} file={} state={} generation={} peer={}", v.name,
                   slot->meta_path, mirror::to_string(rec.state), rec.generation, peer);
    } else {
      auto dev = co_await mirror::open_meta_file(slot->meta_path, need, false, meta_ring);
      if (!dev) co_return Status::error(dev.status().code(), "volume {}: {}", v.name, dev.status().message());
      auto m = co_await mirror::ReplicaMeta::open(dev->get());
      if (!m) co_return Status::error(m.status().code(), "volume {}: {}", v.name, m.status().message());
      const auto& r = (*m)->record();
      // Lineage: metadata of another volume is never adopted (P8), nor metadata that covers more
      // than the replica holds. Less is a grow that has not committed here (the pool object grew,
      // the mirror had not): the engine converges to the catalogue's size below.
      if (r.volume != *uuid || r.size > a.size) {
        (void)co_await (*m)->close();
        co_return Status::error(Errc::corrupt, "volume {}: {} describes volume {} of {} bytes, not {} of {}",
                                v.name, slot->meta_path, r.volume.to_string(), r.size, v.uuid, a.size);
      }
      slot->meta_dev = std::move(*dev);
      meta = std::move(*m);
      spdlog::info("event=mirror.meta_opened volume={} file={} state={} generation={} crashed={}", v.name,
                   slot->meta_path, mirror::to_string(meta->record().state), meta->record().generation,
                   meta->recovered_from_crash());
    }
    EventLoop* loop = &loops->at(a.loop);
    cluster::EtcdOptions eo;
    eo.endpoints = cfg.etcd;
    slot->arbiter = std::make_shared<CatalogueArbiter>(eo, v.name, v.uuid, cfg.node_name, loop);
    mirror::MirrorOptions o;
    o.node = cfg.node_name;
    o.peer = peer;
    o.dial = cfg.node_name < peer;  // exactly one side dials: the name that sorts first
    o.crashed = meta->recovered_from_crash();
    o.link.ping_interval = cfg.mirror.ping_interval;
    o.link.timeout = cfg.mirror.link_timeout;
    o.replicate_timeout = cfg.mirror.replicate_timeout;
    o.freeze_timeout = cfg.mirror.freeze_timeout;
    o.tiebreak_delay = cfg.mirror.tiebreak_delay;
    o.lease = cfg.mirror.lease;
    o.resync_rate_max = cfg.mirror.resync_rate_max;
    o.resync_rate_min = cfg.mirror.resync_rate_min;
    o.resync_parallel = cfg.mirror.resync_depth;
    o.link_tls = mirror_tls;
    o.link_tls_check_name = cfg.mirror.tls_check_name;
    mirror::PeerLocator locate = [book = peer_book, peer]() -> std::optional<mirror::PeerAddress> {
      std::string addr;
      {
        std::lock_guard lk(book->mu);
        auto it = book->addrs.find(peer);
        if (it == book->addrs.end()) return std::nullopt;
        addr = it->second;
      }
      auto ep = parse_endpoint(addr);
      if (!ep) return std::nullopt;
      return mirror::PeerAddress{ep->address().to_string(), ep->port()};
    };
    auto local = std::make_unique<volume::LocalVolume>(*a.pool, a.id, v.name);
    slot->vol = std::make_shared<mirror::MirrorVolume>(loop, std::move(local), std::move(meta), slot->arbiter,
                                                       std::move(locate), o);
    {
      // Before the first link: a drained peer must not be added back by our first resync.
      std::lock_guard lk(peer_book->mu);
      slot->vol->hold_peer(peer_book->drained.contains(peer));
    }
    if (Status st = co_await slot->vol->start(); !st) {
      (void)co_await slot->vol->stop();  // persists the metadata: the next attempt opens it clean
      co_return Status::error(st.code(), "volume {}: the mirror did not start: {}", v.name, st.message());
    }
    const auto ms = slot->vol->status();
    spdlog::info(
        "event=mirror.started volume={} node={} peer={} dial={} state={} role={} generation={} size={}",
        v.name, cfg.node_name, peer, o.dial, ms.state, ms.role, ms.generation, ms.size);
    // Restarted mid-grow, or the catalogue grew while this node was down: converge (the metadata
    // file was lengthened above, to the pool object's size).
    if (v.size > slot->vol->size()) DPX_CO_TRY(slot->vol->grow(v.size));
    co_return true;
  }

  // The catalogue's size grew: the metadata file is lengthened (so that it can cover the new
  // size), then the engine commits the grow with its peer (MirrorVolume::grow). The pool object
  // grew already (apply_on_loop).
  static Task<Result<bool>> grow_mirror_on_loop(std::shared_ptr<MirrorSlot> slot, std::uint64_t size) {
    DPX_CO_TRY(mirror::grow_meta_file(*slot->meta_dev, mirror::ReplicaMeta::required_bytes(size, 4096)));
    DPX_CO_TRY(slot->vol->grow(size));
    co_return true;
  }

  static Task<Result<bool>> stop_mirror_on_loop(std::shared_ptr<mirror::MirrorVolume> v) {
    DPX_CO_TRY(co_await v->stop());
    co_return true;
  }

  // Stops this node's mirror of `volume` (the volume is deleted or no longer placed here).
  void drop_mirror(const std::string& volume) {
    std::shared_ptr<MirrorSlot> slot;
    {
      std::lock_guard lk(mirrors_mu);
      auto it = mirrors.find(volume);
      if (it == mirrors.end()) return;
      slot = it->second;
      mirrors.erase(it);
      retired_mirrors.push_back(slot);
    }
    auto r = on_loop(slot->loop, stop_mirror_on_loop(slot->vol));
    if (r)
      spdlog::info("event=mirror.stopped volume={}", volume);
    else
      spdlog::warn("event=mirror.stop_failed volume={} error=\"{}\"", volume, r.status().to_string());
  }

  std::vector<std::string> mirrored() override {
    std::lock_guard lk(mirrors_mu);
    std::vector<std::string> v;
    v.reserve(mirrors.size());
    for (const auto& [n, s] : mirrors) v.push_back(n);
    return v;
  }

  static Task<void> reload_on_loop(std::shared_ptr<mirror::MirrorVolume> v, std::uint64_t generation) {
    if (v->status().generation >= generation) co_return;
    if (Status st = co_await v->reload("the in-sync set changed in etcd"); !st)
      spdlog::warn("event=mirror.reload_failed volume={} error=\"{}\"", v->name(), st.to_string());
  }

  void mirror_verify(const std::string& volume, std::int64_t id, bool repair) override {
    auto slot = mirror_slot(volume);
    if (!slot || slot->verify_taken.load() >= id) return;
    const std::int64_t before = slot->verify_taken.exchange(id);
    loops->at(slot->loop).post([slot, id, repair, before] {
      spawn(verify_on_loop(slot, id, repair, before));
    });
  }

  // Only the owner verifies; a node that is not the owner gives the request back, to take it up
  // if it becomes the owner later.
  static Task<void> verify_on_loop(std::shared_ptr<MirrorSlot> slot, std::int64_t id, bool repair,
                                   std::int64_t before) {
    if (slot->vol->status().role != "owner") {
      slot->verify_taken = before;
      co_return;
    }
    slot->verify_request = id;
    slot->verify_state = "running";
    slot->verify_error.clear();
    slot->verify_checked = slot->verify_mismatches = slot->verify_repaired = 0;
    auto r = co_await slot->vol->verify(repair);
    if (r) {
      slot->verify_state = "done";
      slot->verify_checked = r->checked;
      slot->verify_mismatches = r->mismatched;
      slot->verify_repaired = r->repaired;
    } else {
      slot->verify_state = "failed";
      slot->verify_error = r.status().to_string();
    }
  }

  static Task<Result<MirrorReport>> mirror_status_on_loop(std::shared_ptr<MirrorSlot> slot) {
    const auto s = slot->vol->status();
    MirrorReport m;
    m.state = s.state;
    m.role = s.role;
    // Outside the set, the generation that matters is the last one this replica was in: a
    // promote of it loses what was acknowledged after that.
    m.insync_generation = static_cast<std::int64_t>(s.role.empty() ? s.last_member_generation : s.generation);
    m.link_up = s.link_up;
    m.dirty_bytes = s.dirty_bytes;
    m.resync_total = s.resync_total;
    m.resync_done = s.resync_done;
    m.resync_rate = s.resync_rate;
    m.last_event = s.last_event;
    m.size = s.size;
    m.grow = s.grow;
    m.verify_request = slot->verify_request;
    m.verify_state = slot->verify_state;
    m.verify_checked = s.verifying ? s.verify_done : slot->verify_checked;
    m.verify_mismatches = s.verifying ? s.verify_mismatches : slot->verify_mismatches;
    m.verify_repaired = slot->verify_repaired;
    m.verify_error = slot->verify_error;
    co_return m;
  }

  std::optional<MirrorReport> mirror_report(const std::string& volume) override {
    auto slot = mirror_slot(volume);
    if (!slot) return std::nullopt;
    auto s = on_loop(slot->loop, mirror_status_on_loop(slot));
    if (!s) return std::nullopt;
    return *s;
  }

  void set_mirror_addresses(const std::map<std::string, std::string>& addrs) override {
    std::lock_guard lk(peer_book->mu);
    peer_book->addrs = addrs;
  }

  void set_drains(const std::map<std::string, std::string>& drained) override {
    {
      std::lock_guard lk(peer_book->mu);
      peer_book->drained = drained;
    }
    std::vector<std::shared_ptr<MirrorSlot>> slots;
    {
      std::lock_guard lk(mirrors_mu);
      for (const auto& [n, s] : mirrors) slots.push_back(s);
    }
    for (auto& slot : slots) {
      const auto peer = slot->vol->options().peer;
      const bool held = drained.contains(peer);
      auto self = drained.find(cfg.node_name);
      std::optional<std::string> why;
      if (self != drained.end()) why = self->second;
      loops->at(slot->loop).post([slot, held, why] { spawn(drain_on_loop(slot, held, why)); });
    }
  }

  // This node drained: step down from the set (retried every tick until it holds). Its peer
  // drained: hold it out of the set.
  static Task<void> drain_on_loop(std::shared_ptr<MirrorSlot> slot, bool peer_held,
                                  std::optional<std::string> reason) {
    slot->vol->hold_peer(peer_held);
    if (!reason) {
      slot->drain_refused.clear();
      co_return;
    }
    if (slot->stepping_down || slot->vol->status().role.empty()) co_return;  // out of the set already
    slot->stepping_down = true;
    Status st = co_await slot->vol->step_down(*reason);
    slot->stepping_down = false;
    if (st) {
      slot->drain_refused.clear();
      spdlog::info("event=mirror.drained volume={} reason=\"{}\"", slot->volume, *reason);
    } else if (st.message() != slot->drain_refused) {
      slot->drain_refused = st.message();
      spdlog::warn("event=mirror.drain_refused volume={} error=\"{}\"", slot->volume, st.to_string());
    }
  }

  // What a front-end serves for export `name`: the mirror for a mirrored volume's own export,
  // else the pool object.
  std::unique_ptr<volume::BlockVolume> served_volume(const std::string& name, store::Pool& pool,
                                                     store::ObjectId id, bool ro,
                                                     const std::shared_ptr<MirrorSlot>& m) {
    if (m) return metered(name, std::make_unique<SharedVolume>(served(m)));
    return metered(name, std::make_unique<volume::LocalVolume>(pool, id, name, ro));
  }
  // Whether an entry's volume is what served_volume() would make now.
  static bool serves(volume::BlockVolume* vol, store::ObjectId id, const std::shared_ptr<MirrorSlot>& m) {
    if (m) return shared_target(vol) == m->vol.get();
    auto* lv = local_of(vol);
    return lv && lv->object() == id;
  }

  // The LU serving export `name` (one per export, shared by the targets that list it). For a
  // mirrored volume's export (`m`) it is this node's port of the volume's one LU: its port group
  // and relative port by rank among `replicas`, its ALUA states from the mirror's in-sync set.
  scsi::LogicalUnit* lu_for(const std::string& name, volume::BlockVolume& vol, const std::string& target,
                            const std::shared_ptr<MirrorSlot>& m = nullptr,
                            const std::vector<std::string>& replicas = {}) {
    if (auto it = lus.find(name); it != lus.end()) return it->second.get();
    if (auto it = dyn_lus.find(name); it != dyn_lus.end()) {
      if (it->second.first == &vol) return it->second.second.get();
      retired_lus.push_back(std::move(it->second.second));  // a session may still use it
      dyn_lus.erase(it);
    }
    const auto& ic = cfg.iscsi;
    scsi::LuConfig lc;
    lc.serial = serial_of(vol.uuid());
    lc.block_size = 512;
    lc.relative_port = 1;
    lc.tpg_id = ic.tpgt;
    lc.target_port_name = fmt::format("{},t,0x{:04x}", target, ic.tpgt);
    lc.port_groups = {scsi::TargetPortGroup{ic.tpgt, scsi::AluaState::active_optimized, false, {1}}};
    if (m) {
      lc.relative_port = lc.tpg_id = replica_port(replicas, cfg.node_name);
      lc.port_groups.clear();  // the first command's refresh fills them in, on the volume's loop
    }
    auto lu = std::make_unique<scsi::LogicalUnit>(vol, lc);
    if (m) {
      lu->set_refresh_hook([mv = served(m), replicas, node = cfg.node_name,
                            seen = ~std::uint64_t{0}](scsi::LogicalUnit& l) mutable {
        const auto& set = mv->in_sync_set();
        const bool cut_off = mv->cut_off();
        const std::uint64_t key = set.generation * 2 + (cut_off ? 1 : 0);
        if (key == seen) return;
        seen = key;
        l.set_port_groups(mirror_port_groups(replicas, set.members, set.owner, cut_off ? node : ""));
      });
    }
    PrStore prs(cfg.state_dir);
    if (auto st = restore_pr(prs, name, vol, *lu); !st)
      spdlog::error("event=pr.restore_failed export={} error=\"{}\"", name, st.to_string());
    auto* raw = lu.get();
    dyn_lus.emplace(name, std::make_pair(&vol, std::move(lu)));
    return raw;
  }

  void publish(const cluster::VolumeRecord& v, const std::vector<std::string>& /*snapshots*/,
               const cluster::ExportRecord& ex) override {
    AppliedObjects a;
    {
      std::lock_guard lk(applied_mu);
      auto it = applied.find(v.name);
      if (it == applied.end()) return;
      a = it->second;
    }
    std::lock_guard plk(publish_mu);
    struct Want {
      store::ObjectId id;
      std::uint64_t size;
      bool ro;
      std::string snap;
    };
    std::map<std::string, Want> want;  // export name -> object
    want[v.name] = {a.id, a.size, false, {}};
    for (const auto& [s, obj] : a.snapshots) want[v.name + "@" + s] = {obj.first, obj.second, true, s};
    std::vector<std::string> snap_names;
    snap_names.reserve(a.snapshots.size());
    for (const auto& [s, obj] : a.snapshots) snap_names.push_back(s);
    auto& mine = published[v.name];
    // A mirrored volume's own export serves the MirrorVolume (its snapshots stay local, read-only).
    const std::shared_ptr<MirrorSlot> mslot = mirror_slot(v.name);
    auto mirror_for = [&](const Want& w) { return w.ro ? nullptr : mslot; };

    {  // NBD
      std::unique_lock lk(cat.mu_);
      for (const auto& name : mine)
        if (!ex.nbd || !want.count(name)) cat.retire_locked(name);
      if (ex.nbd) {
        for (const auto& [name, w] : want) {
          Entry* e = cat.find_locked(name);
          if (e && !serves(e->vol.get(), w.id, mirror_for(w))) {
            cat.retire_locked(name);  // another object under that name: the old one goes
            e = nullptr;
          }
          if (!e) {
            Entry ne;
            ne.info.name = name;
            ne.info.loop = a.loop;
            ne.info.read_only = w.ro;
            ne.vol = served_volume(name, *a.pool, w.id, w.ro, mirror_for(w));
            ne.info.preferred_block = ne.vol->preferred_block_size();
            cat.entries_.push_back(std::move(ne));
            e = &cat.entries_.back();
            spdlog::info("event=nbd.export_added export={} read_only={}", name, w.ro);
          }
          e->info.size = w.size;
          e->info.snapshots = w.ro ? std::vector<std::string>{} : snap_names;
          e->info.description = fmt::format("{} {} in pool {} (cluster volume {}, generation {}{})",
                                            w.ro ? "snapshot" : "volume", name, a.pool_name, v.uuid,
                                            v.generation, mirror_for(w) ? ", mirrored" : "");
        }
      }
    }
    if (portal) {  // iSCSI
      std::vector<std::unique_ptr<iscsi::Target>> fresh;
      if (ex.iscsi) {
        for (const auto& [name, w] : want) {
          volume::BlockVolume* vol = nullptr;
          {
            std::shared_lock lk(cat.mu_);
            if (Entry* e = cat.find_locked(name)) vol = e->vol.get();
          }
          if (!vol) {
            // NBD is off for it: the volume object is kept here for the LU.
            auto it = iscsi_only.find(name);
            if (it == iscsi_only.end() || !serves(it->second.vol.get(), w.id, mirror_for(w))) {
              if (it != iscsi_only.end()) {
                std::unique_lock lk(cat.mu_);
                cat.retired_.push_back(std::move(it->second));
                iscsi_only.erase(it);
              }
              Entry ne;
              ne.info.name = name;
              ne.vol = served_volume(name, *a.pool, w.id, w.ro, mirror_for(w));
              it = iscsi_only.emplace(name, std::move(ne)).first;
            }
            vol = it->second.vol.get();
          }
          auto t = std::make_unique<iscsi::Target>();
          t->name = auto_target_name(cfg.iscsi.base_iqn, name);
          t->default_access = w.ro && ex.default_access == cluster::Access::read_write
                                  ? iscsi::Access::read_only
                                  : iscsi_access(ex.default_access);
          for (const auto& [iqn, acc] : ex.acl) {
            iscsi::Access x = iscsi_access(acc);
            if (w.ro && x == iscsi::Access::read_write) x = iscsi::Access::read_only;
            t->acl[iqn] = x;
          }
          t->luns.push_back(iscsi::Lun{0, lu_for(name, *vol, t->name, mirror_for(w), v.replicas), a.loop});
          t->loop = a.loop;
          fresh.push_back(std::move(t));
        }
      }
      std::unique_lock lk(iscsi_targets.mu_);
      std::set<std::string> keep;
      for (auto& t : fresh) {
        keep.insert(t->name);
        const iscsi::Target* cur = nullptr;
        for (const auto& x : iscsi_targets.targets_)
          if (x->name == t->name) cur = x.get();
        if (cur && same_target(*cur, *t)) continue;
        if (cur) iscsi_targets.retire_locked(t->name);
        spdlog::info("event=iscsi.target target={} luns=1 default_access={} acl={} chap=none", t->name,
                     access_name(t->default_access), t->acl.size());
        iscsi_targets.targets_.push_back(std::move(t));
      }
      for (const auto& name : mine) {
        const std::string iqn = auto_target_name(cfg.iscsi.base_iqn, name);
        if (!keep.count(iqn)) iscsi_targets.retire_locked(iqn);
      }
    }
    mine.clear();
    for (const auto& [name, w] : want) mine.insert(name);
  }

  void unpublish(const std::string& volume) override {
    unpublish_exports(volume);
    // Not placed here any more, or being deleted: the mirror link goes too. Outside publish_mu:
    // stopping a link may take its timeout, and a metrics scrape takes that lock.
    drop_mirror(volume);
  }

  void unpublish_exports(const std::string& volume) {
    std::lock_guard plk(publish_mu);
    auto it = published.find(volume);
    std::set<std::string> names;
    if (it != published.end()) names = it->second;
    names.insert(volume);  // also what startup exported from the pool under that name
    {
      std::unique_lock lk(cat.mu_);
      for (const auto& n : names) cat.retire_locked(n);
      // Snapshots exported at startup ("vol@snap") go with their volume.
      std::vector<std::string> more;
      for (const auto& e : cat.entries_)
        if (e.info.name.starts_with(volume + "@")) more.push_back(e.info.name);
      for (const auto& n : more) {
        cat.retire_locked(n);
        names.insert(n);
      }
    }
    if (portal) {
      std::unique_lock lk(iscsi_targets.mu_);
      for (const auto& n : names) iscsi_targets.retire_locked(auto_target_name(cfg.iscsi.base_iqn, n));
    }
    // Sessions logged in keep their LU: from now on it says the volume is gone for good (the
    // hosts' permanent device loss) instead of failing I/O as a device error.
    for (const auto& n : names)
      if (auto lt = dyn_lus.find(n); lt != dyn_lus.end()) {
        lt->second.second->set_gone();
        retired_lus.push_back(std::move(lt->second.second));
        dyn_lus.erase(lt);
      }
    if (it != published.end()) published.erase(it);
    spdlog::info("event=export.removed volume={} exports={}", volume, names.size());
  }

  // --- api::LocalNode: what the REST API asks of this node (called on the API's threads) ---
  std::string name() const override { return cfg.node_name; }
  std::string site() const override { return cfg.site; }
  bool lease_ok() const override { return agent && agent->alive(); }
  // A renewed lease means etcd answered within the TTL; otherwise the last scrape's reads tell.
  bool etcd_ok() const override { return lease_ok() || etcd_answered.load(std::memory_order_relaxed); }

  // Volume counters come from this process; replica states and pools from what this node last
  // reported to etcd (the same numbers `duplexctl volume show` prints), so a scrape never waits
  // on an event loop. When etcd does not answer, those families are empty and
  // duplex_node_etcd_ok says why.
  std::string render_metrics() override {
    NodeMetricsInput in;
    in.node = cfg.node_name;
    in.site = cfg.site;
    in.lease_ok = lease_ok();
    std::set<std::string> served;
    {
      std::shared_lock lk(cat.mu_);
      for (const auto& e : cat.entries_) served.insert(e.info.name);
    }
    {
      std::lock_guard lk(publish_mu);
      for (const auto& [n, e] : iscsi_only) served.insert(n);
    }
    {
      std::lock_guard lk(stats_mu);
      for (const auto& n : served)
        if (auto it = stats.find(n); it != stats.end()) in.volumes.emplace_back(n, it->second->snapshot());
    }
    bool answered = api_catalogue != nullptr;
    if (api_catalogue) {
      auto vols = api_catalogue->volumes();
      answered = answered && static_cast<bool>(vols);
      if (vols) {
        for (const auto& v : *vols) {
          if (std::find(v.replicas.begin(), v.replicas.end(), cfg.node_name) == v.replicas.end()) continue;
          auto reps = api_catalogue->replicas(v.name);
          answered = answered && static_cast<bool>(reps);
          if (!reps) continue;
          for (const auto& r : *reps)
            if (r.node == cfg.node_name) in.replicas.push_back({v.name, r.state, r.dirty_bytes});
        }
      }
      auto ps = api_catalogue->pools();
      answered = answered && static_cast<bool>(ps);
      if (ps)
        for (const auto& p : *ps)
          if (p.node == cfg.node_name) in.pools.push_back({p.name, p.size, p.free});
    }
    etcd_answered.store(answered, std::memory_order_relaxed);
    in.etcd_ok = answered;
    in.nbd_connections = server ? server->connections() : 0;
    in.iscsi_connections = portal ? portal->connections() : 0;
    return render_node_metrics(in);
  }

  // [api]: the REST API over the catalogue in etcd, on its own threads.
  Status start_api() {
    if (cfg.api.listen.empty()) return Status::ok();
    if (cfg.etcd.empty())
      return Status::error(Errc::invalid,
                           "{}: [api] listen needs [cluster] etcd (the API serves the cluster's "
                           "catalogue)",
                           cfg.file);
    cluster::EtcdOptions eo;
    eo.endpoints = cfg.etcd;
    api_etcd = std::make_unique<cluster::Etcd>(eo);
    api_catalogue = std::make_unique<cluster::Catalogue>(*api_etcd);
    api::ClusterBackendOptions bo;
    bo.default_base_iqn = cfg.iscsi.base_iqn;
    api_backend = std::make_unique<api::ClusterBackend>(*api_catalogue, *this, bo);
    api::ServerOptions so;
    so.listen = cfg.api.listen;
    so.token = cfg.api.token;
    so.tls_cert = cfg.api.tls_cert;
    so.tls_key = cfg.api.tls_key;
    api_server = std::make_unique<api::Server>(*api_backend, so);
    if (auto st = api_server->start(); !st)
      return Status::error(st.code(), "[api] listen {}: {}", cfg.api.listen, st.message());
    return Status::ok();
  }

  void stop_api() {
    if (api_backend) api_backend->cancel_waits();
    if (api_server) api_server->stop();
  }

  Task<void> shutdown() {
    spdlog::info("event=shutdown phase=begin connections={} iscsi_connections={}",
                 server ? server->connections() : 0, portal ? portal->connections() : 0);
    // First stop claiming: the node's key goes (lease revoked) before the front-ends close. This
    // blocks loop 0 for at most one etcd call, bounded by its timeout. The reconciler goes first:
    // nothing new is applied or exported while the node stops.
    stop_api();  // no new intent is accepted from here on
    reconciler_stop = true;
    reconciler.reset();
    agent.reset();
    if (portal) co_await portal->stop();
    if (server) co_await server->stop();
    // The mirrors after the front-ends (no host I/O is in flight any more), before the pools:
    // stop() closes the links and persists each replica's metadata as cleanly closed.
    if (mirror_listener) mirror_listener->stop();
    std::vector<std::shared_ptr<MirrorSlot>> ms;
    {
      std::lock_guard lk(mirrors_mu);
      for (const auto& [n, m] : mirrors) ms.push_back(m);
    }
    for (const auto& m : ms) {
      co_await switch_to(loops->at(m->loop));
      const Status st = co_await m->vol->stop();
      co_await switch_to(loops->at(0));
      if (!st) {
        spdlog::error("event=mirror.stop_failed volume={} error=\"{}\"", m->volume, st.to_string());
        exit_code = 1;
      } else {
        spdlog::info("event=mirror.stopped volume={}", m->volume);
      }
    }
    for (auto& ps : pools) {
      EventLoop& l = loops->at(ps.loop);
      co_await switch_to(l);
      Status st = co_await ps.pool->flush();
      if (st) st = co_await ps.pool->close();
      co_await switch_to(loops->at(0));
      if (!st) {
        spdlog::error("event=pool.close_failed pool={} error=\"{}\"", ps.cfg.name, st.to_string());
        exit_code = 1;
      } else {
        spdlog::info("event=pool.closed pool={}", ps.cfg.name);
      }
    }
    spdlog::info("event=shutdown phase=done");
    loops->stop_all();
  }
};

Daemon::Daemon(Config cfg) : impl_(std::make_unique<Impl>()) { impl_->cfg = std::move(cfg); }

Daemon::~Daemon() {
  if (!impl_) return;
  impl_->reconciler_stop = true;
  impl_->reconciler.reset();
  impl_->agent.reset();
  if (impl_->loops) {
    impl_->loops->stop_all();
    impl_->loops->join_others();
  }
  impl_->portal.reset();
  impl_->server.reset();
  impl_->iscsi_targets.targets_.clear();
  impl_->iscsi_targets.retired_.clear();
  impl_->lus.clear();
  impl_->dyn_lus.clear();
  impl_->iscsi_only.clear();
  impl_->retired_lus.clear();
  impl_->cat.entries_.clear();
  impl_->cat.retired_.clear();
  impl_->mirror_listener.reset();
  impl_->mirrors.clear();  // before the pools their replicas live in
  impl_->retired_mirrors.clear();
  impl_->pools.clear();
}

Status Daemon::start(const StartOptions& opts) {
  auto& I = *impl_;
  int n = I.cfg.loops;
  if (n == 0) {
    n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    n = std::min<int>(n, std::max<std::size_t>(1, I.cfg.pools.size()));
  }
  I.loops = std::make_unique<LoopGroup>(n);
  for (int i = 0; i < n; ++i) {
    std::unique_ptr<Ring> ring;
    if (!std::getenv("DUPLEX_NO_URING")) {
      auto r = Ring::create(256);
      if (r) {
        ring = std::move(*r);
        auto efd = ring->event_fd();
        if (efd) {
          Ring* raw = ring.get();
          I.loops->at(i).watch_readable(*efd, [raw] { raw->poll(); });
          I.loops->at(i).add_before_sleep([raw] { raw->flush_submissions(); });
        } else {
          ring.reset();
        }
      } else {
        spdlog::warn("event=io_uring.unavailable loop={} error=\"{}\" fallback=sync", i,
                     r.status().message());
      }
    }
    I.rings.push_back(std::move(ring));
  }
  for (std::size_t i = 0; i < I.cfg.pools.size(); ++i) {
    PoolState ps;
    ps.cfg = I.cfg.pools[i];
    ps.loop = static_cast<int>(i % static_cast<std::size_t>(n));
    I.pools.push_back(std::move(ps));
  }
  for (auto& ps : I.pools) DPX_TRY(I.open_pool(ps));
  for (const auto& v : I.cfg.volumes) DPX_TRY(I.ensure_volume(v));
  for (auto v : opts.extra_volumes) {
    if (v.pool.empty()) {
      if (I.pools.empty())
        return Status::error(Errc::invalid, "--create-volume {}: no pool is configured", v.name);
      v.pool = I.pools[0].cfg.name;
    }
    DPX_TRY(I.ensure_volume(v));
  }
  for (const auto& full : opts.snapshots) DPX_TRY(I.ensure_snapshot(full));
  for (const auto& v : I.cfg.volumes) I.declared.insert(v.name);
  for (const auto& v : opts.extra_volumes) I.declared.insert(v.name);
  for (const auto& x : I.cfg.exports) I.declared.insert(x.name);
  for (const auto& full : opts.snapshots) I.declared.insert(full.substr(0, full.find('@')));
  DPX_TRY(I.build_catalogue());
  DPX_TRY(I.build_iscsi());

  nbd::ServerConfig sc;
  sc.listen = I.cfg.nbd_listen;
  sc.max_connections = I.cfg.max_connections;
  sc.handshake_timeout = I.cfg.handshake_timeout;
  sc.stop_grace = I.cfg.stop_grace;
  sc.session.max_inflight = I.cfg.max_inflight;
  sc.session.max_inflight_bytes = static_cast<std::size_t>(I.cfg.max_inflight_bytes);
  if (I.cfg.tls) {
    nbd::TlsConfig t;
    t.cert_file = I.cfg.tls->cert;
    t.key_file = I.cfg.tls->key;
    t.ca_file = I.cfg.tls->ca;
    t.psk_file = I.cfg.tls->psk;
    t.required = I.cfg.tls->require;
    sc.tls = t;
  }
  if (!sc.listen.empty()) {  // a node may serve iSCSI only
    I.server = std::make_unique<nbd::Server>(*I.loops, I.cat, sc);
    DPX_TRY(I.server->start());
  }
  if (!I.cfg.iscsi.listen.empty()) {
    const auto& ic = I.cfg.iscsi;
    iscsi::PortalConfig pc;
    pc.listen = ic.listen;
    pc.tpgt = ic.tpgt;
    pc.max_connections = ic.max_connections;
    pc.login_timeout = ic.login_timeout;
    pc.nop_interval = ic.nop_interval;
    pc.nop_timeout = ic.nop_timeout;
    pc.stop_grace = I.cfg.stop_grace;
    pc.queue_depth = ic.queue_depth;
    pc.discovery_chap = ic.discovery_chap;
    I.portal = std::make_unique<iscsi::Portal>(*I.loops, I.iscsi_targets, pc);
    DPX_TRY(I.portal->start());
  }

  I.signals = std::make_unique<asio::signal_set>(I.loops->at(0).context(), SIGTERM, SIGINT);
  std::function<void(std::error_code, int)> on_signal;
  I.signals->async_wait([this](std::error_code ec, int sig) {
    if (ec) return;
    spdlog::info("event=signal signal={}", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    request_stop();
  });
  ::signal(SIGPIPE, SIG_IGN);
  ::signal(SIGHUP, SIG_IGN);  // a closing terminal must not stop the storage
  const std::vector<std::string> nbd_eps = I.server ? I.server->endpoints() : std::vector<std::string>{};
  DPX_TRY(I.start_api());
  std::string mirror_ep;
  if (!I.cfg.mirror_listen.empty()) {
    if (I.cfg.etcd.empty())
      return Status::error(Errc::invalid,
                           "{}: [cluster] mirror_listen needs [cluster] etcd (the in-sync set)", I.cfg.file);
    if (I.cfg.mirror.tls) {
      auto tls = TlsContext::make(mirror_tls_options(I.cfg.mirror));
      if (!tls) return Status::error(Errc::invalid, "{}: [mirror] {}", I.cfg.file, tls.status().message());
      I.mirror_tls = std::move(*tls);
    }
    Impl* impl = impl_.get();
    I.mirror_listener = std::make_unique<MirrorListener>(
        I.loops->at(0), [impl](const Uuid& u) -> std::optional<MirrorTarget> {
          const std::string id = u.to_string();
          std::lock_guard lk(impl->mirrors_mu);
          for (const auto& [n, m] : impl->mirrors)
            if (m->uuid == id) return MirrorTarget{&impl->loops->at(m->loop), served(m)};
          return std::nullopt;
        });
    I.mirror_listener->set_tls(I.mirror_tls);
    DPX_TRY(I.mirror_listener->start(I.cfg.mirror_listen));
    mirror_ep = I.cfg.mirror_advertise.empty() ? I.mirror_listener->endpoint() : I.cfg.mirror_advertise;
  }
  if (!I.cfg.etcd.empty()) {
    // The node's liveness key: who we are and where we serve. It exists while the lease lives.
    nlohmann::json info{{"site", I.cfg.site},
                        {"address", I.cfg.address},
                        {"api", I.cfg.api.listen.empty()
                                    ? std::string()
                                    : fmt::format("{}://{}", I.cfg.api.tls_cert.empty() ? "http" : "https",
                                                  I.api_server->endpoint())},
                        {"nbd", nbd_eps},
                        {"iscsi", I.portal ? I.portal->endpoints() : std::vector<std::string>{}},
                        {"base_iqn", I.cfg.iscsi.base_iqn},
                        {"mirror", mirror_ep},
                        {"version", DUPLEX_VERSION_STRING},
                        {"started", cluster::now_rfc3339()},
                        {"pid", ::getpid()}};
    cluster::EtcdOptions eo;
    eo.endpoints = I.cfg.etcd;
    cluster::NodeAgentOptions ao;
    ao.name = I.cfg.node_name;
    ao.info = info.dump();
    ao.ttl = I.cfg.lease_ttl;
    ao.margin = std::min<std::chrono::milliseconds>(std::chrono::milliseconds(1000), I.cfg.lease_ttl / 4);
    const std::string name = I.cfg.node_name;
    I.agent = std::make_unique<cluster::NodeAgent>(eo, ao, [name](bool alive) {
      if (alive)
        spdlog::info("event=cluster.registered node={}", name);
      else
        spdlog::warn("event=cluster.lost node={} reason=\"no lease renewal confirmed within the TTL\"", name);
    });
    ReconcilerOptions ro;
    ro.etcd = eo;
    ro.node = I.cfg.node_name;
    if (const char* p = std::getenv("DUPLEX_RECONCILE_PERIOD_MS")) {
      // Tests shorten the period; a value that is not a positive number keeps the default
      // rather than becoming 0 (a pass in a tight loop).
      const auto ms = parse_duration(fmt::format("{}ms", p));
      if (ms && ms->count() > 0)
        ro.period = *ms;
      else
        spdlog::warn(
            "event=config.ignored variable=DUPLEX_RECONCILE_PERIOD_MS value=\"{}\" reason=\"not a "
            "positive number of milliseconds\"",
            p);
    }
    I.reconciler = std::make_unique<Reconciler>(ro, I);
  }
  if (I.portal)
    spdlog::info("event=ready node={} site={} nbd={} exports={} loops={} iscsi={} targets={}",
                 I.cfg.node_name, I.cfg.site, fmt::join(nbd_eps, ","), I.cat.size(), n,
                 fmt::join(I.portal->endpoints(), ","), I.iscsi_targets.size());
  else
    spdlog::info("event=ready node={} site={} nbd={} exports={} loops={}", I.cfg.node_name, I.cfg.site,
                 fmt::join(nbd_eps, ","), I.cat.size(), n);
  return Status::ok();
}

void Daemon::request_stop() {
  auto& I = *impl_;
  I.loops->at(0).post([&I] {
    if (I.stopping) return;
    I.stopping = true;
    spawn(I.shutdown());
  });
}

int Daemon::run() {
  auto& I = *impl_;
  I.loops->start_others();
  I.loops->at(0).run();
  I.loops->stop_all();
  I.loops->join_others();
  return I.exit_code;
}

std::vector<std::string> Daemon::uris() const {
  std::vector<std::string> out;
  const auto eps = impl_->server ? impl_->server->endpoints() : std::vector<std::string>{};
  if (!eps.empty()) std::shared_lock lk(impl_->cat.mu_);
  for (const auto& e : impl_->cat.entries_)
    if (!e.info.read_only) out.push_back(fmt::format("nbd://{}/{}", eps[0], e.info.name));
  if (impl_->portal) {
    const auto ieps = impl_->portal->endpoints();
    if (!ieps.empty())
      for (const auto& t : impl_->iscsi_plans)
        if (t.writable) out.push_back(fmt::format("iscsi://{}/{}/0", ieps[0], t.name));
  }
  return out;
}

}  // namespace duplex::daemon
