#include "json_shapes.h"

#include <algorithm>

namespace duplex::api {

using nlohmann::json;

json to_json(const NodeView& n) {
  const auto& r = n.rec;
  return json{{"name", r.name},
              {"site", r.site},
              {"address", r.address},
              {"alive", n.alive},
              {"pid", r.pid},
              {"api", r.api},
              {"nbd", r.nbd},
              {"iscsi", r.iscsi},
              {"base_iqn", r.base_iqn},
              {"version", r.version},
              {"started", r.started},
              {"mirror", r.mirror},
              {"drain", n.drain ? json{{"reason", n.drain->reason}, {"by", n.drain->by}, {"at", n.drain->at}}
                                : json(nullptr)}};
}

json to_json(const cluster::PoolRecord& p) {
  return json{{"node", p.node},      {"name", p.name}, {"uuid", p.uuid},
              {"size", p.size},      {"free", p.free}, {"cluster_size", p.cluster_size},
              {"volumes", p.volumes}};
}

std::string replica_state(const ReplicaView& r, cluster::VolumeState volume_state) {
  if (r.report) return r.report->state;
  return volume_state == cluster::VolumeState::creating ? "creating" : "unknown";
}

json to_json(const SnapshotView& s) {
  json j{{"volume", s.rec.volume},
         {"name", s.rec.name},
         {"state", std::string(cluster::to_string(s.rec.state))},
         {"created", s.rec.created}};
  if (!s.nbd.empty()) j["nbd"] = s.nbd;
  return j;
}

json to_json(const ExportView& e) {
  json acl = json::object();
  for (const auto& [initiator, access] : e.rec.acl) acl[initiator] = std::string(cluster::to_string(access));
  return json{{"volume", e.rec.volume},
              {"nbd", e.rec.nbd},
              {"iscsi", e.rec.iscsi},
              {"iqn", e.iqn},
              {"default_access", std::string(cluster::to_string(e.rec.default_access))},
              {"acl", acl}};
}

json to_json(const VolumeView& v) {
  const auto& r = v.rec;
  json replicas = json::array();
  for (const auto& rep : v.replicas) {
    json j{
        {"node", rep.node}, {"site", rep.site}, {"alive", rep.alive}, {"state", replica_state(rep, r.state)}};
    if (rep.report) {
      const auto& s = *rep.report;
      j["generation"] = s.generation;
      j["size"] = s.size;
      j["allocated_bytes"] = s.allocated_bytes;
      j["dirty_bytes"] = s.dirty_bytes;
      j["resync_progress"] = s.resync_progress;
      j["error"] = s.error;
      j["role"] = s.role;
      j["resync_rate"] = s.resync_rate;
      j["resync_eta_seconds"] = s.resync_eta_seconds;
      j["resync_bytes_total"] = s.resync_bytes_total;
      j["resync_bytes_done"] = s.resync_bytes_done;
      j["verify_mismatches"] = s.verify_mismatches;
      if (r.replicas_wanted > 1) {
        j["verify_request"] = s.verify_request;
        j["verify_state"] = s.verify_state;
        j["verify_checked"] = s.verify_checked;
        j["verify_repaired"] = s.verify_repaired;
        j["verify_error"] = s.verify_error;
      }
      j["last_event"] = s.last_event;
      if (r.replicas_wanted > 1) {
        j["link_up"] = s.link_up;
        j["insync_generation"] = s.insync_generation;
        j["grow"] = s.grow;
      }
    }
    if (v.insync) {
      const bool member =
          std::find(v.insync->members.begin(), v.insync->members.end(), rep.node) != v.insync->members.end();
      j["member"] = member;
      // The role is the set's, not the report's: a node that died or was removed keeps its last
      // report ("owner") until it reports again, and status must not say it still orders writes.
      j["role"] = !member ? "" : (v.insync->owner == rep.node ? "owner" : "peer");
    }
    replicas.push_back(std::move(j));
  }
  json snapshots = json::array();
  for (const auto& s : v.snapshots) snapshots.push_back(to_json(s));
  json paths = json::array();
  for (const auto& p : v.paths) {
    json j{{"node", p.node}};
    if (!p.nbd.empty()) j["nbd"] = p.nbd;
    if (!p.iscsi.empty()) j["iscsi"] = p.iscsi;
    paths.push_back(std::move(j));
  }
  json decisions = json::array();
  for (const auto& d : v.decisions) decisions.push_back(to_json(d));
  return json{{"name", r.name},
              {"uuid", r.uuid},
              {"size", r.size},
              {"state", std::string(cluster::to_string(r.state))},
              {"generation", r.generation},
              {"replicas_wanted", r.replicas_wanted},
              {"preferred_site", r.preferred_site},
              {"pool", r.pool},
              {"clone_of", r.clone_of},
              {"created", r.created},
              {"reason", r.reason},
              {"replicas", std::move(replicas)},
              {"snapshots", std::move(snapshots)},
              {"export", to_json(v.exp)},
              {"paths", std::move(paths)},
              {"insync", v.insync ? to_json(*v.insync) : json(nullptr)},
              {"decisions", std::move(decisions)}};
}

json to_json(const cluster::InSyncRecord& s) {
  return json{{"generation", s.generation}, {"members", s.members}, {"owner", s.owner},
              {"decided_by", s.decided_by}, {"reason", s.reason},   {"at", s.at}};
}

json to_json(const cluster::Decision& d) {
  return json{{"generation", d.generation}, {"members", d.members}, {"decided_by", d.decided_by},
              {"reason", d.reason},         {"at", d.at},           {"may_lose", d.may_lose}};
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n"; }

}  // namespace duplex::api
