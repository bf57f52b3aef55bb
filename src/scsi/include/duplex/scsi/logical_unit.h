#pragma once
// A SCSI block logical unit (SPC-4 / SBC-3) over a BlockVolume, with no knowledge of the
// transport: iSCSI today, NVMe-oF or vhost-scsi later call execute() the same way.
//
// The transport gathers all Data-Out before execute() (iSCSI: immediate, unsolicited and R2T'd
// data up to the expected transfer length) and provides a Data-In buffer sized to the expected
// transfer length. The result says how much of each was used, so the transport can set residuals.
//
// Concurrency: one LogicalUnit belongs to one event-loop thread (its volume's). COMPARE AND WRITE
// is atomic against every overlapping write through this LU (a range lock) and, on a mirrored
// volume, through every node (BlockVolume::compare_and_write: the mirror's owner compares and
// writes under its own range lock).
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "duplex/base/async.h"
#include "duplex/base/task.h"
#include "duplex/scsi/sense.h"
#include "duplex/volume/block_volume.h"

namespace duplex::scsi {

// ALUA states (SPC-4 6.37): the value in REPORT TARGET PORT GROUPS.
enum class AluaState : std::uint8_t {
  active_optimized = 0x0,
  active_non_optimized = 0x1,
  standby = 0x2,
  unavailable = 0x3,
  transitioning = 0xf,
};

struct TargetPortGroup {
  std::uint16_t id = 1;
  AluaState state = AluaState::active_optimized;
  bool preferred = false;
  std::vector<std::uint16_t> relative_ports;
  friend bool operator==(const TargetPortGroup&, const TargetPortGroup&) = default;
};

struct LuConfig {
  std::string vendor = "DUPLEX";         // 8 bytes in INQUIRY; identical on every node, never changed
  std::string product = "VIRTUAL-DISK";  // 16 bytes
  std::string revision = "0001";         // 4 bytes
  std::string serial;                    // VPD 0x80; identical on every node (derived from the volume UUID)
  std::uint32_t block_size = 512;
  std::uint16_t relative_port = 1;           // this node's target port (VPD 0x83, RTPG)
  std::uint16_t tpg_id = 1;                  // this node's target port group
  std::string target_port_name;              // "iqn...,t,0x0001" for VPD 0x83 (optional)
  bool read_only = false;                    // ACL-level read-only (write-protect)
  std::vector<TargetPortGroup> port_groups;  // every group of the LU, as the cluster sees it
};

// The I_T nexus the command came through: unit attentions (and reservations) are per nexus.
struct Nexus {
  std::string initiator_port;  // e.g. "iqn.1993-08.org.debian:01:abc,i,0x23d000000001"
  std::uint16_t relative_port = 1;
  // Access granted to this nexus by the target's ACL (not part of its identity): a read-only
  // nexus sees WP in MODE SENSE and gets DATA PROTECT for every modifying or reservation command.
  bool read_only = false;
  // The SCSI target port name ("iqn...,t,0x0001") of the session, for VPD 0x83; empty: the LU's.
  std::string target_port;
  friend bool operator<(const Nexus& a, const Nexus& b) {
    return a.initiator_port != b.initiator_port ? a.initiator_port < b.initiator_port
                                                : a.relative_port < b.relative_port;
  }
};

// The same I_T nexus: initiator port and target port (the access flags are not part of it).
inline bool same_nexus(const Nexus& a, const Nexus& b) {
  return a.relative_port == b.relative_port && a.initiator_port == b.initiator_port;
}

struct Command {
  std::span<const std::uint8_t> cdb;
  std::span<const std::byte> data_out;  // everything the initiator sent
  std::span<std::byte> data_in;         // sized to the initiator's expected transfer length
  const Nexus* nexus = nullptr;         // owned by the session; outlives the command
};

struct CommandResult {
  ScsiStatus status = ScsiStatus::good;
  Sense sense;  // meaningful with check_condition
  std::uint32_t data_in_length = 0;
  std::uint32_t data_out_used = 0;
};

class PersistentReservations;
struct PrState;
class LogicalUnit;

// A transport's session seen from an LU it serves: the commands of one I_T nexus that the
// transport holds for the LU, received but not yet answered (SAM-5's task set, TST=000b: one task
// set for the LU). LU-wide events abort them wherever the nexus is: PREEMPT AND ABORT the
// preempted nexuses' commands, LOGICAL UNIT RESET every command, through every node serving the
// LU. The transport joins each session to each LU of its target (join_task_set) and keeps the
// member alive while the session lives; the LU holds it weakly.
class TaskSetMember {
 public:
  virtual ~TaskSetMember() = default;
  virtual const Nexus& nexus() const = 0;
  // Aborts this session's commands for `lu` (never null: a pointer because coroutine parameters
  // must not be references) (SAM-5 5.6): none of them is answered (the Control
  // mode page says TAS=0) and data still arriving for them is dropped. Completes, on the LU's
  // loop, once none of them is executing any more (none can still change the medium), with the
  // number aborted. A PERSISTENT RESERVE OUT that is already executing is left alone: reservation
  // changes are applied one at a time in one order, so it is applied after the change that
  // caused the abort (as if received after it) and answered; waiting for it could deadlock.
  virtual Task<std::size_t> abort_tasks(const LogicalUnit* lu) = 0;
};

// Persistent reservations are one state for the LU on every node that serves it: on a volume
// that orders shared state (a mirror), a PERSISTENT RESERVE OUT or a LOGICAL UNIT RESET runs on
// the volume's owner and its result, with the unit attentions it owes initiators on the other
// node, is installed there before the command completes (shared_reservations.cpp).
class LogicalUnit {
 public:
  LogicalUnit(volume::BlockVolume& volume, LuConfig cfg);
  ~LogicalUnit();
  LogicalUnit(const LogicalUnit&) = delete;
  LogicalUnit& operator=(const LogicalUnit&) = delete;

  // A session of a transport that carries commands for this LU (see TaskSetMember). Any thread.
  void join_task_set(std::weak_ptr<TaskSetMember> member);
  // APTPL: persist the state. The hook's error fails the PERSISTENT RESERVE OUT and undoes it (see
  // reservations.h).
  void set_persist_hook(std::function<Status(const PrState&)> f);
  PersistentReservations& reservations() { return *pr_; }

  Task<CommandResult> execute(Command cmd);

  // Events every nexus must hear about (SPC-4 unit attention conditions).
  void unit_attention_all(Asc code);
  void unit_attention(const Nexus& nexus, Asc code);
  // LOGICAL UNIT RESET task management: clears state and raises 29/03 on every nexus of this
  // node. reset_everywhere() does it on every node serving the LU and aborts every command of the
  // LU there too, completing once none of them is executing (the transport calls it).
  void reset();
  Task<void> reset_everywhere();

  // The LU's side of volume::SharedStateKeeper (the volume calls them through keeper_, on the
  // LU's loop; public for tests).
  std::vector<std::byte> apply_change(std::span<const std::byte> request, bool& changed);
  std::vector<std::byte> export_state(bool with_events) const;
  Status import_state(std::span<const std::byte> blob, bool raise_events);

  // Asymmetric access (docs/multipath.md). The cluster decides the groups' states; a change of any
  // group raises ASYMMETRIC ACCESS STATE CHANGED (2A/06) on every nexus, so the hosts re-read
  // REPORT TARGET PORT GROUPS. On the LU's loop.
  void set_port_groups(std::vector<TargetPortGroup> groups);
  // Runs on the LU's loop before every command: the daemon compares the mirror's in-sync
  // generation with the one it last applied and calls set_port_groups() when it moved, so no
  // command is answered from a stale state and no timer is needed.
  void set_refresh_hook(std::function<void(LogicalUnit&)> f);
  // This node's group state (the one holding cfg.tpg_id).
  AluaState own_state() const;
  // The volume is gone for good (deleted, or no longer placed on this node): every command but
  // INQUIRY answers LOGICAL UNIT NOT SUPPORTED and INQUIRY says no LU is here (peripheral qualifier
  // 011b), the permanent device loss hosts act on. Any thread; never undone.
  void set_gone();
  bool gone() const { return gone_.load(std::memory_order_relaxed); }
  // The number of bytes of Data-Out the CDB asks for (the transport solicits at most this).
  std::uint64_t data_out_length(std::span<const std::uint8_t> cdb) const;

  const LuConfig& config() const { return cfg_; }
  std::uint64_t blocks() const { return volume_.size() / cfg_.block_size; }
  std::vector<std::uint8_t> naa() const;  // 16-byte NAA 6 designator, from the volume UUID

 private:
  Task<CommandResult> dispatch(Command c);
  std::optional<CommandResult> alua_refusal(std::span<const std::uint8_t> cdb) const;
  CommandResult inquiry(Command c);
  CommandResult vpd(Command c, std::uint8_t page, std::uint32_t alloc);
  CommandResult read_capacity10(Command c);
  CommandResult read_capacity16(Command c);
  CommandResult mode_sense(Command c, bool ten);
  CommandResult mode_select(Command c, bool ten);
  CommandResult request_sense(Command c);
  CommandResult report_supported_opcodes(Command c);
  CommandResult report_target_port_groups(Command c);
  CommandResult get_lba_status(Command c);
  Task<CommandResult> read(Command c, std::uint64_t lba, std::uint32_t blocks);
  Task<CommandResult> write(Command c, std::uint64_t lba, std::uint32_t blocks, bool fua);
  Task<CommandResult> verify(Command c, std::uint64_t lba, std::uint32_t blocks, std::uint8_t bytchk);
  Task<CommandResult> write_same(Command c, bool sixteen);
  Task<CommandResult> unmap(Command c);
  Task<CommandResult> compare_and_write(Command c);
  Task<CommandResult> synchronize_cache(Command c, bool sixteen);
  Task<CommandResult> shared_reserve_out(Command c);
  // A reservation event: a unit attention for a nexus, an abort of its tasks, or a reset of the
  // whole LU. Raised here for this node's nexuses; kept for the other node while a change runs.
  struct PrEvent {
    enum Kind : std::uint8_t { unit_attention = 1, abort_tasks = 2, reset = 3 } kind = unit_attention;
    Nexus nexus;
    Asc code;
  };
  void pr_event(const PrEvent& e);
  // Starts aborting the commands this node's transports hold for the LU: those of `nexus`, or
  // every command without one. `cleared`: tell each nexus that lost commands with COMMANDS
  // CLEARED BY ANOTHER INITIATOR (2F/00) once they have stopped. aborts_settled() waits for all
  // the aborts started so far.
  void abort_tasks_here(const std::optional<Nexus>& nexus, bool cleared);
  Task<void> aborts_settled();
  struct Aborts;
  static Task<void> wait_aborts(std::shared_ptr<Aborts> a);
  friend class LuKeeper;
  std::shared_ptr<volume::SharedStateKeeper> make_keeper();
  bool own_nexus(const Nexus& n) const { return !shared_ || n.relative_port == cfg_.relative_port; }

  CommandResult data_in(Command c, std::span<const std::uint8_t> bytes, std::uint32_t alloc) const;
  CommandResult check_range(std::uint64_t lba, std::uint64_t blocks) const;
  static CommandResult from_status(const Status& s, bool writing);

  volume::BlockVolume& volume_;
  LuConfig cfg_;
  std::uint64_t announced_blocks_;  // the capacity the nexuses were told of (a change raises 2A/09)
  std::unique_ptr<PersistentReservations> pr_;
  std::function<Status(const PrState&)> persist_hook_;
  std::mutex members_mu_;  // join_task_set may come from any thread
  std::vector<std::weak_ptr<TaskSetMember>> members_;
  // Aborts in flight (on the LU's loop); shared with the keeper, whose settle() the volume awaits
  // across suspensions (the LU may be gone by then, at shutdown).
  struct Aborts {
    LogicalUnit* lu = nullptr;  // cleared by ~LogicalUnit: a late abort touches the LU no more
    unsigned running = 0;
    WaitQueue idle;
  };
  std::shared_ptr<Aborts> aborts_ = std::make_shared<Aborts>();
  std::function<void(LogicalUnit&)> refresh_hook_;
  std::atomic<bool> gone_{false};
  // What the volume holds (weakly) to reach the calls above; shared_: the volume orders
  // reservation changes.
  std::shared_ptr<volume::SharedStateKeeper> keeper_;
  bool shared_ = false;
  std::vector<PrEvent> pr_events_;  // of the change being applied here (apply_change)
  std::map<Nexus, std::vector<Asc>> unit_attentions_;
  std::vector<Asc> pending_for_new_;  // raised before a nexus was first seen
  bool swp_ = false;                  // control mode page SWP: software write protect
  struct Range {
    std::uint64_t lba, blocks;
    bool exclusive;
  };
  std::vector<Range> held_;
  WaitQueue range_waiters_;
  Task<void> lock_range(std::uint64_t lba, std::uint64_t blocks, bool exclusive);
  void unlock_range(std::uint64_t lba, std::uint64_t blocks, bool exclusive);
};

// Sense for an ILLEGAL REQUEST pointing at CDB byte `byte` (bit `bit` if >= 0).
CommandResult illegal_request(Asc code, std::uint16_t byte, int bit = -1, bool in_cdb = true);
CommandResult check_condition(SenseKey key, Asc code);

// REPORT LUNS (SPC-4 6.33) over the LUNs the nexus may see; answered by the target, not an LU.
CommandResult report_luns(std::span<const std::uint8_t> cdb, const std::vector<std::uint64_t>& luns,
                          std::span<std::byte> data_in);

}  // namespace duplex::scsi
