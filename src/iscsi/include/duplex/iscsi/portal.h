#pragma once
// The iSCSI portal: listening sockets, login (LoginMachine), the session registry (TSIH, session
// reinstatement), full-feature sessions and an orderly stop.
//
// Connection life:
//   accept (loop 0) --login PDUs--> LoginMachine --failed--> response, close
//        | full feature, discovery                        | full feature, normal session
//        v                                                 v
//   SendTargets text, logout                     reinstatement: an older session with the
//        (stays on loop 0)                       same initiator name + ISID + target is closed;
//                                                the socket moves to the target's loop; SCSI
//                                                commands, R2T/Data-Out, TMF, NOP, logout
// Every stage has a deadline: login_timeout for the login phase; in full feature phase an idle
// connection gets a NOP-In ping every nop_interval and is closed when nop_timeout passes without
// any PDU from the initiator (a dead host must not hold reservations-related state forever).
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/iscsi/chap.h"
#include "duplex/iscsi/target.h"
#include "duplex/iscsi/text.h"
#include "duplex/reactor/event_loop.h"

namespace duplex::iscsi {

struct PortalConfig {
  std::vector<std::string> listen;  // "127.0.0.1:3260", "[::1]:3260"
  std::uint16_t tpgt = 1;           // Target Portal Group Tag of this node's portal group
  unsigned max_connections = 64;
  std::chrono::milliseconds login_timeout{15000};
  std::chrono::milliseconds nop_interval{5000};  // 0: no pings
  std::chrono::milliseconds nop_timeout{30000};
  std::chrono::milliseconds stop_grace{2000};
  std::uint32_t queue_depth = 128;  // commands per session (the CmdSN window)
  TargetLimits limits;
  std::optional<ChapCredentials> discovery_chap;  // CHAP for SendTargets sessions
};

class Portal {
 public:
  Portal(LoopGroup& loops, TargetCatalogue& targets, PortalConfig cfg);
  ~Portal();
  // Binds every listen address; an error names the address and the cause.
  Status start();
  // Stops accepting, lets commands in flight finish, sends each session an Async Message asking
  // for logout, then closes every connection. Run on loop 0.
  Task<void> stop();
  unsigned connections() const { return count_.load(); }
  unsigned sessions() const;
  // Bound endpoints ("127.0.0.1:3260"), useful with port 0.
  std::vector<std::string> endpoints() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
  std::atomic<unsigned> count_{0};
};

}  // namespace duplex::iscsi
