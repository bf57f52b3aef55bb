#pragma once
// duplexd's wiring: event loops, pools (each pinned to one loop), the export catalogue, the NBD
// server and the iSCSI portal, started in order and stopped in the reverse order.
//
// Start:  config -> loops -> per pool: device (io_uring or inline fallback) -> open/create pool
//         -> ensure volumes -> catalogue -> iSCSI targets: one LogicalUnit per export they use,
//         APTPL reservations restored from state_dir -> NBD listen -> iSCSI listen -> ready
// Stop (SIGTERM/SIGINT): iSCSI portal stops (commands in flight finish, sessions close) -> NBD
//         stops accepting -> ESHUTDOWN to new requests -> in-flight requests finish -> sessions
//         flush and close -> pools flush and close (checkpoint) -> loops end
#include <memory>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/daemon/config.h"

namespace duplex::daemon {

struct StartOptions {
  // --create-volume NAME:SIZE[:POOL] (the quick start's demo volume).
  std::vector<VolumeConfig> extra_volumes;
  // --snapshot VOL@SNAP: take the snapshot at startup if it does not exist (tests, backups
  // before the REST API exists).
  std::vector<std::string> snapshots;
};

class Daemon {
 public:
  explicit Daemon(Config cfg);
  ~Daemon();
  // Everything up to listening; an error is one line naming the cause.
  Status start(const StartOptions& opts);
  // Runs until SIGTERM/SIGINT (or request_stop()), then shuts down cleanly. Returns the exit code.
  int run();
  void request_stop();
  // "nbd://127.0.0.11:10809/demo" for every writable volume export, then
  // "iscsi://127.0.0.1:3260/iqn.2026-11.io.duplex:demo/0" for every target whose LUN 0 is writable.
  std::vector<std::string> uris() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace duplex::daemon
