#include "duplex/api/handler.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cmath>
#include <span>
#include <string_view>
#include <vector>

#include "fields.h"
#include "json_shapes.h"

namespace duplex::api {

using nlohmann::json;

namespace {

Response json_response(int status, const json& j) {
  return Response{status, "application/json", dump(j), {}};
}

Response error_response(int status, std::string_view code, std::string_view message,
                        std::string_view field = {}) {
  json e{{"code", code}, {"message", message}};
  if (!field.empty()) e["field"] = field;
  return json_response(status, json{{"error", std::move(e)}});
}

Response error_response(Errc c, std::string_view message, std::string_view field = {}) {
  auto [status, code] = http_status_of(c);
  return error_response(status, code, message, field);
}

// The catalogue's validation messages start with the field they blame ("size: ..."): carry it
// over into "field" when it is one a request can hold.
Response error_response(const Status& st) {
  std::string_view field;
  if (st.code() == Errc::invalid || st.code() == Errc::unsupported) {
    const std::string_view m = st.message();
    for (std::string_view f : {"name", "size", "replicas", "preferred_site", "pool", "clone_of", "generation",
                               "nbd", "iscsi", "default_access", "access", "acl", "members"}) {
      if (m.size() > f.size() && m.substr(0, f.size()) == f && m[f.size()] == ':') field = f;
    }
  }
  return error_response(st.code(), st.message(), field);
}

Response fault_response(const Fault& f) { return error_response(Errc::invalid, f.message, f.field); }

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  if (path.empty() || path.front() != '/') return out;
  path.remove_prefix(1);
  while (true) {
    const auto slash = path.find('/');
    out.push_back(path.substr(0, slash));
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return out;
}

// Initiator names in ACL paths: IQNs, EUIs, NAAs. Printable ASCII without spaces, as RFC 3720
// allows, up to its 223-byte limit.
bool valid_initiator(std::string_view s) {
  if (s.empty() || s.size() > 223) return false;
  for (char c : s) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

bool valid_clone_source(std::string_view s) {
  const auto at = s.find('@');
  return at != std::string_view::npos && cluster::valid_name(s.substr(0, at)) &&
         cluster::valid_name(s.substr(at + 1));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

// The request's ?wait= and ?timeout=, and nothing else (an unknown parameter is a mistake).
struct Query {
  Wait wait;
  std::optional<Fault> fault;
};

Query parse_query(const Request& req, const HandlerOptions& opts) {
  Query q;
  q.wait.timeout = opts.default_timeout;
  for (const auto& [key, value] : req.query) {
    if (key == "wait") {
      const std::string v = lower(value);
      if (v.empty() || v == "true" || v == "1") {
        q.wait.wait = true;
      } else if (v == "false" || v == "0") {
        q.wait.wait = false;
      } else {
        q.fault = Fault{"wait",
                        fmt::format("query parameter \"wait\" must be true or false, not {}", quote(value))};
        return q;
      }
    } else if (key == "timeout") {
      double seconds = -1;
      const char* end = value.data() + value.size();
      auto [ptr, ec] = std::from_chars(value.data(), end, seconds, std::chars_format::fixed);
      const auto max = static_cast<double>(opts.max_timeout.count());
      if (ec != std::errc{} || ptr != end || !std::isfinite(seconds) || seconds < 0 || seconds > max) {
        q.fault =
            Fault{"timeout", fmt::format("query parameter \"timeout\" must be seconds from 0 to {}, not {}",
                                         opts.max_timeout.count(), quote(value))};
        return q;
      }
      q.wait.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
    } else {
      q.fault = Fault{key, fmt::format("unknown query parameter {}", quote(key))};
      return q;
    }
  }
  return q;
}

// A route: its path pattern (segments, "{}" matches one name) and the methods it serves.
struct Route {
  std::vector<std::string_view> pattern;
  std::vector<std::string_view> methods;
};

const std::vector<Route>& routes() {
  static const std::vector<Route> r = {
      {{"metrics"}, {"GET"}},
      {{"v1", "health"}, {"GET"}},
      {{"v1", "status"}, {"GET"}},
      {{"v1", "nodes"}, {"GET"}},
      {{"v1", "nodes", "{}"}, {"GET"}},
      {{"v1", "nodes", "{}", "drain"}, {"POST"}},
      {{"v1", "nodes", "{}", "resume"}, {"POST"}},
      {{"v1", "pools"}, {"GET"}},
      {{"v1", "volumes"}, {"GET", "POST"}},
      {{"v1", "volumes", "{}"}, {"GET", "PATCH", "DELETE"}},
      {{"v1", "volumes", "{}", "snapshots"}, {"GET", "POST"}},
      {{"v1", "volumes", "{}", "snapshots", "{}"}, {"DELETE"}},
      {{"v1", "volumes", "{}", "export"}, {"GET", "PUT"}},
      {{"v1", "volumes", "{}", "promote"}, {"POST"}},
      {{"v1", "volumes", "{}", "verify"}, {"POST"}},
      {{"v1", "volumes", "{}", "export", "acl", "{}"}, {"PUT", "DELETE"}},
  };
  return r;
}

const Route* match(const std::vector<std::string_view>& segs) {
  for (const auto& r : routes()) {
    if (r.pattern.size() != segs.size()) continue;
    bool ok = true;
    for (std::size_t i = 0; i < segs.size() && ok; ++i) {
      ok = r.pattern[i] == "{}" ? !segs[i].empty() : r.pattern[i] == segs[i];
    }
    if (ok) return &r;
  }
  return nullptr;
}

// Handlers of one request, with its path's names already extracted.
class Call {
 public:
  Call(Backend& b, const Request& req, const Wait& w, std::span<const std::string_view> segs)
      : b_(b), req_(req), wait_(w), segs_(segs) {}

  Response health() {
    const HealthView h = b_.health();
    return json_response(200, json{{"node", h.node},
                                   {"site", h.site},
                                   {"status", h.etcd && h.lease ? "ok" : "degraded"},
                                   {"etcd", h.etcd},
                                   {"lease", h.lease}});
  }

  Response status() {
    const HealthView h = b_.health();
    auto nodes = b_.nodes();
    if (!nodes) return error_response(nodes.status());
    auto vols = b_.volumes();
    if (!vols) return error_response(vols.status());
    json self{{"name", h.node}, {"site", h.site}, {"alive", false}};
    std::vector<std::string> known;
    std::vector<std::string> sites;
    std::size_t alive = 0;
    auto note = [](std::vector<std::string>& v, const std::string& s) {
      if (!s.empty() && std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
    };
    for (const auto& n : *nodes) {
      if (n.rec.name == h.node) {
        auto j = node_json(n);
        if (!j) return error_response(j.status());
        self = std::move(*j);
      }
      note(known, n.rec.name);
      note(sites, n.rec.site);
      if (n.alive) ++alive;
    }
    json volumes = json::array();
    for (const auto& v : *vols) {
      json reps = json::array();
      for (const auto& r : v.replicas) {
        note(known, r.node);  // a node that holds a replica but is down is still part of the cluster
        reps.push_back(json{{"node", r.node}, {"state", replica_state(r, v.rec.state)}});
      }
      volumes.push_back(json{
          {"name", v.rec.name}, {"state", std::string(cluster::to_string(v.rec.state))}, {"replicas", reps}});
    }
    std::sort(sites.begin(), sites.end());
    return json_response(
        200, json{{"node", self},
                  {"cluster",
                   {{"nodes", known.size()}, {"alive", alive}, {"volumes", vols->size()}, {"sites", sites}}},
                  {"volumes", volumes}});
  }

  Response nodes() {
    auto r = b_.nodes();
    if (!r) return error_response(r.status());
    json out = json::array();
    for (const auto& n : *r) {
      auto j = node_json(n);
      if (!j) return error_response(j.status());
      out.push_back(std::move(*j));
    }
    return json_response(200, out);
  }

  Response node() {
    const std::string name(segs_[2]);
    auto r = b_.nodes();
    if (!r) return error_response(r.status());
    for (const auto& n : *r) {
      if (n.rec.name != name) continue;
      auto j = node_json(n);
      if (!j) return error_response(j.status());
      return json_response(200, *j);
    }
    return error_response(Errc::not_found, fmt::format("no node {}", quote(name)));
  }

  // Planned maintenance: every mirrored volume on the node steps down (its peer becomes the sole
  // member and owner; the node keeps serving by forwarding), so that it can be stopped without an
  // outage. Refused while any volume would be left without an in-sync replica.
  Response drain() {
    const std::string text = req_.body.empty() ? "{}" : req_.body;  // the body is optional
    BodyReader body(text, {"reason"});
    const auto why = body.string("reason", false);
    if (!body.ok()) return fault_response(body.fault());
    const std::string node = name(2);
    auto nodes = b_.nodes();
    if (!nodes) return error_response(nodes.status());
    auto vols = b_.volumes();
    if (!vols) return error_response(vols.status());
    const auto known =
        std::find_if(nodes->begin(), nodes->end(), [&](const NodeView& n) { return n.rec.name == node; });
    bool holds = false;
    for (const auto& v : *vols) {
      if (std::find(v.rec.replicas.begin(), v.rec.replicas.end(), node) == v.rec.replicas.end()) continue;
      holds = true;
      if (auto refused = drain_refusal(v, node, *nodes); !refused.empty())
        return error_response(Errc::conflict, fmt::format("cannot drain {}: {}", node, refused));
    }
    if (known == nodes->end() && !holds)
      return error_response(Errc::not_found, fmt::format("no node {}", quote(node)));
    const std::string reason =
        fmt::format("drain of {}: {}", node, why && !why->empty() ? *why : "planned maintenance");
    auto d = b_.drain_node(node, "api", reason);
    if (!d) return error_response(d.status());
    spdlog::info("event=api.drain node={} reason=\"{}\"", node, reason);
    return node_after(node);
  }

  Response resume() {
    const std::string text = req_.body.empty() ? "{}" : req_.body;
    BodyReader body(text, {});
    if (!body.ok()) return fault_response(body.fault());
    const std::string node = name(2);
    if (Status st = b_.resume_node(node); !st) return error_response(st);
    spdlog::info("event=api.resume node={}", node);
    return node_after(node);
  }

  // Why draining `node` would leave volume `v` without an in-sync replica ("" = it would not).
  static std::string drain_refusal(const VolumeView& v, const std::string& node,
                                   const std::vector<NodeView>& nodes) {
    const std::string& vol = v.rec.name;
    if (v.rec.replicas.size() < 2)
      return fmt::format(
          "volume {} has a single replica, on {}: it is not mirrored, so no other node can serve it "
          "(delete it or recreate it with 2 replicas first)",
          vol, node);
    if (!v.insync) return fmt::format("volume {} has no in-sync set (it predates the mirror)", vol);
    const auto& m = v.insync->members;
    const bool member = std::find(m.begin(), m.end(), node) != m.end();
    if (!member) return {};  // already out of the set: nothing to hand over
    std::string peer;
    for (const auto& r : v.rec.replicas)
      if (r != node) peer = r;
    if (std::find(m.begin(), m.end(), peer) == m.end())
      return fmt::format(
          "volume {}: its other replica, on {}, is not in sync (in-sync set: {}, generation {}); "
          "draining would leave the volume no in-sync replica. Wait for its resync",
          vol, peer, fmt::join(m, " "), v.insync->generation);
    const auto pn =
        std::find_if(nodes.begin(), nodes.end(), [&](const NodeView& n) { return n.rec.name == peer; });
    if (pn == nodes.end() || !pn->alive)
      return fmt::format("volume {}: the node of its other replica, {}, is down", vol, peer);
    if (pn->drain)
      return fmt::format("volume {}: the node of its other replica, {}, is drained itself", vol, peer);
    for (const auto& r : v.replicas)
      if (r.node == node && (!r.report || !r.report->link_up))
        return fmt::format("volume {}: the mirror link from {} to {} is not up", vol, node, peer);
    return {};
  }

  // A node's JSON; a drained one says how far its drain is: "draining" while some volume still
  // has it in its in-sync set (listed), then "drained" (it may be stopped).
  Result<json> node_json(const NodeView& n) {
    json j = to_json(n);
    if (!n.drain) return j;
    if (!vols_) {
      auto v = b_.volumes();
      if (!v) return v.status();
      vols_ = std::move(*v);
    }
    json still = json::array();
    for (const auto& v : *vols_)
      if (v.insync && v.rec.replicas.size() > 1 &&
          std::find(v.insync->members.begin(), v.insync->members.end(), n.rec.name) !=
              v.insync->members.end())
        still.push_back(v.rec.name);
    j["drain"]["state"] = still.empty() ? "drained" : "draining";
    j["drain"]["in_sync"] = std::move(still);
    return j;
  }

  Response node_after(const std::string& node) {
    auto r = b_.nodes();
    if (!r) return error_response(r.status());
    for (const auto& n : *r) {
      if (n.rec.name != node) continue;
      auto j = node_json(n);
      if (!j) return error_response(j.status());
      return json_response(200, *j);
    }
    return json_response(200, json{{"name", node}, {"alive", false}, {"drain", nullptr}});
  }

  Response pools() {
    auto r = b_.pools();
    if (!r) return error_response(r.status());
    json out = json::array();
    for (const auto& p : *r) out.push_back(to_json(p));
    return json_response(200, out);
  }

  Response volumes() {
    auto r = b_.volumes();
    if (!r) return error_response(r.status());
    json out = json::array();
    for (const auto& v : *r) out.push_back(to_json(v));
    return json_response(200, out);
  }

  Response create_volume() {
    BodyReader body(req_.body, {"name", "size", "replicas", "preferred_site", "pool", "clone_of"});
    cluster::VolumeSpec spec;
    if (auto v = body.string("name", true)) {
      spec.name = *v;
      if (!cluster::valid_name(spec.name))
        body.fail("name",
                  fmt::format("field \"name\": {} is not a valid name ([A-Za-z0-9][A-Za-z0-9._-]{{0,62}})",
                              quote(spec.name)));
    }
    if (auto v = body.string("clone_of", false)) {
      spec.clone_of = *v;
      if (!valid_clone_source(spec.clone_of))
        body.fail("clone_of",
                  fmt::format("field \"clone_of\": {} is not \"volume@snapshot\"", quote(spec.clone_of)));
    }
    if (auto v = body.size("size", spec.clone_of.empty())) {
      spec.size = *v;
      check_size(body, spec.size);
    }
    if (auto v = body.integer("replicas", false, 1, 16)) spec.replicas = static_cast<unsigned>(*v);
    if (auto v = body.string("preferred_site", false)) {
      spec.preferred_site = *v;
      if (!spec.preferred_site.empty() && !cluster::valid_name(spec.preferred_site))
        body.fail("preferred_site", fmt::format("field \"preferred_site\": {} is not a valid site name",
                                                quote(spec.preferred_site)));
    }
    if (auto v = body.string("pool", false)) {
      spec.pool = *v;
      if (!spec.pool.empty() && !cluster::valid_name(spec.pool))
        body.fail("pool", fmt::format("field \"pool\": {} is not a valid pool name", quote(spec.pool)));
    }
    if (!body.ok()) return fault_response(body.fault());
    spec.reason = "api: create";
    auto r = b_.create_volume(spec, wait_);
    if (!r) return error_response(r.status());
    return json_response(r->done ? 201 : 202, to_json(r->value));
  }

  Response volume() {
    auto r = b_.volume(name(2));
    if (!r) return error_response(r.status());
    return json_response(200, to_json(*r));
  }

  Response grow_volume() {
    BodyReader body(req_.body, {"size", "generation"});
    const auto size = body.size("size", true);
    if (size) check_size(body, *size);
    const auto generation = body.integer("generation", false, 1, std::numeric_limits<std::int64_t>::max());
    if (!body.ok()) return fault_response(body.fault());
    auto cur = b_.volume(name(2));
    if (!cur) return error_response(cur.status());
    if (*size < cur->rec.size)
      return error_response(
          Errc::invalid,
          fmt::format("field \"size\": {} bytes is smaller than the volume's {} bytes; volumes "
                      "only grow",
                      *size, cur->rec.size),
          "size");
    auto r = b_.grow_volume(name(2), *size, generation.value_or(0), wait_);
    if (!r) return error_response(r.status());
    return json_response(r->done ? 200 : 202, to_json(r->value));
  }

  Response delete_volume() {
    auto r = b_.delete_volume(name(2), wait_);
    if (!r) return error_response(r.status());
    if (r->done) return json_response(200, json{{"deleted", name(2)}});
    return json_response(202, to_json(r->value));
  }

  Response snapshots() {
    auto r = b_.snapshots(name(2));
    if (!r) return error_response(r.status());
    json out = json::array();
    for (const auto& s : *r) out.push_back(to_json(s));
    return json_response(200, out);
  }

  Response create_snapshot() {
    BodyReader body(req_.body, {"name"});
    const auto snap = body.string("name", true);
    if (snap && !cluster::valid_name(*snap))
      body.fail("name", fmt::format("field \"name\": {} is not a valid snapshot name", quote(*snap)));
    if (!body.ok()) return fault_response(body.fault());
    auto r = b_.create_snapshot(name(2), *snap, wait_);
    if (!r) return error_response(r.status());
    return json_response(r->done ? 201 : 202, to_json(r->value));
  }

  Response delete_snapshot() {
    const std::string snap(segs_[4]);
    if (!cluster::valid_name(snap))
      return error_response(Errc::not_found, fmt::format("no snapshot {}@{}", name(2), quote(snap)));
    auto r = b_.delete_snapshot(name(2), snap, wait_);
    if (!r) return error_response(r.status());
    if (r->done) return json_response(200, json{{"deleted", name(2) + "@" + snap}});
    return json_response(202, to_json(r->value));
  }

  Response export_of() {
    auto r = b_.export_of(name(2));
    if (!r) return error_response(r.status());
    return json_response(200, to_json(*r));
  }

  Response put_export() {
    BodyReader body(req_.body, {"nbd", "iscsi", "default_access"});
    const auto nbd = body.boolean("nbd", false);
    const auto iscsi = body.boolean("iscsi", false);
    const auto access = access_field(body, "default_access");
    if (!body.ok()) return fault_response(body.fault());
    auto cur = b_.export_of(name(2));
    if (!cur) return error_response(cur.status());
    cluster::ExportRecord rec = cur->rec;
    if (nbd) rec.nbd = *nbd;
    if (iscsi) rec.iscsi = *iscsi;
    if (access) rec.default_access = *access;
    return set_export(rec, cur->rec.mod_revision);
  }

  Response put_acl() {
    const std::string initiator(segs_[5]);
    if (!valid_initiator(initiator))
      return error_response(
          Errc::invalid, fmt::format("initiator {} is not an initiator name", quote(initiator)), "initiator");
    BodyReader body(req_.body, {"access"});
    if (!body.has("access")) body.fail("access", "missing field \"access\"");
    const auto access = access_field(body, "access");
    if (!body.ok()) return fault_response(body.fault());
    auto cur = b_.export_of(name(2));
    if (!cur) return error_response(cur.status());
    cluster::ExportRecord rec = cur->rec;
    rec.acl[initiator] = *access;
    return set_export(rec, cur->rec.mod_revision);
  }

  Response delete_acl() {
    const std::string initiator(segs_[5]);
    auto cur = b_.export_of(name(2));
    if (!cur) return error_response(cur.status());
    cluster::ExportRecord rec = cur->rec;
    if (rec.acl.erase(initiator) == 0)
      return error_response(Errc::not_found,
                            fmt::format("volume {} has no ACL entry for {}", name(2), quote(initiator)));
    return set_export(rec, cur->rec.mod_revision);
  }

  // Online verify of a mirrored volume: the owner compares the replicas while I/O goes on, and
  // reports progress and what differs in its replica status (verify_*). 202: asked, not done.
  Response verify() {
    BodyReader body(req_.body, {"repair"});
    const auto repair = body.boolean("repair", false);
    if (!body.ok()) return fault_response(body.fault());
    const std::string vol = name(2);
    auto cur = b_.volume(vol);
    if (!cur) return error_response(cur.status());
    if (cur->rec.replicas.size() < 2)
      return error_response(Errc::invalid,
                            fmt::format("volume {} has one replica: there is nothing to compare", vol));
    auto id = b_.request_verify(vol, repair.value_or(false));
    if (!id) return error_response(id.status());
    spdlog::info("event=api.verify volume={} request={} repair={}", vol, *id, repair.value_or(false));
    return json_response(202,
                         json{{"volume", vol}, {"verify_request", *id}, {"repair", repair.value_or(false)}});
  }

  // The operator's override for a rolling failure (the member that held the latest writes is gone
  // for good): `node` becomes the only member of the in-sync set. Whatever only the other members
  // acknowledged is lost, so the request must say it accepts that; the refusal says what it is.
  Response promote() {
    BodyReader body(req_.body, {"node", "accept_data_loss", "reason"});
    const auto node = body.string("node", true);
    if (node && !cluster::valid_name(*node))
      body.fail("node", fmt::format("field \"node\": {} is not a valid node name", quote(*node)));
    const auto accept = body.boolean("accept_data_loss", false);
    const auto why = body.string("reason", false);
    if (!body.ok()) return fault_response(body.fault());
    const std::string vol = name(2);
    auto cur = b_.volume(vol);
    if (!cur) return error_response(cur.status());
    const auto rep = std::find_if(cur->replicas.begin(), cur->replicas.end(),
                                  [&](const ReplicaView& r) { return r.node == *node; });
    if (rep == cur->replicas.end())
      return error_response(Errc::invalid,
                            fmt::format("field \"node\": {} holds no replica of volume {} (replicas: {})",
                                        quote(*node), vol, fmt::join(cur->rec.replicas, ", ")),
                            "node");
    if (!cur->insync)
      return error_response(
          Errc::conflict,
          fmt::format("volume {} has no in-sync set to change (it predates the mirror)", vol));
    const cluster::InSyncRecord& set = *cur->insync;
    const bool member = std::find(set.members.begin(), set.members.end(), *node) != set.members.end();
    if (member && set.members.size() == 1)
      return error_response(Errc::conflict,
                            fmt::format("{} is already the only member of volume {}'s in-sync set "
                                        "(generation {}): nothing to promote",
                                        *node, vol, set.generation));
    if (!rep->report)
      return error_response(Errc::conflict,
                            fmt::format("{} has not reported its replica of {}: what it holds is unknown, "
                                        "so it cannot be promoted",
                                        *node, vol));
    const std::string& state = rep->report->state;
    if (state == "failed" || state == "inconsistent")
      return error_response(Errc::conflict,
                            fmt::format("{}'s replica of {} is {}: an {} replica is never promoted{}", *node,
                                        vol, state, state == "failed" ? "unreadable" : "inconsistent",
                                        rep->report->error.empty() ? "" : " (" + rep->report->error + ")"));
    // A mirrored replica reports the in-sync generation it last held (its volume `generation` is
    // the volume record's, another counter).
    const std::int64_t held =
        rep->report->insync_generation > 0 ? rep->report->insync_generation : rep->report->generation;
    const std::vector<std::string> may_lose = what_promote_loses(set, *node, held, member);
    const std::string lost = fmt::format("{}", fmt::join(may_lose, "; "));
    if (!accept.value_or(false))
      return error_response(
          Errc::invalid,
          fmt::format("promoting {} makes it the only member of volume {}'s in-sync set (now generation {}, "
                      "members {}); may be lost: {}. Repeat with \"accept_data_loss\": true to accept that",
                      *node, vol, set.generation, fmt::join(set.members, " "), lost),
          "accept_data_loss");
    const std::string reason =
        why && !why->empty() ? "promote: " + *why : fmt::format("promote: {} made the only member", *node);
    auto r = b_.change_insync(set, {*node}, "api", reason, may_lose);
    if (!r) return error_response(r.status());
    spdlog::warn("event=api.promote volume={} node={} generation={} may_lose=\"{}\" reason=\"{}\"", vol,
                 *node, r->generation, lost, reason);
    auto after = b_.volume(vol);
    if (!after) return json_response(200, json{{"insync", to_json(*r)}, {"may_lose", may_lose}});
    json out = to_json(*after);
    out["may_lose"] = may_lose;
    return json_response(200, out);
  }

 private:
  // What making `node` the only member can lose: the writes the other members acknowledged that
  // `node` may lack. A member holds every acknowledged write; a replica out of the set holds those
  // up to the generation it last reported.
  static std::vector<std::string> what_promote_loses(const cluster::InSyncRecord& set,
                                                     const std::string& node, std::int64_t reported,
                                                     bool member) {
    std::vector<std::string> out;
    for (const auto& m : set.members) {
      if (m == node) continue;
      if (member)
        out.push_back(
            fmt::format("writes {} had not yet applied on {} (none acknowledged: {} is a member "
                        "at generation {})",
                        m, node, node, set.generation));
      else
        out.push_back(
            fmt::format("writes acknowledged by {} after generation {} (the set is at generation {}; "
                        "{} last reported generation {})",
                        m, reported, set.generation, node, reported));
    }
    return out;
  }

  // A volume name from the path: one that cannot be valid cannot exist either.
  std::string name(std::size_t i) const { return std::string(segs_[i]); }

  static void check_size(BodyReader& body, std::uint64_t size) {
    if (size == 0) {
      body.fail("size", "field \"size\" must be more than 0 bytes");
    } else if (size % 4096 != 0) {
      body.fail("size", fmt::format("field \"size\": {} bytes is not a multiple of 4096", size));
    }
  }

  static std::optional<cluster::Access> access_field(BodyReader& body, const char* field) {
    const auto s = body.string(field, false);
    if (!s) return std::nullopt;
    auto a = cluster::access_from(*s);
    if (!a)
      body.fail(field, fmt::format("field \"{}\" must be \"read-write\", \"read-only\" or \"none\", not {}",
                                   field, quote(*s)));
    return a;
  }

  Response set_export(const cluster::ExportRecord& rec, std::int64_t revision) {
    auto r = b_.set_export(rec, revision, wait_);
    if (!r) return error_response(r.status());
    return json_response(r->done ? 200 : 202, to_json(r->value));
  }

  Backend& b_;
  const Request& req_;
  Wait wait_;
  std::span<const std::string_view> segs_;
  std::optional<std::vector<VolumeView>> vols_;  // read once per request, for the drain states
};

}  // namespace

bool Handler::authorized(const std::string& header) const {
  constexpr std::string_view kScheme = "bearer ";
  if (opts_.token.empty() || header.size() < kScheme.size() ||
      lower(header.substr(0, kScheme.size())) != kScheme)
    return false;
  const std::string_view given = std::string_view(header).substr(kScheme.size());
  const std::string& want = opts_.token;
  // Constant time in the token's content: every byte of the longer one is looked at, whatever
  // differs first.
  unsigned diff = given.size() == want.size() ? 0U : 1U;
  const std::size_t n = std::max(given.size(), want.size());
  for (std::size_t i = 0; i < n; ++i) {
    const auto a = static_cast<unsigned char>(i < given.size() ? given[i] : 0);
    const auto b = static_cast<unsigned char>(i < want.size() ? want[i] : 0);
    diff |= static_cast<unsigned>(a ^ b);
  }
  return diff == 0;
}

Response Handler::handle(const Request& req) const {
  try {
    return dispatch(req);
  } catch (const std::exception& e) {
    // A bug (nlohmann-json's type errors, bad_alloc): the caller still gets an answer.
    return error_response(500, "internal", fmt::format("internal error: {}", e.what()));
  }
}

Response Handler::dispatch(const Request& req) const {
  const auto segs = split_path(req.path);
  const Route* route = match(segs);
  const bool open = route && (route->pattern.front() == "metrics" || route->pattern[1] == "health");
  if (!open && !authorized(req.authorization)) {
    Response r =
        error_response(401, "unauthorized",
                       opts_.token.empty() ? "this node has no API token configured ([api] token_file)"
                                           : "missing or wrong bearer token (Authorization: Bearer <token>)");
    r.headers.emplace_back("WWW-Authenticate", "Bearer");
    return r;
  }
  if (!route) return error_response(Errc::not_found, fmt::format("no route {}", quote(req.path)));
  if (std::find(route->methods.begin(), route->methods.end(), req.method) == route->methods.end()) {
    std::string allow;
    for (auto m : route->methods) allow += (allow.empty() ? "" : ", ") + std::string(m);
    Response r = error_response(
        405, "method_not_allowed",
        fmt::format("{} is not allowed on {} (allowed: {})", quote(req.method), quote(req.path), allow));
    r.headers.emplace_back("Allow", allow);
    return r;
  }
  if (req.body.size() > opts_.max_body) {
    return error_response(
        413, "too_large",
        fmt::format("the body is {} bytes; the limit is {}", req.body.size(), opts_.max_body));
  }
  if (route->pattern.front() == "metrics")
    return Response{200, "text/plain; version=0.0.4; charset=utf-8", backend_.metrics(), {}};

  Query q;
  if (!open) q = parse_query(req, opts_);  // a health probe's query is its own business
  if (q.fault) return fault_response(*q.fault);
  // Names in the path that cannot be valid cannot exist either.
  if (segs.size() >= 3 && (segs[1] == "volumes" || segs[1] == "nodes") && !cluster::valid_name(segs[2]))
    return error_response(Errc::not_found,
                          fmt::format("no {} {}", segs[1] == "volumes" ? "volume" : "node", quote(segs[2])));

  Call c(backend_, req, q.wait, segs);
  const std::string_view m = req.method;
  switch (segs.size()) {
    case 2:
      if (segs[1] == "health") return c.health();
      if (segs[1] == "status") return c.status();
      if (segs[1] == "nodes") return c.nodes();
      if (segs[1] == "pools") return c.pools();
      return m == "GET" ? c.volumes() : c.create_volume();
    case 3:
      if (segs[1] == "nodes") return c.node();
      if (m == "GET") return c.volume();
      return m == "PATCH" ? c.grow_volume() : c.delete_volume();
    case 4:
      if (segs[1] == "nodes") return segs[3] == "drain" ? c.drain() : c.resume();
      if (segs[3] == "snapshots") return m == "GET" ? c.snapshots() : c.create_snapshot();
      if (segs[3] == "promote") return c.promote();
      if (segs[3] == "verify") return c.verify();
      return m == "GET" ? c.export_of() : c.put_export();
    case 5: return c.delete_snapshot();
    default: return m == "PUT" ? c.put_acl() : c.delete_acl();
  }
}

}  // namespace duplex::api
