#include "duplex/daemon/reconciler.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <memory>

namespace duplex::daemon {

namespace {

const std::string kVolumes = std::string(cluster::kRoot) + "volumes/";
const std::string kSnapshots = std::string(cluster::kRoot) + "snapshots/";
const std::string kExports = std::string(cluster::kRoot) + "exports/";
// A mirrored volume's in-sync set (an operator's promote) and its verify requests.
const std::string kInSync = std::string(cluster::kRoot) + "insync/";
const std::string kVerify = std::string(cluster::kRoot) + "verify/";
const std::string kDrains = std::string(cluster::kRoot) + "drains/";

// The volume a key under volumes/, snapshots/ or exports/ concerns; "" for any other key (our own
// reports under replicas/ and pools/ must not wake us up again).
std::string volume_of(const std::string& key) {
  for (const auto* p : {&kVolumes, &kExports, &kSnapshots, &kInSync, &kVerify}) {
    if (!key.starts_with(*p)) continue;
    std::string rest = key.substr(p->size());
    if (p == &kSnapshots) rest = rest.substr(0, rest.find('/'));
    return rest;
  }
  return {};
}

// The replica report's mirror fields from the engine's status. The report's state is this
// replica's: the owner whose engine says "resyncing" (its view of the peer catching up) is itself
// in-sync; a resync target ("inconsistent") is reported as "resyncing"; a replica whose disk
// failed (the engine's "failed") as such.
void fill_mirror(cluster::ReplicaStatus& st, const MirrorReport& m) {
  if (m.state == "resyncing")
    st.state = "in-sync";
  else if (m.state == "inconsistent")
    st.state = "resyncing";
  else
    st.state = m.state;
  st.role = m.role;
  st.insync_generation = m.insync_generation;
  st.link_up = m.link_up;
  st.dirty_bytes = m.dirty_bytes;
  st.resync_bytes_total = m.resync_total;
  st.resync_bytes_done = m.resync_done;
  st.resync_rate = m.resync_rate;
  const bool running = m.resync_total > 0 && m.resync_done < m.resync_total;
  st.resync_progress =
      running ? static_cast<double>(m.resync_done) / static_cast<double>(m.resync_total) : 1.0;
  st.resync_eta_seconds =
      running && m.resync_rate > 0 ? static_cast<double>(m.resync_total - m.resync_done) / m.resync_rate : -1;
  st.last_event = m.last_event;
  // What the front-ends serve: the catalogue's size once both replicas hold it (a grow commits
  // on the owner, docs/mirror.md), so a waiting API call sees the grow applied only then.
  st.size = m.size;
  st.grow = m.grow;
  st.verify_request = m.verify_request;
  st.verify_state = m.verify_state;
  st.verify_checked = m.verify_checked;
  st.verify_mismatches = m.verify_mismatches;
  st.verify_repaired = m.verify_repaired;
  st.verify_error = m.verify_error;
}

}  // namespace

Reconciler::Reconciler(ReconcilerOptions opts, ReconcilerHost& host)
    : opts_(std::move(opts)), host_(host), etcd_(opts_.etcd), cat_(etcd_) {
  worker_ = std::thread([this] { run(); });
  cluster::Watcher::Callbacks cb;
  // The watcher retries every 100-200 ms while etcd is away: the first failure is logged, then
  // one line per 30 s with how many retries it stood for, and one when the watch is back.
  struct Retries {
    std::uint64_t failed = 0, unlogged = 0;
    std::chrono::steady_clock::time_point logged{};
  };
  auto retries = std::make_shared<Retries>();  // used on the watcher's thread only
  cb.on_reset = [this, retries](const std::vector<cluster::Kv>&, std::int64_t) {
    if (retries->failed != 0)
      spdlog::info("event=reconciler.watch_resumed failed_attempts={}", retries->failed);
    *retries = Retries{};
    {
      std::lock_guard lk(mu_);
      drains_dirty_ = true;
    }
    mark_all();
  };
  cb.on_events = [this](const std::vector<cluster::WatchEvent>& evs, std::int64_t) {
    for (const auto& e : evs) {
      if (e.kv.key.starts_with(kDrains)) {
        {
          std::lock_guard lk(mu_);
          drains_dirty_ = true;
        }
        cv_.notify_all();
      } else if (auto v = volume_of(e.kv.key); !v.empty()) {
        mark(v);
      }
    }
  };
  cb.on_error = [retries](const Status& why) {
    const auto now = std::chrono::steady_clock::now();
    ++retries->failed;
    if (retries->failed > 1 && now - retries->logged < std::chrono::seconds(30)) {
      ++retries->unlogged;
      return;
    }
    spdlog::warn("event=reconciler.watch_retry error=\"{}\" retries_since_last_line={}", why.to_string(),
                 retries->unlogged);
    retries->logged = now;
    retries->unlogged = 0;
  };
  watcher_ = std::make_unique<cluster::Watcher>(opts_.etcd, std::string(cluster::kRoot), std::move(cb));
}

Reconciler::~Reconciler() {
  watcher_.reset();
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::set<std::string> Reconciler::applied() const {
  std::lock_guard lk(mu_);
  return applied_;
}

void Reconciler::mark(const std::string& volume) {
  {
    std::lock_guard lk(mu_);
    dirty_.insert(volume);
  }
  cv_.notify_all();
}

void Reconciler::mark_all() {
  {
    std::lock_guard lk(mu_);
    all_dirty_ = true;
  }
  cv_.notify_all();
}

void Reconciler::run() {
  auto next_period = std::chrono::steady_clock::now();
  auto next_tick = next_period + opts_.mirror_tick;
  for (;;) {
    std::set<std::string> todo;
    bool all = false;
    {
      std::unique_lock lk(mu_);
      cv_.wait_until(lk, std::min(next_period, next_tick),
                     [&] { return stop_ || all_dirty_ || drains_dirty_ || !dirty_.empty(); });
      if (stop_) return;
      if (drains_dirty_) {
        drains_dirty_ = false;
        lk.unlock();
        refresh_drains();
        lk.lock();
        if (stop_) return;
      }
      if (std::chrono::steady_clock::now() >= next_tick) {
        next_tick = std::chrono::steady_clock::now() + opts_.mirror_tick;
        lk.unlock();
        mirror_tick();
        lk.lock();
        if (stop_) return;
      }
      if (std::chrono::steady_clock::now() < next_period && !all_dirty_ && dirty_.empty()) continue;
      if (std::chrono::steady_clock::now() >= next_period) all_dirty_ = true;
      all = all_dirty_;
      all_dirty_ = false;
      todo.swap(dirty_);
    }
    if (all) {
      // The periodic pass: pool reports, then every volume (retries what failed, catches anything
      // a lost watch event could have hidden).
      next_period = std::chrono::steady_clock::now() + opts_.period;
      report_pools();
      auto vols = cat_.volumes();
      if (!vols) {
        spdlog::warn("event=reconciler.read_failed error=\"{}\"", vols.status().to_string());
        std::lock_guard lk(mu_);
        // etcd is unreachable: try again soon rather than after a whole period.
        next_period =
            std::chrono::steady_clock::now() + std::min(opts_.period, std::chrono::milliseconds(2000));
        continue;
      }
      for (const auto& v : *vols) todo.insert(v.name);
      for (const auto& v : published_) todo.insert(v);  // gone from the catalogue: unpublish
    }
    bool changed = false;
    for (const auto& v : todo) {
      {
        std::lock_guard lk(mu_);
        if (stop_) return;
      }
      reconcile(v);
      changed = true;
    }
    if (changed && !all) report_pools();
  }
}

void Reconciler::report_pools() {
  for (const auto& name : host_.pool_names()) {
    auto rec = host_.pool_report(name);
    if (!rec) {
      spdlog::warn("event=reconciler.pool_report_failed pool={} error=\"{}\"", name,
                   rec.status().to_string());
      continue;
    }
    rec->node = opts_.node;
    const auto now = std::chrono::steady_clock::now();
    if (pools_written_.unchanged(name, *rec, now)) continue;
    if (auto st = cat_.report_pool(*rec); !st) {
      spdlog::warn("event=reconciler.pool_report_failed pool={} error=\"{}\"", name, st.to_string());
      pools_written_.forget(name);
    } else {
      pools_written_.wrote(name, *rec, now);
    }
  }
}

// The peers' mirror addresses from the node records: a node that restarts may listen elsewhere.
void Reconciler::refresh_peers() {
  auto nodes = cat_.nodes();
  if (!nodes) return;  // the dialers keep the addresses they had
  std::map<std::string, std::string> addrs;
  for (const auto& n : *nodes)
    if (!n.mirror.empty()) addrs[n.name] = n.mirror;
  host_.set_mirror_addresses(addrs);
}

// A read that fails keeps the drains known so far and retries on the next tick.
void Reconciler::refresh_drains() {
  auto d = cat_.drains();
  if (!d) {
    spdlog::warn("event=reconciler.read_failed key=drains error=\"{}\"", d.status().to_string());
    std::lock_guard lk(mu_);
    drains_dirty_ = true;
    return;
  }
  std::map<std::string, std::string> now;
  for (const auto& r : *d) now[r.node] = r.reason.empty() ? "drain of " + r.node : r.reason;
  if (now != drained_ || !drains_read_)
    spdlog::info("event=reconciler.drains nodes={}", [&] {
      std::string s;
      for (const auto& [n, _] : now) s += (s.empty() ? "" : ",") + n;
      return s.empty() ? std::string("none") : s;
    }());
  drained_ = std::move(now);
  drains_read_ = true;
  host_.set_drains(drained_);
}

void Reconciler::mirror_tick() {
  const auto names = host_.mirrored();
  for (auto it = mirror_reports_.begin(); it != mirror_reports_.end();) {
    if (std::find(names.begin(), names.end(), it->first) == names.end()) {
      mirror_seen_.erase(it->first);
      it = mirror_reports_.erase(it);
    } else {
      ++it;
    }
  }
  if (names.empty()) return;
  refresh_peers();
  if (!drained_.empty()) host_.set_drains(drained_);  // retries a refused step-down
  for (const auto& name : names) {
    auto m = host_.mirror_report(name);
    auto rep = mirror_reports_.find(name);
    if (!m || rep == mirror_reports_.end()) continue;  // not reported in full yet: reconcile() does
    if (auto seen = mirror_seen_.find(name); seen != mirror_seen_.end() && seen->second == *m) continue;
    if (rep->second.state == "failed" || rep->second.state == "deleted") continue;
    if (m->size != rep->second.size) mark(name);  // a grow committed: publish the new size
    fill_mirror(rep->second, *m);
    rep->second.updated.clear();
    written_.forget(name);  // the periodic pass writes the next report, changed or not
    if (auto s = cat_.report_replica(rep->second); !s) {
      spdlog::warn("event=reconciler.report_failed volume={} error=\"{}\"", name, s.to_string());
      continue;
    }
    mirror_seen_[name] = *m;
  }
}

void Reconciler::reconcile(const std::string& name) {
  auto forget = [&] {
    written_.forget(name);
    mirror_reports_.erase(name);
    mirror_seen_.erase(name);
    if (published_.erase(name)) {
      host_.unpublish(name);
      spdlog::info("event=reconciler.unpublished volume={}", name);
    }
    std::lock_guard lk(mu_);
    applied_.erase(name);
  };
  auto rec = cat_.volume(name);
  if (!rec) {
    if (rec.status().code() == Errc::not_found || rec.status().code() == Errc::invalid ||
        rec.status().code() == Errc::corrupt) {
      forget();
    } else {
      spdlog::warn("event=reconciler.read_failed volume={} error=\"{}\"", name, rec.status().to_string());
      std::lock_guard lk(mu_);
      all_dirty_ = true;  // etcd trouble: the periodic pass retries
    }
    return;
  }
  if (std::find(rec->replicas.begin(), rec->replicas.end(), opts_.node) == rec->replicas.end()) {
    forget();
    return;
  }
  cluster::ReplicaStatus st;
  st.volume = name;
  st.node = opts_.node;
  st.generation = rec->generation;

  if (rec->state == cluster::VolumeState::deleting) {
    forget();
    const Status rm = host_.remove(rec->pool, name);
    if (rm) {
      st.state = "deleted";
      spdlog::info("event=reconciler.deleted volume={} pool={}", name, rec->pool);
    } else {
      st.state = "failed";
      st.error = rm.to_string();
      spdlog::error("event=reconciler.delete_failed volume={} error=\"{}\"", name, st.error);
    }
  } else {
    auto snaps = cat_.snapshots(name);
    auto ex = cat_.export_of(name);
    if (!snaps || !ex) {
      spdlog::warn("event=reconciler.read_failed volume={} error=\"{}\"", name,
                   (!snaps ? snaps.status() : ex.status()).to_string());
      return;
    }
    std::optional<cluster::InSyncRecord> insync;
    if (rec->replicas.size() > 1) {
      refresh_peers();
      auto set = cat_.insync(name);
      if (set) {
        insync = std::move(*set);
      } else if (set.status().code() != Errc::not_found) {
        // No decision can be based on a set we could not read: retry on the next pass.
        spdlog::warn("event=reconciler.read_failed volume={} error=\"{}\"", name, set.status().to_string());
        std::lock_guard lk(mu_);
        all_dirty_ = true;
        return;
      }
    }
    auto applied = host_.apply(*rec, *snaps, insync);
    if (applied) {
      st.state = "in-sync";
      st.size = applied->size;
      st.allocated_bytes = applied->allocated_bytes;
      st.snapshots = applied->snapshots;
      if (auto m = host_.mirror_report(name)) {
        fill_mirror(st, *m);
        mirror_seen_[name] = *m;
        if (auto vr = cat_.verify_request(name)) host_.mirror_verify(name, vr->id, vr->repair);
      }
      host_.publish(*rec, applied->snapshots, *ex);
      published_.insert(name);
      std::lock_guard lk(mu_);
      applied_.insert(name);
    } else {
      st.state = "failed";
      st.error = applied.status().to_string();
      spdlog::error("event=reconciler.apply_failed volume={} generation={} error=\"{}\"", name,
                    rec->generation, st.error);
    }
  }
  if (host_.mirror_report(name))
    mirror_reports_[name] = st;
  else
    mirror_reports_.erase(name);
  const auto now = std::chrono::steady_clock::now();
  auto report = std::make_pair(rec->uuid, st);
  if (written_.unchanged(name, report, now)) {
    // Unchanged since the last write: etcd holds it already.
  } else if (auto s = cat_.report_replica(st); !s) {
    spdlog::warn("event=reconciler.report_failed volume={} error=\"{}\"", name, s.to_string());
    written_.forget(name);
    mirror_seen_.erase(name);
    return;
  } else {
    written_.wrote(name, std::move(report), now);
  }
  if (auto s = cat_.settle(name); !s)
    spdlog::warn("event=reconciler.settle_failed volume={} error=\"{}\"", name, s.to_string());
}

}  // namespace duplex::daemon
