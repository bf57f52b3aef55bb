#include "duplex/cli/commands.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "duplex/cli/json_get.h"
#include "duplex/cli/progress.h"
#include "duplex/cli/render.h"
#include "duplex/cli/units.h"

namespace duplex::cli {

void print_json_or(const Globals& g, const std::string& raw, const std::string& human) {
  const std::string& out = g.json ? raw : human;
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (!out.empty() && out.back() != '\n') std::fputc('\n', stdout);
}

namespace {

// Everything the subcommands bind to; shared by their callbacks, so it lives as long as the App.
struct Opts {
  std::string node;
  std::string volume;
  std::string target;  // "vol@snap"
  std::string name;
  std::vector<std::string> words;
  std::string size;
  unsigned replicas = 0;
  std::string site;
  std::string pool;
  bool yes = false;
  bool accept_data_loss = false;
  bool repair = false;
  bool wait = false;
  std::string reason;
  std::string nbd;
  std::string iscsi;
  std::string default_access;
  std::string initiator;
  std::string access;
};

ApiClient client(const Globals& g) {
  auto ep = resolve_endpoint(g);
  // resolve_endpoint only fails on a bad --dir or --token-file; report it like any failed call.
  return ApiClient(ep ? *ep : Endpoint{}, std::chrono::milliseconds(static_cast<long>(g.timeout * 1000)));
}

Status endpoint_ok(const Globals& g) {
  auto ep = resolve_endpoint(g);
  return ep ? Status::ok() : ep.status();
}

std::string seg(const std::string& s) { return escape_segment(s); }
// The API waits at most an hour per call (docs/api.md); a longer --timeout is spent polling.
std::string timeout_query(const Globals& g) {
  return fmt::format("?timeout={}", static_cast<long>(std::min(g.timeout, 3600.0)));
}

// Splits "vol@snap"; a usage error (exit 2) when either side is missing.
std::pair<std::string, std::string> split_snapshot(const std::string& s, const std::string& what) {
  const auto at = s.find('@');
  if (at == std::string::npos || at == 0 || at + 1 == s.size()) {
    throw CLI::ValidationError(what, "'" + s + "' is not VOLUME@SNAPSHOT");
  }
  return {s.substr(0, at), s.substr(at + 1)};
}

std::uint64_t size_arg(const std::string& s) {
  auto v = parse_size(s);
  if (!v) throw CLI::ValidationError("--size", v.status().message());
  if (*v == 0) throw CLI::ValidationError("--size", "must be more than 0 bytes");
  return *v;
}

CLI::Validator size_check() {
  return CLI::Validator(
      [](std::string& s) {
        auto v = parse_size(s);
        return v ? std::string() : v.status().message();
      },
      "SIZE");
}

// A GET rendered with `human`, or printed as received with --json.
Status show(const Globals& g, const std::string& path, std::string (*human)(const json&)) {
  DPX_TRY(endpoint_ok(g));
  auto r = client(g).get(path);
  if (!r) return r.status();
  print_json_or(g, r->text, human(r->body));
  return Status::ok();
}

// A change: sends it, waits for a 202 to be applied, prints the final state.
Status change(const Globals& g, std::string_view method, const std::string& path, const json* body,
              const WaitFor& wait, const std::function<std::string(const json&)>& human) {
  DPX_TRY(endpoint_ok(g));
  ApiClient api = client(g);
  auto r = api.call(method, path, body);
  if (!r) return r.status();
  json final = r->body;
  std::string raw = r->text;
  if (r->status == 202 && !wait.path.empty()) {
    auto done = wait_for(api, wait, g.timeout);
    if (!done) return done.status();
    if (!done->is_null()) {
      final = *done;
      raw = done->dump(2);
    }
  }
  print_json_or(g, raw, human(final));
  return Status::ok();
}

WaitFor volume_wait(const std::string& name, std::uint64_t min_size) {
  return {"volume '" + name + "'", "/v1/volumes/" + seg(name), false,
          [min_size](const json& v, std::string& state) { return volume_applied(v, min_size, state); }};
}

WaitFor snapshot_wait(const std::string& vol, const std::string& snap) {
  return {"snapshot '" + vol + "@" + snap + "'", "/v1/volumes/" + seg(vol) + "/snapshots", false,
          [snap](const json& list_, std::string& state) {
            state = "not listed yet";
            if (!list_.is_array()) return false;
            for (const auto& s : list_) {
              if (str(s, "name") != snap) continue;
              state = str(s, "state", "?");
              return state == "ready";
            }
            return false;
          }};
}

WaitFor gone_wait(const std::string& what, const std::string& path) { return {what, path, true, nullptr}; }

bool on_off(const std::string& s) { return s == "on"; }

// A drain is done when no volume has the node in its in-sync set any more.
WaitFor drained_wait(const std::string& node) {
  return {"node '" + node + "'", "/v1/nodes/" + seg(node), false, [](const json& n, std::string& state) {
            const json& d = object(n, "drain");
            if (d.empty()) {
              state = "not drained (resumed meanwhile?)";
              return false;
            }
            state = str(d, "state", "draining");
            if (state == "draining") state += ", still in sync: " + joined(d, "in_sync");
            return str(d, "state") == "drained";
          }};
}

// Drain / resume: the API answers at once with the node; with a WaitFor, poll until it holds.
Status node_change(const Globals& g, const std::string& path, const json& body, const WaitFor& wait) {
  DPX_TRY(endpoint_ok(g));
  ApiClient api = client(g);
  auto r = api.call("POST", path, &body);
  if (!r) return r.status();
  json final = r->body;
  std::string raw = r->text;
  std::string state;
  if (wait.done && !wait.done(final, state)) {
    auto done = wait_for(api, wait, g.timeout);
    if (!done) return done.status();
    final = *done;
    raw = done->dump(2);
  }
  print_json_or(g, raw, render_node(final));
  return Status::ok();
}

void add_volume(CLI::App& app, const Globals& g, Action& action, const std::shared_ptr<Opts>& o) {
  auto* vol =
      app.add_subcommand("volume", "Volumes: list, show, create, grow, delete, clone, promote, verify");
  vol->require_subcommand(1);

  auto* ls = vol->add_subcommand("list", "List every volume");
  ls->callback([&g, &action] { action = [&g] { return show(g, "/v1/volumes", render_volumes); }; });

  auto* sh = vol->add_subcommand("show", "A volume's replicas, snapshots, export and paths");
  sh->add_option("volume", o->volume, "Volume name")->required();
  sh->callback([&g, &action, o] {
    action = [&g, o] { return show(g, "/v1/volumes/" + seg(o->volume), render_volume); };
  });

  auto* cr = vol->add_subcommand("create", "Create a volume");
  cr->add_option("volume", o->volume, "Volume name")->required();
  cr->add_option("--size", o->size, "Size, e.g. 10GiB")->required()->check(size_check());
  cr->add_option("--replicas", o->replicas,
                 "Replicas: 1, or 2 for a synchronous mirror on two sites (default 1)")
      ->check(CLI::Range(1, 2));
  cr->add_option("--site", o->site, "Preferred site (its node orders writes)");
  cr->add_option("--pool", o->pool, "Pool name");
  cr->callback([&g, &action, o] {
    json body = {{"name", o->volume}, {"size", size_arg(o->size)}};
    if (o->replicas != 0) body["replicas"] = o->replicas;
    if (!o->site.empty()) body["preferred_site"] = o->site;
    if (!o->pool.empty()) body["pool"] = o->pool;
    action = [&g, o, body] {
      return change(g, "POST", "/v1/volumes" + timeout_query(g), &body, volume_wait(o->volume, 0),
                    [](const json& v) {
                      return fmt::format("volume {} created: {}, {}\n", str(v, "name"),
                                         format_size(u64(v, "size")), replica_summary(v));
                    });
    };
  });

  auto* gr = vol->add_subcommand("grow", "Grow a volume (never shrinks; a mirrored one on both replicas)");
  gr->add_option("volume", o->volume, "Volume name")->required();
  // The new size as `grow V 20GiB` or `grow V --size 20GiB`, not both.
  auto* size_pos = gr->add_option("size", o->size, "New size, e.g. 20GiB")->check(size_check());
  gr->add_option("--size", o->size, "New size, e.g. 20GiB")->check(size_check())->excludes(size_pos);
  gr->callback([&g, &action, o] {
    if (o->size.empty()) throw CLI::RequiredError("the new size (volume grow V SIZE, or --size SIZE)");
    const std::uint64_t size = size_arg(o->size);
    json body = {{"size", size}};
    action = [&g, o, body, size] {
      return change(g, "PATCH", "/v1/volumes/" + seg(o->volume) + timeout_query(g), &body,
                    volume_wait(o->volume, size), [](const json& v) {
                      return fmt::format("volume {} is now {}\n", str(v, "name"),
                                         format_size(u64(v, "size")));
                    });
    };
  });

  auto* del = vol->add_subcommand("delete", "Delete a volume and its snapshots");
  del->add_option("volume", o->volume, "Volume name")->required();
  del->add_flag("--yes,-y", o->yes, "Do not ask");
  del->callback([&g, &action, o] {
    if (!o->yes) {
      if (::isatty(STDIN_FILENO) != 1) {
        throw CLI::ValidationError(
            "--yes", "deleting volume '" + o->volume + "' needs --yes when not asked on a terminal");
      }
      std::fprintf(stderr, "Delete volume '%s' and all its snapshots? Its data is lost. [y/N] ",
                   o->volume.c_str());
      std::string answer;
      std::getline(std::cin, answer);
      if (answer != "y" && answer != "yes") {
        action = [] {
          std::fprintf(stderr, "not deleted\n");
          return Status::ok();
        };
        return;
      }
    }
    action = [&g, o] {
      const std::string path = "/v1/volumes/" + seg(o->volume);
      return change(g, "DELETE", path + timeout_query(g), nullptr,
                    gone_wait("volume '" + o->volume + "'", path),
                    [o](const json&) { return fmt::format("volume {} deleted\n", o->volume); });
    };
  });

  auto* pr = vol->add_subcommand(
      "promote", "Make NODE the only member of the volume's in-sync set (rolling failure override)");
  pr->add_option("volume", o->volume, "Volume name")->required();
  pr->add_option("--node", o->node, "The node whose replica will serve alone")->required();
  pr->add_flag("--accept-data-loss", o->accept_data_loss,
               "Accept losing what only the other members acknowledged (without it the API says what)");
  pr->add_option("--reason", o->reason, "Why (kept in the volume's decision log)");
  pr->callback([&g, &action, o] {
    // Without the flag the request still goes: the API's refusal says exactly what would be lost.
    json body = {{"node", o->node}, {"accept_data_loss", o->accept_data_loss}};
    if (!o->reason.empty()) body["reason"] = o->reason;
    action = [&g, o, body] {
      return change(g, "POST", "/v1/volumes/" + seg(o->volume) + "/promote", &body, {}, [](const json& v) {
        const json& set = object(v, "insync");
        std::string out =
            fmt::format("volume {}: in-sync set generation {}, members {}, owner {}\n", str(v, "name"),
                        u64(set, "generation"), joined(set, "members"), str(set, "owner"));
        for (const auto& l : list(v, "may_lose"))
          if (l.is_string()) out += "may have lost: " + l.get<std::string>() + "\n";
        return out;
      });
    };
  });

  auto* ve = vol->add_subcommand(
      "verify", "Compare a mirrored volume's replicas online (the owner runs it; see `volume show`)");
  ve->add_option("volume", o->volume, "Volume name")->required();
  ve->add_flag("--repair", o->repair, "Copy each differing block from the owner's replica over the peer's");
  ve->callback([&g, &action, o] {
    json body = {{"repair", o->repair}};
    action = [&g, o, body] {
      return change(g, "POST", "/v1/volumes/" + seg(o->volume) + "/verify", &body, {}, [o](const json& v) {
        return fmt::format(
            "volume {}: verify request {} sent to the owner{}; progress in `duplexctl volume show {}`\n",
            o->volume, v.contains("verify_request") ? v["verify_request"].dump() : "?",
            o->repair ? " (with repair)" : "", o->volume);
      });
    };
  });

  auto* cl = vol->add_subcommand("clone", "Create a volume from a snapshot");
  cl->add_option("source", o->target, "VOLUME@SNAPSHOT")->required();
  cl->add_option("new", o->name, "Name of the new volume")->required();
  cl->add_option("--size", o->size, "Larger size for the clone")->check(size_check());
  cl->callback([&g, &action, o] {
    split_snapshot(o->target, "source");
    json body = {{"name", o->name}, {"clone_of", o->target}};
    if (!o->size.empty()) body["size"] = size_arg(o->size);
    action = [&g, o, body] {
      return change(g, "POST", "/v1/volumes" + timeout_query(g), &body, volume_wait(o->name, 0),
                    [o](const json& v) {
                      return fmt::format("volume {} cloned from {}: {}\n", str(v, "name"), o->target,
                                         format_size(u64(v, "size")));
                    });
    };
  });
}

void add_snapshot(CLI::App& app, const Globals& g, Action& action, const std::shared_ptr<Opts>& o) {
  auto* snap = app.add_subcommand("snapshot", "Snapshots: list, create, delete");
  snap->require_subcommand(1);

  auto* ls = snap->add_subcommand("list", "A volume's snapshots");
  ls->add_option("volume", o->volume, "Volume name")->required();
  ls->callback([&g, &action, o] {
    action = [&g, o] { return show(g, "/v1/volumes/" + seg(o->volume) + "/snapshots", render_snapshots); };
  });

  // VOLUME@SNAPSHOT or VOLUME SNAPSHOT
  auto target = [](const Opts& opts) {
    if (opts.words.size() == 2) return std::make_pair(opts.words[0], opts.words[1]);
    if (opts.words.size() == 1) return split_snapshot(opts.words[0], "snapshot");
    throw CLI::ValidationError("snapshot", "give VOLUME@SNAPSHOT or VOLUME SNAPSHOT");
  };

  auto* cr = snap->add_subcommand("create", "Take a snapshot (O(1))");
  cr->add_option("snapshot", o->words, "VOLUME@SNAPSHOT, or VOLUME SNAPSHOT")->required()->expected(1, 2);
  cr->callback([&g, &action, o, target] {
    auto [vol, name] = target(*o);
    json body = {{"name", name}};
    action = [&g, vol, name, body] {
      return change(g, "POST", "/v1/volumes/" + seg(vol) + "/snapshots" + timeout_query(g), &body,
                    snapshot_wait(vol, name),
                    [vol, name](const json&) { return fmt::format("snapshot {}@{} created\n", vol, name); });
    };
  });

  auto* del = snap->add_subcommand("delete", "Delete a snapshot");
  del->add_option("snapshot", o->words, "VOLUME@SNAPSHOT, or VOLUME SNAPSHOT")->required()->expected(1, 2);
  del->callback([&g, &action, o, target] {
    auto [vol, name] = target(*o);
    action = [&g, vol, name] {
      const std::string path = "/v1/volumes/" + seg(vol) + "/snapshots/" + seg(name);
      return change(g, "DELETE", path + timeout_query(g), nullptr,
                    gone_wait("snapshot '" + vol + "@" + name + "'", path),
                    [vol, name](const json&) { return fmt::format("snapshot {}@{} deleted\n", vol, name); });
    };
  });
}

void add_export(CLI::App& app, const Globals& g, Action& action, const std::shared_ptr<Opts>& o) {
  auto* exp = app.add_subcommand("export", "How a volume is exported: NBD, iSCSI, default access");
  exp->require_subcommand(1);
  auto* sh = exp->add_subcommand("show", "A volume's export settings and ACL");
  sh->add_option("volume", o->volume, "Volume name")->required();
  sh->callback([&g, &action, o] {
    action = [&g, o] { return show(g, "/v1/volumes/" + seg(o->volume) + "/export", render_export); };
  });

  auto* set = exp->add_subcommand("set", "Change a volume's export settings");
  set->add_option("volume", o->volume, "Volume name")->required();
  set->add_option("--nbd", o->nbd, "Export over NBD")->check(CLI::IsMember({"on", "off"}));
  set->add_option("--iscsi", o->iscsi, "Export over iSCSI")->check(CLI::IsMember({"on", "off"}));
  set->add_option("--default-access", o->default_access, "Access of initiators without an ACL entry")
      ->check(CLI::IsMember({"read-write", "read-only", "none"}));
  set->callback([&g, &action, o] {
    json body = json::object();
    if (!o->nbd.empty()) body["nbd"] = on_off(o->nbd);
    if (!o->iscsi.empty()) body["iscsi"] = on_off(o->iscsi);
    if (!o->default_access.empty()) body["default_access"] = o->default_access;
    if (body.empty())
      throw CLI::ValidationError("export set", "give at least one of --nbd, --iscsi, --default-access");
    action = [&g, o, body] {
      const std::string path = "/v1/volumes/" + seg(o->volume) + "/export";
      return change(g, "PUT", path, &body, {}, [](const json& e) { return render_export(e); });
    };
  });
}

void add_acl(CLI::App& app, const Globals& g, Action& action, const std::shared_ptr<Opts>& o) {
  auto* acl = app.add_subcommand("acl", "iSCSI initiator access to a volume");
  acl->require_subcommand(1);
  auto* ls = acl->add_subcommand("list", "A volume's ACL");
  ls->add_option("volume", o->volume, "Volume name")->required();
  ls->callback([&g, &action, o] {
    action = [&g, o] { return show(g, "/v1/volumes/" + seg(o->volume) + "/export", render_acl); };
  });

  auto* set = acl->add_subcommand("set", "Give an initiator access");
  set->add_option("volume", o->volume, "Volume name")->required();
  set->add_option("initiator", o->initiator, "Initiator IQN")->required();
  set->add_option("access", o->access, "read-write, read-only or none")
      ->required()
      ->check(CLI::IsMember({"read-write", "read-only", "none"}));
  set->callback([&g, &action, o] {
    json body = {{"access", o->access}};
    action = [&g, o, body] {
      const std::string path = "/v1/volumes/" + seg(o->volume) + "/export/acl/" + seg(o->initiator);
      return change(g, "PUT", path, &body, {}, [](const json& e) { return render_acl(e); });
    };
  });

  auto* rm = acl->add_subcommand("remove", "Remove an initiator's entry (it gets the default access)");
  rm->add_option("volume", o->volume, "Volume name")->required();
  rm->add_option("initiator", o->initiator, "Initiator IQN")->required();
  rm->callback([&g, &action, o] {
    action = [&g, o] {
      const std::string path = "/v1/volumes/" + seg(o->volume) + "/export/acl/" + seg(o->initiator);
      return change(g, "DELETE", path, nullptr, {}, [](const json& e) { return render_acl(e); });
    };
  });
}

}  // namespace

void add_api_commands(CLI::App& app, const Globals& g, Action& action) {
  auto o = std::make_shared<Opts>();

  auto* st = app.add_subcommand("status", "The cluster at a glance");
  st->callback([&g, &action] { action = [&g] { return show(g, "/v1/status", render_status); }; });

  auto* node = app.add_subcommand("node", "Nodes: list, show, drain, resume");
  node->require_subcommand(1);
  node->add_subcommand("list", "List nodes")->callback([&g, &action] {
    action = [&g] { return show(g, "/v1/nodes", render_nodes); };
  });
  auto* nshow = node->add_subcommand("show", "One node");
  nshow->add_option("node", o->node, "Node name")->required();
  nshow->callback(
      [&g, &action, o] { action = [&g, o] { return show(g, "/v1/nodes/" + seg(o->node), render_node); }; });

  auto* drain = node->add_subcommand(
      "drain", "Planned maintenance: move every mirrored volume's in-sync role off NODE (no outage)");
  drain->add_option("node", o->node, "Node name")->required();
  drain->add_option("--reason", o->reason, "Why (kept in each volume's decision log)");
  drain->add_flag("--wait", o->wait,
                  "Wait until no volume has NODE in its in-sync set (then it may be stopped)");
  drain->callback([&g, &action, o] {
    json body = json::object();
    if (!o->reason.empty()) body["reason"] = o->reason;
    action = [&g, o, body] {
      WaitFor w;
      if (o->wait) w = drained_wait(o->node);
      return node_change(g, "/v1/nodes/" + seg(o->node) + "/drain", body, w);
    };
  });
  auto* resume = node->add_subcommand(
      "resume", "End NODE's maintenance: its replicas resync what they missed and rejoin");
  resume->add_option("node", o->node, "Node name")->required();
  resume->callback([&g, &action, o] {
    action = [&g, o] { return node_change(g, "/v1/nodes/" + seg(o->node) + "/resume", json::object(), {}); };
  });

  auto* pool = app.add_subcommand("pool", "Pools");
  pool->require_subcommand(1);
  pool->add_subcommand("list", "List every node's pools")->callback([&g, &action] {
    action = [&g] { return show(g, "/v1/pools", render_pools); };
  });

  add_volume(app, g, action, o);
  add_snapshot(app, g, action, o);
  add_export(app, g, action, o);
  add_acl(app, g, action, o);

  app.add_subcommand("metrics", "Prometheus metrics of the node (text)")->callback([&g, &action] {
    action = [&g] {
      DPX_TRY(endpoint_ok(g));
      auto r = client(g).get("/metrics");
      if (!r) return r.status();
      std::fwrite(r->text.data(), 1, r->text.size(), stdout);
      return Status::ok();
    };
  });
}

}  // namespace duplex::cli
