#pragma once
// duplexd's configuration file (TOML). docs/daemon.md documents every key. Unknown keys are
// errors: a typo must not silently fall back to a default.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"

namespace duplex::daemon {

struct PoolConfig {
  std::string name;
  std::string path;
  std::uint64_t create_size = 0;  // 0: the pool must exist
  std::uint32_t cluster_size = 64 * 1024;
  std::string io = "auto";  // auto | uring | sync
  bool direct = true;       // O_DIRECT (io_uring path)
};

struct VolumeConfig {  // ensured at startup: created if missing
  std::string pool;
  std::string name;
  std::uint64_t size = 0;
};

struct ExportConfig {  // explicit export list; empty = every volume and snapshot
  std::string name;    // "vol" or "vol@snap"
  bool read_only = false;
  std::string description;
};

struct MemoryExportConfig {  // in-memory volume (tests, protocol benchmarks); data is lost on exit
  std::string name;
  std::uint64_t size = 0;
};

struct TlsSection {
  std::string cert, key, ca, psk;
  bool require = false;
};

struct Config {
  std::string file;
  std::string node_name = "duplex";
  std::string site = "a";
  int loops = 0;  // 0: one per core, at most one per pool
  std::string log_level = "info";
  std::vector<std::string> nbd_listen;
  std::string default_export;
  std::vector<PoolConfig> pools;
  std::vector<VolumeConfig> volumes;
  std::vector<ExportConfig> exports;
  std::vector<MemoryExportConfig> memory_exports;
  std::optional<TlsSection> tls;
  unsigned max_connections = 64;
  unsigned max_inflight = 128;
  std::uint64_t max_inflight_bytes = 64ULL << 20;
  std::chrono::milliseconds handshake_timeout{30000};
  std::chrono::milliseconds stop_grace{2000};
};

// Parses and validates; every error is one line naming the file, the key and the problem.
Result<Config> load_config(const std::string& path);
Result<Config> parse_config(std::string_view text, const std::string& source);
// "20GiB", "512MiB", "4096", "1T" -> bytes.
Result<std::uint64_t> parse_size(std::string_view s);
// "30s", "500ms", "2m" -> duration.
Result<std::chrono::milliseconds> parse_duration(std::string_view s);

}  // namespace duplex::daemon
