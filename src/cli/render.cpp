#include "duplex/cli/render.h"

#include <algorithm>

#include <fmt/format.h>

#include "duplex/cli/json_get.h"
#include "duplex/cli/progress.h"
#include "duplex/cli/units.h"

namespace duplex::cli {

std::string Table::str() const {
  std::vector<size_t> width(header_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  measure(header_);
  for (const auto& r : rows_) measure(r);
  std::string out;
  auto line = [&](const std::vector<std::string>& row) {
    std::string l;
    for (size_t i = 0; i < width.size(); ++i) {
      const std::string cell = i < row.size() ? row[i] : "";
      l += cell;
      if (i + 1 < width.size()) l += std::string(width[i] - cell.size() + 2, ' ');
    }
    while (!l.empty() && l.back() == ' ') l.pop_back();
    out += l + "\n";
  };
  line(header_);
  for (const auto& r : rows_) line(r);
  return out;
}

namespace {

std::string yes_no(bool b) { return b ? "yes" : "no"; }
std::string or_dash(const std::string& s) { return s.empty() ? "-" : s; }
std::string percent(double fraction) {
  return fmt::format("{:.0f}%", std::clamp(fraction, 0.0, 1.0) * 100.0);
}

// A string array as "n1 n2".
std::string words(const json& j, const std::string& key) {
  std::string out;
  for (const auto& e : list(j, key)) {
    if (!e.is_string()) continue;
    out += (out.empty() ? "" : " ") + e.get<std::string>();
  }
  return out;
}

void kv(std::string& out, const std::string& key, const std::string& value) {
  out += fmt::format("{:<16}{}\n", key + ":", value);
}

}  // namespace

std::string replica_summary(const json& v) {
  const json& reps = list(v, "replicas");
  size_t in_sync = 0;
  for (const auto& r : reps) {
    if (str(r, "state") == "in-sync") ++in_sync;
  }
  const std::uint64_t wanted = u64(v, "replicas_wanted", reps.size());
  return fmt::format("{}/{} in-sync", in_sync, wanted);
}

std::string volume_owner(const json& v) {
  // The in-sync set names the member that orders writes; older answers have no set.
  std::string owner = str(object(v, "insync"), "owner");
  if (!owner.empty()) return owner;
  owner = str(v, "owner");
  if (!owner.empty()) return owner;
  const json& reps = list(v, "replicas");
  for (const auto& r : reps) {
    if (str(r, "state") == "in-sync" && flag(r, "alive", true)) return str(r, "node");
  }
  return reps.empty() ? "" : str(reps[0], "node");
}

std::string render_status(const json& s) {
  std::string out;
  const json& node = object(s, "node");
  const json& cluster = object(s, "cluster");
  kv(out, "node", fmt::format("{} (site {})", str(node, "name"), str(node, "site")));
  kv(out, "nodes", fmt::format("{} alive of {}", u64(cluster, "alive"), u64(cluster, "nodes")));
  std::string sites;
  for (const auto& site : list(cluster, "sites")) {
    if (!site.is_string()) continue;
    sites += (sites.empty() ? "" : ", ") + site.get<std::string>();
  }
  kv(out, "sites", or_dash(sites));
  kv(out, "volumes", fmt::format("{}", u64(cluster, "volumes")));
  const json& vols = list(s, "volumes");
  if (!vols.empty()) {
    Table t({"VOLUME", "STATE", "REPLICAS"});
    for (const auto& v : vols) {
      std::string reps;
      for (const auto& r : list(v, "replicas")) {
        reps += fmt::format("{}{}={}", reps.empty() ? "" : " ", str(r, "node"), str(r, "state"));
      }
      t.add({str(v, "name"), str(v, "state"), or_dash(reps)});
    }
    out += "\n" + t.str();
  }
  return out;
}

// "-", or the drain's state: "draining" while a volume still has the node in its in-sync set.
std::string drain_state(const json& n) {
  const json& d = object(n, "drain");
  return d.empty() ? "-" : str(d, "state", "draining");
}

std::string render_nodes(const json& nodes) {
  Table t({"NAME", "SITE", "ADDRESS", "ALIVE", "DRAIN", "API", "NBD", "ISCSI", "VERSION"});
  if (nodes.is_array()) {
    for (const auto& n : nodes) {
      t.add({str(n, "name"), or_dash(str(n, "site")), or_dash(str(n, "address")), yes_no(flag(n, "alive")),
             drain_state(n), or_dash(str(n, "api")), or_dash(joined(n, "nbd")), or_dash(joined(n, "iscsi")),
             or_dash(str(n, "version"))});
    }
  }
  return t.str();
}

std::string render_node(const json& n) {
  std::string out;
  kv(out, "name", str(n, "name"));
  kv(out, "site", str(n, "site"));
  kv(out, "address", or_dash(str(n, "address")));
  kv(out, "alive", yes_no(flag(n, "alive")));
  kv(out, "pid", u64(n, "pid") != 0 ? fmt::format("{}", u64(n, "pid")) : "-");
  kv(out, "api", or_dash(str(n, "api")));
  kv(out, "nbd", or_dash(joined(n, "nbd")));
  kv(out, "iscsi", or_dash(joined(n, "iscsi")));
  kv(out, "base iqn", or_dash(str(n, "base_iqn")));
  kv(out, "version", or_dash(str(n, "version")));
  kv(out, "started", or_dash(str(n, "started")));
  if (const json& d = object(n, "drain"); !d.empty()) {
    std::string state = str(d, "state", "draining");
    if (state == "draining") state += " (still in sync: " + joined(d, "in_sync") + ")";
    kv(out, "drain",
       fmt::format("{} since {} by {}: {}", state, str(d, "at"), str(d, "by"), str(d, "reason")));
  } else {
    kv(out, "drain", "-");
  }
  return out;
}

std::string render_pools(const json& pools) {
  Table t({"NODE", "POOL", "SIZE", "FREE", "USED", "CLUSTER", "VOLUMES"});
  if (pools.is_array()) {
    for (const auto& p : pools) {
      const std::uint64_t size = u64(p, "size");
      const std::uint64_t free = u64(p, "free");
      const double used = size == 0 ? 0.0 : 1.0 - static_cast<double>(free) / static_cast<double>(size);
      t.add({str(p, "node"), str(p, "name"), format_size(size), format_size(free), percent(used),
             format_size(u64(p, "cluster_size")), fmt::format("{}", u64(p, "volumes"))});
    }
  }
  return t.str();
}

std::string render_volumes(const json& volumes) {
  Table t({"NAME", "SIZE", "STATE", "REPLICAS", "SITE", "OWNER", "GENERATION", "CLONE OF"});
  if (volumes.is_array()) {
    for (const auto& v : volumes) {
      t.add({str(v, "name"), format_size(u64(v, "size")), str(v, "state"), replica_summary(v),
             or_dash(str(v, "preferred_site")), or_dash(volume_owner(v)),
             fmt::format("{}", u64(v, "generation")), or_dash(str(v, "clone_of"))});
    }
  }
  return t.str();
}

namespace {
// Why a mirrored replica outside the in-sync set serves nothing, in one sentence per replica
// (docs/mirror.md, "Rolling failure"): since which generation it is behind, who holds the data,
// and, when no holder is alive, the override and what it costs.
std::string refusals(const json& v, const json& set) {
  const json& members = list(set, "members");
  if (set.empty() || members.empty()) return "";
  std::vector<std::string> holders, live;
  for (const auto& m : members) {
    if (!m.is_string()) continue;
    holders.push_back(m.get<std::string>());
    for (const auto& r : list(v, "replicas"))
      if (str(r, "node") == holders.back() && flag(r, "alive")) live.push_back(holders.back());
  }
  std::string out;
  for (const auto& r : list(v, "replicas")) {
    const std::string node = str(r, "node");
    if (node.empty() || std::find(holders.begin(), holders.end(), node) != holders.end()) continue;
    // The last generation the replica was in (the API reports it for a replica outside the set).
    const bool known = r.contains("insync_generation");
    const std::uint64_t since = u64(r, "insync_generation");
    std::string line = fmt::format("  {} serves nothing: out of the in-sync set (generation {}", node,
                                   u64(set, "generation"));
    if (known) line += fmt::format("; last in it at generation {}", since);
    line += fmt::format("; {}); ", flag(r, "alive") ? or_dash(str(r, "state")) : "node down");
    const std::string who =
        fmt::format("{} {}", holders.size() == 1 ? "the only in-sync replica is" : "the in-sync replicas are",
                    fmt::join(holders, ", "));
    if (!live.empty()) {
      line += who + (str(r, "state") == "resyncing" ? ", resyncing it" : ", which resyncs it once linked");
    } else {
      line += fmt::format(
          "{}, unreachable; to serve from {} anyway: duplexctl volume promote {} --node {} "
          "--accept-data-loss (loses what {} acknowledged after generation {})",
          who, node, str(v, "name"), node, fmt::join(holders, ", "),
          known ? fmt::format("{}", since) : std::string("?"));
    }
    out += line + "\n";
  }
  return out.empty() ? "" : "\nrefusals:\n" + out;
}
}  // namespace

std::string render_volume(const json& v) {
  std::string out;
  kv(out, "volume", str(v, "name"));
  kv(out, "uuid", or_dash(str(v, "uuid")));
  kv(out, "size", fmt::format("{} ({} bytes)", format_size(u64(v, "size")), u64(v, "size")));
  kv(out, "state", str(v, "state"));
  if (!str(v, "reason").empty()) kv(out, "reason", str(v, "reason"));
  kv(out, "generation", fmt::format("{}", u64(v, "generation")));
  kv(out, "replicas", replica_summary(v));
  kv(out, "preferred site", or_dash(str(v, "preferred_site")));
  kv(out, "owner", or_dash(volume_owner(v)));
  kv(out, "pool", or_dash(str(v, "pool")));
  if (!str(v, "clone_of").empty()) kv(out, "clone of", str(v, "clone_of"));
  kv(out, "created", or_dash(str(v, "created")));

  const json& set = object(v, "insync");
  const json& members = list(set, "members");
  auto is_member = [&](const std::string& node) {
    return std::any_of(members.begin(), members.end(), [&](const json& m) { return m == node; });
  };
  if (!set.empty()) {
    out += fmt::format("\nin-sync set: generation {}, members {}, owner {}\n", u64(set, "generation"),
                       or_dash(words(set, "members")), or_dash(str(set, "owner")));
    out += fmt::format("  decided by {} at {}: {}\n", or_dash(str(set, "decided_by")),
                       or_dash(str(set, "at")), or_dash(str(set, "reason")));
  }

  // The owner's online verify: never run, running (share compared), or its outcome.
  const auto verify_cell = [](const json& r, std::uint64_t size) -> std::string {
    const std::string state = str(r, "verify_state");
    const std::uint64_t bad = u64(r, "verify_mismatches");
    if (state == "running")
      return fmt::format(
          "running {:.0f}%",
          size ? 100.0 * static_cast<double>(u64(r, "verify_checked")) / static_cast<double>(size) : 0.0);
    if (state == "failed") return "failed: " + str(r, "verify_error");
    if (state == "done" && bad == 0) return "ok";
    if (state == "done")
      return fmt::format("{} differ, {} repaired", format_size(bad), format_size(u64(r, "verify_repaired")));
    return bad == 0 ? "-" : fmt::format("{} differ", format_size(bad));
  };
  Table reps({"NODE", "SITE", "ALIVE", "ROLE", "IN SET", "STATE", "GENERATION", "ALLOCATED", "DIRTY",
              "VERIFY", "ERROR"});
  std::string resyncs, events;
  for (const auto& r : list(v, "replicas")) {
    const std::string node = str(r, "node");
    reps.add({node, or_dash(str(r, "site")), yes_no(flag(r, "alive")), or_dash(str(r, "role")),
              set.empty() ? "-" : yes_no(is_member(node)), str(r, "state"),
              // A mirrored replica's generation is the in-sync set's it acts on (what "outdated since"
              // refers to); a single replica's is the volume record's it applied.
              fmt::format(
                  "{}", r.contains("insync_generation") ? u64(r, "insync_generation") : u64(r, "generation")),
              format_size(u64(r, "allocated_bytes")), format_size(u64(r, "dirty_bytes")),
              verify_cell(r, u64(v, "size")), or_dash(str(r, "error"))});
    const double progress = num(r, "resync_progress", 1.0);
    if (str(r, "state") == "resyncing" || progress < 1.0) {
      const std::uint64_t total = u64(r, "resync_bytes_total");
      const double rate = num(r, "resync_rate", 0.0);
      const double eta = num(r, "resync_eta_seconds", -1.0);
      std::string line = fmt::format("  {} resync {}", node, progress_bar(progress));
      if (total != 0)
        line += fmt::format(" {} of {}", format_size(u64(r, "resync_bytes_done")), format_size(total));
      line +=
          rate > 0 ? fmt::format(", {}/s", format_size(static_cast<std::uint64_t>(rate))) : ", rate unknown";
      line += eta >= 0 ? fmt::format(", ETA {}", format_seconds(eta)) : ", ETA unknown";
      resyncs += line + "\n";
    }
    if (r.contains("link_up"))
      events += fmt::format("  {}: mirror link {}\n", node, flag(r, "link_up") ? "up" : "down");
    if (!str(r, "last_event").empty()) events += fmt::format("  {}: {}\n", node, str(r, "last_event"));
    if (r.contains("size") && u64(r, "size") < u64(v, "size"))
      events +=
          fmt::format("  {}: serves {} of {}: grow not committed yet{}\n", node, format_size(u64(r, "size")),
                      format_size(u64(v, "size")), str(r, "grow").empty() ? "" : " (" + str(r, "grow") + ")");
  }
  out += "\nreplicas:\n" + reps.str() + resyncs + events;
  out += refusals(v, set);

  const json& decisions = list(v, "decisions");
  if (!decisions.empty()) {
    out += "\ndecisions (last 5):\n";
    Table t({"GENERATION", "MEMBERS", "BY", "AT", "REASON"});
    const std::size_t from = decisions.size() > 5 ? decisions.size() - 5 : 0;
    for (std::size_t i = from; i < decisions.size(); ++i) {
      const json& d = decisions[i];
      std::string reason = or_dash(str(d, "reason"));
      if (!list(d, "may_lose").empty()) reason += " (may lose: " + joined(d, "may_lose") + ")";
      t.add({fmt::format("{}", u64(d, "generation")), or_dash(words(d, "members")),
             or_dash(str(d, "decided_by")), or_dash(str(d, "at")), reason});
    }
    out += t.str();
  }

  const json& snaps = list(v, "snapshots");
  out += "\nsnapshots:";
  out += snaps.empty() ? " none\n" : "\n" + render_snapshots(snaps);

  const json& exp = object(v, "export");
  if (!exp.empty()) {
    out += fmt::format("\nexport:         nbd {}, iscsi {}, default access {}, {} ACL entries\n",
                       flag(exp, "nbd") ? "on" : "off", flag(exp, "iscsi") ? "on" : "off",
                       or_dash(str(exp, "default_access")), object(exp, "acl").size());
  }
  const json& paths = list(v, "paths");
  out += "\npaths:";
  if (paths.empty()) {
    out += " none (no in-sync member on a live node)\n";
  } else {
    Table t({"NODE", "NBD", "ISCSI"});
    for (const auto& p : paths) t.add({str(p, "node"), or_dash(str(p, "nbd")), or_dash(str(p, "iscsi"))});
    out += "\n" + t.str();
  }
  return out;
}

std::string render_snapshots(const json& snaps) {
  Table t({"SNAPSHOT", "STATE", "CREATED", "NBD"});
  if (snaps.is_array()) {
    for (const auto& s : snaps) {
      t.add({fmt::format("{}@{}", str(s, "volume"), str(s, "name")), str(s, "state"),
             or_dash(str(s, "created")), or_dash(str(s, "nbd"))});
    }
  }
  return t.str();
}

std::string render_export(const json& e) {
  std::string out;
  kv(out, "volume", str(e, "volume"));
  kv(out, "nbd", flag(e, "nbd") ? "on" : "off");
  kv(out, "iscsi", flag(e, "iscsi") ? "on" : "off");
  kv(out, "iqn", or_dash(str(e, "iqn")));
  kv(out, "default access", or_dash(str(e, "default_access")));
  out += "\n" + render_acl(e);
  return out;
}

std::string render_acl(const json& e) {
  const json& acl = object(e, "acl");
  if (acl.empty()) {
    return fmt::format("no ACL entries: every initiator gets the default access ({})\n",
                       or_dash(str(e, "default_access")));
  }
  Table t({"INITIATOR", "ACCESS"});
  for (const auto& [initiator, access] : acl.items()) {
    t.add({initiator, access.is_string() ? access.get<std::string>() : access.dump()});
  }
  return t.str();
}

}  // namespace duplex::cli
