// duplex-store-bench: the store engine against the raw file it sits on, in one run, on one disk.
//
// RAW   = a UringDevice (O_DIRECT, the same Ring) on a plain file
// STORE = a Pool on a UringDevice on a pool file in the same directory, one volume as large as
//         the raw file
// Both are written end to end first, so random writes are overwrites in place: for the store,
// overwrites of clusters the volume owns (one data write, no metadata), for ext4, of written
// extents (no unwritten-extent conversion). Every row runs raw then store for the same time, and
// the ratio store/raw is the figure of merit (docs/performance.md, "Store engine vs raw file").
//
// Then the snapshot test: 4 KiB random reads of the volume with 0 snapshots, and again after N
// snapshots with overwrites between them (so clusters have histories), plus reads of the oldest
// and newest snapshot.
//
// Single thread, one Ring: the load generator and the engine share one core, as the daemon's
// event loop will. Why not fio: see docs/performance.md.
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "duplex/base/buffer.h"
#include "duplex/reactor/uring.h"
#include "duplex/reactor/uring_device.h"
#include "duplex/store/pool.h"

namespace duplex::bench {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr std::uint64_t KiB = 1024;
constexpr std::uint64_t MiB = 1024 * KiB;
constexpr std::uint64_t GiB = 1024 * MiB;

// One I/O on whichever target is measured.
enum class Kind { read, write, write_fua };
using IoFn = std::function<Task<Status>(Kind kind, std::uint64_t off, std::span<std::byte> buf)>;

// The raw file's FUA write: the data, then a cache flush (what an NBD client's FUA costs on a file).
Task<Status> write_then_flush(BlockDevice& d, std::uint64_t off, std::span<const std::byte> b) {
  DPX_CO_TRY(co_await d.write(off, b));
  co_return co_await d.flush();
}

struct Workload {
  std::string name;
  bool write = false;
  bool random = true;
  std::size_t bs = 4096;
  int qd = 1;
  bool fua = false;  // durable before completion
};

struct Measure {
  std::uint64_t ops = 0;
  std::uint64_t bytes = 0;
  double seconds = 0;
  double cpu_seconds = 0;  // user+sys of this process: engine plus load generator
  std::uint64_t sqes = 0;  // device operations the Ring submitted: the I/O amplification
  double mean_us = 0;
  double p50_us = 0;
  double p99_us = 0;
  double iops() const { return seconds > 0 ? ops / seconds : 0; }
  double mibps() const { return seconds > 0 ? bytes / seconds / MiB : 0; }
  double cpu_us_per_op() const { return ops ? cpu_seconds * 1e6 / ops : 0; }
  double sqes_per_op() const { return ops ? static_cast<double>(sqes) / ops : 0; }
  json to_json() const {
    return {{"ops", ops},
            {"bytes", bytes},
            {"seconds", seconds},
            {"iops", iops()},
            {"mib_s", mibps()},
            {"mean_us", mean_us},
            {"p50_us", p50_us},
            {"p99_us", p99_us},
            {"cpu_us_per_op", cpu_us_per_op()},
            {"sqes_per_op", sqes_per_op()}};
  }
};

double cpu_now() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

struct RunState {
  const IoFn* io = nullptr;
  Workload w;
  std::uint64_t span = 0;  // bytes addressed: [0, span)
  Clock::time_point deadline;
  std::uint64_t next_seq = 0;
  std::uint64_t ops = 0;
  std::uint64_t bytes = 0;
  std::vector<std::uint32_t> lat_ns;  // capped at 4.29 s, far above anything seen
  bool record = true;
  Status error;
  int running = 0;
};

Task<void> worker(RunState& st, std::uint32_t seed) {
  AlignedBuffer buf(st.w.bs);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < buf.size(); i += 8) {
    const std::uint64_t v = rng();
    std::memcpy(buf.data() + i, &v, std::min<std::size_t>(8, buf.size() - i));
  }
  const std::uint64_t blocks = st.span / st.w.bs;
  while (st.error.is_ok()) {
    const auto t0 = Clock::now();
    if (t0 >= st.deadline) break;
    std::uint64_t off;
    if (st.w.random) {
      off = (rng() % blocks) * st.w.bs;
    } else {
      off = st.next_seq;
      st.next_seq = (st.next_seq + st.w.bs) % (blocks * st.w.bs);
    }
    if (st.w.write) {  // a different first word per write, so no layer could skip a rewrite
      const std::uint64_t v = rng();
      std::memcpy(buf.data(), &v, sizeof v);
    }
    const Kind kind = !st.w.write ? Kind::read : st.w.fua ? Kind::write_fua : Kind::write;
    Status s = co_await (*st.io)(kind, off, buf.span());
    if (!s.is_ok()) {
      st.error = s;
      break;
    }
    const auto t1 = Clock::now();
    ++st.ops;
    st.bytes += st.w.bs;
    if (st.record)
      st.lat_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count(), UINT32_MAX)));
  }
}

void summarize_latency(std::vector<std::uint32_t>& v, Measure& m) {
  if (v.empty()) return;
  double sum = 0;
  for (auto x : v) sum += x;
  m.mean_us = sum / v.size() / 1000.0;
  auto pct = [&](double p) {
    const std::size_t k = std::min(v.size() - 1, static_cast<std::size_t>(p * v.size()));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k] / 1000.0;
  };
  m.p50_us = pct(0.50);
  m.p99_us = pct(0.99);
}

// Runs `w` for `seconds`. Latencies go to `sink` when given (to pool several rounds), else are
// summarized into the result.
Result<Measure> run_for(Ring& ring, const IoFn& io, const Workload& w, std::uint64_t span, double seconds,
                        bool record = true, std::vector<std::uint32_t>* sink = nullptr) {
  RunState st;
  st.io = &io;
  st.w = w;
  st.span = span;
  st.deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  st.record = record;
  if (record) st.lat_ns.reserve(1 << 20);
  std::mt19937 seeds(static_cast<std::uint32_t>(w.qd * 7919 + w.bs + w.write));
  const double cpu0 = cpu_now();
  const std::uint64_t sqe0 = ring.stats().submitted;
  const auto t0 = Clock::now();
  st.running = w.qd;
  for (int i = 0; i < w.qd; ++i) spawn(worker(st, seeds()), [&] { --st.running; });
  while (st.running > 0) ring.wait();
  const auto t1 = Clock::now();
  if (!st.error.is_ok()) return st.error;
  Measure m;
  m.ops = st.ops;
  m.bytes = st.bytes;
  m.seconds = std::chrono::duration<double>(t1 - t0).count();
  m.cpu_seconds = cpu_now() - cpu0;
  m.sqes = ring.stats().submitted - sqe0;
  if (sink)
    sink->insert(sink->end(), st.lat_ns.begin(), st.lat_ns.end());
  else
    summarize_latency(st.lat_ns, m);
  return m;
}

template <typename T>
T wait_for(Ring& ring, Task<T> t) {
  return sync_wait(std::move(t), [&] { ring.wait(); });
}

// Writes [0, span) once, sequentially, 1 MiB at QD 4.
Status fill(Ring& ring, const IoFn& io, std::uint64_t span) {
  RunState st;
  st.io = &io;
  st.w = Workload{"fill", true, false, MiB, 4};
  st.span = span;
  st.deadline = Clock::time_point::max();
  st.record = false;
  std::uint64_t issued = 0;
  const std::uint64_t total = span / MiB;
  // A bounded variant of worker(): exactly one pass.
  auto pass = [&](std::uint32_t seed) -> Task<void> {
    AlignedBuffer buf(MiB);
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < buf.size(); i += 8) {
      const std::uint64_t v = rng();
      std::memcpy(buf.data() + i, &v, 8);
    }
    while (st.error.is_ok() && issued < total) {
      const std::uint64_t off = issued++ * MiB;
      Status s = co_await io(Kind::write, off, buf.span());
      if (!s.is_ok()) st.error = s;
    }
  };
  st.running = 4;
  for (int i = 0; i < 4; ++i) spawn(pass(static_cast<std::uint32_t>(i + 1)), [&] { --st.running; });
  while (st.running > 0) ring.wait();
  return st.error;
}

std::string fmt_rate(const Workload& w, const Measure& m) {
  return w.bs >= MiB ? fmt::format("{:.0f} MiB/s", m.mibps()) : fmt::format("{:.0f} IOPS", m.iops());
}
double rate(const Workload& w, const Measure& m) { return w.bs >= MiB ? m.mibps() : m.iops(); }

std::string read_first_line(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(key, 0) == 0) {
      auto p = line.find(':');
      if (p != std::string::npos) {
        auto v = line.substr(p + 1);
        v.erase(0, v.find_first_not_of(" \t"));
        return v;
      }
    }
  return "?";
}

json machine_facts(const std::string& dir) {
  utsname u{};
  ::uname(&u);
  struct statfs sf{};
  ::statfs(dir.c_str(), &sf);
  std::string fstype = fmt::format("{:#x}", static_cast<unsigned long>(sf.f_type));
  if (sf.f_type == 0xEF53) fstype = "ext4";
  if (sf.f_type == 0x58465342) fstype = "xfs";
  if (sf.f_type == 0x9123683E) fstype = "btrfs";
  if (sf.f_type == 0x01021994) fstype = "tmpfs";
  // The device under `dir`: the longest mount point that prefixes it.
  std::string device = "?", best;
  std::ifstream mounts("/proc/mounts");
  std::string dev, mnt, rest;
  const std::string abs = std::filesystem::weakly_canonical(dir).string();
  while (mounts >> dev >> mnt && std::getline(mounts, rest))
    if (abs.rfind(mnt, 0) == 0 && mnt.size() > best.size()) best = mnt, device = dev;
  std::string load;
  std::getline(std::ifstream("/proc/loadavg") >> std::ws, load);
  return {{"cpu", read_first_line("/proc/cpuinfo", "model name")},
          {"loadavg_at_start", load},
          {"cores", ::sysconf(_SC_NPROCESSORS_ONLN)},
          {"kernel", std::string(u.release)},
          {"filesystem", fstype},
          {"device", device},
          {"mount", best}};
}

struct Options {
  std::string dir = "/var/tmp";
  std::string size_str = "1G";
  std::uint64_t size = GiB;
  double seconds = 5;
  double warmup = 1;
  std::uint32_t cluster_kib = 64;
  int snapshots = 250;
  int snap_writes = 16;
  bool skip_snapshots = false;
  bool keep = false;
  std::string json_path;
  unsigned ring_entries = 256;
  int rounds = 3;
  bool aa = false;
  std::string rows;  // only rows whose name contains this
  bool verbose = false;
};

Result<std::uint64_t> parse_size(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || v <= 0) return Status::error(Errc::invalid, "bad size '{}'", s);
  std::uint64_t mult = 1;
  switch (*end) {
    case 'k':
    case 'K': mult = KiB; break;
    case 'm':
    case 'M': mult = MiB; break;
    case 'g':
    case 'G': mult = GiB; break;
    case 't':
    case 'T': mult = 1024 * GiB; break;
    case '\0': break;
    default: return Status::error(Errc::invalid, "bad size suffix in '{}'", s);
  }
  return static_cast<std::uint64_t>(v * mult) / MiB * MiB;
}

int run(const Options& o) {
  auto ring_r = Ring::create(o.ring_entries);
  if (!ring_r) {
    fmt::print(stderr, "duplex-store-bench: {}\n", ring_r.status().to_string());
    // 77: "skipped" for ctest's smoke test where the kernel refuses io_uring.
    return ring_r.status().code() == Errc::unsupported ? 77 : 1;
  }
  Ring& ring = **ring_r;
  namespace fs = std::filesystem;
  const std::string tag = fmt::format("duplex-store-bench-{}", ::getpid());
  const std::string raw_path = (fs::path(o.dir) / (tag + "-raw.img")).string();
  const std::string pool_path = (fs::path(o.dir) / (tag + "-pool.img")).string();
  struct Cleanup {
    std::vector<std::string> paths;
    bool keep;
    ~Cleanup() {
      if (!keep)
        for (auto& p : paths) ::unlink(p.c_str());
    }
  } cleanup{{raw_path, pool_path}, o.keep};

  // Headroom for metadata, journal and the copy-on-write clusters of the snapshot test.
  const std::uint64_t snap_cow =
      o.skip_snapshots ? 0 : std::uint64_t(o.snapshots) * o.snap_writes * o.cluster_kib * KiB;
  const std::uint64_t pool_size = o.size + o.size / 8 + snap_cow + 256 * MiB;

  DeviceOptions dopt;
  dopt.create = true;
  dopt.create_size = o.size;
  auto raw = UringDevice::open(raw_path, dopt, ring);
  if (!raw) {
    fmt::print(stderr, "duplex-store-bench: {}\n", raw.status().to_string());
    return 1;
  }
  dopt.create_size = pool_size;
  auto pdev = UringDevice::open(pool_path, dopt, ring);
  if (!pdev) {
    fmt::print(stderr, "duplex-store-bench: {}\n", pdev.status().to_string());
    return 1;
  }
  store::PoolOptions popt;
  popt.name = "bench";
  popt.cluster_size = o.cluster_kib * KiB;
  std::unique_ptr<store::Pool> pool_ptr;
  store::ObjectId vol = 0;
  if (!o.aa) {
    auto pool_r = wait_for(ring, store::Pool::create(**pdev, popt));
    if (!pool_r) {
      fmt::print(stderr, "duplex-store-bench: pool create: {}\n", pool_r.status().to_string());
      return 1;
    }
    pool_ptr = std::move(*pool_r);
    auto vol_r = wait_for(ring, pool_ptr->create_volume("bench", o.size));
    if (!vol_r) {
      fmt::print(stderr, "duplex-store-bench: create volume: {}\n", vol_r.status().to_string());
      return 1;
    }
    vol = *vol_r;
  }
  store::Pool& pool = *pool_ptr;  // unused (never dereferenced) in --aa mode
  UringDevice& pooldev = **pdev;

  UringDevice& rawdev = **raw;
  IoFn raw_io = [&](Kind k, std::uint64_t off, std::span<std::byte> b) -> Task<Status> {
    if (k == Kind::write_fua) return write_then_flush(rawdev, off, b);
    return k == Kind::write ? rawdev.write(off, b) : rawdev.read(off, b);
  };
  IoFn store_io = [&](Kind k, std::uint64_t off, std::span<std::byte> b) -> Task<Status> {
    return k != Kind::read ? pool.write(vol, off, b, k == Kind::write_fua) : pool.read(vol, off, b);
  };
  if (o.aa)
    store_io = [&](Kind k, std::uint64_t off, std::span<std::byte> b) -> Task<Status> {
      if (k == Kind::write_fua) return write_then_flush(pooldev, off + MiB, b);
      return k == Kind::write ? pooldev.write(off + MiB, b) : pooldev.read(off + MiB, b);
    };
  auto flush_store = [&]() { return o.aa ? wait_for(ring, pooldev.flush()) : wait_for(ring, pool.flush()); };

  // Phase marks with CLOCK_MONOTONIC time, to line up with kernel traces (io_uring tracepoints).
  auto mark = [&](const std::string& what) {
    if (o.verbose)
      fmt::print(stderr, "  [{:.3f}] {}\n",
                 std::chrono::duration<double>(Clock::now().time_since_epoch()).count(), what);
  };
  auto die = [&](const char* what, const Status& s) {
    fmt::print(stderr, "duplex-store-bench: {}: {}\n", what, s.to_string());
    return 1;
  };

  // The disk of a VM drifts by tens of percent over seconds (host caches, neighbours, other
  // processes' I/O): rounds alternate the two targets, swapping who goes first, so drift hits both
  // alike, and the spread of the per-round ratios is reported next to the ratio.
  struct Pair {
    Measure a, b;
    std::vector<double> ratios;  // b/a per round
  };
  auto compare = [&](const Workload& w, const IoFn& io_a, const IoFn& io_b,
                     const std::function<Status(bool is_a)>& flush) -> Result<Pair> {
    Pair p;
    std::vector<std::uint32_t> lat_a, lat_b;
    for (int round = 0; round < o.rounds; ++round) {
      double ra = 0, rb = 0;
      for (int k = 0; k < 2; ++k) {
        const bool is_a = (k == 0) == (round % 2 == 0);
        const IoFn& io = is_a ? io_a : io_b;
        if (o.warmup > 0 && round == 0) {
          auto wm = run_for(ring, io, w, o.size, o.warmup, false);
          if (!wm) return wm.status();
        }
        mark(fmt::format("{} measure round {}", is_a ? "A" : "B", round));
        auto m = run_for(ring, io, w, o.size, o.seconds / o.rounds, true, is_a ? &lat_a : &lat_b);
        if (!m) return m.status();
        (is_a ? ra : rb) = rate(w, *m);
        Measure& acc = is_a ? p.a : p.b;
        acc.ops += m->ops;
        acc.bytes += m->bytes;
        acc.seconds += m->seconds;
        acc.cpu_seconds += m->cpu_seconds;
        acc.sqes += m->sqes;
        // Written data goes to stable storage outside the timed window, for both alike.
        if (w.write) {
          mark("flush");
          DPX_TRY(flush(is_a));
        }
      }
      p.ratios.push_back(ra > 0 ? rb / ra : 0);
    }
    summarize_latency(lat_a, p.a);
    summarize_latency(lat_b, p.b);
    return p;
  };

  fmt::print(stderr, "preconditioning: writing {} MiB raw and {} MiB store volume...\n", o.size / MiB,
             o.size / MiB);
  auto tp = Clock::now();
  if (Status s = fill(ring, raw_io, o.size); !s.is_ok()) return die("fill raw", s);
  if (Status s = wait_for(ring, rawdev.flush()); !s.is_ok()) return die("flush raw", s);
  const double raw_fill_s = std::chrono::duration<double>(Clock::now() - tp).count();
  tp = Clock::now();
  if (Status s = fill(ring, store_io, o.size); !s.is_ok()) return die("fill store", s);
  if (Status s = flush_store(); !s.is_ok()) return die("flush store", s);
  const double store_fill_s = std::chrono::duration<double>(Clock::now() - tp).count();
  fmt::print(stderr, "  raw fill {:.1f} s ({:.0f} MiB/s), store fill (allocating) {:.1f} s ({:.0f} MiB/s)\n",
             raw_fill_s, o.size / MiB / raw_fill_s, store_fill_s, o.size / MiB / store_fill_s);

  const std::vector<Workload> rows = {
      {"4 KiB random read QD1", false, true, 4 * KiB, 1},
      {"4 KiB random read QD32", false, true, 4 * KiB, 32},
      {"4 KiB random write QD1 (owned)", true, true, 4 * KiB, 1},
      {"4 KiB random write QD32 (owned)", true, true, 4 * KiB, 32},
      {"1 MiB sequential read QD4", false, false, MiB, 4},
      {"1 MiB sequential write QD4 (owned)", true, false, MiB, 4},
      // Durable writes: the raw file does write + fdatasync, the store write(fua) = write + commit.
      {"4 KiB random write+FUA QD1 (owned)", true, true, 4 * KiB, 1, true},
      {"4 KiB random write+FUA QD32 (owned)", true, true, 4 * KiB, 32, true},
  };

  json out;
  out["machine"] = machine_facts(o.dir);
  out["config"] = {{"dir", o.dir},
                   {"size", o.size},
                   {"seconds", o.seconds},
                   {"warmup", o.warmup},
                   {"cluster_size", o.cluster_kib * KiB},
                   {"ring_entries", o.ring_entries},
                   {"pool_file_size", pool_size},
                   {"snapshots", o.snapshots},
                   {"snap_writes", o.snap_writes}};
  out["precondition"] = {{"raw_fill_s", raw_fill_s}, {"store_fill_s", store_fill_s}};
  out["rows"] = json::array();

  std::string md;
  md +=
      "| workload | raw | store | store/raw (round min–max) | raw mean / p99 µs | store mean / p99 µs | CPU "
      "µs/op raw / store | device ops per op raw / store |\n";
  md += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& w : rows) {
    if (!o.rows.empty() && w.name.find(o.rows) == std::string::npos) continue;
    fmt::print(stderr, "{} ...\n", w.name);
    auto pr = compare(w, raw_io, store_io,
                      [&](bool is_raw) { return is_raw ? wait_for(ring, rawdev.flush()) : flush_store(); });
    if (!pr) return die(w.name.c_str(), pr.status());
    Measure& mr = pr->a;
    Measure& ms = pr->b;
    auto& round_ratios = pr->ratios;
    const double ratio = rate(w, mr) > 0 ? rate(w, ms) / rate(w, mr) : 0;
    const auto [lo, hi] = std::minmax_element(round_ratios.begin(), round_ratios.end());
    md += fmt::format(
        "| {} | {} | {} | {:.2f} ({:.2f}–{:.2f}) | {:.0f} / {:.0f} | {:.0f} / {:.0f} | {:.1f} / {:.1f} | "
        "{:.2f} / "
        "{:.2f} |\n",
        w.name, fmt_rate(w, mr), fmt_rate(w, ms), ratio, *lo, *hi, mr.mean_us, mr.p99_us, ms.mean_us,
        ms.p99_us, mr.cpu_us_per_op(), ms.cpu_us_per_op(), mr.sqes_per_op(), ms.sqes_per_op());
    out["rows"].push_back({{"workload", w.name},
                           {"write", w.write},
                           {"random", w.random},
                           {"bs", w.bs},
                           {"qd", w.qd},
                           {"raw", mr.to_json()},
                           {"store", ms.to_json()},
                           {"ratio", ratio},
                           {"round_ratios", round_ratios}});
    fmt::print(stderr, "  raw {}  store {}  ratio {:.2f} (rounds {:.2f}–{:.2f})\n", fmt_rate(w, mr),
               fmt_rate(w, ms), ratio, *lo, *hi);
  }

  std::string md_snap;
  if (!o.skip_snapshots && !o.aa) {
    const Workload rq1{"4 KiB random read QD1", false, true, 4 * KiB, 1};
    const Workload rq32{"4 KiB random read QD32", false, true, 4 * KiB, 32};
    // Each measurement runs against the raw file in alternating rounds too: the machine's drift
    // between "before" and "after" (minutes apart) cancels in store/raw, and what remains is the
    // store's own change.
    auto measure_reads = [&](store::ObjectId id, const Workload& w) -> Result<Pair> {
      IoFn io = [&pool, id](Kind, std::uint64_t off, std::span<std::byte> b) -> Task<Status> {
        return pool.read(id, off, b);
      };
      return compare(w, raw_io, io, [](bool) { return Status::ok(); });
    };
    fmt::print(stderr, "snapshots: reads with 0 snapshots ...\n");
    auto base1 = measure_reads(vol, rq1);
    if (!base1) return die("snapshot base", base1.status());
    auto base32 = measure_reads(vol, rq32);
    if (!base32) return die("snapshot base", base32.status());

    fmt::print(stderr, "snapshots: taking {} snapshots with {} random 4 KiB overwrites after each ...\n",
               o.snapshots, o.snap_writes);
    std::mt19937_64 rng(77);
    AlignedBuffer b(4 * KiB);
    std::vector<double> snap_ms;
    store::ObjectId first_snap = 0, last_snap = 0;
    for (int i = 0; i < o.snapshots; ++i) {
      const auto t0 = Clock::now();
      auto s = wait_for(ring, pool.snapshot(vol, fmt::format("s{}", i)));
      if (!s) return die("snapshot", s.status());
      snap_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      if (i == 0) first_snap = *s;
      last_snap = *s;
      for (int k = 0; k < o.snap_writes; ++k) {
        const std::uint64_t v = rng();
        std::memcpy(b.data(), &v, 8);
        Status ws = wait_for(ring, pool.write(vol, (rng() % (o.size / (4 * KiB))) * 4 * KiB, b.span()));
        if (!ws.is_ok()) return die("snapshot overwrite", ws);
      }
    }
    if (Status s = wait_for(ring, pool.flush()); !s.is_ok()) return die("flush", s);
    double snap_mean = 0;
    for (double x : snap_ms) snap_mean += x;
    snap_mean /= std::max<std::size_t>(1, snap_ms.size());
    std::sort(snap_ms.begin(), snap_ms.end());
    const double snap_p99 =
        snap_ms.empty() ? 0 : snap_ms[std::min(snap_ms.size() - 1, snap_ms.size() * 99 / 100)];

    fmt::print(stderr, "snapshots: reads with {} snapshots ...\n", o.snapshots);
    auto after1 = measure_reads(vol, rq1);
    if (!after1) return die("snapshot after", after1.status());
    auto after32 = measure_reads(vol, rq32);
    if (!after32) return die("snapshot after", after32.status());
    auto oldest1 = measure_reads(first_snap, rq1);
    if (!oldest1) return die("snapshot oldest", oldest1.status());
    auto newest1 = measure_reads(last_snap, rq1);
    if (!newest1) return die("snapshot newest", newest1.status());

    auto info = pool.info();
    md_snap += fmt::format(
        "| 4 KiB random reads | store/raw, 0 snapshots | store/raw, {} snapshots | change | store IOPS 0 → "
        "{} | "
        "store mean / p99 µs | store CPU µs/op | device ops per op |\n",
        o.snapshots, o.snapshots);
    md_snap += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
    auto ratio_of = [](const Pair& p) { return p.a.iops() > 0 ? p.b.iops() / p.a.iops() : 0.0; };
    auto line = [&](const std::string& what, const Pair& before, const Pair& after) {
      const double r0 = ratio_of(before), r1 = ratio_of(after);
      md_snap += fmt::format(
          "| {} | {:.2f} | {:.2f} | {:.2f} | {:.0f} → {:.0f} | {:.0f} / {:.0f} → {:.0f} / {:.0f} | {:.1f} → "
          "{:.1f} | "
          "{:.2f} → {:.2f} |\n",
          what, r0, r1, r0 > 0 ? r1 / r0 : 0, before.b.iops(), after.b.iops(), before.b.mean_us,
          before.b.p99_us, after.b.mean_us, after.b.p99_us, before.b.cpu_us_per_op(), after.b.cpu_us_per_op(),
          before.b.sqes_per_op(), after.b.sqes_per_op());
    };
    line("live volume QD1", *base1, *after1);
    line("live volume QD32", *base32, *after32);
    line("oldest snapshot QD1 (before: live volume)", *base1, *oldest1);
    line("newest snapshot QD1 (before: live volume)", *base1, *newest1);
    md_snap += fmt::format(
        "\nSnapshot creation (durable): mean {:.2f} ms, p99 {:.2f} ms over {} snapshots; "
        "pool after: {} of {} data clusters free, journal {} / {} bytes.\n",
        snap_mean, snap_p99, o.snapshots, info.free_clusters, info.data_clusters, info.journal_used_bytes,
        info.journal_bytes);
    auto pj = [&](const Pair& p) {
      return json{{"raw", p.a.to_json()},
                  {"store", p.b.to_json()},
                  {"ratio", ratio_of(p)},
                  {"round_ratios", p.ratios}};
    };
    out["snapshots"] = {{"count", o.snapshots},
                        {"overwrites_per_snapshot", o.snap_writes},
                        {"create_mean_ms", snap_mean},
                        {"create_p99_ms", snap_p99},
                        {"live_qd1_0", pj(*base1)},
                        {"live_qd1_n", pj(*after1)},
                        {"live_qd32_0", pj(*base32)},
                        {"live_qd32_n", pj(*after32)},
                        {"oldest_snapshot_qd1", pj(*oldest1)},
                        {"newest_snapshot_qd1", pj(*newest1)},
                        {"change_live_qd1", ratio_of(*after1) / ratio_of(*base1)},
                        {"change_live_qd32", ratio_of(*after32) / ratio_of(*base32)}};
  }

  mark("close");
  if (!o.aa)
    if (Status s = wait_for(ring, pool.close()); !s.is_ok()) return die("close", s);
  mark("closed");
  const auto& rs = ring.stats();
  out["ring"] = {{"submitted", rs.submitted},
                 {"submit_calls", rs.submit_calls},
                 {"completed", rs.completed},
                 {"backlogged", rs.backlogged},
                 {"resubmitted", rs.resubmitted}};

  const auto& mf = out["machine"];
  std::string load_end;
  std::getline(std::ifstream("/proc/loadavg") >> std::ws, load_end);
  out["machine"]["loadavg_at_end"] = load_end;
  fmt::print(
      "Machine: {}, {} cores, kernel {}, {} on {} ({}); files in {}; {} MiB per target, {} s per row "
      "in {} alternating rounds after {} s warm-up; pool cluster {} KiB; io_uring {} entries, O_DIRECT. "
      "Load average at start: {}; at end: {}.\n\n",
      mf["cpu"].get<std::string>(), mf["cores"].get<long>(), mf["kernel"].get<std::string>(),
      mf["filesystem"].get<std::string>(), mf["device"].get<std::string>(), mf["mount"].get<std::string>(),
      o.dir, o.size / MiB, o.seconds, o.rounds, o.warmup, o.cluster_kib, o.ring_entries,
      mf["loadavg_at_start"].get<std::string>(), load_end);
  if (o.aa) fmt::print("A/A CHECK: the 'store' column is a second raw file, not the store.\n\n");
  fmt::print("{}", md);
  if (!md_snap.empty()) fmt::print("\n{}", md_snap);
  fmt::print("\nio_uring: {} SQEs in {} submit calls ({:.1f} per call).\n", rs.submitted, rs.submit_calls,
             rs.submit_calls ? double(rs.submitted) / rs.submit_calls : 0.0);
  if (!o.json_path.empty()) {
    std::ofstream f(o.json_path);
    f << out.dump(2) << "\n";
    if (!f) {
      fmt::print(stderr, "duplex-store-bench: cannot write {}\n", o.json_path);
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace duplex::bench

int main(int argc, char** argv) {
  duplex::bench::Options o;
  CLI::App app{"duplex-store-bench: the store engine vs the raw file, on the same disk, in one run"};
  app.add_option("--dir", o.dir, "directory for the raw file and the pool file")->capture_default_str();
  app.add_option("--size", o.size_str, "bytes per target (raw file, volume): 256M, 1G, ...")
      ->capture_default_str();
  app.add_option("--seconds", o.seconds, "measured seconds per row and target")->capture_default_str();
  app.add_option("--warmup", o.warmup, "unmeasured seconds before each measurement")->capture_default_str();
  app.add_option("--cluster-kib", o.cluster_kib, "pool cluster size in KiB")->capture_default_str();
  app.add_option("--snapshots", o.snapshots, "snapshots for the snapshot-read test")->capture_default_str();
  app.add_option("--snap-writes", o.snap_writes, "random 4 KiB overwrites after each snapshot")
      ->capture_default_str();
  app.add_flag("--skip-snapshots", o.skip_snapshots, "skip the snapshot-read test");
  app.add_option("--ring-entries", o.ring_entries, "io_uring SQ entries")->capture_default_str();
  app.add_option("--rounds", o.rounds, "alternating raw/store rounds per row (the time is split)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  app.add_flag("--aa", o.aa,
               "A/A check: the 'store' column is a second raw file laid out like the pool (offset by 1 MiB); "
               "its ratios show the noise floor of this disk");
  app.add_option("--rows", o.rows, "run only the rows whose name contains this text (e.g. 'write QD32')");
  app.add_flag("-v,--verbose", o.verbose, "print phase marks with CLOCK_MONOTONIC timestamps");
  app.add_flag("--keep", o.keep, "keep the raw and pool files");
  app.add_option("--json", o.json_path, "also write the results as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  auto sz = duplex::bench::parse_size(o.size_str);
  if (!sz) {
    fmt::print(stderr, "duplex-store-bench: {}\n", sz.status().to_string());
    return 2;
  }
  o.size = *sz;
  if (o.size < 64 * duplex::bench::MiB) {
    fmt::print(stderr, "duplex-store-bench: --size must be at least 64M\n");
    return 2;
  }
  return duplex::bench::run(o);
}
