#pragma once
// One iSCSI connection and the session it carries (MaxConnections=1, ErrorRecoveryLevel=0).
//
// Life of a connection (run()):
//   login phase: Login Request -> LoginMachine -> Login Response, until full feature or failure
//   -> discovery session: Text (SendTargets), NOP-Out, Logout; anything else is rejected
//   -> normal session: reinstatement of an older session with the same I_T nexus, then the
//      socket moves to the target's loop and one reader coroutine runs the full feature phase
//   -> close: the reader ends (logout, error, peer gone, NOP timeout, portal stop); commands in
//      flight finish (their responses are dropped), the session leaves the registry.
//
// Life of a SCSI command (Cmd):
//   received --write with data missing--> collecting (immediate, unsolicited Data-Out, R2Ts)
//   collecting --all data in--> executing (on the LUN's loop) --> responding (Data-In, status)
//   any state --ABORT TASK / ABORT TASK SET / LUN RESET / connection close--> aborted: data that
//   still arrives is discarded, no response is sent; the TMF answers once execution has ended.
//   The same for an LU-wide abort from another session, on this node or the other one serving
//   the LU (SessionTasks): a LUN RESET aborts every session's commands for the LU, a PREEMPT AND
//   ABORT the preempted nexus's; the command that caused it is answered once they have ended.
#include <array>
#include <chrono>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <asio/steady_timer.hpp>

#include "duplex/base/async.h"
#include "duplex/base/buffer.h"
#include "duplex/iscsi/login.h"
#include "duplex/iscsi/pdu.h"
#include "duplex/iscsi/portal.h"
#include "duplex/reactor/tcp_stream.h"

namespace duplex::iscsi {

class Connection;

// The session as a member of its LUs' task sets (scsi::TaskSetMember): an LU-wide event (a
// PREEMPT AND ABORT of this nexus, a LOGICAL UNIT RESET, through any session on any node) aborts
// its commands for that LU. Owned by the connection; the LUs hold it weakly, an abort in
// progress holds it.
class SessionTasks final : public scsi::TaskSetMember {
 public:
  // `lus`: each LU of the session's target and the loop it runs on (where aborts return).
  SessionTasks(Connection* conn, EventLoop& home, scsi::Nexus nexus,
               std::vector<std::pair<const scsi::LogicalUnit*, EventLoop*>> lus)
      : conn(conn), home_(home), nexus_(std::move(nexus)), lus_(std::move(lus)) {}
  const scsi::Nexus& nexus() const override { return nexus_; }
  Task<std::size_t> abort_tasks(const scsi::LogicalUnit* lu) override;

  // Touched on the home loop only; cleared once the connection holds no command any more.
  Connection* conn;

 private:
  EventLoop& home_;
  scsi::Nexus nexus_;
  std::vector<std::pair<const scsi::LogicalUnit*, EventLoop*>> lus_;
};

struct Portal::Impl {
  LoopGroup& loops;
  TargetCatalogue& targets;
  PortalConfig cfg;
  Portal* self = nullptr;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors;
  // Connections per loop, touched only on that loop.
  std::vector<std::list<Connection*>> conns;
  // Normal sessions by "initiator|isid|target", touched only on loop 0.
  std::map<std::string, Connection*> registry;
  std::atomic<bool> stopping{false};
  std::atomic<unsigned> session_count{0};
  std::uint16_t next_tsih = 1;
  std::uint64_t next_id = 1;

  Impl(LoopGroup& l, TargetCatalogue& t, PortalConfig c);
  void accept(asio::ip::tcp::acceptor& a);
  void on_accept(asio::ip::tcp::socket s);
  void finished(Connection* c);
};

class Connection {
 public:
  Connection(Portal::Impl& portal, std::unique_ptr<TcpStream> io, std::string id);
  ~Connection();
  Task<void> run();
  // Ends the connection from its own loop: the reader fails, the run() coroutine cleans up.
  void close(const std::string& why);
  // Portal stop: ask the initiator to log out (Async Message), then close after the grace.
  void request_logout();

  int loop = 0;
  std::list<Connection*>::iterator pos;
  const std::string& id() const { return id_; }

 private:
  friend class SessionTasks;
  struct Cmd {
    std::uint32_t itt = 0;
    std::uint32_t cmd_sn = 0;
    std::uint64_t lun_field = 0;
    const Lun* lun = nullptr;
    std::vector<std::uint8_t> cdb;
    bool read = false, write = false;
    std::uint32_t edtl = 0;
    std::uint32_t want = 0;         // Data-Out bytes the target will take (<= edtl)
    AlignedBuffer out;              // Data-Out (size edtl, or empty when discarding); aligned for O_DIRECT
    std::uint32_t received = 0;     // Data-Out bytes in, counted over every PDU
    std::uint32_t unsolicited = 0;  // bytes the initiator may still send unsolicited
    bool unsolicited_done = true;
    std::uint32_t next_r2t_offset = 0;
    std::uint32_t r2t_sn = 0;
    std::uint32_t data_sn = 0;  // next Data-In DataSN
    std::uint32_t next_ttt = 0;
    unsigned outstanding_r2t = 0;
    struct Burst {  // one solicited sequence (an R2T) or the unsolicited one
      std::uint32_t offset = 0, length = 0;
      std::uint32_t next_offset = 0;  // DataPDUInOrder: the next PDU starts here
      std::uint32_t next_data_sn = 0;
    };
    std::map<std::uint32_t, Burst> r2ts;  // by TTT
    Burst unsolicited_burst;
    std::optional<scsi::CommandResult> early;  // refused before execution (answered when data is in)
    bool executing = false;
    bool receiving = false;  // Data-Out is being read into `out`: an abort must not free it now
    bool aborted = false;
    bool done = false;
    WaitQueue finished;
  };

  // Login phase.
  Task<bool> login();
  LoginPolicy policy();
  Task<bool> join_session();

  // Full feature phase. Coroutines take the header by pointer: it lives in the reader's frame.
  Task<void> full_feature();
  Task<Status> read_header(Bhs* h);
  // Reads a data segment of `len` bytes into dst (nullptr: discard), then its padding and digest.
  // false in *digest_ok when the data digest does not match.
  Task<Status> read_data(std::byte* dst, std::uint32_t len, bool* digest_ok);
  Task<Status> on_scsi_command(const Bhs* pdu);
  Task<Status> on_data_out(const Bhs* pdu);
  Task<Status> on_nop_out(const Bhs* pdu);
  Task<Status> on_text(const Bhs* pdu);
  Task<Status> on_logout(const Bhs* pdu);
  // By pointer: GCC 12 cannot copy an array-holding parameter into a coroutine frame.
  Task<void> on_task_management(std::unique_ptr<Bhs> pdu);
  Task<Status> reject(const Bhs* pdu, RejectReason why);

  // Command flow.
  bool cmd_sn_acceptable(const Bhs& h);
  void advance_cmd_sn(const Bhs& h);
  Task<Status> solicit(Cmd* c);
  Task<void> execute(Cmd* c);
  Task<Status> respond(Cmd* c, scsi::CommandResult r, std::span<const std::byte> data_in);
  void forget(Cmd* c);
  void abort_where(const std::function<bool(const Cmd&)>& pred);
  // Completes once none of the (aborted) commands `itts` is executing any more.
  Task<void> wait_ended(std::vector<std::uint32_t> itts);
  // An LU-wide abort (SessionTasks::abort_tasks) on the home loop: this session's commands for
  // `lu`; returns how many, once they have ended.
  Task<std::size_t> abort_for_lu(const scsi::LogicalUnit* lu);

  // Staging buffers of 64 KiB and more are reused: a fresh large allocation costs a page fault
  // per page (it is a new mapping), which dominated the CPU of sequential I/O.
  AlignedBuffer take_buffer(std::size_t n);
  void give_buffer(AlignedBuffer b);

  // Sending. StatSN, ExpCmdSN and MaxCmdSN are stamped under the write lock, in wire order.
  enum class Stat { none, current, advance };
  Task<Status> send(BhsBuilder b, std::span<const std::byte> data, Stat stat);
  Task<void> pinger();

  Portal::Impl& portal_;
  std::unique_ptr<TcpStream> io_;
  std::string id_;
  std::optional<LoginMachine> login_;
  SessionParams params_;
  const Target* target_ = nullptr;
  scsi::Nexus nexus_;
  std::shared_ptr<SessionTasks> tasks_;  // a normal session's membership of its LUs' task sets
  std::string registry_key_;
  bool registered_ = false;
  std::uint16_t tsih_ = 0;
  bool full_feature_ = false;
  bool closing_ = false;
  std::string close_reason_;

  std::uint32_t stat_sn_ = 0;
  std::uint32_t exp_cmd_sn_ = 0;
  std::uint32_t max_cmd_sn_ = 0;
  AsyncMutex write_lock_;
  std::map<std::uint32_t, std::unique_ptr<Cmd>> cmds_;  // by ITT
  unsigned executing_ = 0;
  WaitQueue idle_;  // notified when executing_ drops to 0
  std::chrono::steady_clock::time_point last_rx_;
  std::uint32_t ping_ttt_ = 0x1000;
  std::optional<asio::steady_timer> timer_;
  std::vector<std::byte> scratch_;
  std::vector<AlignedBuffer> spare_;        // staging buffers for reuse (sizes rounded to 64 KiB)
  std::vector<std::uint8_t> ahs_;           // AHS of the PDU being handled
  std::uint32_t next_ttt_ = 0;              // R2T and text continuation tags
  std::vector<std::uint8_t> text_pending_;  // the rest of a long text answer
  std::uint32_t text_ttt_ = kReservedTag;

  struct Stats {
    std::uint64_t commands = 0, errors = 0, bytes_in = 0, bytes_out = 0, rejects = 0;
  } stats_;
};

}  // namespace duplex::iscsi
