#include "duplex/mirror/mirror_volume.h"

#include <algorithm>
#include <cstring>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "duplex/base/buffer.h"
#include "duplex/base/crc32c.h"
#include "duplex/base/endian.h"

namespace duplex::mirror {

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::span<const std::byte> as_bytes(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
std::string_view as_text(std::span<const std::byte> v) {
  return {reinterpret_cast<const char*>(v.data()), v.size()};
}
Task<Status> failed(Status s) { co_return s; }
Status reply_status(const Message& m) {
  if (m.header.status == 0) return Status::ok();
  return Status::error(static_cast<Errc>(m.header.status), "peer answered {}",
                       errc_name(static_cast<Errc>(m.header.status)));
}
// The owner's `state` notice: the set it acts on (it made or read it in etcd) and why. A node
// whose disk failed sends kDiskFailedNote with its set just before it leaves that set.
constexpr const char* kDiskFailedNote = "local replica failed";
std::string state_notice(const InSyncSet& set, const std::string& note) {
  nlohmann::json j{
      {"generation", set.generation}, {"members", set.members}, {"owner", set.owner}, {"note", note}};
  return j.dump();
}
std::optional<InSyncSet> parse_notice(std::string_view text, std::string* note) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("generation") ||
      !j["generation"].is_number_unsigned() || !j.contains("members") || !j["members"].is_array() ||
      !j.contains("owner") || !j["owner"].is_string())
    return std::nullopt;
  InSyncSet s;
  s.generation = j["generation"].get<std::uint64_t>();
  for (const auto& m : j["members"]) {
    if (!m.is_string()) return std::nullopt;
    s.members.push_back(m.get<std::string>());
  }
  s.owner = j["owner"].get<std::string>();
  if (j.contains("note") && j["note"].is_string()) *note = j["note"].get<std::string>();
  return s;
}
// One CRC32C per kDigestBlock (the last block cut at the end of `data`), big-endian.
std::vector<std::byte> digest_of(std::span<const std::byte> data) {
  std::vector<std::byte> out;
  out.reserve((data.size() + wire::kDigestBlock - 1) / wire::kDigestBlock * 4);
  for (std::size_t at = 0; at < data.size(); at += wire::kDigestBlock) {
    const auto n = std::min<std::size_t>(wire::kDigestBlock, data.size() - at);
    std::array<std::byte, 4> be{};
    store_be<std::uint32_t>(be.data(), crc32c_span(data.subspan(at, n)));
    out.insert(out.end(), be.begin(), be.end());
  }
  return out;
}
std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}
}  // namespace

MirrorVolume::MirrorVolume(EventLoop* loop, std::unique_ptr<volume::BlockVolume> local,
                           std::unique_ptr<ReplicaMeta> meta, std::shared_ptr<Arbiter> arbiter,
                           PeerLocator locate, MirrorOptions o)
    : loop_(loop),
      local_(std::move(local)),
      meta_(std::move(meta)),
      arbiter_(std::move(arbiter)),
      locate_(std::move(locate)),
      o_(std::move(o)) {
  size_.store(meta_->record().size, std::memory_order_relaxed);
  // The activity log may drop an extent only once our data writes there are durable.
  meta_->set_before_evict([v = local_.get()]() -> Task<Status> { co_return co_await v->flush(); });
}

MirrorVolume::~MirrorVolume() = default;

void MirrorVolume::event(std::string what) {
  spdlog::info("event=mirror.{} volume={} node={} generation={}", what, local_->name(), o_.node,
               set_.generation);
  last_event_ = std::move(what);
}

wire::Header MirrorVolume::header(wire::Type t) const {
  wire::Header h;
  h.type = t;
  h.volume = local_->uuid();
  h.generation = set_.generation;
  return h;
}

bool MirrorVolume::link_up() const { return chan_ && chan_->up(); }

// Local reads need: our replica in the set and current, and either the peer outside the set
// (only a CAS could bring it back) or a read lease (the peer answered a ping within `lease`), so
// that a peer which removed us by CAS cannot have acknowledged a write we would not show.
bool MirrorVolume::may_read_locally() const {
  if (!member() || meta_->record().state != ReplicaState::in_sync) return false;
  if (!is_owner() && !peer_caught_up_) return false;
  if (!peer_member()) return true;
  return Clock::now() < lease_until_ || (link_up() && Clock::now() < chan_->last_pong_for() + o_.lease);
}

Task<Status> MirrorVolume::start() {
  if (local_->size() < size())
    co_return Status::error(Errc::corrupt,
                            "volume {}: the metadata covers {} bytes, the local replica holds {}", name(),
                            size(), local_->size());
  auto s = co_await arbiter_->read();
  if (!s.is_ok()) co_return s.status();
  const bool crashed = o_.crashed;
  auto st = co_await adopt(*s, "start");
  if (!st.is_ok()) co_return st;
  if (crashed && member() && peer_member()) {
    // Writes acknowledged before the crash may be missing here (they were not flushed yet), and
    // the peer holds them: this replica leaves the set, so that it serves nothing until the peer
    // has copied back what our activity log says may differ.
    if (st = co_await leave("recovered from a crash", false); !st.is_ok()) co_return st;
  }
  auto self = shared_from_this();
  if (o_.dial) {
    ++background_;
    spawn(connector(), [self] {
      if (--self->background_ == 0) self->background_done_.notify_all();
    });
  }
  ++background_;
  spawn(persister(), [self] {
    if (--self->background_ == 0) self->background_done_.notify_all();
  });
  co_return Status::ok();
}

// Makes `s` the set this node acts on and brings the replica's persistent state in line: a
// member that is current records the generation; a node outside the set is outdated (it never
// serves its own data again until resynced).
//
// Everything a write looks at (the set, the peer's mode, the dirty bits) changes in one step,
// before the first suspension: a write that runs while the record is being written sees the new
// set together with the link state that goes with it. (With the set first and the link state
// after the record, a write in between found this node the owner with the link "absent" and
// took the in-step peer out of the set.) The record follows; adopt_mu_ keeps two adoptions'
// records in the order of their sets, and a set older than the one in force is not adopted.
Task<Status> MirrorVolume::adopt(InSyncSet s, std::string why) {
  co_await adopt_mu_.lock();
  AsyncUnlock unlock{adopt_mu_};
  if (s.generation < set_.generation) co_return Status::ok();
  const bool was_owner = is_owner();
  set_ = std::move(s);
  MetaRecord r = meta_->record();
  bool record = false;  // r differs from what is durable
  if (set_.has(o_.node) && r.state != ReplicaState::in_sync) {
    // A member without being current. We decide only as a member, so no CAS of ours did this:
    // either the owner added us back after our resync was complete (it copied everything that
    // differed: our own dirty ranges are settled), or an operator promoted this replica alone,
    // accepting what it lacks (docs/mirror.md, "Rolling failure"); then our dirty ranges are
    // what the other replica lacks, and stay for its resync.
    r.state = ReplicaState::in_sync;
    r.generation = set_.generation;
    record = true;
    if (set_.members.size() == 1) {
      spdlog::warn("event=mirror.promoted volume={} node={} generation={} reason=\"{}\"", local_->name(),
                   o_.node, set_.generation, why);
    } else {
      meta_->clear_dirty(0, size());  // before any write of the new set can mark a range
    }
  } else if (set_.has(o_.node)) {
    // A member can only have fallen behind the set's generation through changes it took part
    // in (its own CAS) or that kept it in: record the new generation.
    record = r.generation != set_.generation;
    r.generation = set_.generation;
  } else if (r.state == ReplicaState::in_sync) {
    r.state = ReplicaState::outdated;
    record = true;
    spdlog::warn("event=mirror.outdated volume={} node={} generation={} members={} reason=\"{}\"",
                 local_->name(), o_.node, set_.generation, join(set_.members), why);
  }
  event(fmt::format("set generation={} members={} owner={} ({})", set_.generation, join(set_.members),
                    set_.owner, why));
  follow_ownership(was_owner);
  if (record) co_return co_await meta_->update(r);
  co_return Status::ok();
}

// Ownership moved. Whoever orders writes must know the state of the link to the peer: the new
// owner replicates to a peer that is a member (it held every acknowledged write: it was the
// owner, or it just resynced us), and resyncs one that is not. Does not suspend (see adopt).
void MirrorVolume::follow_ownership(bool was_owner) {
  if (was_owner && !is_owner()) {
    peer_mode_ = PeerMode::absent;
  } else if (!was_owner && is_owner() && link_up()) {
    peer_caught_up_ = true;
    if (peer_size_ < size() || (peer_size_ > size() && !peer_member())) {
      // Sizes differ (a grow did not reach both): the peer takes no write and no resync before
      // they agree. Linking again goes through attach(), which brings them together first.
      chan_->close(Status::error(Errc::conflict, "{} serves {} bytes, {} serves {}: linking again to grow",
                                 o_.peer, peer_size_, o_.node, size()));
    } else if (peer_member()) {
      peer_mode_ = PeerMode::in_step;
      event("peer in step (ownership moved here)");
    } else if (peer_disk_failed_) {
      event("peer's disk failed: no resync until it links again");
    } else if (peer_mode_ == PeerMode::absent) {
      peer_mode_ = PeerMode::catching_up;
      auto self = shared_from_this();
      ++background_;
      spawn(resync(chan_), [self] {
        if (--self->background_ == 0) self->background_done_.notify_all();
      });
    }
  }
  if (is_owner() && !peer_member() && peer_disk_failed_ && peer_mode_ == PeerMode::in_step) {
    // The peer left on a disk error: it takes no write before it restarts and links again
    // (attach() then decides its resync), so writes are no longer sent to it.
    peer_mode_ = PeerMode::absent;
    event("peer's disk failed: writes are no longer sent to it");
  }
}

// Re-reads the set from the arbiter (the peer showed a newer generation than ours).
Task<Status> MirrorVolume::refresh(std::string why) {
  auto s = co_await arbiter_->read();
  if (!s.is_ok()) co_return s.status();
  if (s->generation < set_.generation) co_return Status::ok();
  co_return co_await adopt(*s, why);
}

Task<Status> MirrorVolume::reload(std::string why) {
  co_await decide_.lock();
  Status st = co_await refresh(why);
  decide_.unlock();
  co_return st;
}

// May this node answer a read from its own replica now? Renews the read lease with a ping round
// trip when only the lease is missing (e.g. just after the link came up).
Task<bool> MirrorVolume::may_read() {
  if (may_read_locally()) co_return true;
  if (!member() || meta_->record().state != ReplicaState::in_sync || (!is_owner() && !peer_caught_up_) ||
      !link_up())
    co_return false;
  auto ch = chan_;
  if (!(co_await ch->renew(o_.lease))) co_return false;
  co_return may_read_locally();
}

// --- the write path -----------------------------------------------------------------------------

// Not coroutines: each hands mutate() its Op by value (no extra frame per I/O, and no braced
// temporary inside a co_await, which GCC 12 mishandles).
Task<Status> MirrorVolume::write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) {
  return mutate(Op{wire::Op::write, offset, buf.size(), buf, fua ? wire::kFlagFua : std::uint8_t{0}});
}
Task<Status> MirrorVolume::trim(std::uint64_t offset, std::uint64_t length) {
  return mutate(Op{wire::Op::trim, offset, length, {}, 0});
}
Task<Status> MirrorVolume::write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) {
  std::uint8_t f = 0;
  if (no_unmap) f |= wire::kFlagNoUnmap;
  if (fua) f |= wire::kFlagFua;
  return mutate(Op{wire::Op::write_zeroes, offset, length, {}, f});
}

Task<Result<volume::CompareOutcome>> MirrorVolume::compare_and_write(std::uint64_t offset,
                                                                     std::span<const std::byte> expected,
                                                                     std::span<const std::byte> data,
                                                                     bool fua) {
  if (expected.size() != data.size())
    co_return Status::error(Errc::invalid, "compare and write: {} bytes to compare, {} to write",
                            expected.size(), data.size());
  if (expected.size() > wire::kMaxPayload / 2)
    co_return Status::error(Errc::invalid, "compare and write of {} bytes is too large", expected.size());
  // One payload, as it is forwarded: what to compare, then what to write.
  std::vector<std::byte> both(expected.size() * 2);
  std::copy(expected.begin(), expected.end(), both.begin());
  std::copy(data.begin(), data.end(), both.begin() + static_cast<std::ptrdiff_t>(expected.size()));
  volume::CompareOutcome out;
  Op op{wire::Op::compare_write, offset, expected.size(), both, fua ? wire::kFlagFua : std::uint8_t{0}, &out};
  Status st = co_await mutate(op);
  if (!st.is_ok()) co_return st;
  co_return out;
}

// --- front-end shared state (SCSI persistent reservations) ---------------------------------------

bool MirrorVolume::attach_shared_state(std::weak_ptr<volume::SharedStateKeeper> k) {
  keeper_ = std::move(k);
  if (auto keeper = keeper_.lock(); keeper && !pending_shared_.empty()) {
    // Received before the front-end was there: the state, without the events (they are old).
    if (Status st = keeper->import_state(pending_shared_, false); !st.is_ok())
      spdlog::warn("event=mirror.shared_state_refused volume={} node={} reason=\"{}\"", name(), o_.node,
                   st.message());
    pending_shared_.clear();
  }
  return true;
}

Status MirrorVolume::install_shared(std::span<const std::byte> blob, std::uint64_t version, bool force) {
  if (!force && version <= shared_version_) return Status::ok();  // an older push overtaken by a newer one
  shared_version_ = version;
  auto keeper = keeper_.lock();
  if (!keeper) {
    pending_shared_.assign(blob.begin(), blob.end());
    return Status::ok();
  }
  return keeper->import_state(blob, true);
}

Task<Status> MirrorVolume::push_shared(bool with_events, bool force) {
  if (!link_up()) co_return Status::error(Errc::unavailable, "no link to {}", o_.peer);
  std::vector<std::byte> blob;
  if (auto keeper = keeper_.lock())
    blob = keeper->export_state(with_events);
  else if (!pending_shared_.empty())
    blob = pending_shared_;
  else
    co_return Status::ok();  // nothing kept here: nothing to give
  wire::Header h = header(wire::Type::shared_state);
  h.seq = shared_version_;
  if (force) h.flags = wire::kFlagForce;
  auto ch = chan_;
  // With events the peer answers once the commands they abort there have ended (settle()), which
  // takes as long as a write can: up to replicate_timeout + freeze_timeout.
  const auto timeout = with_events ? (2 * o_.replicate_timeout) + o_.freeze_timeout : o_.replicate_timeout;
  auto r = co_await ch->call(h, blob, timeout);
  co_return r.is_ok() ? reply_status(*r) : r.status();
}

// At the owner, one change at a time: applied here, then installed on the peer before the answer,
// so a change acknowledged through either node is enforced through both (docs/multipath.md).
Task<Result<std::vector<std::byte>>> MirrorVolume::owner_shared(std::span<const std::byte> request) {
  co_await shared_mu_.lock();
  AsyncUnlock unlock{shared_mu_};
  if (!is_owner()) co_return Status::error(Errc::busy, "{} no longer orders changes of {}", o_.node, name());
  auto keeper = keeper_.lock();
  if (!keeper)
    co_return Status::error(Errc::unavailable, "no front-end keeps the shared state of {} here", name());
  bool changed = false;
  std::vector<std::byte> answer = keeper->apply_change(request, changed);
  if (!changed) co_return answer;
  ++shared_version_;
  if (!link_up()) {
    if (peer_member())
      if (auto st = co_await peer_lost(fmt::format("{} unreachable (shared state)", o_.peer)); !st.is_ok())
        co_return st;
  } else {
    // The peer installs the change and ends the commands it aborts there before it answers.
    Status pushed = co_await push_shared(true, false);
    if (!pushed.is_ok() && peer_member()) {
      if (auto st =
              co_await peer_lost(fmt::format("shared state to {} failed: {}", o_.peer, pushed.message()));
          !st.is_ok())
        co_return st;
    }
  }
  // And here: a PREEMPT AND ABORT or a LUN RESET is answered only once no command it aborted, on
  // either node, can still touch the volume. The change is in place on both nodes: the order of
  // changes is released first, because an aborted write may wait for the range lock, which the
  // resync holds while it waits for that order (rejoin). Held across the push: settle() needs
  // only what the keeper owns, never the LU itself.
  unlock.release();
  co_await keeper->settle();
  co_return answer;
}

Task<Result<std::vector<std::byte>>> MirrorVolume::shared_change(std::vector<std::byte> request) {
  if (stopping_) co_return Status::error(Errc::shutdown, "volume {} is stopping", name());
  const auto until = Clock::now() + o_.link.timeout;
  for (int attempt = 0; attempt < 64 && Clock::now() < until; ++attempt) {
    if (is_owner()) {
      auto r = co_await owner_shared(request);
      if (r.is_ok() || r.status().code() != Errc::busy) co_return r;
      continue;
    }
    if (!link_up()) break;
    auto ch = chan_;
    // The owner applies the change, pushes it to us (push_shared: up to 2 x replicate_timeout +
    // freeze_timeout when it aborts commands) and waits for its own aborted commands.
    auto r = co_await ch->call(header(wire::Type::shared_call), request,
                               (3 * o_.replicate_timeout) + (2 * o_.freeze_timeout));
    if (!r.is_ok()) break;
    Status st = reply_status(*r);
    if (st.is_ok()) co_return std::vector<std::byte>(r->payload.begin(), r->payload.end());
    if (st.code() == Errc::conflict) {
      if (auto f = co_await refresh("the owner refused our generation"); !f.is_ok()) co_return f;
      continue;
    }
    if (st.code() == Errc::busy) {
      co_await sleep_for(loop_, milliseconds(std::min(10 << std::min(attempt, 5), 200)));
      continue;
    }
    co_return st;
  }
  if (is_owner()) co_return Status::error(Errc::io_error, "volume {}: ownership kept changing", name());
  if (!member())
    co_return Status::error(Errc::unavailable,
                            "volume {}: this replica is not in sync and the owner is unreachable", name());
  if (auto st = co_await peer_lost(fmt::format("owner {} unreachable", o_.peer)); !st.is_ok()) co_return st;
  if (!is_owner())
    co_return Status::error(Errc::io_error, "volume {}: no in-sync replica orders changes", name());
  co_return co_await owner_shared(request);
}

Task<Status> MirrorVolume::mutate(Op op) {
  if (op.offset > size() || op.length > size() - op.offset) {
    // Past the end: fails, unless it waits for a grow the owner is committing (the peer serves
    // the new size from the grow's first step on).
    const bool grown = co_await in_range_after_grow(op.offset, op.length);
    if (!grown) co_return Status::error(Errc::out_of_range, "{}+{} beyond {}", op.offset, op.length, size());
  }
  if (stopping_) co_return Status::error(Errc::shutdown, "volume {} is stopping", name());
  // The owner can change under us (a resync completes and the preferred node takes over); a
  // write that meets a node that no longer orders it ("busy") is routed again.
  // Bounded by the link timeout: the other side learns a new set within one etcd read.
  const auto until = Clock::now() + o_.link.timeout;
  for (int attempt = 0; attempt < 64 && Clock::now() < until; ++attempt) {
    if (is_owner()) {
      Status st = co_await owner_mutate(op);
      if (st.code() != Errc::busy) co_return st;
      continue;
    }
    if (!link_up()) break;
    Status st = co_await forward(op);
    if (st.code() == Errc::conflict) {
      // The owner we forwarded to knows a newer set (it may have stepped down): learn it.
      if (auto f = co_await refresh("the owner refused our generation"); !f.is_ok()) co_return f;
      continue;
    }
    if (st.code() == Errc::busy) {
      co_await sleep_for(loop_, milliseconds(std::min(10 << std::min(attempt, 5), 200)));
      continue;
    }
    if (st.is_ok() || st.code() != Errc::unavailable) co_return st;
    break;
  }
  if (is_owner()) co_return Status::error(Errc::io_error, "volume {}: ownership kept changing", name());
  // The owner cannot be reached. A member may take over, by CAS, and then order the write itself.
  if (!member())
    co_return Status::error(Errc::unavailable,
                            "volume {}: this replica is not in sync and the owner is unreachable", name());
  if (auto st = co_await peer_lost(fmt::format("owner {} unreachable", o_.peer)); !st.is_ok()) co_return st;
  if (!is_owner())
    co_return Status::error(Errc::io_error, "volume {}: no in-sync replica can order the write", name());
  co_return co_await owner_mutate(op);
}

// The caller holds a WritePin on the range: the activity log covers it until the write (and any
// mark_dirty after a failure on the peer) is done, however long that takes. Not a coroutine: it
// hands back the local volume's own task (no frame of its own per write).
Task<Status> MirrorVolume::write_local(const Op& op) {
  const bool fua = (op.flags & wire::kFlagFua) != 0;
  switch (op.op) {
    case wire::Op::write: return local_->write(op.offset, op.data, fua);
    case wire::Op::write_zeroes:
      return local_->write_zeroes(op.offset, op.length, (op.flags & wire::kFlagNoUnmap) != 0, fua);
    case wire::Op::trim: return local_->trim(op.offset, op.length);
    default: return failed(Status::error(Errc::invalid, "unknown operation"));
  }
}

// The owner's write (docs/mirror.md "State diagram of one write").
Task<Status> MirrorVolume::owner_mutate(Op op) {
  auto guard = co_await lock_.lock(op.offset, op.length, true);
  if (!is_owner()) co_return Status::error(Errc::busy, "{} no longer orders writes of {}", o_.node, name());
  bool compared = false;
  if (op.op == wire::Op::compare_write) {
    // Compared and written under one exclusive range lock on the node that orders every write
    // of the volume: no write through either node can land in between. The peer gets a write.
    op.outcome->matched = false;
    AlignedBuffer current(op.length);
    if (Status rs = co_await local_->read(op.offset, current.span()); !rs.is_ok()) co_return rs;
    const auto expected = op.data.first(op.length);
    const auto diff = std::mismatch(expected.begin(), expected.end(), current.span().begin());
    if (diff.first != expected.end()) {
      op.outcome->miscompare_at = static_cast<std::uint64_t>(diff.first - expected.begin());
      co_return Status::ok();
    }
    op.outcome->matched = true;
    compared = true;
    op.op = wire::Op::write;
    op.data = op.data.subspan(op.length, op.length);
  }
  // The activity log covers the range already (no coroutine), or is updated first.
  ReplicaMeta::WritePin pin;
  if (auto hot = meta_->try_pin_hot(op.offset, op.length)) {
    pin = std::move(*hot);
  } else {
    if (peer_hints_ && peer_mode_ != PeerMode::absent && link_up()) {
      // The peer logs the range while we do, instead of once our update is done and the
      // replicate arrives: the two log writes and flushes overlap (al_hint never narrows its log).
      wire::Header hint = header(wire::Type::al_hint);
      hint.offset = op.offset;
      hint.length = op.length;
      (void)chan_->send_now(hint);
    }
    auto cold = co_await meta_->pin_write(op.offset, op.length);
    if (!cold.is_ok()) co_return cold.status();
    pin = std::move(*cold);
  }
  ++app_writes_;
  struct Done {
    int& n;
    ~Done() { --n; }
  } done{app_writes_};
  std::shared_ptr<Channel> ch = (peer_mode_ != PeerMode::absent && link_up()) ? chan_ : nullptr;
  // Both halves at once: the replicate message is queued first (start_call does not wait), then
  // this node writes its own replica while the peer writes its copy; the reply is awaited last.
  // No coroutine per half and no join: a write costs the frames of its two I/Os only.
  Channel::Call call;
  if (ch) {
    wire::Header h = header(wire::Type::replicate);
    h.op = op.op;
    h.flags = op.flags;
    h.seq = ++seq_;
    h.offset = op.offset;
    h.length = op.length;
    ch->start_call(call, h, op.data, o_.replicate_timeout);
  }
  const Status local_st = co_await write_local(op);
  Status remote_st;
  if (ch) {
    auto r = co_await call;
    remote_st = r.is_ok() ? reply_status(*r) : r.status();
  } else {
    remote_st = Status::error(Errc::unavailable, "no link to {}", o_.peer);
  }
  if (!local_st.is_ok()) {
    // Our disk failed: this replica leaves the set and the peer orders from now on. The write
    // stands if the peer has it and the set now names the peer alone.
    spdlog::error("event=mirror.local_error volume={} node={} error=\"{}\"", name(), o_.node,
                  local_st.message());
    if (!remote_st.is_ok() || peer_mode_ != PeerMode::in_step) co_return local_st;
    if (auto st = co_await leave(local_st.message(), true); !st.is_ok()) co_return st;
    co_return Status::ok();
  }
  if (!remote_st.is_ok()) {
    // Marked first, whatever follows: our replica now holds data the peer may lack. If we turn
    // out to be deposed, this bit is what tells the new owner to copy the range back over ours.
    meta_->mark_dirty(op.offset, op.length);
    ++peer_marks_;  // a resync must not clear this mark with a copy made before it
    if (remote_st.code() == Errc::conflict) {
      // The peer knows a newer in-sync set than ours: learn it, then route the write again.
      if (auto st = co_await refresh("the peer refused our generation"); !st.is_ok()) co_return st;
      // A matched compare has written our replica: routed again, it would be compared with the
      // data it wrote itself. It fails instead (its data may or may not stand, as for any
      // failed write); the host re-reads and retries.
      if (compared)
        co_return Status::error(Errc::io_error, "volume {}: the in-sync set changed during compare and write",
                                name());
      co_return Status::error(Errc::busy, "the in-sync set of {} changed", name());
    }
    if (peer_member()) {
      if (auto st =
              co_await peer_lost(fmt::format("replicate to {} failed: {}", o_.peer, remote_st.message()));
          !st.is_ok())
        co_return st;
    } else if (ch && peer_mode_ == PeerMode::catching_up) {
      ch->close(Status::error(Errc::io_error, "replicate during resync failed: {}", remote_st.message()));
    }
  }
  co_return Status::ok();
}

Task<Status> MirrorVolume::forward(Op op) {
  wire::Header h = header(wire::Type::write);
  h.op = op.op;
  h.flags = op.flags;
  h.offset = op.offset;
  h.length = op.length;
  auto ch = chan_;
  auto r = co_await ch->call(h, op.data, o_.replicate_timeout + o_.freeze_timeout);
  if (!r.is_ok())
    co_return Status::error(Errc::unavailable, "forward to {}: {}", o_.peer, r.status().message());
  Status st = reply_status(*r);
  if (st.is_ok() && op.op == wire::Op::compare_write) {
    op.outcome->matched = (r->header.flags & wire::kFlagMiscompare) == 0;
    op.outcome->miscompare_at = op.outcome->matched ? 0 : r->header.offset;
  }
  co_return st;
}

// This node's replica failed: remove it from the set (the peer orders and serves from then on;
// this node forwards). Only with a peer that is a member, else the volume would have none.
Task<Status> MirrorVolume::step_down(std::string reason) {
  // Every write held off: none is ordered here while the peer takes over.
  auto all = co_await lock_.lock(0, size(), true);
  if (member() && (!link_up() || (is_owner() && peer_mode_ != PeerMode::in_step)))
    co_return Status::error(Errc::unavailable, "volume {}: drain needs the peer linked and in step", name());
  co_return co_await leave(std::move(reason), false);
}

Task<Status> MirrorVolume::leave(std::string reason, bool failed) {
  co_await decide_.lock();
  Status st = Status::ok();
  while (member()) {
    if (!peer_member()) {
      st = Status::error(Errc::io_error, "volume {}: the only in-sync replica failed: {}", name(), reason);
      break;
    }
    std::vector<std::string> rest{o_.peer};
    const std::string why = failed ? "local replica failed: " + reason : "stepping down: " + reason;
    if (failed && link_up()) {
      // Told before the compare-and-swap, on the link, ahead of the peer's etcd watch: the
      // peer, owner from then on, must not "resync" us from its bitmap (it would copy nothing,
      // add our broken replica back and hand it the ownership again).
      auto ch = chan_;
      (void)co_await ch->send(header(wire::Type::state), as_bytes(state_notice(set_, kDiskFailedNote)));
      // A ping answered after it: the peer handled the notice (dispatched in order) before it can
      // see our compare-and-swap. The lease answer itself does not matter.
      (void)co_await ch->renew(std::chrono::nanoseconds(1));
    }
    auto r = co_await arbiter_->change(set_.generation, std::move(rest), fmt::format("{}: {}", o_.node, why));
    if (r.is_ok()) {
      peer_mode_ = PeerMode::absent;
      st = co_await adopt(*r, why);
      if (failed) {
        MetaRecord rec = meta_->record();
        local_failed_ = true;
        rec.state = ReplicaState::inconsistent;  // never trusted again without a full copy
        rec.bitmap_complete = false;
        if (auto u = co_await meta_->update(rec); !u.is_ok() && st.is_ok()) st = u;
      }
      break;
    }
    if (r.status().code() != Errc::conflict) {
      st = r.status();
      break;
    }
    if (auto f = co_await refresh("lost the compare-and-swap leaving the set"); !f.is_ok()) {
      st = f;
      break;
    }
  }
  decide_.unlock();
  co_return st;
}

// Freeze before decide: the caller holds its write (unacknowledged) while this removes the peer
// from the in-sync set by compare-and-swap, or finds that it cannot.
Task<Status> MirrorVolume::peer_lost(std::string reason) {
  // Writes that pile up behind a decision that times out fail with it. Deciding again, each for
  // its own freeze_timeout, would hold the n-th queued write n times the bound (seen with a site
  // partition: a write through the cut-off owner failed after 17 s with freeze_timeout 8 s).
  const std::uint64_t failed_before = decisions_failed_;
  co_await decide_.lock();
  Status st = last_decision_failure_;
  if (decisions_failed_ == failed_before) {
    st = co_await probe_arbiter();
    if (st.is_ok()) st = co_await decide(std::move(reason));
  }
  decide_.unlock();
  co_return st;
}

// A node that is cut off (its last decision ran out of freeze_timeout, the link is still down)
// does not freeze again for every I/O: while the arbiter cannot even be read it fails at once,
// so hosts retry on another path instead of waiting out a freeze per command. Probed at most
// once per kCutOffProbe; I/O in between fails with the last probe's answer.
Task<Status> MirrorVolume::probe_arbiter() {
  if (!cut_off_) co_return Status::ok();
  if (link_up()) {
    set_cut_off(false, "the link is up again");
    co_return Status::ok();
  }
  constexpr auto kCutOffProbe = std::chrono::seconds(1);
  if (Clock::now() - cut_off_probed_ < kCutOffProbe) co_return last_decision_failure_;
  cut_off_probed_ = Clock::now();
  auto s = co_await arbiter_->read();
  if (!s.is_ok()) {
    ++decisions_failed_;
    last_decision_failure_ =
        Status::error(Errc::unavailable, "volume {}: cut off from {} and from the arbiter ({})", name(),
                      o_.peer, s.status().message());
    co_return last_decision_failure_;
  }
  set_cut_off(false, "the arbiter answers again");
  if (s->generation > set_.generation)
    if (auto st = co_await adopt(*s, "the arbiter answers again"); !st.is_ok()) co_return st;
  co_return Status::ok();
}

void MirrorVolume::set_cut_off(bool on, const std::string& why) {
  if (cut_off_ == on) return;
  cut_off_ = on;
  if (on) {
    cut_off_probed_ = Clock::now();
    spdlog::error("event=mirror.cut_off volume={} node={} generation={} reason=\"{}\"", name(), o_.node,
                  set_.generation, why);
    event(fmt::format("cut_off: {}", why));
  } else {
    spdlog::warn("event=mirror.cut_off_ended volume={} node={} generation={} reason=\"{}\"", name(), o_.node,
                 set_.generation, why);
    event(fmt::format("cut_off ended: {}", why));
  }
}

Task<Status> MirrorVolume::decide(std::string reason) {
  if (!peer_member() && member()) co_return Status::ok();  // decided meanwhile
  if (!member())
    co_return Status::error(Errc::unavailable, "volume {}: this replica left the in-sync set", name());
  const auto frozen = Clock::now();
  std::uint64_t decided_on = set_.generation;
  spdlog::warn("event=mirror.freeze volume={} node={} generation={} reason=\"{}\"", name(), o_.node,
               set_.generation, reason);
  if (!is_owner()) co_await sleep_for(loop_, o_.tiebreak_delay);  // the preferred site wins a tie
  while (true) {
    if (stopping_) co_return Status::error(Errc::shutdown, "stopping");
    if (set_.generation != decided_on) {
      // The set changed while we waited (tie-break, retry): a link that came back brought the
      // peer's newer set. A CAS on it would let a replica the peer removed (or removed and
      // resynced) take the volume alone; judge the new set instead.
      if (!member())
        co_return Status::error(Errc::unavailable, "volume {}: this replica left the in-sync set", name());
      if (!peer_member()) co_return Status::ok();
      co_return Status::error(Errc::busy, "the in-sync set of {} changed while deciding", name());
    }
    std::vector<std::string> alone{o_.node};
    auto r =
        co_await arbiter_->change(set_.generation, std::move(alone), fmt::format("{}: {}", o_.node, reason));
    if (r.is_ok()) {
      // The peer may still serve reads until its lease lapses: it was renewed at the latest
      // when we last heard from it.
      auto heard = chan_ ? chan_->last_heard() : frozen;
      if (chan_) chan_->close(Status::error(Errc::unavailable, "removed from the in-sync set"));
      peer_mode_ = PeerMode::absent;
      auto st = co_await adopt(*r, reason);
      if (!st.is_ok()) co_return st;
      spdlog::warn("event=mirror.peer_removed volume={} node={} peer={} generation={} reason=\"{}\"", name(),
                   o_.node, o_.peer, set_.generation, reason);
      const auto lease_end = std::max(heard, frozen) + o_.lease;
      if (Clock::now() < lease_end) co_await sleep_for(loop_, lease_end - Clock::now());
      co_return Status::ok();
    }
    if (r.status().code() == Errc::conflict) {
      auto now = co_await arbiter_->read();
      if (now.is_ok()) {
        auto st = co_await adopt(*now, "lost the compare-and-swap: " + reason);
        if (!st.is_ok()) co_return st;
        if (member() && !peer_member()) co_return Status::ok();
        if (!member()) {
          spdlog::warn("event=mirror.fenced volume={} node={} generation={} members={}", name(), o_.node,
                       set_.generation, join(set_.members));
          co_return Status::error(Errc::unavailable,
                                  "volume {}: the peer removed this replica from the in-sync set", name());
        }
        decided_on = set_.generation;
        continue;  // the set changed otherwise (both still members): decide again on it
      }
    }
    if (Clock::now() - frozen > o_.freeze_timeout) {
      spdlog::error("event=mirror.freeze_timeout volume={} node={} reason=\"no decision within {} ms: {}\"",
                    name(), o_.node, o_.freeze_timeout.count(), r.status().message());
      ++decisions_failed_;
      // Not a medium error: this path cannot serve, another may (SCSI: NOT READY, port unavailable).
      last_decision_failure_ =
          Status::error(Errc::unavailable, "volume {}: peer unreachable and no quorum to decide ({})", name(),
                        r.status().message());
      if (!link_up()) set_cut_off(true, last_decision_failure_.message());
      co_return last_decision_failure_;
    }
    co_await sleep_for(loop_, milliseconds(250));
  }
}

// --- reads and flush ----------------------------------------------------------------------------

Task<Status> MirrorVolume::wait_for_link(milliseconds limit) {
  const auto until = Clock::now() + limit;
  while (!link_up() && Clock::now() < until && !stopping_) co_await sleep_for(loop_, milliseconds(20));
  co_return link_up() ? Status::ok() : Status::error(Errc::unavailable, "no link to {}", o_.peer);
}

Task<Status> MirrorVolume::read(std::uint64_t offset, std::span<std::byte> buf) {
  if (offset > size() || buf.size() > size() - offset)
    co_return Status::error(Errc::out_of_range, "{}+{} beyond {}", offset, buf.size(), size());
  if (member() && peer_member() && !link_up() && Clock::now() >= lease_until_) {
    // A member without its peer and without a lease must either see the link come back or
    // remove the peer before it may answer from its own disk. Cut off, it has waited already.
    if (cut_off_ || !(co_await wait_for_link(o_.link.timeout)).is_ok()) {
      if (auto st = co_await peer_lost(fmt::format("{} unreachable (read)", o_.peer)); !st.is_ok())
        co_return st;
    }
  }
  if (co_await may_read()) {
    RangeLock::Guard g;
    if (is_owner()) g = co_await lock_.lock(offset, buf.size(), false);
    Status st = co_await local_->read(offset, buf);
    if (st.is_ok() || st.code() == Errc::out_of_range) co_return st;
    g = RangeLock::Guard{};
    spdlog::error("event=mirror.local_error volume={} node={} error=\"{}\"", name(), o_.node, st.message());
    if (auto l = co_await leave(st.message(), true); !l.is_ok()) co_return st;
  }
  co_return co_await forward_read(offset, buf);
}

Task<Status> MirrorVolume::forward_read(std::uint64_t offset, std::span<std::byte> buf) {
  if (!link_up())
    co_return Status::error(
        Errc::unavailable, "volume {}: this replica may not serve reads and the peer is unreachable", name());
  auto ch = chan_;
  wire::Header h = header(wire::Type::read);
  h.offset = offset;
  h.length = buf.size();
  auto r = co_await ch->call(h, {}, o_.replicate_timeout);
  if (!r.is_ok())
    co_return Status::error(Errc::unavailable, "read from {}: {}", o_.peer, r.status().message());
  if (auto st = reply_status(*r); !st.is_ok()) co_return st;
  if (r->payload.size() != buf.size())
    co_return Status::error(Errc::io_error, "read from {}: short reply", o_.peer);
  std::memcpy(buf.data(), r->payload.data(), buf.size());
  co_return Status::ok();
}

Task<Status> MirrorVolume::flush() {
  if (member()) {
    Status local_st = co_await local_->flush();
    if (!local_st.is_ok()) {
      spdlog::error("event=mirror.local_error volume={} node={} error=\"{}\"", name(), o_.node,
                    local_st.message());
      if (!(co_await leave(local_st.message(), true)).is_ok()) co_return local_st;
    }
  }
  if (!member()) {
    // Not a current replica: what was acknowledged lives on the owner, so the flush goes there.
    if (!link_up())
      co_return Status::error(Errc::unavailable, "volume {}: not in sync and the peer is unreachable",
                              name());
    auto ch = chan_;
    auto r = co_await ch->call(header(wire::Type::flush), {}, o_.replicate_timeout);
    co_return r.is_ok() ? reply_status(*r)
                        : Status::error(Errc::unavailable, "flush on {}: {}", o_.peer, r.status().message());
  }
  // The owner sends flushes only to a peer it replicates to; the other node to the owner.
  if (!link_up() || (is_owner() && peer_mode_ == PeerMode::absent)) {
    if (peer_member() && member()) {
      if (auto st = co_await peer_lost(fmt::format("{} unreachable (flush)", o_.peer)); !st.is_ok())
        co_return st;
    } else if (!member() && !link_up()) {
      co_return Status::error(Errc::unavailable, "volume {}: not in sync and the peer is unreachable",
                              name());
    }
    co_return Status::ok();
  }
  auto ch = chan_;
  auto r = co_await ch->call(header(wire::Type::flush), {}, o_.replicate_timeout);
  Status st = r.is_ok() ? reply_status(*r) : r.status();
  if (!st.is_ok() && peer_member() && member())
    co_return co_await peer_lost(fmt::format("flush on {} failed: {}", o_.peer, st.message()));
  co_return st.is_ok() || !peer_member() ? Status::ok() : st;
}

Result<std::vector<volume::Extent>> MirrorVolume::block_status(std::uint64_t offset,
                                                               std::uint64_t length) const {
  if (may_read_locally()) return local_->block_status(offset, length);
  // Without a current local replica the only safe answer is "data, not known to be zero".
  return std::vector<volume::Extent>{volume::Extent{offset, length, true, false}};
}

Result<std::vector<volume::Extent>> MirrorVolume::changed_since(const std::string& snapshot,
                                                                std::uint64_t offset,
                                                                std::uint64_t length) const {
  if (!may_read_locally()) return Status::error(Errc::unavailable, "volume {}: replica not in sync", name());
  return local_->changed_since(snapshot, offset, length);
}

// --- the link -----------------------------------------------------------------------------------

Hello MirrorVolume::my_hello() const {
  const auto& r = meta_->record();
  Hello h;
  h.volume = local_->uuid();
  h.size = size();
  h.capacity = std::max(local_->size(), size());
  h.grows = true;
  h.al_hints = true;
  h.node = o_.node;
  h.generation = r.generation;
  h.state = std::string(to_string(r.state));
  if (local_failed_ && r.state != ReplicaState::in_sync) h.state = "failed";  // do not resync us yet
  h.set_generation = set_.generation;
  h.shared_version = shared_version_;
  h.clean = !o_.crashed;
  h.hot = meta_->hot_ranges();
  // Bounded: a hello is one message; past this many runs the owner copies everything.
  constexpr std::size_t kMaxRuns = 4096;
  for (std::uint64_t pos = 0; auto run = meta_->next_dirty(pos, size());) {
    if (h.diverged.size() == kMaxRuns) {
      h.diverged.clear();
      h.diverged_all = true;
      break;
    }
    h.diverged.push_back(*run);
    pos = run->first + run->second;
  }
  return h;
}

Task<void> MirrorVolume::connector() {
  auto self = shared_from_this();
  while (!stopping_) {
    if (!link_up()) {
      auto addr = locate_ ? locate_() : std::nullopt;
      if (addr) {
        const std::string cert_name = o_.link_tls_check_name ? o_.peer : std::string();
        auto s = co_await connect_tcp(loop_, addr->host, addr->port, o_.link.timeout, o_.link_tls, cert_name);
        if (!s.is_ok()) {
          // A TLS refusal (certificate, PSK, TLS off at the peer) is a configuration problem an
          // operator must see: the volume's last event, once per distinct reason, not per retry.
          if (o_.link_tls) tls_refused(s.status().message());
        } else {
          auto ch = Channel::make(*loop_, std::move(*s), o_.link);
          std::weak_ptr<MirrorVolume> weak = self;
          Channel* raw = ch.get();
          ch->start(
              [weak](std::shared_ptr<Channel> c, Message m) -> Task<void> {
                if (auto v = weak.lock()) co_await v->handle(std::move(c), std::move(m));
              },
              [weak, raw](const Status& why) {
                if (auto v = weak.lock()) v->link_down(raw, why);
              });
          Hello mine = my_hello();
          // The owner always asks the peer to forward its reads until its `state` notice: only
          // after comparing both hellos does it know whether a resync comes first.
          mine.catch_up = is_owner();
          const std::string text = encode_hello(mine);
          auto r = co_await ch->call(header(wire::Type::hello), as_bytes(text), o_.link.timeout);
          if (!r.is_ok() || r->header.status != 0) {
            // TLS 1.3: a server that refuses our certificate says so after our handshake ended.
            if (o_.link_tls && !r.is_ok()) tls_refused(r.status().message());
            spdlog::warn("event=mirror.link_refused volume={} node={} peer={} reason=\"{}\"", name(), o_.node,
                         o_.peer, r.is_ok() ? std::string(as_text(r->payload)) : r.status().message());
            ch->close(Status::error(Errc::invalid, "hello refused"));
          } else if (auto peer = decode_hello(as_text(r->payload)); !peer.is_ok()) {
            ch->close(peer.status());
          } else if (Status refused = lineage(*peer); !refused.is_ok()) {
            spdlog::error("event=mirror.lineage_refused volume={} node={} peer={} reason=\"{}\"", name(),
                          o_.node, o_.peer, refused.message());
            ch->close(refused);
          } else {
            co_await attach(ch, *peer);
          }
        }
      }
    }
    co_await sleep_for(loop_, o_.connect_retry);
  }
}

void MirrorVolume::tls_refused(const std::string& reason) {
  if (std::string why = fmt::format("link_refused: {}", reason); why != last_event_) {
    spdlog::warn("event=mirror.link_refused volume={} node={} peer={} reason=\"{}\"", name(), o_.node,
                 o_.peer, reason);
    last_event_ = std::move(why);
  }
}

void MirrorVolume::accept(std::unique_ptr<TcpStream> s, Message hello) {
  if (stopping_) {
    s->close();  // a stopped replica takes no link; the dialer retries against its successor
    return;
  }
  auto self = shared_from_this();
  auto ch = Channel::make(*loop_, std::move(s), o_.link);
  std::weak_ptr<MirrorVolume> weak = self;
  Channel* raw = ch.get();
  ch->start(
      [weak](std::shared_ptr<Channel> c, Message m) -> Task<void> {
        if (auto v = weak.lock()) co_await v->handle(std::move(c), std::move(m));
      },
      [weak, raw](const Status& why) {
        if (auto v = weak.lock()) v->link_down(raw, why);
      });
  spawn([](std::shared_ptr<MirrorVolume> v, std::shared_ptr<Channel> c, Message m) -> Task<void> {
    co_await v->handle(std::move(c), std::move(m));
  }(self, ch, std::move(hello)));
}

Task<void> MirrorVolume::attach(std::shared_ptr<Channel> ch, Hello peer) {
  if (const auto known = std::max(peer.generation, peer.set_generation); known > set_.generation) {
    // The peer knows a set we have not seen: decide nothing on our stale view.
    if (auto st = co_await refresh(fmt::format("{} knows generation {}", o_.peer, known)); !st.is_ok()) {
      ch->close(st);
      co_return;
    }
  }
  if (!ch->up() || stopping_) co_return;
  if (chan_ && chan_ != ch) chan_->close(Status::error(Errc::conflict, "replaced by a new link"));
  chan_ = std::move(ch);
  set_cut_off(false, "the link is up again");
  peer_disk_failed_ = peer.state == "failed";  // its hello says what its replica is now
  peer_size_ = peer.size;
  peer_grows_ = peer.grows;
  peer_hints_ = peer.al_hints;
  link_changed_.notify_all();
  spdlog::info(
      "event=mirror.link_up volume={} node={} peer={} peer_generation={} peer_state={} peer_clean={}", name(),
      o_.node, o_.peer, peer.generation, peer.state, peer.clean);
  if (!keeper_.expired() && shared_version_ > peer.shared_version) {
    // Our reservations are newer (the peer restarted, or missed changes while out of the set).
    // Sent first: the channel keeps order, so the peer installs them before anything below.
    spawn([](std::shared_ptr<MirrorVolume> self) -> Task<void> {
      if (Status st = co_await self->push_shared(false, false); !st.is_ok())
        spdlog::warn("event=mirror.shared_state_push_failed volume={} node={} reason=\"{}\"", self->name(),
                     self->o_.node, st.message());
    }(shared_from_this()));
  }
  if (!is_owner()) {
    peer_caught_up_ = !peer.catch_up;
    co_return;
  }
  if (peer_disk_failed_) {
    // Its disk failed: it forwards its I/O to us; copying to it would fail and close the link.
    peer_mode_ = PeerMode::absent;
    event("peer's disk failed: no resync until it links again");
    co_return;
  }
  // A peer of another size missed a grow (or one did not commit on both sides): it gets nothing
  // before the sizes agree. A member that is larger is the exception: it took our `grow` and we
  // did not commit ours yet, so nothing was ever written past our end (the grower commits).
  if (peer.size < size() || (peer.size > size() && !peer_member())) {
    auto self = shared_from_this();
    ++background_;
    spawn(link_sized(chan_, std::move(peer)), [self] {
      if (--self->background_ == 0) self->background_done_.notify_all();
    });
    co_return;
  }
  link_as_owner(peer);
}

// The owner's side of a new link whose peer holds this volume's size: in step at once, or a
// resync of what may differ first.
void MirrorVolume::link_as_owner(const Hello& peer) {
  // Owner: what may differ is what we wrote without the peer (bitmap), plus what either side
  // may have had in flight at a crash (both activity logs).
  // Our own activity log went into our bitmap when the metadata was recovered (ReplicaMeta::open).
  const auto mark = [this](std::uint64_t o, std::uint64_t l) {
    if (o < size()) meta_->mark_dirty(o, std::min(l, size() - o));
  };
  if (!peer.clean)
    for (const auto& [o, l] : peer.hot) mark(o, l);
  for (const auto& [o, l] : peer.diverged) mark(o, l);
  if (peer.diverged_all) meta_->mark_all_dirty();
  // A bitmap we cannot trust, or a peer that is not a finished replica (new, or interrupted
  // mid-resync with a cursor we do not track here): copy everything. Never guess.
  if (!meta_->record().bitmap_complete || meta_->record().peer != o_.peer ||
      (peer.state != "in-sync" && peer.state != "outdated"))
    meta_->mark_all_dirty();
  if (peer_member() && meta_->dirty_bytes() == 0) {
    peer_mode_ = PeerMode::in_step;
    o_.crashed = false;
    event("peer in step");
    spawn([](std::shared_ptr<Channel> c, wire::Header h, std::string text) -> Task<void> {
      (void)co_await c->send(h, as_bytes(text));
    }(chan_, header(wire::Type::state), state_notice(set_, "in step")));
    return;
  }
  peer_mode_ = PeerMode::catching_up;
  start_resync(chan_);
}

void MirrorVolume::start_resync(std::shared_ptr<Channel> ch) {
  auto self = shared_from_this();
  ++background_;
  spawn(resync(std::move(ch)), [self] {
    if (--self->background_ == 0) self->background_done_.notify_all();
  });
}

void MirrorVolume::link_down(Channel* ch, const Status& why) {
  if (chan_.get() != ch) return;
  lease_until_ = chan_->last_pong_for() + o_.lease;
  chan_.reset();
  peer_mode_ = PeerMode::absent;
  link_changed_.notify_all();
  spdlog::warn("event=mirror.link_down volume={} node={} peer={} reason=\"{}\"", name(), o_.node, o_.peer,
               why.message());
}

// Inbound messages from the peer. Each runs as its own coroutine (the channel spawns them).
Task<void> MirrorVolume::handle(std::shared_ptr<Channel> ch, Message m) {
  const wire::Header& h = m.header;
  if (h.volume != local_->uuid()) {
    ch->close(Status::error(Errc::invalid, "message for volume {} on the link of {}", h.volume.to_string(),
                            name()));
    co_return;
  }
  wire::Header rep;
  switch (h.type) {
    case wire::Type::hello: {
      auto peer = decode_hello(as_text(m.payload));
      Status refuse;
      if (!peer.is_ok())
        refuse = peer.status();
      else
        refuse = lineage(*peer);
      if (!refuse.is_ok()) {
        spdlog::error("event=mirror.lineage_refused volume={} node={} reason=\"{}\"", name(), o_.node,
                      refuse.message());
        rep.type = wire::Type::hello_reply;
        rep.status = static_cast<std::int32_t>(refuse.code());
        (void)co_await ch->reply(h, rep, as_bytes(refuse.message()));
        ch->close(refuse);
        co_return;
      }
      Hello mine = my_hello();
      mine.catch_up = is_owner();
      rep = header(wire::Type::hello_reply);
      const std::string text = encode_hello(mine);
      if ((co_await ch->reply(h, rep, as_bytes(text))).is_ok()) co_await attach(ch, *peer);
      co_return;
    }
    case wire::Type::replicate:
    case wire::Type::resync_data: {
      Op op{h.op, h.offset, h.length, m.payload, h.flags};
      if (h.op == wire::Op::write && m.payload.size() != h.length) {
        ch->close(
            Status::error(Errc::invalid, "payload length {} for a write of {}", m.payload.size(), h.length));
        co_return;
      }
      // Made only when needed: formatting a message per replicated write costs an allocation.
      Status st;
      const bool in_range = op.offset <= size() && op.length <= size() - op.offset;
      if (h.generation < set_.generation) {
        // A deposed owner that has not noticed yet: it must learn the new set, not write here.
        st = Status::error(Errc::conflict, "generation {} is older than {}", h.generation, set_.generation);
      } else if (is_owner()) {
        st = Status::error(Errc::conflict, "{} orders the writes of {} itself", o_.node, name());
      } else if (!in_range) {
        st = Status::error(Errc::out_of_range, "beyond the volume");
      } else if (local_failed_) {
        // This replica left the set on a disk error: its store takes nothing until the node
        // restarts and is copied in full (a failed commit there would stop the pool).
        st = Status::error(Errc::unavailable, "the replica of {} on {} failed", name(), o_.node);
      } else if (h.type == wire::Type::resync_data && !member()) {
        // A resync target writes the copy without its activity log (on a large volume every
        // copied extent would otherwise cost a log write and a flush, and an eviction): the owner
        // keeps the region dirty until this replica has flushed it (settle_copied), so a crash
        // here loses nothing the owner does not copy again. A member's resync_data (a verify's
        // repair) and every replicated write are covered by the log first.
        st = co_await write_local(op);
      } else {
        // Not `pin.is_ok() ? co_await ... : ...`: GCC 12 loses the message of a status made that
        // way (seen as garbage bytes in the log, then invalid UTF-8 in the set's reason).
        ReplicaMeta::WritePin pin;
        bool pinned = false;
        if (auto hot = meta_->try_pin_hot(op.offset, op.length)) {
          pin = std::move(*hot);
          pinned = true;
        } else {
          auto cold = co_await meta_->pin_write(op.offset, op.length);
          if (cold.is_ok()) {
            pin = std::move(*cold);
            pinned = true;
          } else {
            st = cold.status();
          }
        }
        if (pinned) st = co_await write_local(op);
        if (pinned && !st.is_ok() && h.type == wire::Type::replicate && member()) {
          // Our disk failed under the owner's write: leave the set ourselves (telling the owner
          // first), as the owner does for its own disk, and forward our I/O from now on.
          spdlog::error("event=mirror.local_error volume={} node={} error=\"{}\"", name(), o_.node,
                        st.message());
          (void)co_await leave(st.message(), true);
        }
      }
      rep.status = static_cast<std::int32_t>(st.code());
      (void)ch->reply_now(h, rep);  // queued, not awaited: a failed send takes the link down
      co_return;
    }
    case wire::Type::write: {
      Status st;
      volume::CompareOutcome compared;
      // The sender acts on a newer set (it may have made us the owner): learn it first.
      if (h.generation > set_.generation) (void)co_await refresh("a forwarded write names a newer set");
      if (h.generation < set_.generation)
        st = Status::error(Errc::conflict, "generation {} is older than {}", h.generation, set_.generation);
      else if (!is_owner())
        st = Status::error(Errc::busy, "{} does not order writes of {}", o_.node, name());
      else if (h.op == wire::Op::compare_write &&
               (h.length > m.payload.size() / 2 || m.payload.size() != 2 * h.length))
        st = Status::error(Errc::invalid, "compare and write of {} bytes with a payload of {}", h.length,
                           m.payload.size());
      else
        st = co_await mutate(Op{h.op, h.offset, h.length, m.payload, h.flags, &compared});
      rep.type = wire::Type::write_reply;
      rep.status = static_cast<std::int32_t>(st.code());
      if (st.is_ok() && h.op == wire::Op::compare_write && !compared.matched) {
        rep.flags = wire::kFlagMiscompare;
        rep.offset = compared.miscompare_at;
      }
      (void)co_await ch->reply(h, rep, {});
      co_return;
    }
    case wire::Type::shared_call: {
      Result<std::vector<std::byte>> r = Status::ok();
      std::vector<std::byte> answer;
      if (h.generation > set_.generation) (void)co_await refresh("a shared-state change names a newer set");
      if (h.generation < set_.generation) {
        r = Status::error(Errc::conflict, "generation {} is older than {}", h.generation, set_.generation);
      } else {
        r = co_await owner_shared(m.payload);
        if (r.is_ok()) answer = std::move(*r);
      }
      rep.type = wire::Type::shared_call_reply;
      rep.status = static_cast<std::int32_t>(r.status().code());
      (void)co_await ch->reply(h, rep, answer);
      co_return;
    }
    case wire::Type::shared_state: {
      rep.type = wire::Type::shared_state_reply;
      const Status st = install_shared(m.payload, h.seq, (h.flags & wire::kFlagForce) != 0);
      rep.status = static_cast<std::int32_t>(st.code());
      // The commands the change aborted here have ended before the owner hears it is installed.
      if (auto keeper = keeper_.lock(); keeper && st.is_ok()) co_await keeper->settle();
      (void)co_await ch->reply(h, rep, {});
      co_return;
    }
    case wire::Type::read: {
      std::vector<std::byte> buf;
      Status st;
      if (h.generation > set_.generation) (void)co_await refresh("a forwarded read names a newer set");
      bool in_range = h.offset <= size() && h.length <= size() - h.offset;
      // Past our end while we commit a grow the sender serves already: wait for the commit.
      if (!in_range) in_range = co_await in_range_after_grow(h.offset, h.length);
      if (!in_range || h.length > wire::kMaxPayload) {
        st = Status::error(Errc::out_of_range, "read beyond the volume");
      } else if (!(co_await may_read())) {
        st = Status::error(Errc::unavailable, "{} may not serve reads of {}", o_.node, name());
      } else {
        buf.resize(h.length);
        RangeLock::Guard g;
        if (is_owner()) g = co_await lock_.lock(h.offset, h.length, false);
        st = co_await local_->read(h.offset, buf);
      }
      rep.type = wire::Type::read_reply;
      rep.status = static_cast<std::int32_t>(st.code());
      if (!st.is_ok()) buf.clear();
      (void)co_await ch->reply(h, rep, buf);
      co_return;
    }
    case wire::Type::flush: {
      // Not `member() ? co_await ... : ...` (GCC 12 can lose the message of a status made so).
      Status st = Status::error(Errc::unavailable, "{} is not in sync", o_.node);
      // A member flushes its replica; so does a resync target for the owner of its set, which
      // clears the regions it copied only once they are durable here (settle_copied). Not a
      // replica that left on a disk error: its store must not be written again (a failed commit
      // there stops the pool) until the node restarts and is copied in full.
      const bool resync_target = !local_failed_ && set_.owner == o_.peer && h.generation >= set_.generation;
      if (member() || resync_target) st = co_await local_->flush();
      rep.type = wire::Type::flush_reply;
      rep.status = static_cast<std::int32_t>(st.code());
      (void)co_await ch->reply(h, rep, {});
      co_return;
    }
    case wire::Type::state: {
      // The owner's notice: we are in step (after a resync, as a member of the new set).
      std::string note;
      auto set = parse_notice(as_text(m.payload), &note);
      if (!set) {
        ch->close(Status::error(Errc::invalid, "bad state notice"));
        co_return;
      }
      if (note == kDiskFailedNote) {
        // Its set is ours; it is about to leave it (MirrorVolume::leave).
        peer_disk_failed_ = true;
        event("peer's disk failed");
        co_return;
      }
      if (set->generation < set_.generation) co_return;  // older than what we know
      if (set->generation == set_.generation && is_owner() && set->owner != o_.node) {
        // Two owners at one generation: a compare-and-swap cannot produce that. Refuse it.
        ch->close(Status::error(Errc::conflict, "two owners claimed for {} at generation {}", name(),
                                set->generation));
        co_return;
      }
      // The sender made or read this set in etcd. It may make us the owner: the placement's
      // first member, added back after our resync.
      (void)co_await adopt(*set, "notice: " + note);
      peer_caught_up_ = member();
      // Only a resync that followed our hello (which said whether we crashed) settles a crash.
      if (member() && note == "resync complete") o_.crashed = false;
      co_return;
    }
    case wire::Type::grow: {
      if (h.generation > set_.generation) (void)co_await refresh("a grow names a newer set");
      Status st = co_await handle_grow(h);
      rep.type = wire::Type::grow_reply;
      rep.status = static_cast<std::int32_t>(st.code());
      rep.offset = size();
      rep.length = local_->size();
      const std::string why = st.is_ok() ? std::string() : st.message();
      (void)co_await ch->reply(h, rep, as_bytes(why));
      co_return;
    }
    case wire::Type::digest: {
      std::vector<std::byte> buf;
      Status st;
      if (h.offset % wire::kDigestBlock != 0 || h.offset > size() || h.length > size() - h.offset ||
          h.length > wire::kMaxPayload ||
          (h.length % wire::kDigestBlock != 0 && h.offset + h.length != size())) {
        st = Status::error(Errc::out_of_range, "digest of {}+{}: unaligned or beyond the volume", h.offset,
                           h.length);
      } else {
        buf.resize(h.length);
        st = co_await local_->read(h.offset, buf);
      }
      std::vector<std::byte> sums;
      if (st.is_ok()) sums = digest_of(buf);
      rep.type = wire::Type::digest_reply;
      rep.status = static_cast<std::int32_t>(st.code());
      (void)co_await ch->reply(h, rep, sums);
      co_return;
    }
    case wire::Type::al_hint:
      // The owner's next replicate will need this range in our log: log it now. Where that
      // replicate would be refused, or the range is nonsense, the hint is dropped (it carries no
      // data; the replicate's own answer is what counts).
      if (h.generation < set_.generation || is_owner() || local_failed_ || h.length == 0 ||
          h.offset > size() || h.length > size() - h.offset)
        co_return;
      (void)co_await meta_->log_ahead(h.offset, h.length);
      co_return;
    case wire::Type::close:
      ch->close(Status::error(Errc::shutdown, "peer closed: {}", as_text(m.payload)));
      co_return;
    default:
      ch->close(Status::error(Errc::invalid, "unexpected message type {}", static_cast<int>(h.type)));
      co_return;
  }
}

// --- resync -------------------------------------------------------------------------------------

// The copies of a resync in flight: a window, refilled as each one ends (a barrier per batch
// would leave the disk and the link idle while the slowest copy of the batch finishes).
struct MirrorVolume::ResyncWindow {
  std::size_t in_flight = 0;
  std::uint64_t bytes = 0;  // in flight
  Status failed;            // the first copy that failed
  std::coroutine_handle<> waiter;
  // Regions the target acknowledged but may not have made durable yet (it writes a resync copy
  // without its activity log): their dirty bits are cleared only after a flush on the target
  // (settle_copied), and only if no write marked the peer dirty since the first of them was added
  // (`marks`: peer_marks_ then), since clearing could otherwise drop that write's mark.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> copied;
  std::uint64_t copied_bytes = 0;
  std::uint64_t marks = 0;

  struct Awaiter {
    ResyncWindow& w;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { w.waiter = h; }
    void await_resume() const noexcept {}
  };
  Awaiter wait() { return Awaiter{*this}; }
};

// One region to the peer under the range lock: an application write to it waits, and reaches the
// peer after the copy, so the peer never gets older data over newer.
Task<void> MirrorVolume::copy_chunk(std::shared_ptr<Channel> ch, ResyncWindow* w, std::uint64_t off,
                                    std::uint64_t len) {
  {
    auto g = co_await lock_.lock(off, len, true);
    // Aligned and not zeroed: the local read goes to the disk as it is (O_DIRECT), no bounce.
    auto buf = AlignedBuffer::uninitialized(len);
    Status st = co_await local_->read(off, buf.span());
    if (st.is_ok()) {
      wire::Header h = header(wire::Type::resync_data);
      h.op = wire::Op::write;
      h.offset = off;
      h.length = len;
      auto r = co_await ch->call(h, buf.span(), o_.replicate_timeout);
      st = r.is_ok() ? reply_status(*r) : r.status();
    }
    if (st.is_ok()) {
      if (w->copied.empty()) w->marks = peer_marks_;
      w->copied.emplace_back(off, len);
      w->copied_bytes += len;
      resync_done_ += len;
    } else if (w->failed.is_ok()) {
      w->failed = Status::error(st.code(), "at {}: {}", off, st.message());
    }
  }
  --w->in_flight;
  w->bytes -= len;
  // Resumed from the loop: the resync must not run on this frame's stack (it ends right here).
  if (auto h = std::exchange(w->waiter, nullptr)) loop_->post([h] { h.resume(); });
}

// Makes what the window copied durable on the target (a flush there), then clears it in the
// bitmap. Regions copied while the flush runs wait for the next one.
Task<Status> MirrorVolume::settle_copied(std::shared_ptr<Channel> ch, ResyncWindow* w) {
  if (w->copied.empty()) co_return Status::ok();
  auto batch = std::move(w->copied);
  w->copied.clear();
  w->copied_bytes = 0;
  const std::uint64_t marks = w->marks;
  auto r = co_await ch->call(header(wire::Type::flush), {}, o_.replicate_timeout);
  Status st = r.is_ok() ? reply_status(*r) : r.status();
  if (!st.is_ok()) co_return Status::error(st.code(), "flush on {}: {}", o_.peer, st.message());
  if (marks != peer_marks_) co_return Status::ok();  // stays dirty: copied again on the next pass
  for (const auto& [off, len] : batch) meta_->clear_dirty(off, len);
  co_return Status::ok();
}

// Copies every dirty region to the peer under the range lock, then adds the peer to the set.
Task<void> MirrorVolume::resync(std::shared_ptr<Channel> ch) {
  resync_total_ = meta_->dirty_bytes();
  resync_done_ = 0;
  const auto t0 = Clock::now();
  event(fmt::format("resync_start peer={} bytes={}", o_.peer, resync_total_));
  // Up to resync_parallel regions (and as many chunks' worth of bytes) in flight: a run of random
  // writes is often far smaller than a chunk, and one at a time the resync would wait a round
  // trip per 64 KiB.
  const std::size_t window = std::max<std::size_t>(o_.resync_parallel, 1);
  const std::uint64_t window_bytes = window * o_.resync_chunk;
  // The target flushes every so many bytes, so that an interrupted resync repeats little.
  constexpr std::uint64_t kSettleBytes = std::uint64_t{256} << 20;
  ResyncWindow w;
  std::uint64_t pos = 0;
  // The regions are taken from the bitmap in volume order, up to a batch at a time, and copied in
  // the order they lie on this replica's disk: after random writes (allocated in write order) the
  // reads then sweep the disk instead of seeking for each region.
  constexpr std::size_t kBatchRegions = 16384;
  constexpr std::uint64_t kBatchBytes = std::uint64_t{1} << 30;
  std::vector<std::pair<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>>>
      batch;  // (placement, region)
  std::size_t at = 0;
copy: {
  bool wrapped = false;
  std::uint64_t paced = 0, issued = 0;
  auto pace_start = Clock::now();
  const auto copy_start = pace_start;
  while (!stopping_ && ch->up() && chan_ == ch && is_owner() && w.failed.is_ok()) {
    if (at == batch.size()) {
      batch.clear();
      at = 0;
      std::uint64_t bytes = 0;
      while (batch.size() < kBatchRegions && bytes < kBatchBytes) {
        auto r = meta_->next_dirty(pos, o_.resync_chunk);
        if (!r) break;
        batch.emplace_back(local_->placement(r->first), *r);
        bytes += r->second;
        pos = r->first + r->second;
      }
      std::sort(batch.begin(), batch.end());
    }
    const auto next = at < batch.size() ? std::optional(batch[at++].second) : std::nullopt;
    if (!next) {
      // The end of a pass: what it copied is made durable and cleared before the next pass
      // looks from the start (writes that failed to reach the peer may have dirtied regions
      // behind us); a pass from the start that finds nothing ends the copy.
      while (w.in_flight > 0) co_await w.wait();
      if (!w.failed.is_ok() || !ch->up()) break;
      if (Status st = co_await settle_copied(ch, &w); !st.is_ok()) {
        w.failed = st;
        break;
      }
      if (pos == 0 || wrapped) break;
      pos = 0;
      wrapped = true;
      continue;
    }
    wrapped = false;
    while (w.in_flight >= window || (w.in_flight > 0 && w.bytes + next->second > window_bytes))
      co_await w.wait();
    if (!w.failed.is_ok()) break;
    ++w.in_flight;
    w.bytes += next->second;
    spawn(copy_chunk(ch, &w, next->first, next->second));
    if (w.copied_bytes >= kSettleBytes) {
      if (Status st = co_await settle_copied(ch, &w); !st.is_ok()) {
        w.failed = st;
        break;
      }
    }
    paced += next->second;
    issued += next->second;
    if (o_.resync_rate_max > 0) {
      // The cap, per chunk: what was issued since this copy began never runs ahead of
      // resync_rate_max (per window it would not hold back a resync smaller than the window).
      const auto due =
          copy_start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(
                           static_cast<double>(issued) / static_cast<double>(o_.resync_rate_max)));
      if (const auto now = Clock::now(); now < due)
        co_await sleep_for(loop_, std::chrono::duration_cast<milliseconds>(due - now) + milliseconds(1));
    }
    if (paced < window_bytes) continue;
    const auto now = Clock::now();
    const double secs = std::chrono::duration<double>(now - t0).count();
    resync_rate_ = secs > 0 ? static_cast<double>(resync_done_) / secs : 0;
    if (app_writes_ > 0 && resync_rate_ > static_cast<double>(o_.resync_rate_min)) {
      // Adaptive: the application is writing, so give it the disk and link half the time.
      co_await sleep_for(loop_, std::chrono::duration_cast<milliseconds>(now - pace_start) + milliseconds(1));
    }
    paced = 0;
    pace_start = Clock::now();
  }
  // Never left with copies in flight: they refer to `w`.
  while (w.in_flight > 0) co_await w.wait();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  resync_rate_ = secs > 0 ? static_cast<double>(resync_done_) / secs : 0;
  if (!w.failed.is_ok()) {
    spdlog::warn("event=mirror.resync_interrupted volume={} node={} peer={} reason=\"{}\"", name(), o_.node,
                 o_.peer, w.failed.message());
    ch->close(w.failed);
    co_return;
  }
}
  if (stopping_ || !ch->up() || chan_ != ch || !is_owner()) co_return;
  if (peer_held_ && !peer_member()) {
    // The peer's node is drained: keep it current (it gets every write) but out of the set, so
    // that stopping it costs no freeze. Whatever it missed meanwhile is copied once released.
    event(fmt::format("resync_held peer={} (drained)", o_.peer));
    // Polled: the hold, the link and the ownership each end the wait, and this is rare.
    while (peer_held_ && !stopping_ && ch->up() && chan_ == ch && is_owner())
      co_await sleep_for(loop_, milliseconds(100));
    pos = 0;
    goto copy;  // NOLINT(cppcoreguidelines-avoid-goto): the same retry loop
  }
  // Nothing dirty: with every write held off, make the peer a member again.
  auto all = co_await lock_.lock(0, size(), true);
  if (!ch->up() || chan_ != ch || !is_owner()) co_return;  // the connector's next link retries
  if (meta_->dirty_bytes() != 0) {
    // Writes that could not reach the peer meanwhile: copy them too, then try again.
    all.release();
    pos = 0;    // (nothing is in flight or unsettled here: the copy above ended with a settled pass)
    goto copy;  // NOLINT(cppcoreguidelines-avoid-goto): one retry loop around two phases
  }
  if (peer_disk_failed_) {
    // The notice came after this resync started: a replica that failed is not added back.
    peer_mode_ = PeerMode::absent;
    event(fmt::format("resync of {} abandoned: its disk failed", o_.peer));
    co_return;
  }
  if (!peer_member()) {
    // A member serves SCSI at once: it must hold the reservations first, and no change may slip
    // in between (shared_mu_ is held until it is a member; later changes reach it as a member).
    co_await shared_mu_.lock();
    Status pushed = co_await push_shared(false, true);
    if (!pushed.is_ok()) {
      shared_mu_.unlock();
      spdlog::warn("event=mirror.rejoin_failed volume={} node={} peer={} reason=\"shared state: {}\"", name(),
                   o_.node, o_.peer, pushed.message());
      ch->close(pushed);
      co_return;
    }
    std::vector<std::string> members = {o_.node, o_.peer};
    auto r = co_await arbiter_->change(set_.generation, members,
                                       fmt::format("{}: resync of {} complete", o_.node, o_.peer));
    if (!r.is_ok()) {
      shared_mu_.unlock();
      spdlog::warn("event=mirror.rejoin_failed volume={} node={} peer={} reason=\"{}\"", name(), o_.node,
                   o_.peer, r.status().message());
      ch->close(r.status());
      co_return;
    }
    (void)co_await adopt(*r, "resync complete");
    shared_mu_.unlock();
  }
  (void)co_await meta_->persist();
  if (is_owner()) peer_mode_ = PeerMode::in_step;  // else the placement made the peer the owner
  o_.crashed = false;
  (void)co_await ch->send(header(wire::Type::state), as_bytes(state_notice(set_, "resync complete")));
  event(fmt::format("resync_done peer={} bytes={}", o_.peer, resync_done_));
}

// --- growing (docs/mirror.md "Growing a mirrored volume") ------------------------------------------

// The uuid is the lineage: a replica of another volume is refused. A different size is not: a
// volume grows one replica at a time, and the owner brings the sizes together before it sends
// the peer anything (link_sized, grow_step).
Status MirrorVolume::lineage(const Hello& peer) const {
  if (peer.volume != local_->uuid())
    return Status::error(Errc::invalid, "replica of another volume ({}, {} bytes)", peer.volume.to_string(),
                         peer.size);
  if (peer.node != o_.peer)
    return Status::error(Errc::invalid, "node {} holds no replica of {} here", peer.node, name());
  if (peer.size != size())
    spdlog::info("event=mirror.size_differs volume={} node={} peer={} size={} peer_size={} peer_capacity={}",
                 name(), o_.node, o_.peer, size(), peer.size, peer.capacity);
  return Status::ok();
}

Status MirrorVolume::grow(std::uint64_t target) {
  if (stopping_) return Status::error(Errc::shutdown, "volume {} is stopping", name());
  if (target < size())
    return Status::error(Errc::invalid, "volume {} serves {} bytes: it cannot shrink to {}", name(), size(),
                         target);
  if (target <= std::max(target_, size())) return Status::ok();  // asked already, or done
  target_ = target;
  spdlog::info("event=mirror.grow_requested volume={} node={} size={} target={} role={}", name(), o_.node,
               size(), target, is_owner() ? "owner" : "peer");
  event(fmt::format("grow to {} bytes requested (serving {})", target, size()));
  if (!grower_running_) {
    grower_running_ = true;
    auto self = shared_from_this();
    ++background_;
    spawn(grower(), [self] {
      if (--self->background_ == 0) self->background_done_.notify_all();
    });
  }
  return Status::ok();
}

// Runs on every node until the size reaches the target: the owner commits, the other node waits
// for the owner's `grow` (a node that becomes the owner meanwhile takes over).
//
//   grow(S) --> every connect_retry, while size < S:
//     not the owner: wait (the owner grows this replica)
//     owner, a member peer not linked: wait link_timeout --> peer_lost (CAS it out), next round
//     owner: lock the whole volume (no write in flight)
//       peer takes our writes? --yes--> grow(S) to it --ok-------------------------------.
//         |                               |--refused, a member: unlock, note, next round  |
//         no                              '--refused, not a member: drop its link ------.|
//         v                                  (it grows before its resync)              vv
//       resize our metadata (bitmap blocks, flush, record), serve S, unlock  <----------'
Task<void> MirrorVolume::grower() {
  while (!stopping_ && size() < target_) {
    Status st =
        Status::error(Errc::busy, "not in the in-sync set: the owner grows this replica before its resync");
    if (is_owner())
      st = co_await grow_step();
    else if (member())
      st = Status::error(Errc::busy, "the owner {} commits the grow", o_.peer);
    if (stopping_ || size() >= target_) break;
    if (st.message() != grow_note_) {
      grow_note_ = st.message();
      spdlog::info("event=mirror.grow_waiting volume={} node={} size={} target={} reason=\"{}\"", name(),
                   o_.node, size(), target_, grow_note_);
      if (is_owner()) event(fmt::format("grow to {} bytes waits: {}", target_, grow_note_));
    }
    co_await sleep_for(loop_, o_.connect_retry);
  }
  grow_note_.clear();
  grower_running_ = false;
}

// One attempt of the owner to raise the size. Every write is held off meanwhile (the lock of the
// whole volume), the peer that takes our writes grows first, and only then does this side, so a
// write past the old end is never accepted before both replicas can hold it (and both
// metadata files cover it). A peer that is away does not hold the volume back: it grows before
// its resync (link_sized).
Task<Status> MirrorVolume::grow_step() {
  const std::uint64_t from = size();
  const std::uint64_t want = std::min(target_, local_->size());
  if (want <= from)
    co_return Status::error(Errc::no_space, "{}'s replica holds {} bytes, not yet {}", o_.node,
                            local_->size(), target_);
  if (peer_member() && !link_up()) {
    // A member we cannot reach: the next write would remove it (freeze, compare-and-swap), and so
    // does the grow, so that the in-sync member grows alone and the peer catches up later.
    if (!(co_await wait_for_link(o_.link.timeout)).is_ok()) {
      Status lost = co_await peer_lost(fmt::format("{} unreachable (grow to {} bytes)", o_.peer, want));
      if (!lost.is_ok()) co_return lost;
    }
    co_return Status::error(Errc::busy, "the link to {} changed", o_.peer);
  }
  auto all = co_await lock_.lock(0, from, true);
  if (!is_owner() || size() != from) co_return Status::error(Errc::busy, "the owner or the size changed");
  // Writes past the old end that reach us meanwhile (the peer serves the new size from its
  // `grow` on) wait for this commit instead of failing (in_range_after_grow).
  growing_to_ = want;
  struct Committed {
    MirrorVolume* v;
    ~Committed() {
      v->growing_to_ = 0;
      // From the loop, not this frame: the waiters go on with their writes.
      v->loop_->post([self = v->shared_from_this()] { self->grown_.notify_all(); });
    }
  } committed{this};
  if (link_up() && (peer_mode_ != PeerMode::absent || peer_member())) {
    auto ch = chan_;
    Status ps = co_await grow_peer(ch, want);
    if (!ps.is_ok() && ps.code() == Errc::conflict) {
      all.release();
      Status f = co_await refresh("the peer refused our generation (grow)");
      if (!f.is_ok()) co_return f;
      co_return ps;
    }
    if (!ps.is_ok() && !peer_member()) {
      // A peer being resynced or held out: not worth holding the volume back. It gets no more
      // writes and grows before its resync resumes (the next link goes through link_sized).
      event(fmt::format("{} cannot hold {} bytes yet ({}): it grows before its resync", o_.peer, want,
                        ps.message()));
      ch->close(
          Status::error(Errc::unavailable, "{} cannot hold {} bytes yet: {}", o_.peer, want, ps.message()));
    } else if (!ps.is_ok() && ps.code() == Errc::unavailable) {
      // The link failed under the call: as for a failed write, the peer leaves the set first.
      all.release();
      Status lost = co_await peer_lost(fmt::format("grow on {} failed: {}", o_.peer, ps.message()));
      if (!lost.is_ok()) co_return lost;
      co_return Status::error(Errc::busy, "{} left the in-sync set", o_.peer);
    } else if (!ps.is_ok()) {
      // A member that cannot hold the new size yet (its node grows its pool object on its own
      // schedule, or its pool is full): wait for it. It keeps every write meanwhile.
      co_return Status::error(ps.code(), "waiting for {} to grow its replica: {}", o_.peer, ps.message());
    }
  }
  co_return co_await grow_local(want);
}

// This replica serves `want` bytes from now on: the metadata covers them durably first (new bitmap
// blocks, then the record with the new size: a crash before the record keeps the old size).
Task<Status> MirrorVolume::grow_local(std::uint64_t want) {
  const std::uint64_t from = size();
  if (want <= from) co_return Status::ok();  // never shrinks; a repeated request is done
  if (local_->size() < want)
    co_return Status::error(Errc::no_space, "{}'s replica holds {} bytes, not yet {}", o_.node,
                            local_->size(), want);
  if (Status st = co_await meta_->resize(want); !st.is_ok()) {
    spdlog::error("event=mirror.grow_failed volume={} node={} from={} to={} error=\"{}\"", name(), o_.node,
                  from, want, st.message());
    co_return st;
  }
  size_.store(std::max(size(), want), std::memory_order_relaxed);
  spdlog::info("event=mirror.grown volume={} node={} generation={} from={} to={} role={}", name(), o_.node,
               set_.generation, from, want, is_owner() ? "owner" : "peer");
  event(fmt::format("grown from {} to {} bytes", from, want));
  co_return Status::ok();
}

Task<Status> MirrorVolume::grow_peer(std::shared_ptr<Channel> ch, std::uint64_t want) {
  if (!peer_grows_)
    co_return Status::error(Errc::unsupported, "{} runs a duplexd that cannot grow a mirrored volume",
                            o_.peer);
  wire::Header h = header(wire::Type::grow);
  h.length = want;
  auto r = co_await ch->call(h, {}, o_.replicate_timeout);
  if (!r.is_ok()) co_return Status::error(Errc::unavailable, "grow on {}: {}", o_.peer, r.status().message());
  peer_size_ = r->header.offset;
  if (r->header.status == 0) co_return Status::ok();
  // The peer answered no: never `unavailable`, which means the link failed.
  auto code = static_cast<Errc>(r->header.status);
  if (code == Errc::unavailable) code = Errc::busy;
  co_return Status::error(code, "{}", as_text(r->payload));
}

// The owner's `grow` at the other node: hold `length` bytes (metadata first), and serve them.
Task<Status> MirrorVolume::handle_grow(wire::Header h) {
  if (h.generation < set_.generation)
    co_return Status::error(Errc::conflict, "generation {} is older than {}", h.generation, set_.generation);
  if (is_owner())
    co_return Status::error(Errc::conflict, "{} orders the writes of {} itself", o_.node, name());
  Status st = co_await grow_local(h.length);
  // The owner commits its own grow right after this answer.
  if (st.is_ok()) peer_size_ = std::max(peer_size_, h.length);
  co_return st;
}

Task<bool> MirrorVolume::in_range_after_grow(std::uint64_t offset, std::uint64_t length) {
  auto in = [](std::uint64_t off, std::uint64_t len, std::uint64_t end) {
    return off <= end && len <= end - off;
  };
  while (growing_to_ != 0 && in(offset, length, growing_to_) && !in(offset, length, size()))
    co_await grown_.wait();
  co_return in(offset, length, size());
}

// The owner linked with a peer of another size. A smaller one missed a grow while it was away: it
// grows (metadata and served size) before anything else; its pool object must have grown first,
// which its own node does when it applies the catalogue. A larger one that is not in the set:
// this side grows first, so that the ranges the peer lists as its own (diverged) fit in our
// bitmap. Then the link goes on as usual (link_as_owner: in step, or a resync).
Task<void> MirrorVolume::link_sized(std::shared_ptr<Channel> ch, Hello peer) {
  std::string noted;
  while (!stopping_ && ch->up() && chan_ == ch && is_owner()) {
    Status st = Status::ok();
    if (peer.size < size()) {
      st = co_await grow_peer(ch, size());
      if (st.is_ok()) peer.size = peer_size_;
    } else if (peer.size > size()) {
      st = Status::error(Errc::busy, "it serves {} bytes, this replica {}: this one grows first", peer.size,
                         size());
    }
    if (stopping_ || !ch->up() || chan_ != ch || !is_owner()) co_return;
    if (peer.size == size()) {
      link_as_owner(peer);
      co_return;
    }
    if (st.is_ok()) continue;  // it grew, and this side meanwhile too: again
    if (peer.size < size() && peer_member()) {
      // A member we cannot give the size to cannot take our writes: it leaves the set.
      Status lost =
          co_await peer_lost(fmt::format("{} cannot hold {} bytes: {}", o_.peer, size(), st.message()));
      if (!lost.is_ok()) co_return;
      continue;
    }
    if (st.message() != noted) {
      noted = st.message();
      event(fmt::format("resync of {} waits for the sizes to agree: {}", o_.peer, noted));
    }
    co_await sleep_for(loop_, o_.connect_retry);
  }
}

Task<void> MirrorVolume::persister() {
  while (!stopping_) {
    co_await sleep_for(loop_, o_.persist_period);
    if (auto st = co_await meta_->persist(); !st.is_ok())
      spdlog::error("event=mirror.persist_failed volume={} error=\"{}\"", name(), st.message());
    // A cut-off node answers NOT READY at its ports (no I/O reaches it), so it looks for the
    // arbiter itself: once etcd answers, the decision it could not make is made (or lost).
    if (cut_off_ && !stopping_ && member() && peer_member())
      (void)co_await peer_lost(fmt::format("{} unreachable (retrying after a cut-off)", o_.peer));
  }
}

void MirrorVolume::hold_peer(bool held) {
  if (peer_held_ != held) {
    peer_held_ = held;
    event(fmt::format("peer {} {}", o_.peer, held ? "held out of the set (drained)" : "released (resumed)"));
  }
  // A peer that stepped down while this node kept the order (it was not the owner) stays linked
  // and in step but out of the set, and no resync runs to add it back: start one now (it copies
  // what failed to reach the peer meanwhile, then adds it by CAS).
  if (!held && is_owner() && link_up() && !peer_member() && peer_mode_ == PeerMode::in_step) {
    peer_mode_ = PeerMode::catching_up;
    auto self = shared_from_this();
    ++background_;
    spawn(resync(chan_), [self] {
      if (--self->background_ == 0) self->background_done_.notify_all();
    });
  }
}

void MirrorVolume::disconnect(const std::string& why) {
  if (chan_) chan_->close(Status::error(Errc::shutdown, "{}", why));
}

Task<Status> MirrorVolume::stop() {
  stopping_ = true;
  if (chan_) chan_->close(Status::error(Errc::shutdown, "stopping"));
  while (background_ > 0) co_await background_done_.wait();
  co_return co_await meta_->close();
}

Task<Result<VerifyReport>> MirrorVolume::verify(bool repair) {
  if (!is_owner() || peer_mode_ != PeerMode::in_step || !link_up())
    co_return Status::error(Errc::unavailable, "volume {}: verify runs on the owner with its peer in step",
                            name());
  if (verifying_) co_return Status::error(Errc::busy, "volume {}: a verify is running", name());
  verifying_ = true;
  verify_total_ = size();
  verify_done_ = verify_mismatches_ = 0;
  event(fmt::format("verify_start peer={} repair={}", o_.peer, repair));
  VerifyReport report;
  Status failed;
  constexpr std::uint64_t kRegion = 1u << 20;
  std::vector<std::byte> buf;
  for (std::uint64_t off = 0; off < size() && failed.is_ok(); off += kRegion) {
    const std::uint64_t len = std::min(kRegion, size() - off);
    // Exclusive: no write to the region is half applied while both sides read it.
    auto g = co_await lock_.lock(off, len, true);
    auto ch = chan_;
    if (stopping_ || !ch || !ch->up() || peer_mode_ != PeerMode::in_step) {
      failed = Status::error(Errc::unavailable, "volume {}: the peer left during verify", name());
      break;
    }
    buf.resize(len);
    if (failed = co_await local_->read(off, buf); !failed.is_ok()) break;
    wire::Header h = header(wire::Type::digest);
    h.offset = off;
    h.length = len;
    auto r = co_await ch->call(h, {}, o_.replicate_timeout);
    if (!r.is_ok() || r->header.status != 0) {
      failed = r.is_ok() ? reply_status(*r) : r.status();
      break;
    }
    const auto mine = digest_of(buf);
    if (r->payload.size() != mine.size()) {
      failed = Status::error(Errc::io_error, "volume {}: short digest from {}", name(), o_.peer);
      break;
    }
    for (std::size_t b = 0; b * 4 < mine.size(); ++b) {
      if (std::memcmp(mine.data() + b * 4, r->payload.data() + b * 4, 4) == 0) continue;
      const std::uint64_t at = off + b * wire::kDigestBlock;
      const std::uint64_t n = std::min<std::uint64_t>(wire::kDigestBlock, size() - at);
      report.mismatched += n;
      verify_mismatches_ += n;
      if (!report.ranges.empty() && report.ranges.back().first + report.ranges.back().second == at)
        report.ranges.back().second += n;
      else if (report.ranges.size() < 64)
        report.ranges.emplace_back(at, n);
      if (!repair) continue;
      wire::Header w = header(wire::Type::resync_data);
      w.op = wire::Op::write;
      w.offset = at;
      w.length = n;
      const auto block = std::span<const std::byte>(buf).subspan(b * wire::kDigestBlock, n);
      auto wr = co_await ch->call(w, block, o_.replicate_timeout);
      if (failed = wr.is_ok() ? reply_status(*wr) : wr.status(); !failed.is_ok()) break;
      report.repaired += n;
    }
    report.checked += len;
    verify_done_ = off + len;
  }
  verifying_ = false;
  if (!failed.is_ok()) {
    event(fmt::format("verify_interrupted at={} reason={}", verify_done_, failed.message()));
    co_return failed;
  }
  if (report.mismatched != 0)
    spdlog::error("event=mirror.verify_mismatch volume={} node={} peer={} bytes={} repaired={}", name(),
                  o_.node, o_.peer, report.mismatched, report.repaired);
  event(fmt::format("verify_done checked={} mismatched={} repaired={}", report.checked, report.mismatched,
                    report.repaired));
  co_return report;
}

MirrorStatus MirrorVolume::status() const {
  MirrorStatus s;
  const auto& r = meta_->record();
  s.size = size();
  s.grow_target = target_ > size() ? target_ : 0;
  s.grow = grow_note_;
  s.state = std::string(to_string(r.state));
  if (is_owner() && peer_mode_ == PeerMode::catching_up) s.state = "resyncing";
  if (local_failed_ && r.state != ReplicaState::in_sync) s.state = "failed";
  s.role = is_owner() ? "owner" : (member() ? "peer" : "");
  s.generation = set_.generation;
  s.last_member_generation = r.generation;
  s.members = set_.members;
  s.link_up = link_up();
  s.dirty_bytes = meta_->dirty_bytes();
  s.resync_total = resync_total_;
  s.resync_done = resync_done_;
  s.resync_rate = resync_rate_;
  s.last_event = last_event_;
  s.cut_off = cut_off();
  s.verifying = verifying_;
  s.verify_total = verify_total_;
  s.verify_done = verify_done_;
  s.verify_mismatches = verify_mismatches_;
  return s;
}

}  // namespace duplex::mirror
