#include "duplex/cluster/catalogue.h"

#include <spdlog/spdlog.h>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <ctime>
#include <set>
#include <type_traits>

#include "duplex/base/uuid.h"

namespace duplex::cluster {

namespace {
using json = nlohmann::json;

const std::string kNodes = std::string(kRoot) + "nodes/";
const std::string kPools = std::string(kRoot) + "pools/";
const std::string kVolumes = std::string(kRoot) + "volumes/";
const std::string kSnapshots = std::string(kRoot) + "snapshots/";
const std::string kReplicas = std::string(kRoot) + "replicas/";
const std::string kExports = std::string(kRoot) + "exports/";
const std::string kInSync = std::string(kRoot) + "insync/";
const std::string kDecisions = std::string(kRoot) + "decisions/";
const std::string kVerify = std::string(kRoot) + "verify/";
const std::string kDrains = std::string(kRoot) + "drains/";

std::string volume_key(const std::string& v) { return kVolumes + v; }
std::string snapshot_prefix(const std::string& v) { return kSnapshots + v + "/"; }
std::string snapshot_key(const std::string& v, const std::string& s) { return snapshot_prefix(v) + s; }
std::string replica_prefix(const std::string& v) { return kReplicas + v + "/"; }
std::string replica_key(const std::string& v, const std::string& n) { return replica_prefix(v) + n; }
std::string export_key(const std::string& v) { return kExports + v; }
std::string insync_key(const std::string& v) { return kInSync + v; }
std::string decision_prefix(const std::string& v) { return kDecisions + v + "/"; }
// Zero-padded so that etcd's byte order of the keys is the generations' order.
std::string decision_key(const std::string& v, std::int64_t generation) {
  return fmt::format("{}{:020d}", decision_prefix(v), generation);
}

// Field readers that never throw: a field of the wrong type reads as absent (unknown or malformed
// fields must not take the catalogue down; the whole value is rejected only when it is not JSON).
std::string str(const json& j, const char* f) {
  auto it = j.find(f);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string{};
}
template <typename T>
T num(const json& j, const char* f, T dflt) {
  auto it = j.find(f);
  if (it == j.end() || !it->is_number()) return dflt;
  if constexpr (std::is_floating_point_v<T>) return it->get<T>();
  if (it->is_number_float()) return dflt;
  if constexpr (std::is_unsigned_v<T>) {
    if (it->is_number_integer() && !it->is_number_unsigned() && it->get<std::int64_t>() < 0) return dflt;
  }
  return it->get<T>();
}
bool boolean(const json& j, const char* f, bool dflt) {
  auto it = j.find(f);
  return it != j.end() && it->is_boolean() ? it->get<bool>() : dflt;
}
std::vector<std::string> strings(const json& j, const char* f) {
  std::vector<std::string> out;
  auto it = j.find(f);
  if (it == j.end() || !it->is_array()) return out;
  for (const auto& e : *it)
    if (e.is_string()) out.push_back(e.get<std::string>());
  return out;
}

// The value as a JSON object, or nullopt with a logged reason (the key is then skipped).
std::optional<json> object_of(const Kv& kv) {
  json j = json::parse(kv.value, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    spdlog::warn("event=catalogue.skip key={} reason=\"value is not a JSON object\"", kv.key);
    return std::nullopt;
  }
  return j;
}

std::string tail(const std::string& key, const std::string& prefix) { return key.substr(prefix.size()); }

std::optional<NodeRecord> parse_node(const Kv& kv) {
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  NodeRecord r;
  r.name = tail(kv.key, kNodes);
  r.site = str(*j, "site");
  r.address = str(*j, "address");
  r.api = str(*j, "api");
  r.nbd = strings(*j, "nbd");
  r.iscsi = strings(*j, "iscsi");
  r.base_iqn = str(*j, "base_iqn");
  r.mirror = str(*j, "mirror");
  r.pid = num<std::int64_t>(*j, "pid", 0);
  r.version = str(*j, "version");
  r.started = str(*j, "started");
  return r;
}

std::optional<DrainRecord> parse_drain(const Kv& kv) {
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  DrainRecord r;
  r.node = tail(kv.key, kDrains);
  r.reason = str(*j, "reason");
  r.by = str(*j, "by");
  r.at = str(*j, "at");
  return r;
}

std::optional<PoolRecord> parse_pool(const Kv& kv) {
  const std::string rest = tail(kv.key, kPools);
  const auto slash = rest.find('/');
  if (slash == std::string::npos) {
    spdlog::warn("event=catalogue.skip key={} reason=\"not pools/<node>/<pool>\"", kv.key);
    return std::nullopt;
  }
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  PoolRecord r;
  r.node = rest.substr(0, slash);
  r.name = rest.substr(slash + 1);
  r.uuid = str(*j, "uuid");
  r.size = num<std::uint64_t>(*j, "size", 0);
  r.free = num<std::uint64_t>(*j, "free", 0);
  r.cluster_size = num<std::uint32_t>(*j, "cluster_size", 0);
  r.volumes = num<std::uint64_t>(*j, "volumes", 0);
  return r;
}

json to_json(const PoolRecord& r) {
  return {{"uuid", r.uuid},
          {"size", r.size},
          {"free", r.free},
          {"cluster_size", r.cluster_size},
          {"volumes", r.volumes}};
}

std::optional<VolumeRecord> parse_volume(const Kv& kv) {
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  VolumeRecord r;
  r.name = tail(kv.key, kVolumes);
  r.uuid = str(*j, "uuid");
  r.size = num<std::uint64_t>(*j, "size", 0);
  r.replicas_wanted = num<unsigned>(*j, "replicas_wanted", 1);
  r.replicas = strings(*j, "replicas");
  r.pool = str(*j, "pool");
  r.preferred_site = str(*j, "preferred_site");
  r.generation = num<std::int64_t>(*j, "generation", 1);
  r.clone_of = str(*j, "clone_of");
  auto st = volume_state_from(str(*j, "state"));
  if (!st) {
    spdlog::warn("event=catalogue.skip key={} reason=\"unknown state '{}'\"", kv.key, str(*j, "state"));
    return std::nullopt;
  }
  r.state = *st;
  r.created = str(*j, "created");
  r.reason = str(*j, "reason");
  r.mod_revision = kv.mod_revision;
  if (r.uuid.empty() || r.size == 0 || r.pool.empty()) {
    spdlog::warn("event=catalogue.skip key={} reason=\"uuid, size or pool missing\"", kv.key);
    return std::nullopt;
  }
  return r;
}

json to_json(const VolumeRecord& r) {
  return {{"uuid", r.uuid},
          {"size", r.size},
          {"replicas_wanted", r.replicas_wanted},
          {"replicas", r.replicas},
          {"pool", r.pool},
          {"preferred_site", r.preferred_site},
          {"generation", r.generation},
          {"clone_of", r.clone_of},
          {"state", to_string(r.state)},
          {"created", r.created},
          {"reason", r.reason}};
}

std::optional<SnapshotState> snapshot_state_from(std::string_view s) {
  if (s == "creating") return SnapshotState::creating;
  if (s == "ready") return SnapshotState::ready;
  if (s == "deleting") return SnapshotState::deleting;
  return std::nullopt;
}

std::optional<SnapshotRecord> parse_snapshot(const Kv& kv) {
  const std::string rest = tail(kv.key, kSnapshots);
  const auto slash = rest.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  SnapshotRecord r;
  r.volume = rest.substr(0, slash);
  r.name = rest.substr(slash + 1);
  auto st = snapshot_state_from(str(*j, "state"));
  if (!st) {
    spdlog::warn("event=catalogue.skip key={} reason=\"unknown state '{}'\"", kv.key, str(*j, "state"));
    return std::nullopt;
  }
  r.state = *st;
  r.created = str(*j, "created");
  r.mod_revision = kv.mod_revision;
  return r;
}

json to_json(const SnapshotRecord& r) { return {{"state", to_string(r.state)}, {"created", r.created}}; }

std::optional<ReplicaStatus> parse_replica(const Kv& kv) {
  const std::string rest = tail(kv.key, kReplicas);
  const auto slash = rest.find('/');
  if (slash == std::string::npos) return std::nullopt;
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  ReplicaStatus r;
  r.volume = rest.substr(0, slash);
  r.node = rest.substr(slash + 1);
  r.state = str(*j, "state");
  r.generation = num<std::int64_t>(*j, "generation", 0);
  r.size = num<std::uint64_t>(*j, "size", 0);
  r.allocated_bytes = num<std::uint64_t>(*j, "allocated_bytes", 0);
  r.dirty_bytes = num<std::uint64_t>(*j, "dirty_bytes", 0);
  r.resync_progress = num<double>(*j, "resync_progress", 1.0);
  r.snapshots = strings(*j, "snapshots");
  r.error = str(*j, "error");
  r.updated = str(*j, "updated");
  r.role = str(*j, "role");
  r.resync_rate = num<double>(*j, "resync_rate", 0);
  r.resync_eta_seconds = num<double>(*j, "resync_eta_seconds", -1);
  r.resync_bytes_total = num<std::uint64_t>(*j, "resync_bytes_total", 0);
  r.resync_bytes_done = num<std::uint64_t>(*j, "resync_bytes_done", 0);
  r.verify_mismatches = num<std::uint64_t>(*j, "verify_mismatches", 0);
  r.verify_request = num<std::int64_t>(*j, "verify_request", 0);
  r.verify_state = str(*j, "verify_state");
  r.verify_checked = num<std::uint64_t>(*j, "verify_checked", 0);
  r.verify_repaired = num<std::uint64_t>(*j, "verify_repaired", 0);
  r.verify_error = str(*j, "verify_error");
  r.last_event = str(*j, "last_event");
  r.grow = str(*j, "grow");
  r.link_up = boolean(*j, "link_up", false);
  r.insync_generation = num<std::int64_t>(*j, "insync_generation", 0);
  r.mod_revision = kv.mod_revision;
  return r;
}

json to_json(const ReplicaStatus& r) {
  return {{"state", r.state},
          {"generation", r.generation},
          {"size", r.size},
          {"allocated_bytes", r.allocated_bytes},
          {"dirty_bytes", r.dirty_bytes},
          {"resync_progress", r.resync_progress},
          {"snapshots", r.snapshots},
          {"error", r.error},
          {"updated", r.updated.empty() ? now_rfc3339() : r.updated},
          {"role", r.role},
          {"resync_rate", r.resync_rate},
          {"resync_eta_seconds", r.resync_eta_seconds},
          {"resync_bytes_total", r.resync_bytes_total},
          {"resync_bytes_done", r.resync_bytes_done},
          {"verify_mismatches", r.verify_mismatches},
          {"verify_request", r.verify_request},
          {"verify_state", r.verify_state},
          {"verify_checked", r.verify_checked},
          {"verify_repaired", r.verify_repaired},
          {"verify_error", r.verify_error},
          {"last_event", r.last_event},
          {"grow", r.grow},
          {"link_up", r.link_up},
          {"insync_generation", r.insync_generation}};
}

// An in-sync record without members or uuid decides nothing: it is skipped like any unreadable
// value (insync() then answers corrupt, and no compare-and-swap can be based on it by mistake).
std::optional<InSyncRecord> parse_insync(const Kv& kv) {
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  InSyncRecord r;
  r.volume = tail(kv.key, kInSync);
  r.uuid = str(*j, "uuid");
  r.generation = num<std::int64_t>(*j, "generation", 0);
  r.members = strings(*j, "members");
  r.owner = str(*j, "owner");
  r.decided_by = str(*j, "decided_by");
  r.reason = str(*j, "reason");
  r.at = str(*j, "at");
  r.mod_revision = kv.mod_revision;
  if (r.uuid.empty() || r.members.empty() || r.generation < 1) {
    spdlog::warn("event=catalogue.skip key={} reason=\"uuid, members or generation missing\"", kv.key);
    return std::nullopt;
  }
  return r;
}

json to_json(const InSyncRecord& r) {
  return {{"uuid", r.uuid},   {"generation", r.generation}, {"members", r.members},
          {"owner", r.owner}, {"decided_by", r.decided_by}, {"reason", r.reason},
          {"at", r.at}};
}

std::optional<Decision> parse_decision(const Kv& kv) {
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  Decision d;
  d.generation = num<std::int64_t>(*j, "generation", 0);
  d.members = strings(*j, "members");
  d.decided_by = str(*j, "decided_by");
  d.reason = str(*j, "reason");
  d.at = str(*j, "at");
  d.may_lose = strings(*j, "may_lose");
  return d;
}

json to_json(const Decision& d) {
  return {{"generation", d.generation}, {"members", d.members}, {"decided_by", d.decided_by},
          {"reason", d.reason},         {"at", d.at},           {"may_lose", d.may_lose}};
}

Decision decision_of(const InSyncRecord& r, std::vector<std::string> may_lose) {
  return Decision{r.generation, r.members, r.decided_by, r.reason, r.at, std::move(may_lose)};
}

// The members in placement order; the owner is the first of them (the preferred site's node).
std::vector<std::string> in_placement_order(const std::vector<std::string>& replicas,
                                            const std::vector<std::string>& members) {
  std::vector<std::string> out;
  for (const auto& n : replicas)
    if (std::find(members.begin(), members.end(), n) != members.end()) out.push_back(n);
  return out;
}

std::optional<ExportRecord> parse_export(const Kv& kv) {
  auto j = object_of(kv);
  if (!j) return std::nullopt;
  ExportRecord r;
  r.volume = tail(kv.key, kExports);
  r.nbd = boolean(*j, "nbd", true);
  r.iscsi = boolean(*j, "iscsi", true);
  r.default_access = access_from(str(*j, "default_access")).value_or(Access::read_write);
  if (auto it = j->find("acl"); it != j->end() && it->is_object()) {
    for (const auto& [k, v] : it->items()) {
      auto a = v.is_string() ? access_from(v.get<std::string>()) : std::nullopt;
      // An entry we cannot read must not widen access: it counts as "none".
      r.acl[k] = a.value_or(Access::none);
    }
  }
  r.mod_revision = kv.mod_revision;
  return r;
}

json to_json(const ExportRecord& r) {
  json acl = json::object();
  for (const auto& [k, v] : r.acl) acl[k] = to_string(v);
  return {{"nbd", r.nbd}, {"iscsi", r.iscsi}, {"default_access", to_string(r.default_access)}, {"acl", acl}};
}

Status check_name(const char* field, const std::string& v) {
  if (!valid_name(v))
    return Status::error(Errc::invalid, "{}: '{}' is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]{{0,62}})",
                         field, v);
  return Status::ok();
}

Status check_size(const char* field, std::uint64_t size) {
  if (size == 0) return Status::error(Errc::invalid, "{}: must be greater than 0", field);
  if (size % 4096 != 0) return Status::error(Errc::invalid, "{}: {} is not a multiple of 4096", field, size);
  return Status::ok();
}

Status lost(const std::string& what) {
  return Status::error(Errc::conflict, "{} was changed by someone else meanwhile; re-read and retry", what);
}

bool valid_initiator(std::string_view s) {
  if (s.empty() || s.size() > 223) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

struct Candidate {
  const PoolRecord* pool;
  std::string site;
};

struct Placement {
  std::vector<std::string> nodes;  // placement order: the preferred site's node first
  std::string pool;
  std::string note;  // why the placement is weaker than asked ("" when it is not)
};

// The pool with the most free bytes among `cands` that `fits`, or nullptr.
template <typename Fits>
const Candidate* roomiest(const std::vector<Candidate>& cands, Fits fits) {
  const Candidate* best = nullptr;
  for (const auto& c : cands)
    if (fits(c) && (!best || c.pool->free > best->pool->free)) best = &c;
  return best;
}

// One replica: the roomiest pool (in the preferred site when one is named). Two: the roomiest
// pool of the preferred site first, then the roomiest pool of the same name in another site (a
// site loss must not take both); only when no other site has room, another node of the same site,
// with a note. Every candidate here is live and has free bytes.
Result<Placement> place(const std::vector<Candidate>& cands, unsigned replicas, const std::string& site) {
  auto in_site = [&](const Candidate& c) { return site.empty() || c.site == site; };
  if (replicas == 1) {
    const Candidate* best = roomiest(cands, in_site);
    if (!best) return Status::error(Errc::no_space, "every candidate pool is full (0 bytes free)");
    return Placement{{best->pool->node}, best->pool->name, {}};
  }
  std::set<std::string> names;
  for (const auto& c : cands) names.insert(c.pool->name);
  std::optional<Placement> chosen;
  bool chosen_cross = false;
  std::uint64_t chosen_room = 0;
  for (const auto& name : names) {
    const Candidate* first =
        roomiest(cands, [&](const Candidate& c) { return c.pool->name == name && in_site(c); });
    if (!first) continue;
    bool cross = true;
    const Candidate* second =
        roomiest(cands, [&](const Candidate& c) { return c.pool->name == name && c.site != first->site; });
    if (!second) {
      cross = false;
      second = roomiest(cands, [&](const Candidate& c) {
        return c.pool->name == name && c.pool->node != first->pool->node;
      });
    }
    if (!second) continue;
    const std::uint64_t room = std::min(first->pool->free, second->pool->free);
    if (chosen && (chosen_cross > cross || (chosen_cross == cross && chosen_room >= room))) continue;
    Placement p{{first->pool->node, second->pool->node}, name, {}};
    if (!cross)
      p.note = fmt::format("both replicas in site '{}': no other site has a live node with room in pool '{}'",
                           first->site, name);
    chosen = std::move(p);
    chosen_cross = cross;
    chosen_room = room;
  }
  if (!chosen) {
    std::vector<std::string> seen;
    seen.reserve(cands.size());
    for (const auto& c : cands) seen.push_back(fmt::format("{}/{}", c.pool->node, c.pool->name));
    return Status::error(Errc::no_space,
                         "replicas: 2 needs two live nodes with room in a pool of the same name{}; "
                         "candidates: {}",
                         site.empty() ? std::string{} : fmt::format(" (the first in site '{}')", site),
                         seen.empty() ? std::string("none") : fmt::format("{}", fmt::join(seen, ", ")));
  }
  return *chosen;
}

}  // namespace

std::string_view to_string(VolumeState s) {
  switch (s) {
    case VolumeState::creating: return "creating";
    case VolumeState::ready: return "ready";
    case VolumeState::deleting: return "deleting";
  }
  return "?";
}

std::optional<VolumeState> volume_state_from(std::string_view s) {
  if (s == "creating") return VolumeState::creating;
  if (s == "ready") return VolumeState::ready;
  if (s == "deleting") return VolumeState::deleting;
  return std::nullopt;
}

std::string_view to_string(SnapshotState s) {
  switch (s) {
    case SnapshotState::creating: return "creating";
    case SnapshotState::ready: return "ready";
    case SnapshotState::deleting: return "deleting";
  }
  return "?";
}

std::string_view to_string(Access a) {
  switch (a) {
    case Access::none: return "none";
    case Access::read_only: return "read-only";
    case Access::read_write: return "read-write";
  }
  return "?";
}

std::optional<Access> access_from(std::string_view s) {
  if (s == "none") return Access::none;
  if (s == "read-only") return Access::read_only;
  if (s == "read-write") return Access::read_write;
  return std::nullopt;
}

std::string now_rfc3339() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  auto alnum = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  };
  if (!alnum(s[0])) return false;
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

// --- reads ---

// Every readable record under `prefix`; unreadable ones are skipped (parse logs why).
template <typename Parse>
auto read_prefix(Etcd& etcd, const std::string& prefix, Parse parse)
    -> Result<std::vector<typename std::invoke_result_t<Parse, const Kv&>::value_type>> {
  auto r = etcd.get_prefix(prefix);
  if (!r) return r.status();
  std::vector<typename std::invoke_result_t<Parse, const Kv&>::value_type> out;
  for (const auto& kv : r->kvs)
    if (auto x = parse(kv)) out.push_back(std::move(*x));
  return out;
}

Result<std::vector<NodeRecord>> Catalogue::nodes() { return read_prefix(etcd_, kNodes, parse_node); }

Result<std::vector<PoolRecord>> Catalogue::pools() { return read_prefix(etcd_, kPools, parse_pool); }

Result<std::vector<DrainRecord>> Catalogue::drains() { return read_prefix(etcd_, kDrains, parse_drain); }

Result<std::vector<VolumeRecord>> Catalogue::volumes() { return read_prefix(etcd_, kVolumes, parse_volume); }

Result<VolumeRecord> Catalogue::volume(const std::string& name) {
  DPX_TRY(check_name("name", name));
  auto r = etcd_.get(volume_key(name));
  if (!r) return r.status();
  if (r->kvs.empty()) return Status::error(Errc::not_found, "volume '{}' does not exist", name);
  auto v = parse_volume(r->kvs[0]);
  if (!v) return Status::error(Errc::corrupt, "volume '{}': its record cannot be read (see the log)", name);
  return *v;
}

Result<std::vector<SnapshotRecord>> Catalogue::snapshots(const std::string& volume) {
  DPX_TRY(check_name("volume", volume));
  return read_prefix(etcd_, snapshot_prefix(volume), parse_snapshot);
}

Result<std::vector<ReplicaStatus>> Catalogue::replicas(const std::string& volume) {
  DPX_TRY(check_name("volume", volume));
  return read_prefix(etcd_, replica_prefix(volume), parse_replica);
}

Result<ExportRecord> Catalogue::export_of(const std::string& volume) {
  DPX_TRY(check_name("volume", volume));
  auto r = etcd_.get(export_key(volume));
  if (!r) return r.status();
  if (!r->kvs.empty())
    if (auto e = parse_export(r->kvs[0])) return *e;
  ExportRecord d;
  d.volume = volume;
  // An unreadable record keeps its revision so a set_export guarded by it can still replace it.
  d.mod_revision = r->kvs.empty() ? 0 : r->kvs[0].mod_revision;
  return d;
}

Result<InSyncRecord> Catalogue::insync(const std::string& volume) {
  DPX_TRY(check_name("volume", volume));
  auto r = etcd_.get(insync_key(volume));
  if (!r) return r.status();
  if (r->kvs.empty()) return Status::error(Errc::not_found, "volume '{}' has no in-sync record", volume);
  auto rec = parse_insync(r->kvs[0]);
  if (!rec)
    return Status::error(Errc::corrupt, "volume '{}': its in-sync record cannot be read (see the log)",
                         volume);
  return *rec;
}

Result<std::int64_t> Catalogue::request_verify(const std::string& volume, bool repair) {
  DPX_TRY(check_name("volume", volume));
  const json j{{"repair", repair}, {"requested", now_rfc3339()}};
  return etcd_.put(kVerify + volume, j.dump());
}

Result<VerifyRequest> Catalogue::verify_request(const std::string& volume) {
  DPX_TRY(check_name("volume", volume));
  auto r = etcd_.get(kVerify + volume);
  if (!r) return r.status();
  if (r->kvs.empty()) return Status::error(Errc::not_found, "volume '{}': no verify was asked for", volume);
  VerifyRequest v;
  v.volume = volume;
  v.id = r->kvs[0].mod_revision;
  if (auto j = object_of(r->kvs[0])) v.repair = boolean(*j, "repair", false);
  return v;
}

Result<std::vector<Decision>> Catalogue::decisions(const std::string& volume) {
  DPX_TRY(check_name("volume", volume));
  return read_prefix(etcd_, decision_prefix(volume), parse_decision);
}

// --- intents ---

Result<DrainRecord> Catalogue::drain_node(const std::string& node, const std::string& by,
                                          const std::string& reason) {
  DPX_TRY(check_name("node", node));
  DrainRecord d{node, reason, by, now_rfc3339()};
  auto cur = etcd_.get(kDrains + node);
  if (!cur) return cur.status();
  if (!cur->kvs.empty())
    if (auto old = parse_drain(cur->kvs[0])) d.at = old->at;  // drained since then
  const json j{{"reason", d.reason}, {"by", d.by}, {"at", d.at}};
  if (auto put = etcd_.put(kDrains + node, j.dump()); !put) return put.status();
  return d;
}

Status Catalogue::resume_node(const std::string& node) {
  DPX_TRY(check_name("node", node));
  auto n = etcd_.del(kDrains + node);
  if (!n) return n.status();
  if (*n == 0) return Status::error(Errc::not_found, "node '{}' is not drained", node);
  return Status::ok();
}

Result<VolumeRecord> Catalogue::create_volume(const VolumeSpec& spec) {
  DPX_TRY(check_name("name", spec.name));
  if (spec.replicas != 1 && spec.replicas != 2)
    return Status::error(Errc::invalid, "replicas: must be 1 or 2 (got {})", spec.replicas);
  if (!spec.pool.empty()) DPX_TRY(check_name("pool", spec.pool));
  if (!spec.preferred_site.empty()) DPX_TRY(check_name("preferred_site", spec.preferred_site));

  VolumeRecord rec;
  rec.name = spec.name;
  rec.uuid = Uuid::random().to_string();
  rec.size = spec.size;
  rec.replicas_wanted = spec.replicas;
  rec.preferred_site = spec.preferred_site;
  rec.generation = 1;
  rec.state = VolumeState::creating;
  rec.created = now_rfc3339();
  rec.reason = spec.reason;
  std::vector<Compare> cmp{Compare::absent(volume_key(spec.name))};

  if (!spec.clone_of.empty()) {
    const auto at = spec.clone_of.find('@');
    if (at == std::string::npos)
      return Status::error(Errc::invalid, "clone_of: '{}' is not <volume>@<snapshot>", spec.clone_of);
    const std::string sv = spec.clone_of.substr(0, at), ss = spec.clone_of.substr(at + 1);
    DPX_TRY(check_name("clone_of", sv));
    DPX_TRY(check_name("clone_of", ss));
    auto src = volume(sv);
    if (!src) return src.status();
    if (src->state == VolumeState::deleting)
      return Status::error(Errc::invalid, "clone_of: volume '{}' is being deleted", sv);
    auto snap = etcd_.get(snapshot_key(sv, ss));
    if (!snap) return snap.status();
    std::optional<SnapshotRecord> srec;
    if (!snap->kvs.empty()) srec = parse_snapshot(snap->kvs[0]);
    if (!srec) return Status::error(Errc::not_found, "clone_of: snapshot '{}' does not exist", spec.clone_of);
    if (srec->state != SnapshotState::ready)
      return Status::error(Errc::invalid, "clone_of: snapshot '{}' is {}, not ready", spec.clone_of,
                           to_string(srec->state));
    if (!spec.pool.empty() && spec.pool != src->pool)
      return Status::error(Errc::invalid, "pool: a clone lives in its snapshot's pool '{}'", src->pool);
    // The clone shares the snapshot's clusters: it lives where the snapshot lives.
    rec.size = spec.size == 0 ? src->size : spec.size;
    DPX_TRY(check_size("size", rec.size));
    if (rec.size < src->size)
      return Status::error(Errc::invalid, "size: {} is smaller than the source volume's {}", rec.size,
                           src->size);
    rec.replicas = src->replicas;
    rec.pool = src->pool;
    rec.clone_of = spec.clone_of;
    cmp.push_back(Compare::unchanged_since(volume_key(sv), src->mod_revision));
    cmp.push_back(Compare::unchanged_since(snapshot_key(sv, ss), srec->mod_revision));
  } else {
    DPX_TRY(check_size("size", spec.size));
    auto live = nodes();
    if (!live) return live.status();
    auto pools_r = pools();
    if (!pools_r) return pools_r.status();
    std::map<std::string, const NodeRecord*> by_name;
    for (const auto& n : *live) by_name[n.name] = &n;
    if (by_name.empty())
      return Status::error(Errc::no_space, "no live node: no duplexd is registered in etcd");
    std::vector<Candidate> candidates;
    bool any_pool = false, any_site = spec.preferred_site.empty();
    for (const auto& p : *pools_r) {
      auto n = by_name.find(p.node);
      if (n == by_name.end()) continue;  // the node is down: its report is stale
      if (!spec.pool.empty() && p.name != spec.pool) continue;
      any_pool = true;
      if (spec.preferred_site.empty() || n->second->site == spec.preferred_site) any_site = true;
      // Thin provisioning allows overcommit, but a full pool cannot take a single new cluster.
      if (p.free == 0) continue;
      candidates.push_back(Candidate{&p, n->second->site});
    }
    if (!any_pool)
      return Status::error(Errc::no_space, "no live node reports a pool{}",
                           spec.pool.empty() ? std::string{} : fmt::format(" named '{}'", spec.pool));
    if (!any_site)
      return Status::error(Errc::no_space, "preferred_site: no live node with a pool in site '{}'",
                           spec.preferred_site);
    auto placed = place(candidates, spec.replicas, spec.preferred_site);
    if (!placed) return placed.status();
    rec.replicas = placed->nodes;
    rec.pool = placed->pool;
    if (!placed->note.empty())
      rec.reason = rec.reason.empty() ? placed->note : rec.reason + "; " + placed->note;
  }
  // A clone has its source's replicas whatever `replicas` asked: it shares the snapshot's clusters.
  rec.replicas_wanted = static_cast<unsigned>(rec.replicas.size());

  // The in-sync set starts as every replica: an empty replica is in sync with an empty one, and
  // a clone's replicas hold the same snapshot.
  InSyncRecord set;
  set.volume = rec.name;
  set.uuid = rec.uuid;
  set.generation = 1;
  set.members = rec.replicas;
  set.owner = rec.replicas.front();
  set.decided_by = "api";
  set.reason = "created";
  set.at = rec.created;
  std::vector<TxnOp> ops{TxnOp::put(volume_key(rec.name), to_json(rec).dump()),
                         TxnOp::put(insync_key(rec.name), to_json(set).dump()),
                         TxnOp::put(decision_key(rec.name, 1), to_json(decision_of(set, {})).dump())};

  auto t = etcd_.txn(cmp, ops);
  if (!t) return t.status();
  if (!t->succeeded) {
    auto now = etcd_.get(volume_key(rec.name));
    if (now && !now->kvs.empty()) return Status::error(Errc::exists, "volume '{}' exists", rec.name);
    return lost(fmt::format("clone source '{}'", spec.clone_of));
  }
  rec.mod_revision = t->revision;
  spdlog::info("event=catalogue.volume.create volume={} size={} nodes={} pool={} clone_of={}", rec.name,
               rec.size, fmt::join(rec.replicas, ","), rec.pool, rec.clone_of);
  return rec;
}

Result<VolumeRecord> Catalogue::grow_volume(const std::string& name, std::uint64_t new_size,
                                            std::int64_t expected_generation) {
  auto rec = volume(name);
  if (!rec) return rec.status();
  if (expected_generation != 0 && expected_generation != rec->generation)
    return Status::error(Errc::conflict, "volume '{}' is at generation {}, not {}: re-read and retry", name,
                         rec->generation, expected_generation);
  if (rec->state == VolumeState::deleting)
    return Status::error(Errc::invalid, "volume '{}' is being deleted", name);
  DPX_TRY(check_size("size", new_size));
  if (new_size < rec->size)
    return Status::error(Errc::invalid, "size: {} is smaller than the current {} (volumes only grow)",
                         new_size, rec->size);
  if (new_size == rec->size) return rec;
  VolumeRecord next = *rec;
  next.size = new_size;
  next.generation += 1;
  next.reason = fmt::format("grown from {} to {} bytes", rec->size, new_size);
  auto t = etcd_.txn({Compare::unchanged_since(volume_key(name), rec->mod_revision)},
                     {TxnOp::put(volume_key(name), to_json(next).dump())});
  if (!t) return t.status();
  if (!t->succeeded) {
    auto again = etcd_.get(volume_key(name));
    if (again && again->kvs.empty())
      return Status::error(Errc::not_found, "volume '{}' does not exist", name);
    return lost(fmt::format("volume '{}'", name));
  }
  next.mod_revision = t->revision;
  return next;
}

Result<VolumeRecord> Catalogue::delete_volume(const std::string& name, const std::string& reason) {
  auto rec = volume(name);
  if (!rec) return rec.status();
  if (rec->state == VolumeState::deleting) return rec;
  VolumeRecord next = *rec;
  next.state = VolumeState::deleting;
  next.generation += 1;
  next.reason = reason.empty() ? std::string("deleted") : reason;
  auto t = etcd_.txn({Compare::unchanged_since(volume_key(name), rec->mod_revision)},
                     {TxnOp::put(volume_key(name), to_json(next).dump())});
  if (!t) return t.status();
  if (!t->succeeded) {
    auto again = etcd_.get(volume_key(name));
    if (again && again->kvs.empty())
      return Status::error(Errc::not_found, "volume '{}' does not exist", name);
    return lost(fmt::format("volume '{}'", name));
  }
  next.mod_revision = t->revision;
  spdlog::info("event=catalogue.volume.delete volume={} reason=\"{}\"", name, next.reason);
  return next;
}

Result<SnapshotRecord> Catalogue::create_snapshot(const std::string& volume_name, const std::string& snap) {
  DPX_TRY(check_name("volume", volume_name));
  DPX_TRY(check_name("snapshot", snap));
  auto rec = volume(volume_name);
  if (!rec) return rec.status();
  if (rec->state == VolumeState::deleting)
    return Status::error(Errc::invalid, "volume '{}' is being deleted", volume_name);
  SnapshotRecord s;
  s.volume = volume_name;
  s.name = snap;
  s.state = SnapshotState::creating;
  s.created = now_rfc3339();
  const std::string key = snapshot_key(volume_name, snap);
  auto t =
      etcd_.txn({Compare::absent(key), Compare::unchanged_since(volume_key(volume_name), rec->mod_revision)},
                {TxnOp::put(key, to_json(s).dump())});
  if (!t) return t.status();
  if (!t->succeeded) {
    auto sk = etcd_.get(key);
    if (sk && !sk->kvs.empty())
      return Status::error(Errc::exists, "snapshot '{}@{}' exists", volume_name, snap);
    auto vk = etcd_.get(volume_key(volume_name));
    if (vk && vk->kvs.empty())
      return Status::error(Errc::not_found, "volume '{}' does not exist", volume_name);
    return lost(fmt::format("volume '{}'", volume_name));
  }
  s.mod_revision = t->revision;
  return s;
}

Result<SnapshotRecord> Catalogue::delete_snapshot(const std::string& volume_name, const std::string& snap) {
  DPX_TRY(check_name("volume", volume_name));
  DPX_TRY(check_name("snapshot", snap));
  const std::string key = snapshot_key(volume_name, snap);
  auto r = etcd_.get(key);
  if (!r) return r.status();
  std::optional<SnapshotRecord> s;
  if (!r->kvs.empty()) s = parse_snapshot(r->kvs[0]);
  if (!s) return Status::error(Errc::not_found, "snapshot '{}@{}' does not exist", volume_name, snap);
  if (s->state == SnapshotState::deleting) return *s;
  s->state = SnapshotState::deleting;
  auto t = etcd_.txn({Compare::unchanged_since(key, s->mod_revision)}, {TxnOp::put(key, to_json(*s).dump())});
  if (!t) return t.status();
  if (!t->succeeded) {
    auto again = etcd_.get(key);
    if (again && again->kvs.empty())
      return Status::error(Errc::not_found, "snapshot '{}@{}' does not exist", volume_name, snap);
    return lost(fmt::format("snapshot '{}@{}'", volume_name, snap));
  }
  s->mod_revision = t->revision;
  return *s;
}

Result<ExportRecord> Catalogue::set_export(const ExportRecord& in, std::int64_t expected_revision) {
  DPX_TRY(check_name("volume", in.volume));
  for (const auto& [iqn, a] : in.acl)
    if (!valid_initiator(iqn))
      return Status::error(Errc::invalid,
                           "acl: initiator name '{}' is empty or has spaces/control characters", iqn);
  auto rec = volume(in.volume);
  if (!rec) return rec.status();
  if (rec->state == VolumeState::deleting)
    return Status::error(Errc::invalid, "volume '{}' is being deleted", in.volume);
  auto cur = export_of(in.volume);
  if (!cur) return cur.status();
  if (expected_revision >= 0 && expected_revision != cur->mod_revision)
    return Status::error(Errc::conflict, "export of '{}' is at revision {}, not {}: re-read and retry",
                         in.volume, cur->mod_revision, expected_revision);
  // Who may read or write is a serving decision: it bumps the volume's generation like a grow.
  VolumeRecord next = *rec;
  next.generation += 1;
  next.reason = "export changed";
  auto t = etcd_.txn({Compare::unchanged_since(volume_key(in.volume), rec->mod_revision),
                      Compare::unchanged_since(export_key(in.volume), cur->mod_revision)},
                     {TxnOp::put(export_key(in.volume), to_json(in).dump()),
                      TxnOp::put(volume_key(in.volume), to_json(next).dump())});
  if (!t) return t.status();
  if (!t->succeeded) {
    auto again = etcd_.get(volume_key(in.volume));
    if (again && again->kvs.empty())
      return Status::error(Errc::not_found, "volume '{}' does not exist", in.volume);
    return lost(fmt::format("export of '{}'", in.volume));
  }
  ExportRecord out = in;
  out.mod_revision = t->revision;
  return out;
}

Result<InSyncRecord> Catalogue::change_insync(const InSyncRecord& expected, std::vector<std::string> members,
                                              const std::string& decided_by, const std::string& reason,
                                              const std::vector<std::string>& may_lose) {
  const std::string& name = expected.volume;
  DPX_TRY(check_name("volume", name));
  if (members.empty())
    return Status::error(Errc::invalid, "members: the in-sync set of '{}' cannot be empty", name);
  for (std::size_t i = 0; i < members.size(); ++i) {
    DPX_TRY(check_name("members", members[i]));
    if (std::find(members.begin(), members.begin() + static_cast<std::ptrdiff_t>(i), members[i]) !=
        members.begin() + static_cast<std::ptrdiff_t>(i))
      return Status::error(Errc::invalid, "members: '{}' is named twice", members[i]);
  }
  const std::string ikey = insync_key(name), vkey = volume_key(name);
  // The volume's record is compared too, so that "exists, same uuid, not deleting" holds when the
  // set changes; a grow or export change meanwhile is no reason to fail: read it again.
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto rec = volume(name);
    if (!rec) return rec.status();
    if (rec->state == VolumeState::deleting)
      return Status::error(Errc::invalid, "volume '{}' is being deleted", name);
    if (!expected.uuid.empty() && expected.uuid != rec->uuid)
      return Status::error(Errc::conflict,
                           "volume '{}' is now uuid {}, not {} (deleted and created again): re-read", name,
                           rec->uuid, expected.uuid);
    for (const auto& m : members)
      if (std::find(rec->replicas.begin(), rec->replicas.end(), m) == rec->replicas.end())
        return Status::error(Errc::invalid, "members: '{}' holds no replica of '{}' (replicas: {})", m, name,
                             fmt::join(rec->replicas, ", "));
    InSyncRecord next;
    next.volume = name;
    next.uuid = rec->uuid;
    next.generation = expected.generation + 1;
    next.members = in_placement_order(rec->replicas, members);
    next.owner = next.members.front();
    next.decided_by = decided_by;
    next.reason = reason;
    next.at = now_rfc3339();
    std::vector<TxnOp> ops{
        TxnOp::put(ikey, to_json(next).dump()),
        TxnOp::put(decision_key(name, next.generation), to_json(decision_of(next, may_lose)).dump())};
    // Generations are consecutive, so dropping the one kDecisionsKept back keeps the last 100.
    if (next.generation > kDecisionsKept)
      ops.push_back(TxnOp::del(decision_key(name, next.generation - kDecisionsKept)));
    auto t = etcd_.txn({Compare::unchanged_since(ikey, expected.mod_revision),
                        Compare::unchanged_since(vkey, rec->mod_revision)},
                       ops, {TxnOp::get(ikey)});
    if (!t) return t.status();
    if (t->succeeded) {
      next.mod_revision = t->revision;
      spdlog::info(
          "event=catalogue.insync.change volume={} generation={} members={} owner={} decided_by={} "
          "reason=\"{}\"",
          name, next.generation, fmt::join(next.members, ","), next.owner, decided_by, reason);
      return next;
    }
    const std::vector<Kv> now = t->ranges.empty() ? std::vector<Kv>{} : t->ranges[0];
    const std::int64_t now_rev = now.empty() ? 0 : now[0].mod_revision;
    if (now_rev != expected.mod_revision) {
      auto cur = now.empty() ? std::nullopt : parse_insync(now[0]);
      return Status::error(
          Errc::conflict,
          "the in-sync set of '{}' changed meanwhile (now generation {}): re-read and re-decide", name,
          cur ? cur->generation : 0);
    }
  }
  return lost(fmt::format("volume '{}'", name));
}

// --- reports ---

Status Catalogue::report_pool(const PoolRecord& rec) {
  DPX_TRY(check_name("node", rec.node));
  DPX_TRY(check_name("pool", rec.name));
  auto r = etcd_.put(kPools + rec.node + "/" + rec.name, to_json(rec).dump());
  return r ? Status::ok() : r.status();
}

Status Catalogue::report_replica(const ReplicaStatus& st) {
  DPX_TRY(check_name("volume", st.volume));
  DPX_TRY(check_name("node", st.node));
  auto r = etcd_.put(replica_key(st.volume, st.node), to_json(st).dump());
  return r ? Status::ok() : r.status();
}

Status Catalogue::remove_replica(const std::string& volume_name, const std::string& node) {
  DPX_TRY(check_name("volume", volume_name));
  DPX_TRY(check_name("node", node));
  auto r = etcd_.del(replica_key(volume_name, node));
  return r ? Status::ok() : r.status();
}

Status Catalogue::settle(const std::string& name) {
  DPX_TRY(check_name("volume", name));
  // One read at one revision: the record, its snapshots and the reports agree with each other.
  auto t = etcd_.txn({}, {TxnOp::get(volume_key(name)), TxnOp::get(snapshot_prefix(name), true),
                          TxnOp::get(replica_prefix(name), true)});
  if (!t) return t.status();
  if (t->ranges.size() != 3)
    return Status::error(Errc::invalid, "settle '{}': etcd answered an odd shape", name);
  if (t->ranges[0].empty()) return Status::ok();
  auto rec = parse_volume(t->ranges[0][0]);
  if (!rec) return Status::ok();  // logged by the parser; nothing can be decided on it
  std::map<std::string, ReplicaStatus> reports;
  for (const auto& kv : t->ranges[2])
    if (auto r = parse_replica(kv)) reports[r->node] = std::move(*r);
  const std::string vkey = volume_key(name);

  if (rec->state == VolumeState::deleting) {
    for (const auto& n : rec->replicas) {
      auto it = reports.find(n);
      if (it != reports.end() && it->second.state != "deleted") return Status::ok();  // still held there
    }
    auto d =
        etcd_.txn({Compare::unchanged_since(vkey, rec->mod_revision)},
                  {TxnOp::del(vkey), TxnOp::del(snapshot_prefix(name), true), TxnOp::del(export_key(name)),
                   TxnOp::del(replica_prefix(name), true), TxnOp::del(insync_key(name)),
                   TxnOp::del(decision_prefix(name), true), TxnOp::del(kVerify + name)});
    if (!d) return d.status();
    if (d->succeeded) spdlog::info("event=catalogue.volume.deleted volume={}", name);
    return Status::ok();  // a lost compare: someone else moved it on; their change triggers the next settle
  }

  if (rec->state == VolumeState::creating) {
    const bool all =
        !rec->replicas.empty() && std::all_of(rec->replicas.begin(), rec->replicas.end(), [&](auto& n) {
          auto it = reports.find(n);
          return it != reports.end() && it->second.state == "in-sync" &&
                 it->second.generation >= rec->generation;
        });
    if (all) {
      VolumeRecord next = *rec;
      next.state = VolumeState::ready;
      auto u = etcd_.txn({Compare::unchanged_since(vkey, rec->mod_revision)},
                         {TxnOp::put(vkey, to_json(next).dump())});
      if (!u) return u.status();
      if (u->succeeded) spdlog::info("event=catalogue.volume.ready volume={}", name);
    }
  }

  for (const auto& kv : t->ranges[1]) {
    auto s = parse_snapshot(kv);
    if (!s) continue;
    auto listed = [&](const std::string& n) {
      auto it = reports.find(n);
      return it != reports.end() && std::find(it->second.snapshots.begin(), it->second.snapshots.end(),
                                              s->name) != it->second.snapshots.end();
    };
    if (s->state == SnapshotState::creating && !rec->replicas.empty() &&
        std::all_of(rec->replicas.begin(), rec->replicas.end(), listed)) {
      s->state = SnapshotState::ready;
      auto u = etcd_.txn({Compare::unchanged_since(kv.key, kv.mod_revision)},
                         {TxnOp::put(kv.key, to_json(*s).dump())});
      if (!u) return u.status();
    } else if (s->state == SnapshotState::deleting &&
               std::none_of(rec->replicas.begin(), rec->replicas.end(), listed)) {
      auto u = etcd_.txn({Compare::unchanged_since(kv.key, kv.mod_revision)}, {TxnOp::del(kv.key)});
      if (!u) return u.status();
    }
  }
  return Status::ok();
}

}  // namespace duplex::cluster
