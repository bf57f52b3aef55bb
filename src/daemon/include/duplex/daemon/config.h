#pragma once
// duplexd's configuration file (TOML). docs/daemon.md documents every key. Unknown keys are
// errors: a typo must not silently fall back to a default.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/iscsi/target.h"
#include "duplex/reactor/tls.h"

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

struct IscsiAclConfig {   // [[iscsi.target.acl]]
  std::string initiator;  // IQN, lower case
  iscsi::Access access = iscsi::Access::read_write;
};

struct IscsiTargetConfig {        // [[iscsi.target]]
  std::string name;               // IQN, lower case
  std::vector<std::string> luns;  // export names ("vol", "vol@snap"): LUN 0, 1, ... in order
  std::string alias;
  iscsi::Access default_access = iscsi::Access::read_write;
  std::optional<iscsi::ChapCredentials> chap;  // validated with ChapTarget::validate
  std::vector<IscsiAclConfig> acl;
};

struct IscsiSection {  // [iscsi]; no listen address = no portal
  std::vector<std::string> listen;
  std::uint16_t tpgt = 1;
  std::string base_iqn = "iqn.2026-11.io.duplex";
  std::chrono::milliseconds nop_interval{5000};  // 0: no NOP-In pings
  std::chrono::milliseconds nop_timeout{30000};
  std::chrono::milliseconds login_timeout{15000};
  std::uint32_t queue_depth = 128;
  unsigned max_connections = 64;
  std::optional<iscsi::ChapCredentials> discovery_chap;
  // Empty: one target per export, named from base_iqn (daemon/iscsi_targets.h).
  std::vector<IscsiTargetConfig> targets;
};

struct ApiSection {        // [api]: the REST API's listener (served by src/api; parsed and checked here)
  std::string listen;      // "127.0.0.11:7480"; empty = no API on this node
  std::string token_file;  // required with listen: the file holding the bearer token
  std::string token;       // its content, trailing whitespace removed (never logged)
  std::string tls_cert, tls_key;  // both or neither
};

struct Config {
  std::string file;
  std::string node_name = "duplex";
  std::string site = "a";
  int loops = 0;  // 0: one per core, at most one per pool
  std::string log_level = "info";
  std::string state_dir = "/var/lib/duplex";  // persistent state (APTPL reservations: pr/)
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
  IscsiSection iscsi;
  // [cluster]: etcd members; empty = a standalone node (nothing is registered anywhere).
  std::vector<std::string> etcd;
  std::chrono::milliseconds lease_ttl{10000};
  // The address other nodes and clients reach this node at (default: the host of the first NBD,
  // else iSCSI, listen address).
  std::string address;
  // [cluster] mirror_listen: where peers open mirror links to this node ("127.0.0.11:7789");
  // advertised in the node record as "mirror". Empty: this node cannot hold a mirrored replica.
  std::string mirror_listen;
  // [cluster] mirror_advertise: the address peers are told to dial, when it differs from the
  // listen address (a NAT, a proxy; the system tests put a fault-injecting proxy there).
  std::string mirror_advertise;
  // [mirror]: the engine's timings (docs/mirror.md, "Arbitration"). The defaults suit a stretched
  // cluster; tests shorten them so that a fault is decided in seconds.
  struct MirrorSection {
    std::chrono::milliseconds ping_interval{500};
    std::chrono::milliseconds link_timeout{2000};       // nothing heard for this long: link down
    std::chrono::milliseconds replicate_timeout{3000};  // a replicate not answered: peer lost
    std::chrono::milliseconds freeze_timeout{30000};    // writes held without a decision, then EIO
    std::chrono::milliseconds tiebreak_delay{2000};     // the non-preferred site waits this first
    std::chrono::milliseconds lease{2000};              // read lease after the last answered ping
    std::uint64_t resync_rate_max = 0;                  // bytes/s, 0 = unlimited
    std::uint64_t resync_rate_min = 10ULL << 20;        // the adaptive resync never goes slower
    std::uint32_t resync_depth = 64;                    // regions a resync copies at once
    // TLS on the link ("on": the listener accepts only TLS and links are dialed only with TLS):
    // mutual certificates (tls_cert + tls_key + tls_ca) or a shared PSK file (tls_psk).
    bool tls = false;
    std::string tls_cert, tls_key, tls_ca, tls_psk;
    bool tls_check_name = false;  // the dialer requires the peer's certificate to name its node
  } mirror;
  ApiSection api;
};

// [mirror] tls_* as the options of the link's TLS context.
TlsOptions mirror_tls_options(const Config::MirrorSection& m);

// Parses and validates; every error is one line naming the file, the key and the problem.
Result<Config> load_config(const std::string& path);
Result<Config> parse_config(std::string_view text, const std::string& source);
// "20GiB", "512MiB", "4096", "1T" -> bytes.
Result<std::uint64_t> parse_size(std::string_view s);
// "30s", "500ms", "2m" -> duration.
Result<std::chrono::milliseconds> parse_duration(std::string_view s);

}  // namespace duplex::daemon
