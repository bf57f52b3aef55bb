#pragma once
// A mirrored volume on one node: the BlockVolume the front-ends serve, over this node's replica
// (a LocalVolume), its metadata (ReplicaMeta), the link to the peer (Channel) and the arbiter
// (the in-sync set in etcd). docs/mirror.md argues the design; in short:
//
// - The owner (first member of the in-sync set) orders every write under a RangeLock and applies
//   it locally and on the peer before the ack; the other node forwards its writes to the owner.
// - Reads are local on an in-sync member that holds a read lease (a ping answered by the peer
//   within `lease`); otherwise they are forwarded to the peer, or fail.
// - A peer that cannot be reached leaves the set only by Arbiter::change (compare-and-swap),
//   before any write it missed is acknowledged; the non-preferred node waits `tiebreak_delay`
//   first; without a quorum writes stay frozen up to `freeze_timeout`, then fail.
// - A returning peer that is not a member is resynced by the owner (dirty bitmap + both activity
//   logs) under the range lock, then added back by compare-and-swap.
//
// Life of the volume on this node (the replica's side of docs/mirror.md "A replica's life"):
//
//   start(): read the set --member, meta in-sync--> serving (reads need the peer or a decision)
//                        --not a member-----------> outdated: forwards everything to the owner
//   link up (hello both ways, same uuid and size):
//     owner: peer member and nothing dirty --> peer in step
//            otherwise --> resync (peer "catching up": gets every write, its reads forwarded)
//                      --> bitmap empty: lock everything, CAS add peer, state{caught up}
//     other: waits for replicate / resync_data / state messages
//   link down or replicate failed: peer member? --> CAS remove it (freeze meanwhile)
//   grow(S): the owner raises the size under its lock of the whole volume, the peer's first
//            (docs/mirror.md "Growing a mirrored volume"); a peer away grows before its resync
//
// Threading: everything runs on the loop that owns the local replica's pool.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "duplex/base/async.h"
#include "duplex/mirror/arbiter.h"
#include "duplex/mirror/channel.h"
#include "duplex/mirror/hello.h"
#include "duplex/mirror/range_lock.h"
#include "duplex/mirror/replica_meta.h"
#include "duplex/reactor/event_loop.h"
#include "duplex/volume/block_volume.h"

namespace duplex::mirror {

struct MirrorOptions {
  std::string node;   // this node's name
  std::string peer;   // the other replica's node
  bool dial = false;  // this side opens the link (the daemon: the node whose name sorts first)
  // The metadata was recovered after a crash: writes in flight then (the activity log) may be on
  // one replica only, so the owner copies them on the next link.
  bool crashed = false;
  ChannelOptions link;
  // TLS on the link (null: plain TCP). The dialer also checks that the peer's certificate names
  // `peer` when link_tls_check_name is set.
  std::shared_ptr<const TlsContext> link_tls;
  bool link_tls_check_name = false;
  std::chrono::milliseconds replicate_timeout{3000};
  std::chrono::milliseconds freeze_timeout{30000};
  std::chrono::milliseconds tiebreak_delay{2000};
  std::chrono::milliseconds lease{2000};
  std::chrono::milliseconds connect_retry{500};
  std::chrono::milliseconds persist_period{2000};
  std::uint64_t resync_chunk = 1u << 20;
  std::size_t resync_parallel = 64;   // regions copied at once (a window, refilled as each ends)
  std::uint64_t resync_rate_max = 0;  // bytes/s, 0 = as fast as the disk and link go
  // While application writes are in flight the resync yields (pauses as long as its last chunk
  // took), but never below this rate.
  std::uint64_t resync_rate_min = 10u << 20;
};

// Where the peer's mirror port is (from its node record); nullopt while unknown.
struct PeerAddress {
  std::string host;
  std::uint16_t port = 0;
};
using PeerLocator = std::function<std::optional<PeerAddress>()>;

struct MirrorStatus {
  std::uint64_t size = 0;         // the size served (and covered by the metadata)
  std::uint64_t grow_target = 0;  // the size asked for by grow(); 0: none
  std::string grow;               // why a grow has not committed yet ("" when none waits)
  // "in-sync" | "outdated" | "inconsistent" | "resyncing" (owner's view of the peer) | "failed"
  // (this replica left the set on a disk error; persisted as inconsistent, resynced in full once
  // the node links again, e.g. after a restart)
  std::string state;
  std::string role;  // "owner" | "peer" | ""
  std::uint64_t generation = 0;
  std::uint64_t last_member_generation = 0;  // the set's generation when this replica was last in it
  std::vector<std::string> members;
  bool link_up = false;
  std::uint64_t dirty_bytes = 0;
  std::uint64_t resync_total = 0, resync_done = 0;
  double resync_rate = 0;  // bytes/s
  std::string last_event;
  // A member that can reach neither its peer nor the arbiter, after a decision ran out of
  // freeze_timeout: its I/O fails at once (a path error) until the link or the arbiter returns.
  bool cut_off = false;
  bool verifying = false;
  std::uint64_t verify_total = 0, verify_done = 0, verify_mismatches = 0;  // bytes
};

// What an online verify found: ranges where the replicas differ (coalesced, the first 64).
struct VerifyReport {
  std::uint64_t checked = 0, mismatched = 0, repaired = 0;  // bytes
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;
};

class MirrorVolume final : public volume::BlockVolume, public std::enable_shared_from_this<MirrorVolume> {
 public:
  MirrorVolume(EventLoop* loop, std::unique_ptr<volume::BlockVolume> local, std::unique_ptr<ReplicaMeta> meta,
               std::shared_ptr<Arbiter> arbiter, PeerLocator locate, MirrorOptions o);
  ~MirrorVolume() override;

  // Reads the in-sync set and starts the connector / persister. On the volume's loop.
  Task<Status> start();
  // An accepted connection whose first message (`hello`) names this volume. On the volume's loop.
  void accept(std::unique_ptr<TcpStream> s, Message hello);
  // The set changed in etcd behind the engine's back (an operator's promote, seen by the
  // daemon's watch): re-read and adopt it. On the volume's loop.
  Task<Status> reload(std::string why);
  // Planned maintenance (drain): this replica leaves the in-sync set by CAS while the link is up,
  // so the peer goes on ordering writes and tracks what this one misses; on return only those
  // regions are copied. Refused when the peer is not a member (the volume would have none).
  Task<Status> step_down(std::string reason);
  // The peer's node is drained: as the owner, copy what it lacks but do not add it back to the
  // set until the hold is lifted (it may be stopped at any time; a member would cost a freeze).
  // Releasing also resyncs a linked peer that stepped down while this node kept the order.
  void hold_peer(bool held);
  // The volume's size in the catalogue grew to `target`. The caller first makes the local replica
  // (the pool object) and the metadata's device large enough; this records the target and starts
  // the task that commits it: on the owner, under the lock of the whole volume, the peer's
  // metadata first (a `grow` message), then its own; the peer then serves the new size too. A
  // peer out of the in-sync set does not hold the owner back: it grows before its resync.
  // Returns at once (progress: status().grow); never shrinks. On the volume's loop.
  Status grow(std::uint64_t target);
  // Closes the link (the connector dials again); for operators and tests.
  void disconnect(const std::string& why);
  // Stops the link and the background tasks, persists the metadata (clean close).
  Task<Status> stop();

  MirrorStatus status() const;
  // The in-sync set this node acts on (read-only, on the volume's loop). Cheap enough to read
  // for every SCSI command: the iSCSI LUs derive their ALUA states from it.
  const InSyncSet& in_sync_set() const { return set_; }
  // This node is cut off (MirrorStatus::cut_off): its iSCSI ports report their group unavailable.
  bool cut_off() const { return cut_off_ && !link_up(); }
  // Online verify, on the owner with its peer in step: compares the replicas region by region
  // (CRC32C per 4 KiB, the region's writes held off meanwhile) while I/O goes on. With `repair`,
  // a differing block is copied from the owner's replica over the peer's.
  Task<Result<VerifyReport>> verify(bool repair);
  const MirrorOptions& options() const { return o_; }

  // --- BlockVolume ---
  const std::string& name() const override { return local_->name(); }
  Uuid uuid() const override { return local_->uuid(); }
  // Not the local replica's size: that grows first, the served size only once both replicas can
  // hold it. Always the metadata record's size (which covers the bitmap and the activity log).
  std::uint64_t size() const override { return size_.load(std::memory_order_relaxed); }
  bool read_only() const override { return false; }
  std::uint32_t preferred_block_size() const override { return local_->preferred_block_size(); }
  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) override;
  Task<Status> flush() override;
  Task<Status> trim(std::uint64_t offset, std::uint64_t length) override;
  Task<Status> write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) override;
  // Atomic across both nodes: the owner compares and writes under its range lock, the other node
  // forwards the pair (docs/mirror.md "COMPARE AND WRITE").
  Task<Result<volume::CompareOutcome>> compare_and_write(std::uint64_t offset,
                                                         std::span<const std::byte> expected,
                                                         std::span<const std::byte> data, bool fua) override;
  // SCSI persistent reservations (opaque here): changed on the owner one at a time and installed
  // on the peer before the change is answered; at link-up the newer side sends its state.
  bool attach_shared_state(std::weak_ptr<volume::SharedStateKeeper> k) override;
  Task<Result<std::vector<std::byte>>> shared_change(std::vector<std::byte> request) override;
  Result<std::vector<volume::Extent>> block_status(std::uint64_t offset, std::uint64_t length) const override;
  Result<std::vector<volume::Extent>> changed_since(const std::string& snapshot, std::uint64_t offset,
                                                    std::uint64_t length) const override;

 private:
  enum class PeerMode { absent, catching_up, in_step };
  struct Op {
    wire::Op op = wire::Op::write;
    std::uint64_t offset = 0, length = 0;
    std::span<const std::byte> data;  // compare_write: the bytes to compare, then those to write
    std::uint8_t flags = 0;
    volume::CompareOutcome* outcome = nullptr;  // compare_write: where the result goes
  };

  bool is_owner() const { return set_.owner == o_.node && set_.has(o_.node); }
  bool member() const { return set_.has(o_.node); }
  bool peer_member() const { return set_.has(o_.peer); }
  bool link_up() const;
  bool may_read_locally() const;
  wire::Header header(wire::Type t) const;

  Task<Status> mutate(Op op);
  Task<Status> owner_mutate(Op op);
  Task<Status> write_local(const Op& op);
  Task<Status> refresh(std::string why);
  Task<bool> may_read();
  Task<Status> forward(Op op);
  Task<Status> forward_read(std::uint64_t offset, std::span<std::byte> buf);
  Task<Status> peer_lost(std::string reason);
  Task<Status> leave(std::string reason, bool failed);
  Task<Status> decide(std::string reason);  // peer_lost's body, under decide_
  Task<Status> probe_arbiter();             // under decide_: a cut-off node fails fast
  void set_cut_off(bool on, const std::string& why);
  Task<Status> wait_for_link(std::chrono::milliseconds limit);
  Task<Result<std::vector<std::byte>>> owner_shared(std::span<const std::byte> request);
  Task<Status> push_shared(bool with_events, bool force);
  Status install_shared(std::span<const std::byte> blob, std::uint64_t version, bool force);

  Task<void> handle(std::shared_ptr<Channel> ch, Message m);
  Task<void> attach(std::shared_ptr<Channel> ch, Hello peer);
  void link_down(Channel* ch, const Status& why);
  // A TLS link could not be set up: why, in the log and as the last event (once per reason).
  void tls_refused(const std::string& reason);
  Hello my_hello() const;
  Task<void> connector();
  Task<void> persister();
  Task<void> resync(std::shared_ptr<Channel> ch);
  struct ResyncWindow;
  Task<void> copy_chunk(std::shared_ptr<Channel> ch, ResyncWindow* w, std::uint64_t off, std::uint64_t len);
  Task<Status> settle_copied(std::shared_ptr<Channel> ch, ResyncWindow* w);
  Task<Status> adopt(InSyncSet s, std::string why);
  void follow_ownership(bool was_owner);  // adopt's link state for the new set; never suspends
  void event(std::string what);
  void start_resync(std::shared_ptr<Channel> ch);
  // --- growing (docs/mirror.md "Growing a mirrored volume") ---
  Status lineage(const Hello& peer) const;  // refuses a replica of another volume; sizes may differ
  Task<void> grower();
  Task<Status> grow_step();
  Task<Status> grow_local(std::uint64_t want);
  Task<Status> grow_peer(std::shared_ptr<Channel> ch, std::uint64_t want);
  Task<Status> handle_grow(wire::Header h);
  // A write beyond the end that the owner is committing a grow to waits for it; true: in range now.
  Task<bool> in_range_after_grow(std::uint64_t offset, std::uint64_t length);
  // The owner's link with a peer of another size: bring the sizes together, then link as usual.
  Task<void> link_sized(std::shared_ptr<Channel> ch, Hello peer);
  void link_as_owner(const Hello& peer);

  EventLoop* loop_;
  std::unique_ptr<volume::BlockVolume> local_;
  std::unique_ptr<ReplicaMeta> meta_;
  std::shared_ptr<Arbiter> arbiter_;
  PeerLocator locate_;
  MirrorOptions o_;

  InSyncSet set_;
  AsyncMutex adopt_mu_;  // one adoption at a time: records are written in the order of their sets
  RangeLock lock_;
  AsyncMutex decide_;
  // Decisions that ran out of freeze_timeout, and the last one's error: a caller that waited for
  // decide_ while one failed fails with it rather than freezing again (see peer_lost).
  std::uint64_t decisions_failed_ = 0;
  Status last_decision_failure_;
  bool cut_off_ = false;
  std::chrono::steady_clock::time_point cut_off_probed_{};
  std::shared_ptr<Channel> chan_;
  PeerMode peer_mode_ = PeerMode::absent;
  bool peer_held_ = false;
  bool peer_caught_up_ = true;  // non-owner: false while the owner resyncs us (reads forwarded)
  // The peer's disk failed (its notice before it left the set): not resynced over this link, only
  // after it links again and its hello says what its replica is (a full copy for `inconsistent`).
  bool peer_disk_failed_ = false;
  bool local_failed_ = false;  // this replica left the set on a disk error (until a restart)
  std::chrono::steady_clock::time_point lease_until_{};
  bool stopping_ = false;
  int background_ = 0;
  WaitQueue background_done_;
  WaitQueue link_changed_;
  std::uint64_t seq_ = 0;
  int app_writes_ = 0;            // application writes in owner_mutate now (the resync yields to them)
  std::uint64_t peer_marks_ = 0;  // regions marked dirty for the peer by failed writes (a count)
  std::uint64_t resync_total_ = 0, resync_done_ = 0;
  double resync_rate_ = 0;
  std::string last_event_;
  bool verifying_ = false;
  std::uint64_t verify_total_ = 0, verify_done_ = 0, verify_mismatches_ = 0;
  // Growing. size_: what is served, always the metadata record's size. target_: what grow() asked
  // for. growing_to_: the size the owner is committing right now (writes up to it wait, see
  // in_range_after_grow). peer_size_/peer_grows_: the peer's size and whether it speaks `grow`,
  // from its hello and the last grow reply (meaningful while the link is up).
  std::atomic<std::uint64_t> size_{0};
  std::uint64_t target_ = 0;
  std::uint64_t growing_to_ = 0;
  WaitQueue grown_;
  bool grower_running_ = false;
  std::string grow_note_;
  std::uint64_t peer_size_ = 0;
  bool peer_grows_ = false;
  bool peer_hints_ = false;  // the peer takes al_hint (its hello lists the feature)
  // Shared state: the front-end that keeps it (null: none here yet; a push is kept in
  // pending_shared_ for it), the owner's order of changes and the version this node holds.
  std::weak_ptr<volume::SharedStateKeeper> keeper_;
  std::vector<std::byte> pending_shared_;
  AsyncMutex shared_mu_;
  std::uint64_t shared_version_ = 0;
};

}  // namespace duplex::mirror
