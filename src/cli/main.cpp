// duplexctl: the command line of Duplex, a client of the REST API of any node (docs/cli.md).
// Exit codes: 0 done, 1 the operation failed (one line on stderr), 2 bad usage.
#include <cstdio>
#include <cstdlib>

#include <CLI/CLI.hpp>

#include "duplex/cli/commands.h"
#include "duplex/cli/demo.h"
#include "duplex/cli/endpoints.h"

namespace {

void add_demo(CLI::App& app, duplex::cli::DemoOptions& d, duplex::cli::Globals& g, int&(demo_exit),
              duplex::cli::Action& action) {
  auto* demo = app.add_subcommand("demo", "A local demo cluster: etcd and N duplexd nodes on loopback");
  demo->require_subcommand(1);
  auto* up =
      demo->add_subcommand("up", "Start etcd and the nodes, create volume demo, write DIR/endpoints.json");
  up->add_option("--nodes", d.nodes, "Number of nodes (sites a, b alternating)")->check(CLI::Range(1, 16));
  up->add_option("--size", d.size, "Size of volume demo");
  up->add_option("--base-address", d.base_address, "Address of n1; nK gets the (K-1)th next one");
  up->add_option("--etcd-port", d.etcd_port, "etcd client port on 127.0.0.1 (the peer port is the next one)");
  up->add_option("--pool-size", d.pool_size, "Size of each node's sparse pool file");
  up->add_option("--lease-ttl", d.lease_ttl, "Node lease TTL in etcd");
  up->add_option("--start-timeout", d.timeout, "Seconds the whole start may take");
  auto* down = demo->add_subcommand("down", "Stop every process the demo started, by pid");
  down->add_flag("--purge", d.purge, "Also remove DIR (data, logs, configs)");
  auto* status = demo->add_subcommand("status", "Are the demo's processes running and healthy?");
  auto dir_required = [&g, &d](const char* what) {
    if (g.dir.empty()) {
      const char* env = std::getenv("DUPLEX_DIR");
      if (env == nullptr || *env == '\0') throw CLI::RequiredError(std::string("--dir (demo ") + what + ")");
      g.dir = env;
    }
    d.dir = g.dir;
    d.json = g.json;
  };
  up->callback([&, dir_required] {
    dir_required("up");
    action = [&] {
      demo_exit = duplex::cli::demo_up(d);
      return duplex::Status::ok();
    };
  });
  down->callback([&, dir_required] {
    dir_required("down");
    action = [&] {
      demo_exit = duplex::cli::demo_down(d);
      return duplex::Status::ok();
    };
  });
  status->callback([&, dir_required] {
    dir_required("status");
    action = [&] {
      demo_exit = duplex::cli::demo_status(d);
      return duplex::Status::ok();
    };
  });
}

}  // namespace

int main(int argc, char** argv) {
  duplex::cli::Globals g;
  duplex::cli::DemoOptions demo;
  duplex::cli::Action action;
  int demo_exit = 0;

  CLI::App app{"duplexctl: manage a Duplex cluster through the REST API of any node (docs/cli.md)",
               "duplexctl"};
  app.require_subcommand(1);
  app.fallthrough();  // global options are accepted after the subcommand too
  app.add_option("--api", g.api, "API base URL (env DUPLEX_API; default http://127.0.0.1:7480)");
  app.add_option("--token", g.token, "Bearer token (env DUPLEX_TOKEN)");
  app.add_option("--token-file", g.token_file, "File holding the bearer token");
  app.add_option("--dir", g.dir, "Demo directory: API and token from DIR/endpoints.json (env DUPLEX_DIR)");
  app.add_flag("--json", g.json, "Print the API's JSON unchanged (for scripts)");
  app.add_option("--timeout", g.timeout, "Seconds a change may take to apply (default 30)")
      ->check(CLI::Range(1.0, 86400.0));
  app.add_flag_callback(
      "--version", [] { throw CLI::CallForVersion("duplexctl 0.1.0", 0); }, "Print the version");

  duplex::cli::add_api_commands(app, g, action);
  add_demo(app, demo, g, demo_exit, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  if (!action) {
    std::fprintf(stderr, "duplexctl: nothing to do (see --help)\n");
    return 2;
  }
  duplex::Status s = action();
  if (!s) {
    std::fprintf(stderr, "duplexctl: %s\n", s.message().c_str());
    return 1;
  }
  return demo_exit;
}
