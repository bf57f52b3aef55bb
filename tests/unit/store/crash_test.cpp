// Randomized crash consistency of the pool: a seeded workload runs against a Pool on a FakeDisk
// and a model; the power is cut after a random number of device operations (anywhere inside a
// pool operation), the cache is lost (all of it, or a random subset of sectors), the pool is
// reopened and everything it returns is checked against what the contract allows:
//  - a sector reads its last durable version or one of the versions written after it, nothing
//    else (no data from another place, object or time);
//  - whatever a completed flush, FUA write or catalogue operation made durable is there;
//  - every snapshot that was created reads exactly as its volume did; objects whose creation or
//    removal was cut may or may not exist, and are checked if they do;
//  - check() finds the metadata consistent, and the pool keeps working.
//
// DUPLEX_CRASH_TRIALS=N runs N cut points in total over the campaigns (long mode, e.g. 200000);
// DUPLEX_CRASH_SEED=S runs the one trial S (with its config) verbosely, to debug a failure.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <random>
#include <set>
#include <tuple>

#include "store_test_util.h"

namespace duplex::test {
namespace {

using store::ObjectId;
using store::ObjectKind;
using store::Pool;

struct Config {
  std::uint32_t cluster_size;
  std::uint64_t device_bytes;
  std::uint64_t max_volume_bytes;
  int ops_per_trial = 60;
  // Share of the flushes in the op mix, in percent (fewer flushes: more unflushed state to lose).
  int flush_percent = 8;
  // Sum of the objects' sizes allowed, in percent of the device. Above 100 the pool is
  // overcommitted (thin) and writes meet no_space, which the workload then expects.
  int budget_percent = 50;
  std::uint64_t journal_bytes = 0;  // 0: the pool's default
};

struct Model {
  std::map<ObjectId, ModelObject> objects;
  std::uint64_t stamp = 1;
  int names = 0;

  void make_all_durable() {
    for (auto& [id, o] : objects) o.make_durable();
  }
  std::vector<ObjectId> ids(ObjectKind kind) const {
    std::vector<ObjectId> out;
    for (const auto& [id, o] : objects)
      if (o.kind == kind) out.push_back(id);
    return out;
  }
  std::uint64_t total_bytes() const {
    std::uint64_t n = 0;
    for (const auto& [id, o] : objects) n += o.size;
    return n;
  }
};

// Operations refused with no_space (overcommitted configs), for the campaign's summary line.
std::uint64_t g_no_space = 0;

// The operation that was running when the power went: its effect may or may not be there.
struct Inflight {
  enum Kind { none, io, create, remove, grow, snapshot, clone } kind = none;
  std::string name;              // create/snapshot/clone: the new object's full name
  std::uint64_t size = 0;        // create: size; grow: new size
  ObjectId target = 0;           // remove/grow/snapshot/clone: the object operated on
  std::vector<ObjectId> doomed;  // remove: everything it deletes
  std::string what;              // for messages
};

// A pool made once per config and copied into every trial: trials start from a pool with data,
// snapshots and a clone, and pay no format.
struct Template {
  FakeDisk disk{0};
  Model model;
};

class Trial {
 public:
  Trial(const Config& cfg, std::uint64_t seed, bool verbose) : cfg_(cfg), rng_(seed), verbose_(verbose) {}

  // Runs the workload on `pool` until `disk` loses power or `max_ops` operations are done.
  // Returns "" or a failure description.
  std::string workload(FakeDisk& disk, std::unique_ptr<Pool>& pool, Model& m, int max_ops) {
    for (int i = 0; i < max_ops && !disk.crashed(); ++i) {
      // Now and then a clean close and reopen: the checkpoint written at close and the one
      // written at open are cut too.
      std::string err = chance(0.02) ? reopen(disk, pool, m) : step(disk, *pool, m);
      if (!err.empty()) return err;
      if (inflight_.kind != Inflight::none) break;  // the op was cut
    }
    return {};
  }

  const Inflight& inflight() const { return inflight_; }

 private:
  std::uint64_t pick(std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng_);
  }
  bool chance(double p) { return std::bernoulli_distribution(p)(rng_); }
  ObjectId pick_of(const std::vector<ObjectId>& v) { return v[pick(0, v.size() - 1)]; }

  // A random range inside `size`: aligned or not, inside one cluster or across several.
  std::pair<std::uint64_t, std::uint64_t> range(std::uint64_t size) {
    const std::uint64_t cs = cfg_.cluster_size;
    std::uint64_t off, len;
    switch (pick(0, 3)) {
      case 0:  // whole clusters
        off = pick(0, (size - 1) / cs) * cs;
        len = pick(1, 3) * cs;
        break;
      case 1:  // 4 KiB aligned
        off = pick(0, (size - 1) / kSec) * kSec;
        len = pick(1, 2 * cs / kSec + 1) * kSec;
        break;
      case 2:  // small and unaligned
        off = pick(0, size - 1);
        len = pick(1, 2 * kSec);
        break;
      default:  // large and unaligned
        off = pick(0, size - 1);
        len = pick(1, 3 * cs);
        break;
    }
    len = std::min(len, size - off);
    return {off, len};
  }

  std::string reopen(FakeDisk& disk, std::unique_ptr<Pool>& pool, Model& m) {
    Inflight in{Inflight::io, {}, 0, 0, {}, "close() and reopen"};
    if (verbose_) fmt::print("  {}\n", in.what);
    Status st = run(pool->close());
    if (!st) return failed(disk, in, st);
    m.make_all_durable();
    pool.reset();
    auto p = run(Pool::open(disk));
    if (!p) return failed(disk, in, p.status());
    pool = std::move(*p);
    return {};
  }

  // A write refused for lack of space may have landed on some clusters and not on others: each
  // sector must now read its old or its new content, and the model takes what the pool shows.
  std::string settle(FakeDisk& disk, Pool& pool, ModelObject& o, std::uint64_t off, std::uint64_t len,
                     const std::string& what) {
    ++g_no_space;
    const std::uint64_t first = off / kSec, last = (off + len - 1) / kSec;
    std::vector<std::byte> got((last - first + 1) * kSec);
    const std::uint64_t span = std::min<std::uint64_t>(got.size(), o.size - first * kSec);
    Status st = run(pool.read(o.id, first * kSec, std::span(got).first(span)));
    if (!st && disk.crashed()) {
      // The power went during the read-back: the sectors keep both versions as candidates.
      inflight_ = {Inflight::io, {}, 0, o.id, {}, "read-back after no_space " + what};
      return {};
    }
    if (!st) return fmt::format("read after no_space {}: {}", what, st.to_string());
    for (std::uint64_t s = first; s <= last; ++s) {
      SectorState& sec = o.sectors[s];
      std::span<const std::byte> g(got.data() + (s - first) * kSec,
                                   std::min<std::uint64_t>(kSec, o.size - s * kSec));
      if (SectorState::equal(sec.pending.back(), g)) continue;  // the new content landed
      const SectorState::Data old =
          sec.pending.size() > 1 ? sec.pending[sec.pending.size() - 2] : sec.durable;
      if (!SectorState::equal(old, g))
        return fmt::format("{} failed with no_space and left sector {} of {} neither old nor new", what, s,
                           o.name);
      sec.pending.push_back(old);  // it did not: the old content is current again
    }
    return {};
  }

  // Called when a pool operation failed: if the power is out this is the cut operation, else it
  // is a store bug.
  std::string failed(FakeDisk& disk, Inflight in, const Status& st) {
    if (!disk.crashed() && st.code() == Errc::no_space &&
        (in.kind == Inflight::create || in.kind == Inflight::snapshot || in.kind == Inflight::clone ||
         in.kind == Inflight::grow)) {
      ++g_no_space;  // refused as a whole: the model stays as it was, verify() checks it did too
      return {};
    }
    if (disk.crashed()) {
      inflight_ = std::move(in);
      if (inflight_.kind == Inflight::none) inflight_.kind = Inflight::io;
      return {};
    }
    return fmt::format("{} failed without a device fault: {}", in.what, st.to_string());
  }

  std::string step(FakeDisk& disk, Pool& pool, Model& m) {
    auto vols = m.ids(ObjectKind::volume);
    auto snaps = m.ids(ObjectKind::snapshot);
    const std::uint64_t budget = cfg_.device_bytes * cfg_.budget_percent / 100;
    const int r = static_cast<int>(pick(0, 99));
    if (verbose_) fmt::print("  op roll {} (device ops so far {})\n", r, disk.counters().ops);

    if (vols.empty() || (r < 3 && vols.size() < 4 && m.total_bytes() + cfg_.max_volume_bytes <= budget)) {
      const std::uint64_t size = pick(1, cfg_.max_volume_bytes / kSec) * kSec;
      std::string name = fmt::format("v{}", m.names++);
      Inflight in{Inflight::create, name, size, 0, {}, fmt::format("create_volume({}, {})", name, size)};
      auto res = run(pool.create_volume(name, size));
      if (!res) return failed(disk, in, res.status());
      ModelObject o;
      o.id = *res;
      o.name = name;
      o.resize(size);
      m.objects[o.id] = std::move(o);
      m.make_all_durable();
      return {};
    }
    if (r < 50 || (r < 75 && snaps.empty())) {  // write, 1 in 6 with FUA
      ModelObject& o = m.objects[pick_of(vols)];
      auto [off, len] = range(o.size);
      const bool fua = chance(1.0 / 6);
      auto data = pattern(len, m.stamp++, off);
      Inflight in{Inflight::io, {}, 0,
                  o.id,         {}, fmt::format("write({}, {}, {}, fua={})", o.name, off, len, fua)};
      if (verbose_) fmt::print("  {}\n", in.what);
      o.write(off, len, data.data());  // before the call: a cut write may have landed in part
      Status st = run(pool.write(o.id, off, data, fua));
      if (!st && st.code() == Errc::no_space && !disk.crashed())
        return settle(disk, pool, o, off, len, in.what);
      if (!st) return failed(disk, in, st);
      if (fua) o.make_durable(off, len);
      return {};
    }
    if (r < 58) {
      if (r >= 50 + cfg_.flush_percent) return {};
      Inflight in{Inflight::io, {}, 0, 0, {}, "flush()"};
      if (verbose_) fmt::print("  flush\n");
      Status st = run(pool.flush());
      if (!st) return failed(disk, in, st);
      m.make_all_durable();
      return {};
    }
    if (r < 68) {  // trim or write_zeroes
      ModelObject& o = m.objects[pick_of(vols)];
      auto [off, len] = range(o.size);
      const bool trim = chance(0.5), no_unmap = chance(0.3), fua = chance(0.2);
      Inflight in{Inflight::io,
                  {},
                  0,
                  o.id,
                  {},
                  fmt::format("{}({}, {}, {}, no_unmap={}, fua={})", trim ? "trim" : "write_zeroes", o.name,
                              off, len, no_unmap, fua)};
      if (verbose_) fmt::print("  {}\n", in.what);
      o.write(off, len, nullptr);
      Status st =
          trim ? run(pool.trim(o.id, off, len)) : run(pool.write_zeroes(o.id, off, len, no_unmap, fua));
      if (!st && st.code() == Errc::no_space && !disk.crashed())
        return settle(disk, pool, o, off, len, in.what);
      if (!st) return failed(disk, in, st);
      if (!trim && fua) o.make_durable(off, len);
      return {};
    }
    if (r < 75) {  // read back something and compare with the current model (no crash involved)
      ModelObject& o = m.objects[chance(0.7) || snaps.empty() ? pick_of(vols) : pick_of(snaps)];
      auto [off, len] = range(o.size);
      std::vector<std::byte> got(len), want(len);
      Status st = run(pool.read(o.id, off, got));
      if (!st) return failed(disk, {Inflight::io, {}, 0, 0, {}, "read"}, st);
      o.current_bytes(off, want);
      if (got != want) return fmt::format("read({}, {}, {}) differs from what was written", o.name, off, len);
      return {};
    }
    if (r < 83) {  // snapshot
      if (m.total_bytes() + cfg_.max_volume_bytes > budget || snaps.size() >= 8) return {};
      ModelObject& v = m.objects[pick_of(vols)];
      std::string snap = fmt::format("s{}", m.names++);
      Inflight in{
          Inflight::snapshot, v.name + "@" + snap, 0, v.id, {}, fmt::format("snapshot({}@{})", v.name, snap)};
      if (verbose_) fmt::print("  {}\n", in.what);
      auto res = run(pool.snapshot(v.id, snap));
      if (!res) return failed(disk, in, res.status());
      ModelObject s;
      s.id = *res;
      s.kind = ObjectKind::snapshot;
      s.name = in.name;
      s.parent = v.id;
      s.size = v.size;
      s.sectors = v.frozen();
      m.objects[s.id] = std::move(s);
      m.make_all_durable();
      return {};
    }
    if (r < 88) {  // clone
      if (snaps.empty() || vols.size() >= 4 || m.total_bytes() + cfg_.max_volume_bytes > budget) return {};
      const ModelObject& s = m.objects[pick_of(snaps)];
      std::string name = fmt::format("c{}", m.names++);
      Inflight in{Inflight::clone, name, 0, s.id, {}, fmt::format("clone({} -> {})", s.name, name)};
      if (verbose_) fmt::print("  {}\n", in.what);
      auto res = run(pool.clone(s.id, name));
      if (!res) return failed(disk, in, res.status());
      ModelObject c;
      c.id = *res;
      c.name = name;
      c.size = s.size;
      c.sectors = s.frozen();
      m.objects[c.id] = std::move(c);
      m.make_all_durable();
      return {};
    }
    if (r < 94) {  // remove a snapshot, or a volume (with its snapshots)
      const bool volume = vols.size() > 1 && (snaps.empty() || chance(0.3));
      if (!volume && snaps.empty()) return {};
      const ModelObject& o = m.objects[volume ? pick_of(vols) : pick_of(snaps)];
      std::vector<ObjectId> doomed{o.id};
      for (ObjectId s : snaps)
        if (m.objects[s].parent == o.id) doomed.push_back(s);
      const ObjectId id = o.id;
      if (volume && doomed.size() > 1 && chance(0.3)) {
        // Refused while it has snapshots: nothing may change.
        Status st = run(pool.remove(id, false));
        if (st)
          return fmt::format("remove({}) without with_snapshots succeeded although it has snapshots", o.name);
        if (disk.crashed()) {
          inflight_ = {Inflight::io, {}, 0, id, {}, "refused remove"};
          return {};
        }
        return {};
      }
      Inflight in{Inflight::remove, o.name, 0, id, doomed, fmt::format("remove({})", o.name)};
      if (verbose_) fmt::print("  {}\n", in.what);
      Status st = run(pool.remove(id, volume));
      if (!st) return failed(disk, in, st);
      for (ObjectId d : doomed) m.objects.erase(d);
      m.make_all_durable();
      return {};
    }
    {  // grow
      ModelObject& v = m.objects[pick_of(vols)];
      if (v.size + 4 * cfg_.cluster_size > cfg_.max_volume_bytes * 2 ||
          m.total_bytes() + 4 * cfg_.cluster_size > budget)
        return {};
      const std::uint64_t new_size = v.size + pick(1, 4 * cfg_.cluster_size / kSec) * kSec;
      Inflight in{Inflight::grow, v.name, new_size, v.id, {}, fmt::format("grow({}, {})", v.name, new_size)};
      if (verbose_) fmt::print("  {}\n", in.what);
      Status st = run(pool.grow(v.id, new_size));
      if (!st) return failed(disk, in, st);
      v.resize(new_size);
      m.make_all_durable();
      return {};
    }
  }

  const Config& cfg_;
  std::mt19937_64 rng_;
  bool verbose_;
  Inflight inflight_;
};

// Checks the reopened pool against the model and the cut operation. "" when all is well.
std::string verify(Pool& pool, const Model& m, const Inflight& in) {
  auto affected = [&](ObjectId id) {
    if (in.kind == Inflight::remove)
      for (ObjectId d : in.doomed)
        if (d == id) return true;
    return in.kind == Inflight::grow && in.target == id;
  };
  std::set<ObjectId> expected;
  for (const auto& [id, o] : m.objects) {
    auto st = pool.stat(id);
    if (!st) {
      if (affected(id) && in.kind == Inflight::remove) continue;  // the cut removal happened
      return fmt::format("{} (id {}) is gone: {}", o.name, id, st.status().to_string());
    }
    expected.insert(id);
    if (st->kind != o.kind) return fmt::format("{} (id {}) changed kind", o.name, id);
    ModelObject check = o;
    if (affected(id) && in.kind == Inflight::grow && st->size == in.size) {
      check.resize(in.size);  // the grow made it: the new tail reads zeroes
    } else if (st->size != o.size) {
      return fmt::format("{} (id {}) has size {}, expected {}", o.name, id, st->size, o.size);
    }
    std::string err = compare_object(pool, check, /*after_crash=*/true);
    if (!err.empty()) return err;
  }
  if (in.kind == Inflight::remove) {
    // A removal is atomic: a volume and its snapshots go together or not at all.
    std::size_t present = 0;
    for (ObjectId d : in.doomed) present += pool.stat(d).is_ok();
    if (present != 0 && present != in.doomed.size())
      return fmt::format("cut {} left {} of its {} objects", in.what, present, in.doomed.size());
  }
  // Objects the model does not know: only the one whose creation was cut, and it must be right.
  for (const auto& info : pool.list()) {
    if (expected.count(info.id)) continue;
    if (m.objects.count(info.id)) return fmt::format("object {} listed but stat() fails", info.id);
    ModelObject o;
    o.id = info.id;
    o.kind = info.kind;
    o.size = info.size;
    switch (in.kind) {
      case Inflight::create: {
        auto f = pool.find(in.name);
        if (!f || *f != info.id || info.size != in.size)
          return fmt::format("unexpected object {} '{}' after a cut {}", info.id, info.name, in.what);
        o.name = in.name;
        o.resize(in.size);
        break;
      }
      case Inflight::snapshot: {
        auto f = pool.find(in.name);
        const ModelObject& v = m.objects.at(in.target);
        if (!f || *f != info.id || info.kind != ObjectKind::snapshot || info.size != v.size)
          return fmt::format("unexpected object {} '{}' after a cut {}", info.id, info.name, in.what);
        // It may hold any version the volume itself may hold after the crash.
        o.name = in.name;
        o.sectors = v.sectors;
        break;
      }
      case Inflight::clone: {
        auto f = pool.find(in.name);
        const ModelObject& s = m.objects.at(in.target);
        if (!f || *f != info.id || info.kind != ObjectKind::volume || info.size != s.size)
          return fmt::format("unexpected object {} '{}' after a cut {}", info.id, info.name, in.what);
        o.name = in.name;
        o.sectors = s.frozen();
        break;
      }
      default: return fmt::format("unexpected object {} '{}' after a cut {}", info.id, info.name, in.what);
    }
    std::string err = compare_object(pool, o, /*after_crash=*/true);
    if (!err.empty()) return "(created by the cut operation) " + err;
  }
  auto report = pool.check();
  if (!report.ok()) return fmt::format("check() after recovery: {}", fmt::join(report.errors, "; "));
  return {};
}

int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : dflt;
}

Template make_template(const Config& cfg) {
  Template t;
  t.disk = FakeDisk(cfg.device_bytes, fmt::format("crash-{}k", cfg.cluster_size / 1024));
  store::PoolOptions opts;
  opts.name = "crashpool";
  opts.cluster_size = cfg.cluster_size;
  opts.journal_bytes = cfg.journal_bytes;
  auto pool = run(Pool::create(t.disk, opts));
  EXPECT_TRUE(pool) << pool.status().to_string();
  if (!pool) return t;
  // Some history: two volumes with data, a snapshot, a clone, more writes.
  Trial warmup(cfg, 12345, false);
  std::string err = warmup.workload(t.disk, *pool, t.model, 40);
  EXPECT_EQ(err, "");
  if (cfg.budget_percent > 100) {
    // Overcommitted configs start nearly full (every volume written end to end, more volumes
    // until 85% of the clusters are used), so the allocator soon hands out clusters freed during
    // the trial itself.
    // One cluster per write: a write refused for space then changes nothing.
    auto fill = [&](ModelObject& o) {
      const std::uint64_t stamp = t.model.stamp++;
      for (std::uint64_t off = 0; off < o.size; off += cfg.cluster_size) {
        const std::uint64_t len = std::min<std::uint64_t>(cfg.cluster_size, o.size - off);
        auto data = pattern(len, stamp, off);
        Status st = run((*pool)->write(o.id, off, data));
        if (!st) return st;
        o.write(off, len, data.data());
      }
      return Status::ok();
    };
    for (auto& [id, o] : t.model.objects)
      if (o.kind == ObjectKind::volume && !fill(o)) break;
    while ((*pool)->info().free_clusters > (*pool)->info().data_clusters * 15 / 100) {
      std::string name = fmt::format("fill{}", t.model.names++);
      const std::uint64_t size = std::min<std::uint64_t>(
          cfg.max_volume_bytes,
          ((*pool)->info().free_clusters - (*pool)->info().data_clusters * 15 / 100) * cfg.cluster_size);
      auto id = run((*pool)->create_volume(name, size));
      EXPECT_TRUE(id) << id.status().to_string();
      if (!id) break;
      ModelObject o;
      o.id = *id;
      o.name = name;
      o.resize(size);
      Status st = fill(o);
      t.model.objects[o.id] = std::move(o);
      if (!st) break;
    }
  }
  EXPECT_TRUE(run((*pool)->flush()));
  for (const auto& [id, o] : t.model.objects) EXPECT_EQ(compare_object(**pool, o, false), "") << "template";
  const auto info = (*pool)->info();
  fmt::print("template pool: {} objects, {} of {} data clusters free\n", t.model.objects.size(),
             info.free_clusters, info.data_clusters);
  t.model.make_all_durable();
  EXPECT_TRUE(run((*pool)->close()));
  pool->reset();
  t.disk = t.disk.durable_copy();
  return t;
}

// One trial: returns "" or the failure. `ops_used` gets the number of device ops before the cut.
// `cut_at` counts device operations, or device flushes when `by_flush` (the cut then lands right
// after that flush, between a commit's data flush and its journal write or after the journal).
std::string run_trial(const Config& cfg, const Template& tmpl, std::uint64_t seed, std::uint64_t cut_at,
                      bool by_flush, bool verbose, bool& cut_mid_workload) {
  FakeDisk disk = tmpl.disk;
  Model m = tmpl.model;
  const PowerLoss mode = seed % 2 ? PowerLoss::RandomSubset : PowerLoss::DropAll;
  disk.reset_counters();
  if (by_flush)
    disk.crash_after_flushes(cut_at);
  else
    disk.crash_after(cut_at);
  Trial trial(cfg, seed, verbose);
  Inflight in;
  {
    auto opened = run(Pool::open(disk));
    if (opened) {
      std::string err = trial.workload(disk, *opened, m, cfg.ops_per_trial);
      if (!err.empty()) return "during the workload: " + err;
      in = trial.inflight();
    } else if (!disk.crashed()) {
      return "open of the template failed: " + opened.status().to_string();
    }
    cut_mid_workload = disk.crashed();
  }  // the pool object dies with the power
  if (verbose) fmt::print("cut after {} device ops in {}\n", disk.counters().ops, in.what);
  disk.power_loss(mode, mix64(seed));

  if (seed % 4 == 3) {
    // A read-only open (duplex-fsck) of the crashed pool must replay and check without writing.
    FakeDisk ro = disk;
    ro.set_read_only(true);
    ro.reset_counters();
    store::OpenOptions oo;
    oo.read_only = true;
    auto p = run(Pool::open(ro, oo));
    if (!p) return "read-only open after the crash: " + p.status().to_string();
    std::string err = verify(**p, m, in);
    if (!err.empty()) return "read-only open: " + err;
    if (ro.counters().writes || ro.counters().discards) return "read-only open wrote to the device";
  }

  auto reopened = run(Pool::open(disk));
  if (!reopened) return "reopen after the crash: " + reopened.status().to_string();
  Pool& pool = **reopened;
  std::string err = verify(pool, m, in);
  if (!err.empty()) return err;

  // The recovered pool keeps working: write, flush, close, open, read back.
  ObjectId vol = 0;
  std::uint64_t vsize = 0;
  for (const auto& info : pool.list())
    if (info.kind == ObjectKind::volume) {
      vol = info.id;
      vsize = info.size;
      break;
    }
  if (vol == 0) {
    auto v = run(pool.create_volume("after-crash", 256 * 1024));
    if (!v) return "create_volume after recovery: " + v.status().to_string();
    vol = *v;
    vsize = 256 * 1024;
  }
  const std::uint64_t len = std::min<std::uint64_t>(vsize, 3 * kSec + 17);
  auto data = pattern(len, ~seed, 0);
  Status st = run(pool.write(vol, 0, data));
  if (st.code() == Errc::no_space) {
    // A full (overcommitted) pool: make room the way an operator would, by deleting snapshots.
    for (const auto& info : pool.list())
      if (info.kind == ObjectKind::snapshot) st = run(pool.remove(info.id));
    st = run(pool.flush());
    if (st) st = run(pool.write(vol, 0, data));
    if (st.code() == Errc::no_space) {  // clones may still share everything: keep only `vol`
      for (const auto& info : pool.list())
        if (info.id != vol) st = run(pool.remove(info.id, true));
      st = run(pool.flush());
      if (st) st = run(pool.write(vol, 0, data));
    }
  }
  if (st) st = run(pool.flush());
  if (st) st = run(pool.close());
  if (!st) return "I/O after recovery: " + st.to_string();
  reopened->reset();
  auto again = run(Pool::open(disk));
  if (!again) return "open after the post-recovery round: " + again.status().to_string();
  std::vector<std::byte> got(len);
  st = run((*again)->read(vol, 0, got));
  if (!st || got != data) return "post-recovery write did not survive close and reopen";
  auto report = (*again)->check();
  if (!report.ok())
    return fmt::format("check() after the post-recovery round: {}", fmt::join(report.errors, "; "));
  return {};
}

// Device ops and flushes a full workload takes from this template, to spread the cuts over it.
struct Span {
  std::uint64_t ops = 0, flushes = 0;
};
Span calibrate(const Config& cfg, const Template& tmpl) {
  Span most;
  for (std::uint64_t seed = 0; seed < 8; ++seed) {
    FakeDisk disk = tmpl.disk;
    Model m = tmpl.model;
    disk.reset_counters();
    auto p = run(Pool::open(disk));
    if (!p) return {1000, 50};
    Trial t(cfg, seed, false);
    (void)t.workload(disk, *p, m, cfg.ops_per_trial);
    most.ops = std::max(most.ops, disk.counters().ops);
    most.flushes = std::max(most.flushes, disk.counters().flushes);
  }
  return most;
}

void crash_campaign(const Config& cfg, std::uint64_t first_seed, int trials) {
  const char* only = std::getenv("DUPLEX_CRASH_SEED");
  const auto t0 = std::chrono::steady_clock::now();
  Template tmpl = make_template(cfg);
  ASSERT_FALSE(testing::Test::HasFailure()) << "template pool could not be built";
  const Span span = calibrate(cfg, tmpl);
  ASSERT_GT(span.ops, 10u) << "the workload does no I/O?";

  std::uint64_t points = 0, mid = 0, failures = 0, after_flush = 0;
  g_no_space = 0;
  std::set<std::tuple<std::uint64_t, bool, std::uint64_t>> distinct;
  for (int i = 0; i < trials; ++i) {
    const std::uint64_t seed = only ? std::strtoull(only, nullptr, 10) : first_seed + i;
    // The cut point: one trial in three right after a flush; the others anywhere in the workload,
    // including inside the initial open and, rarely, after the workload's end (a crash with
    // everything still in the cache).
    const bool by_flush = mix64(seed ^ 0xF1) % 3 == 0;
    const std::uint64_t cut = by_flush ? 1 + mix64(seed ^ 0xC07) % (span.flushes + 1)
                                       : mix64(seed ^ 0xC07) % (span.ops + span.ops / 8 + 1);
    bool was_mid = false;
    std::string err = run_trial(cfg, tmpl, seed, cut, by_flush, only != nullptr, was_mid);
    ++points;
    mid += was_mid;
    after_flush += by_flush;
    distinct.insert({seed, by_flush, cut});
    if (!err.empty()) {
      ++failures;
      ADD_FAILURE() << fmt::format(
          "cluster {} seed {} cut after device {} {} ({}): {}\n  reproduce: "
          "DUPLEX_CRASH_SEED={} {} --gtest_filter='PoolCrash.{}'",
          cfg.cluster_size, seed, by_flush ? "flush" : "op", cut, seed % 2 ? "random subset" : "drop all",
          err, seed, "crash_test", testing::UnitTest::GetInstance()->current_test_info()->name());
      if (failures >= 5) break;
    }
    if (only) break;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print(
      "crash points: {} distinct of {} trials (cluster {} B, {} cut inside the workload, {} right after a "
      "flush; "
      "device ops per workload <= {}; {} ops refused for space; {:.1f} s)\n",
      distinct.size(), points, cfg.cluster_size, mid, after_flush, span.ops, g_no_space, secs);
  testing::Test::RecordProperty("crash_points", static_cast<int>(distinct.size()));
}

// Campaigns with disjoint seeds, so `ctest -j` spreads them over the cores. In the default (CI)
// mode they run 10,400 cut points together; DUPLEX_CRASH_TRIALS=N runs N in total, shared the
// same way. The full-pool configs keep the allocator wrapping around, so a cluster freed in
// memory is soon wanted again: reusing it before the free is durable shows up as foreign data.
const Config k4K{4096, 3 << 20, 192 << 10};
const Config k64K{64 << 10, 8 << 20, 512 << 10};
const Config k4KFull{4096, 1536 << 10, 256 << 10, 100, 3, 150};
const Config k64KFull{64 << 10, 6 << 20, 1 << 20, 100, 3, 150};
// A 4-block journal fills after a few commits: checkpoints (and superblock switches) are cut too.
const Config k4KSmallJournal{4096, 3 << 20, 192 << 10, 60, 8, 50, 16 << 10};
const Config k64KSmallJournal{64 << 10, 8 << 20, 512 << 10, 60, 8, 50, 16 << 10};

int share(int default_trials) {
  const int total = env_int("DUPLEX_CRASH_TRIALS", 0);
  return total > 0 ? std::max(1, static_cast<int>(static_cast<long long>(total) * default_trials / 10400))
                   : default_trials;
}

// Formatting over an old pool, cut at every device operation: the device then holds the old
// pool, the new one, or something open() refuses with a clear error. Never a half-made pool.
TEST(PoolCrash, DuringFormatOverAnOldPool) {
  std::uint64_t points = 0;
  for (std::uint32_t cluster : {4096u, 65536u}) {
    FakeDisk base(4 << 20, "format-disk");
    store::PoolOptions old_opts;
    old_opts.name = "old";
    old_opts.cluster_size = cluster;
    auto old_pool = must(run(Pool::create(base, old_opts)));
    const ObjectId v = must(run(old_pool->create_volume("v", 1 << 20)));
    auto data = pattern(300000, 1, 0);
    must(run(old_pool->write(v, 0, data)));
    must(run(old_pool->close()));
    old_pool.reset();
    base = base.durable_copy();

    store::PoolOptions new_opts;
    new_opts.name = "new";
    new_opts.cluster_size = cluster;
    FakeDisk probe = base;
    probe.reset_counters();
    must(run(Pool::create(probe, new_opts)));
    const std::uint64_t ops = probe.counters().ops;
    for (std::uint64_t n = 0; n <= ops; ++n) {
      for (PowerLoss mode : {PowerLoss::DropAll, PowerLoss::RandomSubset}) {
        SCOPED_TRACE(fmt::format("cluster {} cut after op {} of {}, {}", cluster, n, ops,
                                 mode == PowerLoss::DropAll ? "drop all" : "random subset"));
        FakeDisk d = base;
        d.reset_counters();
        d.crash_after(n);
        (void)run(Pool::create(d, new_opts));
        d.power_loss(mode, n);
        ++points;
        auto p = run(Pool::open(d));
        if (!p) {
          EXPECT_TRUE(p.status().code() == Errc::invalid || p.status().code() == Errc::corrupt)
              << p.status().to_string();
          EXPECT_NE(p.status().message().find("format-disk"), std::string::npos) << p.status().to_string();
          continue;
        }
        const auto info = (*p)->info();
        EXPECT_TRUE((*p)->check().ok());
        if (info.name == "old") {
          std::vector<std::byte> got(data.size());
          must(run((*p)->read(v, 0, got)));
          EXPECT_EQ(got, data) << "the old pool came back with other data";
        } else {
          EXPECT_EQ(info.name, "new");
          EXPECT_TRUE((*p)->list().empty());
        }
      }
    }
  }
  fmt::print("crash points: {} during format\n", points);
}

TEST(PoolCrash, Cluster4KSeedsA) { crash_campaign(k4K, 1'000'000, share(2000)); }
TEST(PoolCrash, Cluster4KSeedsB) { crash_campaign(k4K, 2'000'000, share(2000)); }
TEST(PoolCrash, Cluster64KSeedsA) { crash_campaign(k64K, 3'000'000, share(1200)); }
TEST(PoolCrash, Cluster64KSeedsB) { crash_campaign(k64K, 4'000'000, share(1200)); }
TEST(PoolCrash, Cluster4KFullPool) { crash_campaign(k4KFull, 5'000'000, share(1600)); }
TEST(PoolCrash, Cluster64KFullPool) { crash_campaign(k64KFull, 6'000'000, share(800)); }
TEST(PoolCrash, Cluster4KSmallJournal) { crash_campaign(k4KSmallJournal, 7'000'000, share(1000)); }
TEST(PoolCrash, Cluster64KSmallJournal) { crash_campaign(k64KSmallJournal, 8'000'000, share(600)); }

}  // namespace
}  // namespace duplex::test
