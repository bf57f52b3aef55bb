#include "duplex/daemon/daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <map>
#include <thread>

#include <spdlog/spdlog.h>
#include <asio/signal_set.hpp>
#include <nlohmann/json.hpp>

#include "duplex/cluster/node_agent.h"
#include "duplex/daemon/iscsi_targets.h"
#include "duplex/daemon/mem_volume.h"
#include "duplex/daemon/pr_store.h"
#include "duplex/iscsi/portal.h"
#include "duplex/iscsi/target.h"
#include "duplex/nbd/server.h"
#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/uring.h"
#include "duplex/reactor/uring_device.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/scsi/reservations.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"

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

// Built once at startup, read-only afterwards: lookups from any loop need no lock.
class Catalogue final : public nbd::ExportCatalogue {
 public:
  std::optional<nbd::ExportInfo> lookup(std::string_view name) const override {
    if (name.empty()) name = default_;
    for (const auto& e : entries_)
      if (e.info.name == name) return e.info;
    return std::nullopt;
  }
  std::vector<nbd::ExportInfo> list() const override {
    std::vector<nbd::ExportInfo> v;
    v.reserve(entries_.size());
    for (const auto& e : entries_) v.push_back(e.info);
    return v;
  }
  volume::BlockVolume* volume(const std::string& name) override {
    for (auto& e : entries_)
      if (e.info.name == name) return e.vol.get();
    return nullptr;
  }
  std::vector<Entry> entries_;
  std::string default_;
};

// The iSCSI targets, built once at startup (before the portal starts) and read-only afterwards.
class IscsiCatalogue final : public iscsi::TargetCatalogue {
 public:
  const iscsi::Target* find(std::string_view iqn) const override {
    for (const auto& t : targets_)
      if (t.name == iqn) return &t;
    return nullptr;
  }
  std::vector<const iscsi::Target*> targets() const override {
    std::vector<const iscsi::Target*> v;
    v.reserve(targets_.size());
    for (const auto& t : targets_) v.push_back(&t);
    return v;
  }
  std::vector<iscsi::Target> targets_;
};

std::string_view access_name(iscsi::Access a) {
  switch (a) {
    case iscsi::Access::none: return "none";
    case iscsi::Access::read_only: return "read-only";
    case iscsi::Access::read_write: return "read-write";
  }
  return "?";
}

// VPD 0x80 serial: the volume UUID as 32 hex digits, identical on every node that serves it.
std::string serial_of(const Uuid& u) {
  std::string s;
  for (char ch : u.to_string())
    if (ch != '-') s.push_back(ch);
  return s;
}

}  // namespace

struct Daemon::Impl {
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
  std::unique_ptr<asio::signal_set> signals;
  bool stopping = false;
  int exit_code = 0;

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
        Entry e;
        e.info.name = name;
        e.info.size = o.size;
        e.info.read_only = o.kind == store::ObjectKind::snapshot;
        e.info.snapshots = snaps;
        e.info.loop = ps.loop;
        e.info.description = fmt::format("{} {} in pool {} ({})",
                                         o.kind == store::ObjectKind::snapshot ? "snapshot" : "volume", name,
                                         ps.cfg.name, o.uuid.to_string());
        e.vol = std::make_unique<volume::LocalVolume>(*ps.pool, o.id, name, e.info.read_only);
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
      e.vol = std::make_unique<MemVolume>(m.name, m.size);
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
            if (auto* lv = dynamic_cast<volume::LocalVolume*>(e.vol.get())) {
              for (auto& ps : pools)
                if (ps.cfg.name == owner[e.info.name])
                  e.vol = std::make_unique<volume::LocalVolume>(*ps.pool, lv->object(), e.info.name, true);
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
        if (dynamic_cast<volume::LocalVolume*>(e->vol.get())) DPX_TRY(restore_pr(prs, name, *e->vol, *lu));
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
      iscsi_targets.targets_.push_back(std::move(t));
    }
    return Status::ok();
  }

  // Restores APTPL reservations saved by an earlier run and installs the hook that saves them.
  static Status restore_pr(const PrStore& prs, const std::string& name, const volume::BlockVolume& vol,
                           scsi::LogicalUnit& lu) {
    const Uuid id = vol.uuid();
    auto saved = prs.load(id);
    if (!saved) return Status::error(saved.status().code(), "export {}: {}", name, saved.status().message());
    if (*saved) {
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

  Task<void> shutdown() {
    spdlog::info("event=shutdown phase=begin connections={} iscsi_connections={}",
                 server ? server->connections() : 0, portal ? portal->connections() : 0);
    // First stop claiming: the node's key goes (lease revoked) before the front-ends close. This
    // blocks loop 0 for at most one etcd call, bounded by its timeout.
    agent.reset();
    if (portal) co_await portal->stop();
    if (server) co_await server->stop();
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
  impl_->agent.reset();
  if (impl_->loops) {
    impl_->loops->stop_all();
    impl_->loops->join_others();
  }
  impl_->portal.reset();
  impl_->server.reset();
  impl_->iscsi_targets.targets_.clear();
  impl_->lus.clear();
  impl_->cat.entries_.clear();
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
  if (!I.cfg.etcd.empty()) {
    // The node's liveness key: who we are and where we serve. It exists while the lease lives.
    nlohmann::json info{{"site", I.cfg.site},
                        {"nbd", nbd_eps},
                        {"iscsi", I.portal ? I.portal->endpoints() : std::vector<std::string>{}},
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
  }
  if (I.portal)
    spdlog::info("event=ready node={} site={} nbd={} exports={} loops={} iscsi={} targets={}",
                 I.cfg.node_name, I.cfg.site, fmt::join(nbd_eps, ","), I.cat.entries_.size(), n,
                 fmt::join(I.portal->endpoints(), ","), I.iscsi_targets.targets_.size());
  else
    spdlog::info("event=ready node={} site={} nbd={} exports={} loops={}", I.cfg.node_name, I.cfg.site,
                 fmt::join(nbd_eps, ","), I.cat.entries_.size(), n);
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
  if (!eps.empty())
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
