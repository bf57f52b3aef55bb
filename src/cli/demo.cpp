#include "duplex/cli/demo.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <csignal>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "duplex/cli/client.h"
#include "duplex/cli/endpoints.h"
#include "duplex/cli/json_get.h"
#include "duplex/cli/process.h"
#include "duplex/cli/progress.h"
#include "duplex/cli/render.h"
#include "duplex/cli/units.h"

namespace duplex::cli {

namespace fs = std::filesystem;

namespace {

constexpr unsigned kNbdPort = 10809;
constexpr unsigned kIscsiPort = 3260;
constexpr unsigned kApiPort = 7480;
constexpr unsigned kMirrorPort = 7789;  // the mirror link between the nodes ([cluster] mirror_listen)
constexpr const char* kVolume = "demo";
constexpr const char* kDefaultBaseIqn = "iqn.2026-11.io.duplex";
using Clock = std::chrono::steady_clock;

struct NodePlan {
  std::string name, site, address, config, log, state_dir;
  std::vector<std::string> argv;
  pid_t pid = 0;
  std::string api() const { return fmt::format("http://{}:{}", address, kApiPort); }
};

struct Plan {
  std::string dir, etcd_url, token, duplexd, etcd_bin;
  Proc etcd;
  std::vector<NodePlan> nodes;
};

int fail(const std::string& line) {
  std::fprintf(stderr, "duplexctl: %s\n", line.c_str());
  return 1;
}
void say(const std::string& line) { std::fprintf(stderr, "[demo] %s\n", line.c_str()); }

std::string pids_path(const std::string& dir) { return dir + "/pids.json"; }
std::string endpoints_path(const std::string& dir) { return dir + "/endpoints.json"; }

json argv_json(const std::vector<std::string>& argv) { return json(argv); }
std::vector<std::string> argv_of(const json& j) {
  std::vector<std::string> out;
  if (j.is_array()) {
    for (const auto& a : j) {
      if (a.is_string()) out.push_back(a.get<std::string>());
    }
  }
  return out;
}

Status write_pids(const Plan& p) {
  json j = {{"dir", p.dir}, {"etcd", {{"pid", p.etcd.pid}, {"argv", argv_json(p.etcd.argv)}}}};
  j["nodes"] = json::array();
  for (const auto& n : p.nodes) {
    if (n.pid == 0) continue;
    j["nodes"].push_back({{"name", n.name}, {"pid", n.pid}, {"argv", argv_json(n.argv)}});
  }
  return write_file_atomic(pids_path(p.dir), j.dump(2) + "\n");
}

// What a previous `demo up` in DIR started: nodes first, then etcd (the order they must stop in).
std::vector<Proc> recorded(const std::string& dir) {
  std::vector<Proc> out;
  auto j = read_json_file(pids_path(dir));
  if (j) {
    for (const auto& n : list(*j, "nodes")) {
      out.push_back({str(n, "name"), static_cast<pid_t>(u64(n, "pid")), argv_of(member(n, "argv"))});
    }
    const json& e = object(*j, "etcd");
    if (!e.empty()) out.push_back({"etcd", static_cast<pid_t>(u64(e, "pid")), argv_of(member(e, "argv"))});
    return out;
  }
  // No pids.json (removed by hand): endpoints.json has the restart argv of every node.
  auto ep = read_json_file(endpoints_path(dir));
  if (ep) {
    for (const auto& n : list(*ep, "nodes")) {
      out.push_back({str(n, "name"), static_cast<pid_t>(u64(n, "pid")), argv_of(member(n, "restart"))});
    }
    const json& e = object(*ep, "etcd_process");
    if (!e.empty()) out.push_back({"etcd", static_cast<pid_t>(u64(e, "pid")), argv_of(member(e, "argv"))});
  }
  return out;
}

bool is_running(const Proc& p) { return running_as(p.pid, p.argv) || !find_by_argv(p.argv).empty(); }

Result<std::string> address_plus(const std::string& base, unsigned k) {
  in_addr a{};
  if (::inet_pton(AF_INET, base.c_str(), &a) != 1) {
    return Status::error(Errc::invalid, "--base-address: '{}' is not an IPv4 address", base);
  }
  const std::uint32_t host = ntohl(a.s_addr);
  if ((host >> 24) != 127)
    return Status::error(Errc::invalid, "--base-address: '{}' is not in 127.0.0.0/8", base);
  if ((host & 0xff) + k > 254) {
    return Status::error(Errc::invalid,
                         "--base-address: {} + {} runs past .254 (lower it or use fewer --nodes)", base, k);
  }
  in_addr b{};
  b.s_addr = htonl(host + k);
  char text[INET_ADDRSTRLEN] = {};
  ::inet_ntop(AF_INET, &b, text, sizeof text);
  return std::string(text);
}

std::string node_config(const Plan& p, const NodePlan& n, const std::string& pool_size,
                        const std::string& ttl) {
  return fmt::format(
      "# Written by `duplexctl demo up` (docs/cli.md). Restart this node with:\n"
      "#   {} --config {}\n"
      "state_dir = \"{}\"\n\n"
      "[node]\nname = \"{}\"\nsite = \"{}\"\n\n"
      "[listen]\nnbd = \"{}:{}\"\n\n"
      "[iscsi]\nlisten = [\"{}:{}\"]\n\n"
      "[cluster]\netcd = [\"{}\"]\nlease_ttl = \"{}\"\naddress = \"{}\"\nmirror_listen = \"{}:{}\"\n\n"
      "[api]\nlisten = \"{}:{}\"\ntoken_file = \"{}/token\"\n\n"
      "[[pool]]\nname = \"p0\"\npath = \"{}/pool.img\"\ncreate_size = \"{}\"\n",
      p.duplexd, n.config, n.state_dir, n.name, n.site, n.address, kNbdPort, n.address, kIscsiPort,
      p.etcd_url, ttl, n.address, n.address, kMirrorPort, n.address, kApiPort, p.dir, n.state_dir, pool_size);
}

// Stops everything a failed `demo up` started and says why it failed.
class Starter {
 public:
  explicit Starter(Plan& p) : p_(p) {}
  Starter(const Starter&) = delete;
  Starter& operator=(const Starter&) = delete;
  ~Starter() {
    if (committed_) return;
    std::vector<Proc> procs;
    for (const auto& n : p_.nodes) {
      if (n.pid != 0) procs.push_back({n.name, n.pid, n.argv});
    }
    if (p_.etcd.pid != 0) procs.push_back(p_.etcd);
    if (procs.empty()) return;
    say("stopping what was started");
    for (const auto& line : stop_processes(procs, std::chrono::seconds(15))) say("  " + line);
    std::error_code ec;
    fs::remove(pids_path(p_.dir), ec);
  }
  void commit() { committed_ = true; }

 private:
  Plan& p_;
  bool committed_ = false;
};

// A child that already exited: the reason, with the end of its log (its last line names the cause).
Status check_alive(pid_t pid, const std::string& name, const std::string& log) {
  std::string how = reap(pid);
  if (how.empty()) return Status::ok();
  std::string tail = tail_file(log, 5);
  while (!tail.empty() && tail.back() == '\n') tail.pop_back();
  return Status::error(Errc::unavailable, "{} stopped ({}); the end of {}:\n{}", name, how, log, tail);
}

Status wait_etcd(const Plan& p, double timeout_s) {
  ApiClient etcd(Endpoint{{p.etcd_url}, ""}, std::chrono::seconds(2));
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  while (Clock::now() < deadline) {
    if (g_interrupted != 0) return Status::error(Errc::shutdown, "interrupted");
    DPX_TRY(check_alive(p.etcd.pid, "etcd", p.dir + "/etcd.log"));
    auto r = etcd.request("GET", "/health");
    if (r && r->status == 200 && str(r->body, "health") == "true") return Status::ok();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return Status::error(Errc::unavailable, "etcd did not become healthy at {} (see {}/etcd.log)", p.etcd_url,
                       p.dir);
}

Status wait_nodes(const Plan& p, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(static_cast<long>(timeout_s * 1000));
  ProgressLine line;
  std::string waiting;
  while (Clock::now() < deadline) {
    if (g_interrupted != 0) return Status::error(Errc::shutdown, "interrupted");
    waiting.clear();
    for (const auto& n : p.nodes) {
      DPX_TRY(check_alive(n.pid, n.name, n.log));
      ApiClient api(Endpoint{{n.api()}, p.token}, std::chrono::seconds(2));
      auto r = api.request("GET", "/v1/health");
      if (!r || r->status != 200) waiting += (waiting.empty() ? "" : " ") + n.name;
    }
    if (waiting.empty()) {
      ApiClient api(Endpoint{{p.nodes[0].api()}, p.token}, std::chrono::seconds(2));
      auto r = api.request("GET", "/v1/nodes");
      if (r && r->status == 200 && r->body.is_array()) {
        for (const auto& n : p.nodes) {
          bool alive = false;
          for (const auto& listed : r->body)
            alive = alive || (str(listed, "name") == n.name && flag(listed, "alive"));
          if (!alive) waiting += (waiting.empty() ? "" : " ") + n.name + "(not in /v1/nodes)";
        }
      } else if (r && r->status != 200) {
        return Status::error(Errc::unavailable, "GET /v1/nodes on {}: {}", p.nodes[0].name,
                             api_error(*r).message());
      } else {
        waiting = "/v1/nodes";
      }
      if (waiting.empty()) {
        line.show(fmt::format("nodes: all {} up", p.nodes.size()), "up");
        return Status::ok();
      }
    }
    line.show("waiting for nodes: " + waiting, waiting);
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return Status::error(Errc::unavailable, "nodes not up after {}: {} (see {}/nK.log)",
                       format_seconds(timeout_s), waiting, p.dir);
}

// Creates the demo volume (or keeps the one a previous run made) and waits until it is ready.
Result<json> create_volume(const Plan& p, std::uint64_t size, double timeout_s, std::string& note) {
  ApiClient api(Endpoint{{p.nodes[0].api()}, p.token},
                std::chrono::milliseconds(static_cast<long>(timeout_s * 1000)));
  const std::string path = fmt::format("/v1/volumes/{}", kVolume);
  auto existing = api.request("GET", path);
  if (!existing) return existing.status();
  if (existing->status == 200) {
    note = "kept the demo volume from the previous run in this directory (its data too)";
  } else {
    unsigned replicas = p.nodes.size() >= 2 ? 2 : 1;
    for (;;) {
      json body = {{"name", kVolume}, {"size", size}, {"replicas", replicas}, {"preferred_site", "a"}};
      auto r =
          api.request("POST", fmt::format("/v1/volumes?timeout={}", static_cast<long>(timeout_s)), &body);
      if (!r) return r.status();
      if (r->status == 200 || r->status == 201 || r->status == 202) break;
      const std::string code = error_code(*r);
      if (replicas > 1 && (code == "unsupported" || r->status == 501 || error_field(*r) == "replicas")) {
        note = fmt::format("the mirror is not built yet ({}): the demo volume has 1 replica",
                           str(object(r->body, "error"), "message", code));
        replicas = 1;
        continue;
      }
      if (r->status == 409) break;  // created meanwhile, by a retry of ours that the API had applied
      return Status::error(Errc::unavailable, "creating volume demo: {}", api_error(*r).message());
    }
  }
  WaitFor w{"volume demo", path, false,
            [](const json& v, std::string& state) { return volume_applied(v, 0, state); }};
  return wait_for(api, w, timeout_s);
}

std::string base_iqn_of(const Plan& p, const std::string& node) {
  ApiClient api(Endpoint{{p.nodes[0].api()}, p.token}, std::chrono::seconds(5));
  auto r = api.request("GET", "/v1/nodes/" + escape_segment(node));
  if (r && r->status == 200) return str(r->body, "base_iqn", kDefaultBaseIqn);
  return kDefaultBaseIqn;
}

json endpoints_json(const Plan& p, const json& volume) {
  const std::string owner = volume_owner(volume);
  json nodes = json::array();
  for (const auto& n : p.nodes) {
    std::string nbd = fmt::format("nbd://{}:{}/{}", n.address, kNbdPort, kVolume);
    std::string iscsi =
        fmt::format("iscsi://{}:{}/{}:{}/0", n.address, kIscsiPort, base_iqn_of(p, n.name), kVolume);
    bool serves = false;
    for (const auto& path : list(volume, "paths")) {
      if (str(path, "node") != n.name) continue;
      serves = true;
      nbd = str(path, "nbd", nbd);
      iscsi = str(path, "iscsi", iscsi);
    }
    nodes.push_back({{"name", n.name},
                     {"site", n.site},
                     {"pid", n.pid},
                     {"address", n.address},
                     {"api", n.api()},
                     {"nbd", nbd},
                     {"iscsi", iscsi},
                     {"restart", argv_json(n.argv)},
                     {"serves_volume", serves},
                     {"config", n.config},
                     {"log", n.log}});
  }
  return {
      {"etcd", json::array({p.etcd_url})},
      {"token", p.token},
      {"volume", kVolume},
      {"owner", owner},
      {"replicas", list(volume, "replicas").size()},
      {"dir", p.dir},
      {"etcd_process", {{"pid", p.etcd.pid}, {"argv", argv_json(p.etcd.argv)}, {"log", p.dir + "/etcd.log"}}},
      {"nodes", nodes}};
}

// "iscsi://127.0.0.11:3260/iqn.2026-11.io.duplex:demo/0" -> "iqn.2026-11.io.duplex:demo"
std::string iqn_of(const std::string& uri) {
  const auto host = uri.find("://");
  const auto first = uri.find('/', host == std::string::npos ? 0 : host + 3);
  const auto last = uri.rfind('/');
  return first == std::string::npos || last <= first ? uri : uri.substr(first + 1, last - first - 1);
}

void print_connect(const Plan& p, const json& ep, const json& volume, const std::string& note) {
  std::string serving;
  for (const auto& n : list(ep, "nodes")) {
    if (flag(n, "serves_volume")) serving = serving.empty() ? str(n, "name") : serving;
  }
  const json* first = nullptr;
  for (const auto& n : list(ep, "nodes")) {
    if (str(n, "name") == str(ep, "owner")) first = &n;
  }
  if (first == nullptr) first = &list(ep, "nodes")[0];
  const std::string nbd = str(*first, "nbd");
  const std::string iscsi = str(*first, "iscsi");
  const std::string portal = fmt::format("{}:{}", str(*first, "address"), kIscsiPort);
  Table t({"NODE", "SITE", "PID", "SERVES", "API", "NBD", "ISCSI"});
  for (const auto& n : list(ep, "nodes")) {
    t.add({str(n, "name"), str(n, "site"), fmt::format("{}", u64(n, "pid")),
           flag(n, "serves_volume") ? "demo" : "-", str(n, "api"), str(n, "nbd"), str(n, "iscsi")});
  }
  std::string out = fmt::format(
      "\nDuplex demo cluster is up: {} node(s), etcd {}, data in {}\n"
      "volume demo: {}, {}, owner {}{}\n\n{}\n"
      "REST API:  {}  (token: {}; also in {}/token)\n"
      "iSCSI:     portal {}, target {}, LUN 0\n"
      "Scripts:   {}/endpoints.json\n\n"
      "Try:\n"
      "  nbdinfo {}\n"
      "  qemu-io -f raw -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M' {}\n"
      "  iscsi-ls -s iscsi://{}\n"
      "  iscsi-inq {}\n"
      "  duplexctl --dir {} status\n"
      "  duplexctl --dir {} volume show demo\n"
      "  curl -H \"Authorization: Bearer $(cat {}/token)\" {}/v1/volumes\n\n"
      "Stop:      duplexctl demo down --dir {}   (data stays; --purge removes it)\n",
      p.nodes.size(), p.etcd_url, p.dir, format_size(u64(volume, "size")), replica_summary(volume),
      str(ep, "owner"), note.empty() ? "" : "\n  note: " + note, t.str(), str(*first, "api"), p.token, p.dir,
      portal, iqn_of(iscsi), p.dir, nbd, nbd, portal, iscsi, p.dir, p.dir, p.dir, str(*first, "api"), p.dir);
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

std::string absolute_dir(const std::string& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  return (ec ? fs::path(dir) : p).lexically_normal().string();
}

Result<std::string> ensure_token(const std::string& dir) {
  const std::string path = dir + "/token";
  auto existing = read_text_file(path);
  if (existing && existing->size() >= 64) {
    std::string t = existing->substr(0, existing->find_first_of("\r\n"));
    if (!t.empty()) return t;
  }
  auto t = random_hex(32);
  if (!t) return t.status();
  DPX_TRY(write_file_atomic(path, *t + "\n", 0600));
  return t;
}

}  // namespace

namespace {

Status failed(const std::string& line) { return {Errc::unavailable, line}; }

Status up(const DemoOptions& o) {
  Plan p;
  p.dir = absolute_dir(o.dir);
  if (o.nodes < 1 || o.nodes > 16) return failed("--nodes: give 1 to 16 nodes");
  auto size = parse_size(o.size);
  if (!size || *size == 0)
    return failed("--size: " + (size ? std::string("must be more than 0") : size.status().message()));
  auto pool_size = parse_size(o.pool_size);
  if (!pool_size || *pool_size < *size) {
    return failed("--pool-size: " +
                  (pool_size ? "must be at least --size (" + o.size + ")" : pool_size.status().message()));
  }
  if (o.etcd_port == 0 || o.etcd_port > 65534)
    return failed("--etcd-port: 1..65534 (the peer port is the next one)");

  std::error_code ec;
  fs::create_directories(p.dir, ec);
  if (ec) return failed(fmt::format("cannot create {}: {}", p.dir, ec.message()));
  for (const auto& proc : recorded(p.dir)) {
    if (is_running(proc)) {
      return failed(fmt::format(
          "the demo in {} is already running ({} pid {}); stop it with: duplexctl demo down --dir {}", p.dir,
          proc.name, proc.pid, p.dir));
    }
  }

  const char* env_duplexd = std::getenv("DUPLEXD");
  const std::string self = self_dir();
  p.duplexd = find_program("duplexd", {env_duplexd != nullptr ? env_duplexd : "", self + "/../daemon/duplexd",
                                       self + "/duplexd", self + "/../sbin/duplexd"});
  if (p.duplexd.empty()) return failed("duplexd not found: set DUPLEXD=/path/to/duplexd or put it in PATH");
  const char* env_etcd = std::getenv("ETCD");
  p.etcd_bin = find_program("etcd", {env_etcd != nullptr ? env_etcd : "", "/usr/bin/etcd"});
  if (p.etcd_bin.empty())
    return failed("etcd not found (Debian package etcd-server): set ETCD=/path/to/etcd or install it");

  // Ports: refuse at once, rather than have a daemon fail (or worse, talk to someone else's etcd).
  p.etcd_url = fmt::format("http://127.0.0.1:{}", o.etcd_port);
  for (unsigned port : {o.etcd_port, o.etcd_port + 1}) {
    if (!port_free("127.0.0.1", port)) {
      return failed(
          fmt::format("127.0.0.1:{} is in use (another demo or etcd?); choose another --etcd-port", port));
    }
  }
  for (unsigned k = 1; k <= o.nodes; ++k) {
    auto addr = address_plus(o.base_address, k - 1);
    if (!addr) return failed(addr.status().message());
    NodePlan n;
    n.name = fmt::format("n{}", k);
    n.site = (k % 2 == 1) ? "a" : "b";
    n.address = *addr;
    n.config = fmt::format("{}/{}.toml", p.dir, n.name);
    n.log = fmt::format("{}/{}.log", p.dir, n.name);
    n.state_dir = fmt::format("{}/{}", p.dir, n.name);
    n.argv = {p.duplexd, "--config", n.config};
    for (unsigned port : {kNbdPort, kIscsiPort, kApiPort, kMirrorPort}) {
      if (!port_free(n.address, port)) {
        return failed(
            fmt::format("{}:{} is in use (another demo?); choose another --base-address", n.address, port));
      }
    }
    p.nodes.push_back(std::move(n));
  }
  auto token = ensure_token(p.dir);
  if (!token) return failed(token.status().message());
  p.token = *token;

  Starter starter(p);
  const auto started = Clock::now();
  auto remaining = [&] {
    return std::max(5.0, o.timeout - std::chrono::duration<double>(Clock::now() - started).count());
  };

  say(fmt::format("starting etcd on {} (data {}/etcd, log {}/etcd.log)", p.etcd_url, p.dir, p.dir));
  const std::string peer = fmt::format("http://127.0.0.1:{}", o.etcd_port + 1);
  p.etcd = {"etcd",
            0,
            {p.etcd_bin, "--name", "demo", "--data-dir", p.dir + "/etcd", "--listen-client-urls", p.etcd_url,
             "--advertise-client-urls", p.etcd_url, "--listen-peer-urls", peer,
             "--initial-advertise-peer-urls", peer, "--initial-cluster", "demo=" + peer}};
  auto etcd_pid = spawn_detached(p.etcd.argv, p.dir + "/etcd.log");
  if (!etcd_pid) return failed(etcd_pid.status().message());
  p.etcd.pid = *etcd_pid;
  if (Status s = write_pids(p); !s) return failed(s.message());
  if (Status s = wait_etcd(p, remaining()); !s) return failed(s.message());

  for (auto& n : p.nodes) {
    fs::create_directories(n.state_dir, ec);
    if (ec) return failed(fmt::format("cannot create {}: {}", n.state_dir, ec.message()));
    if (Status s = write_file_atomic(n.config, node_config(p, n, o.pool_size, o.lease_ttl)); !s)
      return failed(s.message());
    say(fmt::format("starting {} (site {}) on {}: {} --config {}", n.name, n.site, n.address, p.duplexd,
                    n.config));
    auto pid = spawn_detached(n.argv, n.log);
    if (!pid) return failed(pid.status().message());
    n.pid = *pid;
    if (Status s = write_pids(p); !s) return failed(s.message());
  }
  if (Status s = wait_nodes(p, remaining()); !s) return failed(s.message());

  say(fmt::format("creating volume demo ({})", format_size(*size)));
  std::string note;
  auto volume = create_volume(p, *size, remaining(), note);
  if (!volume) return failed(volume.status().message());
  if (!note.empty() && o.json) say(note);  // otherwise it is part of the printed summary

  json ep = endpoints_json(p, *volume);
  if (Status s = write_file_atomic(endpoints_path(p.dir), ep.dump(2) + "\n", 0600); !s)
    return failed(s.message());
  starter.commit();
  if (o.json) {
    std::printf("%s\n", ep.dump(2).c_str());
  } else {
    print_connect(p, ep, *volume, note);
  }
  return Status::ok();
}

}  // namespace

int demo_up(const DemoOptions& o) {
  // Ctrl-C while starting: stop what was started (the daemons are in their own sessions and do
  // not see it) instead of leaving half a cluster.
  struct sigaction sa{};
  sa.sa_handler = [](int) { g_interrupted = 1; };
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  // Reported after everything started was stopped, so the reason is the last line.
  Status s = up(o);
  if (!s) return fail(s.message());
  return 0;
}

int demo_down(const DemoOptions& o) {
  const std::string dir = absolute_dir(o.dir);
  std::vector<Proc> procs = recorded(dir);
  if (procs.empty() && !o.purge) {
    return fail(fmt::format("no demo recorded in {} (no pids.json or endpoints.json)", dir));
  }
  // Nodes first (a clean stop revokes their leases in etcd), then etcd.
  std::vector<Proc> nodes;
  std::vector<Proc> etcd;
  for (auto& p : procs) (p.name == "etcd" ? etcd : nodes).push_back(p);
  for (const auto& line : stop_processes(nodes, std::chrono::seconds(15))) say(line);
  for (const auto& line : stop_processes(etcd, std::chrono::seconds(15))) say(line);
  std::error_code ec;
  fs::remove(pids_path(dir), ec);
  fs::remove(endpoints_path(dir), ec);
  if (o.purge) {
    // Only a directory a demo made: never `--purge --dir /` by a slip.
    if (!fs::exists(dir + "/token") || !fs::exists(dir + "/n1.toml")) {
      return fail(fmt::format(
          "--purge: {} does not look like a demo directory (no token and n1.toml); left as is", dir));
    }
    fs::remove_all(dir, ec);
    if (ec) return fail(fmt::format("--purge: cannot remove {}: {}", dir, ec.message()));
    say("removed " + dir);
  }
  return 0;
}

int demo_status(const DemoOptions& o) {
  const std::string dir = absolute_dir(o.dir);
  std::vector<Proc> procs = recorded(dir);
  if (procs.empty()) return fail(fmt::format("no demo running in {} (no pids.json)", dir));
  auto ep = read_json_file(endpoints_path(dir));
  std::string token = ep ? str(*ep, "token") : "";
  if (token.empty()) {
    auto t = read_text_file(dir + "/token");
    if (t) token = t->substr(0, t->find_first_of("\r\n"));
  }
  bool all_ok = true;
  json out = json::array();
  Table t({"PROCESS", "PID", "RUNNING", "API", "HEALTH"});
  for (const auto& p : procs) {
    std::vector<pid_t> pids = find_by_argv(p.argv);
    const bool running = !pids.empty();
    std::string api;
    std::string health = "-";
    if (ep) {
      for (const auto& n : list(*ep, "nodes")) {
        if (str(n, "name") == p.name) api = str(n, "api");
      }
    }
    if (!api.empty()) {
      ApiClient c(Endpoint{{api}, token}, std::chrono::seconds(3));
      auto r = c.request("GET", "/v1/health");
      health = !r                 ? "unreachable"
               : r->status == 200 ? str(r->body, "status", "ok")
                                  : fmt::format("HTTP {}", r->status);
    }
    all_ok = all_ok && running && (api.empty() || health == "ok");
    const pid_t pid = running ? pids[0] : p.pid;
    t.add({p.name, fmt::format("{}", pid), running ? "yes" : "no", api.empty() ? "-" : api, health});
    out.push_back({{"name", p.name}, {"pid", pid}, {"running", running}, {"api", api}, {"health", health}});
  }
  if (o.json) {
    std::printf("%s\n", json{{"dir", dir}, {"ok", all_ok}, {"processes", out}}.dump(2).c_str());
  } else {
    std::printf("demo in %s: %s\n\n%s", dir.c_str(), all_ok ? "running" : "NOT all running", t.str().c_str());
  }
  return all_ok ? 0 : 1;
}

}  // namespace duplex::cli
