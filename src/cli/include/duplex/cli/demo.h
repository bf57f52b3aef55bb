#pragma once
// `duplexctl demo up|down|status`: a whole cluster on one machine for trying Duplex and for tests
// (docs/cli.md, "The demo cluster"; DESIGN.md "Quick start").
//
// demo up:
//   check DIR not running ─▶ check ports free ─▶ token ─▶ start etcd ─▶ /health
//     ─▶ write nK.toml, start duplexd nK (k = 1..N) ─▶ every /v1/health 200 and every node alive in /v1/nodes
//     ─▶ POST /v1/volumes demo (2 replicas; 1 when the API says the mirror is unsupported; an existing
//        demo volume is kept) ─▶ volume ready ─▶ write endpoints.json ─▶ print how to connect
//   Any failure on the way: stop what was started (by pid), remove pids.json, exit 1 with the reason.
//   DIR/pids.json is written as soon as each process starts, so `demo down` can always stop them.
#include <string>

namespace duplex::cli {

struct DemoOptions {
  std::string dir;
  unsigned nodes = 2;
  std::string size = "1GiB";
  std::string base_address = "127.0.0.11";
  unsigned etcd_port = 2379;
  std::string pool_size = "20GiB";
  std::string lease_ttl = "5s";
  double timeout = 90;  // seconds for the whole start
  bool purge = false;
  bool json = false;
};

int demo_up(const DemoOptions& o);
int demo_down(const DemoOptions& o);
int demo_status(const DemoOptions& o);

}  // namespace duplex::cli
