// Persistent reservations shared by every node that serves the LU (docs/multipath.md
// "Persistent reservations"). The volume (a mirror) runs each change on its owner, one at a time,
// and installs the resulting state on the other node before the change is answered; this file is
// the LU's side: the change request, its answer, and the state blob, in formats only the LUs read.
//
//   request  "DPQ1" kind:u8 — kind 1 (PERSISTENT RESERVE OUT): nexus, cdb, data;
//                             kind 2 (LOGICAL UNIT RESET): nothing more
//   answer   "DPA1" status:u8 key:u8 asc:u8 ascq:u8 flags:u8 information:u64 field_byte:u16
//            field_bit:u8 data_in_length:u32 data_out_used:u32
//   state    "DPS1" len:u32 PrState::serialize() count:u32 events (kind:u8 nexus asc:u8 ascq:u8)
//   nexus    relative_port:u16 len:u32 initiator port name; bytes: len:u32 then the bytes
// Integers big-endian. A blob that does not parse changes nothing.
#include <spdlog/spdlog.h>
#include <cstring>

#include "duplex/base/endian.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/scsi/reservations.h"

namespace duplex::scsi {

namespace {

constexpr std::uint8_t kKindReserveOut = 1, kKindReset = 2;
constexpr std::size_t kMaxName = 4096, kMaxCdb = 260, kMaxData = 1u << 20;

class Writer {
 public:
  void raw(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void u8(std::uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void u16(std::uint16_t v) {
    u8(static_cast<std::uint8_t>(v >> 8));
    u8(static_cast<std::uint8_t>(v));
  }
  void u32(std::uint32_t v) {
    u16(static_cast<std::uint16_t>(v >> 16));
    u16(static_cast<std::uint16_t>(v));
  }
  void u64(std::uint64_t v) {
    u32(static_cast<std::uint32_t>(v >> 32));
    u32(static_cast<std::uint32_t>(v));
  }
  void bytes(std::span<const std::byte> b) {
    u32(static_cast<std::uint32_t>(b.size()));
    raw(b.data(), b.size());
  }
  void nexus(const Nexus& n) {
    u16(n.relative_port);
    bytes(std::as_bytes(std::span(n.initiator_port)));
  }
  std::vector<std::byte> take() { return std::move(out_); }

 private:
  std::vector<std::byte> out_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  bool magic(const char (&m)[5]) {
    if (!need(4) || std::memcmp(in_.data() + pos_, m, 4) != 0) return ok_ = false;
    pos_ += 4;
    return true;
  }
  std::uint8_t u8() { return need(1) ? static_cast<std::uint8_t>(in_[pos_++]) : 0; }
  std::uint16_t u16() { return need(2) ? take_be<std::uint16_t>() : 0; }
  std::uint32_t u32() { return need(4) ? take_be<std::uint32_t>() : 0; }
  std::uint64_t u64() { return need(8) ? take_be<std::uint64_t>() : 0; }
  std::span<const std::byte> bytes(std::size_t max) {
    const std::uint32_t n = u32();
    if (n > max || !need(n)) {
      ok_ = false;
      return {};
    }
    auto b = in_.subspan(pos_, n);
    pos_ += n;
    return b;
  }
  Nexus nexus() {
    Nexus n;
    n.relative_port = u16();
    auto name = bytes(kMaxName);
    n.initiator_port.assign(reinterpret_cast<const char*>(name.data()), name.size());
    return n;
  }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  bool need(std::size_t n) {
    if (!ok_ || in_.size() - pos_ < n) return ok_ = false;
    return true;
  }
  template <typename T>
  T take_be() {
    T v = load_be<T>(reinterpret_cast<const std::uint8_t*>(in_.data() + pos_));
    pos_ += sizeof(T);
    return v;
  }
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

std::vector<std::byte> encode_answer(const CommandResult& r) {
  Writer w;
  w.raw("DPA1", 4);
  w.u8(static_cast<std::uint8_t>(r.status));
  w.u8(static_cast<std::uint8_t>(r.sense.key));
  w.u8(r.sense.code.asc);
  w.u8(r.sense.code.ascq);
  w.u8(static_cast<std::uint8_t>((r.sense.information_valid ? 1 : 0) | (r.sense.field_pointer_valid ? 2 : 0) |
                                 (r.sense.in_cdb ? 4 : 0) | (r.sense.bit_valid ? 8 : 0)));
  w.u64(r.sense.information);
  w.u16(r.sense.field_byte);
  w.u8(r.sense.field_bit);
  w.u32(r.data_in_length);
  w.u32(r.data_out_used);
  return w.take();
}

std::optional<CommandResult> decode_answer(std::span<const std::byte> b) {
  Reader in(b);
  if (!in.magic("DPA1")) return std::nullopt;
  CommandResult r;
  r.status = static_cast<ScsiStatus>(in.u8());
  r.sense.key = static_cast<SenseKey>(in.u8());
  r.sense.code.asc = in.u8();
  r.sense.code.ascq = in.u8();
  const std::uint8_t f = in.u8();
  r.sense.information_valid = f & 1;
  r.sense.field_pointer_valid = f & 2;
  r.sense.in_cdb = f & 4;
  r.sense.bit_valid = f & 8;
  r.sense.information = in.u64();
  r.sense.field_byte = in.u16();
  r.sense.field_bit = in.u8();
  r.data_in_length = in.u32();
  r.data_out_used = in.u32();
  if (!in.done()) return std::nullopt;
  return r;
}

CommandResult internal_failure() {
  return check_condition(SenseKey::hardware_error, asc::kInternalTargetFailure);
}

}  // namespace

// What the volume calls: forwards to the LU, which owns it.
class LuKeeper final : public volume::SharedStateKeeper {
 public:
  explicit LuKeeper(LogicalUnit& lu) : lu_(lu), aborts_(lu.aborts_) {}
  std::vector<std::byte> apply_change(std::span<const std::byte> request, bool& changed) override {
    return lu_.apply_change(request, changed);
  }
  std::vector<std::byte> export_state(bool with_events) const override {
    return lu_.export_state(with_events);
  }
  Status import_state(std::span<const std::byte> blob, bool raise_events) override {
    return lu_.import_state(blob, raise_events);
  }
  // Only what the keeper holds itself: the volume may await it after the LU is gone (shutdown).
  Task<void> settle() override { return LogicalUnit::wait_aborts(aborts_); }

 private:
  LogicalUnit& lu_;
  std::shared_ptr<LogicalUnit::Aborts> aborts_;
};

std::shared_ptr<volume::SharedStateKeeper> LogicalUnit::make_keeper() {
  return std::make_shared<LuKeeper>(*this);
}

void LogicalUnit::pr_event(const PrEvent& e) {
  if (shared_) pr_events_.push_back(e);
  if (!own_nexus(e.nexus)) return;  // the other node raises it (import_state)
  if (e.kind == PrEvent::unit_attention) unit_attention(e.nexus, e.code);
  // PREEMPT AND ABORT; the change is answered after aborts_settled() (here, or in the volume).
  if (e.kind == PrEvent::abort_tasks) abort_tasks_here(e.nexus, true);
}

Task<CommandResult> LogicalUnit::shared_reserve_out(Command c) {
  Writer w;
  w.raw("DPQ1", 4);
  w.u8(kKindReserveOut);
  w.nexus(*c.nexus);
  w.bytes(std::as_bytes(c.cdb));
  w.bytes(c.data_out);
  std::vector<std::byte> request = w.take();
  auto r = co_await volume_.shared_change(std::move(request));
  if (!r.is_ok()) {
    spdlog::warn("event=scsi.pr_out_failed volume={} reason=\"{}\"", volume_.name(), r.status().message());
    co_return internal_failure();
  }
  auto answer = decode_answer(*r);
  if (!answer) co_return internal_failure();
  co_return *answer;
}

// The volume runs the reset on its owner, which resets and aborts there and on the other node
// before it answers (MirrorVolume settles both): a LUN RESET through either node ends the LU's
// commands on both.
Task<void> LogicalUnit::reset_everywhere() {
  if (!shared_) {
    reset();
    abort_tasks_here(std::nullopt, false);
    co_await aborts_settled();
    co_return;
  }
  Writer w;
  w.raw("DPQ1", 4);
  w.u8(kKindReset);
  std::vector<std::byte> request = w.take();
  auto r = co_await volume_.shared_change(std::move(request));
  if (!r.is_ok()) {
    // The other node cannot be told now (it is out of the set or unreachable, so it serves
    // nothing until it is back in step); this node resets regardless.
    spdlog::warn("event=scsi.lun_reset_local_only volume={} reason=\"{}\"", volume_.name(),
                 r.status().message());
    reset();
    abort_tasks_here(std::nullopt, false);
    co_await aborts_settled();
  }
}

std::vector<std::byte> LogicalUnit::apply_change(std::span<const std::byte> request, bool& changed) {
  changed = false;
  Reader in(request);
  if (!in.magic("DPQ1")) return encode_answer(internal_failure());
  const std::uint8_t kind = in.u8();
  pr_events_.clear();
  if (kind == kKindReset && in.done()) {
    // 29/03 tells every nexus; no 2F/00 besides (SAM-5: the reset's own unit attention).
    reset();
    abort_tasks_here(std::nullopt, false);
    pr_events_.push_back(PrEvent{PrEvent::reset, {}, asc::kLunReset});
    changed = true;
    return encode_answer(CommandResult{});
  }
  if (kind != kKindReserveOut) return encode_answer(internal_failure());
  const Nexus nexus = in.nexus();
  auto cdb_bytes = in.bytes(kMaxCdb);
  auto data = in.bytes(kMaxData);
  if (!in.done() || cdb_bytes.size() < 10) return encode_answer(internal_failure());
  std::span<const std::uint8_t> cdb(reinterpret_cast<const std::uint8_t*>(cdb_bytes.data()),
                                    cdb_bytes.size());
  const auto before = pr_->state().serialize();
  CommandResult r = pr_->out(nexus, cdb, data);
  changed = pr_->state().serialize() != before || !pr_events_.empty();
  return encode_answer(r);
}

std::vector<std::byte> LogicalUnit::export_state(bool with_events) const {
  Writer w;
  w.raw("DPS1", 4);
  const auto st = pr_->state().serialize();
  w.bytes(std::as_bytes(std::span(st)));
  const std::size_t n = with_events ? pr_events_.size() : 0;
  w.u32(static_cast<std::uint32_t>(n));
  for (std::size_t i = 0; i < n; ++i) {
    const PrEvent& e = pr_events_[i];
    w.u8(e.kind);
    w.nexus(e.nexus);
    w.u8(e.code.asc);
    w.u8(e.code.ascq);
  }
  return w.take();
}

Status LogicalUnit::import_state(std::span<const std::byte> blob, bool raise_events) {
  Reader in(blob);
  if (!in.magic("DPS1")) return Status::error(Errc::corrupt, "reservation state: bad magic");
  auto st_bytes = in.bytes(16u << 20);
  std::span<const std::uint8_t> st_span(reinterpret_cast<const std::uint8_t*>(st_bytes.data()),
                                        st_bytes.size());
  auto state = in.ok() ? PrState::deserialize(st_span) : std::nullopt;
  if (!state) return Status::error(Errc::corrupt, "reservation state does not parse");
  const std::uint32_t n = in.u32();
  std::vector<PrEvent> events;
  for (std::uint32_t i = 0; i < n && in.ok(); ++i) {
    PrEvent e;
    const std::uint8_t kind = in.u8();
    if (kind < PrEvent::unit_attention || kind > PrEvent::reset)
      return Status::error(Errc::corrupt, "bad event");
    e.kind = static_cast<PrEvent::Kind>(kind);
    e.nexus = in.nexus();
    e.code.asc = in.u8();
    e.code.ascq = in.u8();
    events.push_back(std::move(e));
  }
  if (!in.done()) return Status::error(Errc::corrupt, "reservation state: trailing or missing bytes");
  // Saved (APTPL) first, as on the node that made the change: what a host was told survives a
  // restart of either node.
  if (persist_hook_)
    if (Status p = persist_hook_(*state); !p.is_ok()) return p;
  pr_->restore(std::move(*state));
  if (!raise_events) return Status::ok();
  // The aborts started here end before the volume answers the change (it awaits settle()).
  for (const PrEvent& e : events) {
    if (e.kind == PrEvent::reset) {
      reset();
      abort_tasks_here(std::nullopt, false);
      continue;
    }
    if (e.nexus.relative_port != cfg_.relative_port) continue;  // raised on the node that made it
    if (e.kind == PrEvent::unit_attention) unit_attention(e.nexus, e.code);
    if (e.kind == PrEvent::abort_tasks) abort_tasks_here(e.nexus, true);
  }
  return Status::ok();
}

}  // namespace duplex::scsi
