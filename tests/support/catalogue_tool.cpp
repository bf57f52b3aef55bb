// A test-only command line over cluster::Catalogue, so shell and Python system tests write intents
// the way the API will (validation, placement, compare-and-swap) until duplexctl exists:
//
//   catalogue-tool ETCD_URL create NAME SIZE [CLONE_OF]     grow NAME SIZE     delete NAME
//   catalogue-tool ETCD_URL snapshot VOL SNAP               delete-snapshot VOL SNAP
//   catalogue-tool ETCD_URL export VOL NBD(0|1) ISCSI(0|1) DEFAULT_ACCESS [IQN=ACCESS...]
//   catalogue-tool ETCD_URL show NAME      (one JSON line: the record, snapshots, replica reports)
//
// Exit status 0 on success; otherwise the error (errc and message) on stderr and status 1.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include "duplex/cluster/catalogue.h"

using namespace duplex;
using namespace duplex::cluster;

namespace {

int fail(const Status& st) {
  std::cerr << st.to_string() << "\n";
  return 1;
}

int usage() {
  std::cerr << "usage: catalogue-tool ETCD_URL create|grow|delete|snapshot|delete-snapshot|export|show ...\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // stdout carries the answer (a uuid, a JSON line); the catalogue's logs go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("catalogue-tool"));
  std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() < 3) return usage();
  EtcdOptions o;
  o.endpoints = {a[0]};
  Etcd etcd(o);
  Catalogue cat(etcd);
  const std::string& cmd = a[1];
  if (cmd == "create" && a.size() >= 4) {
    VolumeSpec s;
    s.name = a[2];
    s.size = std::stoull(a[3]);
    if (a.size() >= 5) s.clone_of = a[4];
    auto r = cat.create_volume(s);
    if (!r) return fail(r.status());
    std::cout << r->uuid << "\n";
    return 0;
  }
  if (cmd == "grow" && a.size() >= 4) {
    auto r = cat.grow_volume(a[2], std::stoull(a[3]));
    return r ? 0 : fail(r.status());
  }
  if (cmd == "delete") {
    auto r = cat.delete_volume(a[2], "catalogue-tool");
    return r ? 0 : fail(r.status());
  }
  if (cmd == "snapshot" && a.size() >= 4) {
    auto r = cat.create_snapshot(a[2], a[3]);
    return r ? 0 : fail(r.status());
  }
  if (cmd == "delete-snapshot" && a.size() >= 4) {
    auto r = cat.delete_snapshot(a[2], a[3]);
    return r ? 0 : fail(r.status());
  }
  if (cmd == "export" && a.size() >= 6) {
    ExportRecord e;
    e.volume = a[2];
    e.nbd = a[3] == "1";
    e.iscsi = a[4] == "1";
    auto d = access_from(a[5]);
    if (!d) return usage();
    e.default_access = *d;
    for (std::size_t i = 6; i < a.size(); ++i) {
      const auto eq = a[i].find('=');
      auto acc = eq == std::string::npos ? std::nullopt : access_from(a[i].substr(eq + 1));
      if (!acc) return usage();
      e.acl[a[i].substr(0, eq)] = *acc;
    }
    auto r = cat.set_export(e);
    return r ? 0 : fail(r.status());
  }
  if (cmd == "show") {
    auto v = cat.volume(a[2]);
    if (!v) return fail(v.status());
    nlohmann::json j{{"name", v->name},         {"uuid", v->uuid},
                     {"size", v->size},         {"state", std::string(to_string(v->state))},
                     {"replicas", v->replicas}, {"generation", v->generation},
                     {"pool", v->pool}};
    auto snaps = cat.snapshots(a[2]);
    if (!snaps) return fail(snaps.status());
    for (const auto& s : *snaps) j["snapshots"][s.name] = std::string(to_string(s.state));
    auto reps = cat.replicas(a[2]);
    if (!reps) return fail(reps.status());
    for (const auto& r : *reps)
      j["reports"][r.node] = {{"state", r.state},
                              {"generation", r.generation},
                              {"size", r.size},
                              {"snapshots", r.snapshots},
                              {"error", r.error}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  return usage();
}
