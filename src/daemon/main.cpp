// duplexd: the Duplex node daemon.
#include <cstdio>
#include <iostream>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "duplex/daemon/config.h"
#include "duplex/daemon/daemon.h"

namespace {

void setup_logging(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("duplexd");
  // logfmt: one event per line, key=value, easy for journald, grep and log shippers.
  logger->set_pattern("ts=%Y-%m-%dT%H:%M:%S.%e%z level=%l %v");
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"duplexd: the Duplex node daemon (serves volumes over NBD and iSCSI)", "duplexd"};
  std::string config_path;
  std::vector<std::string> create_volumes;
  bool check_only = false;
  std::string log_level;
  app.add_option("-c,--config", config_path, "configuration file (TOML)")->required();
  app.add_option("--create-volume", create_volumes,
                 "ensure a volume exists at startup: NAME:SIZE[:POOL], e.g. demo:10GiB");
  std::vector<std::string> snapshots;
  app.add_option("--snapshot", snapshots, "ensure a snapshot exists at startup: VOLUME@SNAPSHOT");
  app.add_flag("--check-config", check_only, "validate the configuration and exit");
  app.add_option("--log-level", log_level, "trace, debug, info, warn or error (overrides the file)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints help, or the error on stderr
    return rc == 0 ? 0 : 2;
  }

  auto cfg = duplex::daemon::load_config(config_path);
  if (!cfg) {
    std::fprintf(stderr, "duplexd: %s\n", cfg.status().message().c_str());
    return 2;
  }
  duplex::daemon::StartOptions opts;
  for (const auto& s : create_volumes) {
    duplex::daemon::VolumeConfig v;
    const auto c1 = s.find(':');
    if (c1 == std::string::npos) {
      std::fprintf(stderr, "duplexd: --create-volume '%s': expected NAME:SIZE[:POOL]\n", s.c_str());
      return 2;
    }
    v.name = s.substr(0, c1);
    std::string rest = s.substr(c1 + 1);
    const auto c2 = rest.find(':');
    if (c2 != std::string::npos) {
      v.pool = rest.substr(c2 + 1);
      rest = rest.substr(0, c2);
    }
    auto size = duplex::daemon::parse_size(rest);
    if (!size || *size == 0 || v.name.empty()) {
      std::fprintf(stderr, "duplexd: --create-volume '%s': expected NAME:SIZE[:POOL]\n", s.c_str());
      return 2;
    }
    v.size = *size;
    opts.extra_volumes.push_back(v);
  }
  opts.snapshots = snapshots;
  if (check_only) {
    std::printf("duplexd: %s is valid\n", config_path.c_str());
    return 0;
  }
  setup_logging(log_level.empty() ? cfg->log_level : log_level);

  duplex::daemon::Daemon d(std::move(*cfg));
  if (auto st = d.start(opts); !st) {
    std::fprintf(stderr, "duplexd: %s\n", st.message().c_str());
    return 1;
  }
  for (const auto& u : d.uris()) std::printf("%s %s\n", u.starts_with("iscsi:") ? "iSCSI" : "NBD", u.c_str());
  std::fflush(stdout);
  return d.run();
}
