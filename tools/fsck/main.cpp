// duplex-fsck: offline consistency check of a pool. Opens the pool read-only (shared lock, so a
// running duplexd, which holds the exclusive lock, makes it refuse rather than read a moving
// target), replays the journal in memory, runs Pool::check() and reports.
//
// Exit status: 0 consistent; 1 the pool is damaged (open refused it as corrupt or of another
// version, or check() found errors); 2 usage error or the pool cannot be opened at all.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/reactor/file_device.h"
#include "duplex/store/pool.h"

namespace {

using duplex::Errc;
using duplex::store::CheckReport;
using duplex::store::ObjectInfo;
using duplex::store::Pool;
using duplex::store::PoolInfo;

constexpr int kClean = 0;
constexpr int kDamaged = 1;
constexpr int kCannot = 2;

const char* kind_name(duplex::store::ObjectKind k) {
  return k == duplex::store::ObjectKind::snapshot ? "snapshot" : "volume";
}

nlohmann::json to_json(const PoolInfo& p) {
  return {{"name", p.name},
          {"uuid", p.uuid.to_string()},
          {"device", p.device},
          {"cluster_size", p.cluster_size},
          {"device_bytes", p.device_bytes},
          {"data_clusters", p.data_clusters},
          {"free_clusters", p.free_clusters},
          {"metadata_clusters", p.metadata_clusters},
          {"epoch", p.epoch},
          {"journal_bytes", p.journal_bytes},
          {"journal_used_bytes", p.journal_used_bytes}};
}

nlohmann::json to_json(const ObjectInfo& o) {
  return {{"id", o.id},
          {"kind", kind_name(o.kind)},
          {"name", o.name},
          {"uuid", o.uuid.to_string()},
          {"size", o.size},
          {"origin", o.origin},
          {"epoch", o.epoch},
          {"mapped_bytes", o.mapped_bytes},
          {"exclusive_bytes", o.exclusive_bytes},
          {"created_unix", o.created_unix}};
}

nlohmann::json to_json(const CheckReport& r) {
  return {{"objects", r.objects},
          {"mapped_entries", r.mapped_entries},
          {"history_entries", r.history_entries},
          {"used_clusters", r.used_clusters},
          {"free_clusters", r.free_clusters},
          {"replayed_journal_records", r.replayed_journal_records},
          {"errors", r.errors}};
}

void print_text(const std::string& path, const PoolInfo& p, const std::vector<ObjectInfo>& objects,
                const CheckReport& r) {
  fmt::print("pool {} ({}) on {}\n", p.name, p.uuid.to_string(), path);
  fmt::print("  cluster size {} B, {} data clusters, {} metadata clusters, epoch {}\n", p.cluster_size,
             p.data_clusters, p.metadata_clusters, p.epoch);
  fmt::print("  journal {} B, {} B in use\n", p.journal_bytes, p.journal_used_bytes);
  fmt::print("objects: {}\n", r.objects);
  for (const auto& o : objects) {
    fmt::print("  {:>6} {:<8} {:<24} size {} mapped {} exclusive {}", o.id, kind_name(o.kind), o.name, o.size,
               o.mapped_bytes, o.exclusive_bytes);
    if (o.origin) fmt::print(" origin {}", o.origin);
    fmt::print("\n");
  }
  fmt::print("mapped entries: {}\nhistory entries: {}\n", r.mapped_entries, r.history_entries);
  fmt::print("used clusters: {}\nfree clusters: {}\n", r.used_clusters, r.free_clusters);
  fmt::print("replayed journal records: {}\n", r.replayed_journal_records);
  if (r.ok()) {
    fmt::print("result: clean\n");
  } else {
    fmt::print("errors: {}\n", r.errors.size());
    for (const auto& e : r.errors) fmt::print("  error: {}\n", e);
    fmt::print("result: DAMAGED\n");
  }
}

int run_fsck(const std::string& path, bool json) {
  duplex::FileDeviceOptions dopts;
  dopts.read_only = true;
  dopts.lock = true;  // shared when read-only: two fscks may run, a writer may not
  auto dev = duplex::FileDevice::open(path, dopts);
  if (!dev) {
    fmt::print(stderr, "duplex-fsck: {}\n", dev.status().to_string());
    return kCannot;
  }
  duplex::store::OpenOptions oopts;
  oopts.read_only = true;
  auto pool = duplex::sync_wait(Pool::open(**dev, oopts));
  if (!pool) {
    const duplex::Status st = pool.status();
    const bool damaged = st.code() == Errc::corrupt || st.code() == Errc::version;
    if (json) {
      nlohmann::json out = {{"path", path}, {"ok", false}, {"opened", false}, {"errors", {st.to_string()}}};
      std::cout << out.dump(2) << "\n";
    }
    fmt::print(stderr, "duplex-fsck: cannot open pool {}: {}\n", path, st.to_string());
    return damaged ? kDamaged : kCannot;
  }
  const CheckReport report = (*pool)->check();
  const PoolInfo info = (*pool)->info();
  const auto objects = (*pool)->list();
  if (json) {
    nlohmann::json objs = nlohmann::json::array();
    for (const auto& o : objects) objs.push_back(to_json(o));
    nlohmann::json out = {{"path", path},           {"ok", report.ok()},          {"opened", true},
                          {"pool", to_json(info)},  {"objects", std::move(objs)}, {"check", to_json(report)},
                          {"errors", report.errors}};
    std::cout << out.dump(2) << "\n";
  } else {
    print_text(path, info, objects, report);
  }
  if (!report.ok()) {
    fmt::print(stderr, "duplex-fsck: pool {}: {} error(s), first: {}\n", path, report.errors.size(),
               report.errors.front());
    return kDamaged;
  }
  return kClean;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "duplex-fsck: check the consistency of a Duplex pool (read-only, never repairs).\n"
      "Exit status: 0 clean, 1 damaged (corrupt metadata or errors found), 2 usage error or "
      "the pool cannot be opened."};
  std::string path;
  bool json = false;
  app.add_flag("--json", json, "print the report as JSON on stdout");
  app.add_option("POOL_PATH", path, "pool file or block device")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "duplex-fsck: {} (see --help)\n", e.what());
    return kCannot;
  }
  return run_fsck(path, json);
}
