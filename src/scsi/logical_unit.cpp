// Command dispatch and the block commands (SBC-3). Inquiry data, mode pages and the other
// informational commands are in inquiry.cpp.
#include <algorithm>
#include <cstring>

#include "duplex/base/buffer.h"
#include "duplex/base/endian.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/scsi/reservations.h"
#include "opcodes.h"

namespace duplex::scsi {

CommandResult check_condition(SenseKey key, Asc code) {
  CommandResult r;
  r.status = ScsiStatus::check_condition;
  r.sense.key = key;
  r.sense.code = code;
  return r;
}

CommandResult illegal_request(Asc code, std::uint16_t byte, int bit, bool in_cdb) {
  CommandResult r = check_condition(SenseKey::illegal_request, code);
  r.sense.field_pointer_valid = true;
  r.sense.in_cdb = in_cdb;
  r.sense.field_byte = byte;
  if (bit >= 0) {
    r.sense.bit_valid = true;
    r.sense.field_bit = static_cast<std::uint8_t>(bit);
  }
  return r;
}

LogicalUnit::LogicalUnit(volume::BlockVolume& volume, LuConfig cfg)
    : volume_(volume), cfg_(std::move(cfg)), announced_blocks_(blocks()) {
  if (cfg_.read_only == false && volume_.read_only()) cfg_.read_only = true;
  if (cfg_.port_groups.empty())
    cfg_.port_groups.push_back({cfg_.tpg_id, AluaState::active_optimized, false, {cfg_.relative_port}});
  pr_ = std::make_unique<PersistentReservations>(PersistentReservations::Hooks{
      [this](const Nexus& n, Asc a) { pr_event(PrEvent{PrEvent::unit_attention, n, a}); },
      [this](const Nexus& n) { pr_event(PrEvent{PrEvent::abort_tasks, n, {}}); },
      [this](const PrState& s) { return persist_hook_ ? persist_hook_(s) : Status::ok(); }});
  aborts_->lu = this;
  keeper_ = make_keeper();
  shared_ = volume_.attach_shared_state(keeper_);
}

// The volume holds keeper_ weakly, so nothing needs to be told when the LU goes; an abort still
// running (only at shutdown) finds aborts_->lu cleared.
LogicalUnit::~LogicalUnit() { aborts_->lu = nullptr; }

void LogicalUnit::set_persist_hook(std::function<Status(const PrState&)> f) { persist_hook_ = std::move(f); }

void LogicalUnit::join_task_set(std::weak_ptr<TaskSetMember> member) {
  const std::lock_guard lock(members_mu_);
  std::erase_if(members_, [](const std::weak_ptr<TaskSetMember>& m) { return m.expired(); });
  members_.push_back(std::move(member));
}

void LogicalUnit::abort_tasks_here(const std::optional<Nexus>& nexus, bool cleared) {
  std::vector<std::shared_ptr<TaskSetMember>> hit;
  {
    const std::lock_guard lock(members_mu_);
    std::erase_if(members_, [](const std::weak_ptr<TaskSetMember>& m) { return m.expired(); });
    for (const auto& w : members_)
      if (auto m = w.lock(); m && (!nexus || same_nexus(m->nexus(), *nexus))) hit.push_back(std::move(m));
  }
  for (auto& m : hit) {
    ++aborts_->running;
    // Each member completes on this loop; the member is held until it has.
    spawn([](std::shared_ptr<TaskSetMember> member, std::shared_ptr<Aborts> a, bool tell) -> Task<void> {
      std::size_t n = 0;
      if (const LogicalUnit* lu = a->lu) n = co_await member->abort_tasks(lu);
      // TAS=0: the initiator hears of its lost commands only through this unit attention.
      if (n > 0 && tell && a->lu)
        a->lu->unit_attention(member->nexus(), asc::kCommandsClearedByAnotherInitiator);
      if (--a->running == 0) a->idle.notify_all();
    }(std::move(m), aborts_, cleared));
  }
}

Task<void> LogicalUnit::aborts_settled() { return wait_aborts(aborts_); }

Task<void> LogicalUnit::wait_aborts(std::shared_ptr<Aborts> a) {
  while (a->running > 0) co_await a->idle.wait();
}

void LogicalUnit::unit_attention(const Nexus& nexus, Asc code) {
  auto& queue = unit_attentions_[nexus];
  if (std::find(queue.begin(), queue.end(), code) == queue.end()) queue.push_back(code);
}

void LogicalUnit::unit_attention_all(Asc code) {
  for (auto& [nexus, queue] : unit_attentions_)
    if (std::find(queue.begin(), queue.end(), code) == queue.end()) queue.push_back(code);
}

void LogicalUnit::reset() {
  for (auto& [nexus, queue] : unit_attentions_) queue.assign(1, asc::kLunReset);
}

void LogicalUnit::set_port_groups(std::vector<TargetPortGroup> groups) {
  if (groups.empty() || groups == cfg_.port_groups) return;
  cfg_.port_groups = std::move(groups);
  unit_attention_all(asc::kAsymmetricAccessStateChanged);
}

void LogicalUnit::set_refresh_hook(std::function<void(LogicalUnit&)> f) { refresh_hook_ = std::move(f); }

void LogicalUnit::set_gone() { gone_.store(true, std::memory_order_relaxed); }

AluaState LogicalUnit::own_state() const {
  for (const auto& g : cfg_.port_groups)
    if (g.id == cfg_.tpg_id) return g.state;
  return AluaState::active_optimized;
}

// SPC-4 5.15.2.4: what a port in the standby or unavailable state still answers. The rest gets
// NOT READY with the state's ASCQ, which every multipath stack reads as "try another path" (and
// not as a device error). Transitioning is never reported: a node's state changes at once.
std::optional<CommandResult> LogicalUnit::alua_refusal(std::span<const std::uint8_t> cdb) const {
  const AluaState st = own_state();
  if (st != AluaState::standby && st != AluaState::unavailable) return std::nullopt;
  switch (cdb[0]) {
    case op::kInquiry:
    case op::kReportLuns:
    case op::kRequestSense: return std::nullopt;
    case op::kMaintenanceIn:
      if ((cdb[1] & 0x1f) == sa::kReportTargetPortGroups) return std::nullopt;
      break;
    case op::kModeSense6:
    case op::kModeSense10:
    case op::kModeSelect6:
    case op::kModeSelect10:
    case op::kPersistentReserveIn:
    case op::kPersistentReserveOut:
    case op::kReadCapacity10:  // standby: hosts' path probes read the capacity too
      if (st == AluaState::standby) return std::nullopt;
      break;
    case op::kServiceActionIn16:
      if (st == AluaState::standby && (cdb[1] & 0x1f) == sa::kReadCapacity16) return std::nullopt;
      break;
    default: break;
  }
  return check_condition(SenseKey::not_ready,
                         st == AluaState::standby ? asc::kNotReadyStandby : asc::kNotReadyUnavailable);
}

CommandResult LogicalUnit::from_status(const Status& s, bool writing) {
  switch (s.code()) {
    case Errc::ok: return {};
    case Errc::out_of_range: return check_condition(SenseKey::illegal_request, asc::kLbaOutOfRange);
    case Errc::read_only: return check_condition(SenseKey::data_protect, asc::kWriteProtected);
    case Errc::no_space:
      return check_condition(SenseKey::data_protect, asc::kSpaceAllocationFailedWriteProtect);
    case Errc::io_error:
      return check_condition(SenseKey::medium_error, writing ? asc::kWriteError : asc::kUnrecoveredReadError);
    case Errc::shutdown: return check_condition(SenseKey::not_ready, asc::kLogicalUnitNotReadyShutdown);
    // The volume cannot be served through this node now (a mirror that is fenced, cut off from
    // its peer and the witness, or lost its owner): a path error, so the host retries the
    // command on another path instead of failing it up to the file system as a medium error.
    case Errc::unavailable: return check_condition(SenseKey::not_ready, asc::kNotReadyUnavailable);
    default: return check_condition(SenseKey::hardware_error, asc::kInternalTargetFailure);
  }
}

CommandResult LogicalUnit::check_range(std::uint64_t lba, std::uint64_t blocks) const {
  const std::uint64_t cap = this->blocks();
  if (lba > cap || blocks > cap - lba) return check_condition(SenseKey::illegal_request, asc::kLbaOutOfRange);
  return {};
}

CommandResult LogicalUnit::data_in(Command c, std::span<const std::uint8_t> bytes,
                                   std::uint32_t alloc) const {
  CommandResult r;
  const std::size_t n = std::min<std::size_t>({bytes.size(), alloc, c.data_in.size()});
  if (n != 0) std::memcpy(c.data_in.data(), bytes.data(), n);  // data_in may be empty and null
  r.data_in_length = static_cast<std::uint32_t>(n);
  return r;
}

// ---------------------------------------------------------------- range lock (COMPARE AND WRITE)

Task<void> LogicalUnit::lock_range(std::uint64_t lba, std::uint64_t blocks, bool exclusive) {
  for (;;) {
    const bool conflict = std::any_of(held_.begin(), held_.end(), [&](const Range& h) {
      return (exclusive || h.exclusive) && lba < h.lba + h.blocks && h.lba < lba + blocks;
    });
    if (!conflict) break;
    co_await range_waiters_.wait();
  }
  held_.push_back({lba, blocks, exclusive});
}

void LogicalUnit::unlock_range(std::uint64_t lba, std::uint64_t blocks, bool exclusive) {
  auto it = std::find_if(held_.begin(), held_.end(), [&](const Range& h) {
    return h.lba == lba && h.blocks == blocks && h.exclusive == exclusive;
  });
  if (it != held_.end()) held_.erase(it);
  range_waiters_.notify_all();
}

// ---------------------------------------------------------------- dispatch

std::uint64_t LogicalUnit::data_out_length(std::span<const std::uint8_t> cdb) const {
  if (cdb.empty()) return 0;
  const std::uint64_t bs = cfg_.block_size;
  // VERIFY sends data only with BYTCHK: all blocks (01b) or one block to compare with each (11b).
  auto verify_bytes = [&](std::uint64_t blocks) -> std::uint64_t {
    const unsigned bytchk = cdb.size() > 1 ? (cdb[1] >> 1) & 0x03 : 0;
    return bytchk == 0 ? 0 : bytchk == 3 ? bs : blocks * bs;
  };
  switch (cdb[0]) {
    case op::kWrite6: {
      const std::uint64_t n = cdb.size() >= 6 ? cdb[4] : 0;
      return (n == 0 ? 256 : n) * bs;
    }
    case op::kWrite10:
    case op::kWriteVerify10: return cdb.size() >= 10 ? load_be<std::uint16_t>(&cdb[7]) * bs : 0;
    case op::kWrite12:
    case op::kWriteVerify12: return cdb.size() >= 12 ? load_be<std::uint32_t>(&cdb[6]) * bs : 0;
    case op::kWrite16:
    case op::kWriteVerify16: return cdb.size() >= 16 ? load_be<std::uint32_t>(&cdb[10]) * bs : 0;
    case op::kVerify10: return cdb.size() >= 10 ? verify_bytes(load_be<std::uint16_t>(&cdb[7])) : 0;
    case op::kVerify12: return cdb.size() >= 12 ? verify_bytes(load_be<std::uint32_t>(&cdb[6])) : 0;
    case op::kVerify16: return cdb.size() >= 16 ? verify_bytes(load_be<std::uint32_t>(&cdb[10])) : 0;
    case op::kWriteSame10: return bs;
    case op::kWriteSame16: return cdb.size() >= 2 && (cdb[1] & 0x01) ? 0 : bs;
    case op::kCompareAndWrite: return cdb.size() >= 16 ? std::uint64_t{2} * cdb[13] * bs : 0;
    case op::kUnmap: return cdb.size() >= 10 ? load_be<std::uint16_t>(&cdb[7]) : 0;
    case op::kModeSelect6: return cdb.size() >= 6 ? cdb[4] : 0;
    case op::kModeSelect10: return cdb.size() >= 10 ? load_be<std::uint16_t>(&cdb[7]) : 0;
    case op::kPersistentReserveOut: return cdb.size() >= 10 ? load_be<std::uint32_t>(&cdb[5]) : 0;
    default: return 0;
  }
}

Task<CommandResult> LogicalUnit::execute(Command c) {
  if (c.cdb.empty()) co_return illegal_request(asc::kInvalidOpcode, 0);
  const std::uint8_t opcode = c.cdb[0];
  if (c.cdb.size() < cdb_length(opcode)) co_return illegal_request(asc::kInvalidFieldInCdb, 0);
  if (gone()) {
    if (opcode != op::kInquiry) co_return check_condition(SenseKey::illegal_request, asc::kLunNotSupported);
    CommandResult r = inquiry(c);
    // Peripheral qualifier 011b, type 1Fh: no logical unit here, and none will be.
    if (r.status == ScsiStatus::good && r.data_in_length > 0) c.data_in[0] = std::byte{0x7f};
    co_return r;
  }
  if (refresh_hook_) refresh_hook_(*this);
  if (const std::uint64_t now = blocks(); now != announced_blocks_) {
    // The volume grew (a mirrored one: once both replicas hold the new size). Every nexus that
    // may have read the old capacity hears CAPACITY DATA HAS CHANGED once, the unit attention
    // hosts act on by reading the capacity again (Linux rescans the disk's size on it).
    announced_blocks_ = now;
    unit_attention_all(asc::kCapacityDataChanged);
  }

  // A new nexus inherits the conditions raised before it was seen; INQUIRY, REPORT LUNS and
  // REQUEST SENSE neither report nor clear a unit attention (SAM-5 5.14).
  auto [it, fresh] = unit_attentions_.try_emplace(*c.nexus);
  if (fresh) it->second = pending_for_new_;
  if (!it->second.empty() && opcode != op::kInquiry && opcode != op::kReportLuns &&
      opcode != op::kRequestSense) {
    const Asc ua = it->second.front();
    it->second.erase(it->second.begin());
    co_return check_condition(SenseKey::unit_attention, ua);
  }
  if (auto refused = alua_refusal(c.cdb)) co_return *refused;
  if (pr_->conflicts(*c.nexus, c.cdb)) {
    CommandResult r;
    r.status = ScsiStatus::reservation_conflict;
    co_return r;
  }
  co_return co_await dispatch(c);
}

Task<CommandResult> LogicalUnit::dispatch(Command c) {
  const auto& cdb = c.cdb;
  const bool modifies = is_modifying(cdb[0]);
  if (modifies && (cfg_.read_only || c.nexus->read_only || swp_))
    co_return check_condition(SenseKey::data_protect, asc::kWriteProtected);
  switch (cdb[0]) {
    case op::kTestUnitReady: co_return CommandResult{};
    case op::kRequestSense: co_return request_sense(c);
    case op::kInquiry: co_return inquiry(c);
    case op::kModeSense6: co_return mode_sense(c, false);
    case op::kModeSense10: co_return mode_sense(c, true);
    case op::kModeSelect6: co_return mode_select(c, false);
    case op::kModeSelect10: co_return mode_select(c, true);
    case op::kStartStopUnit:
    case op::kPreventAllow: co_return CommandResult{};
    case op::kReadCapacity10: co_return read_capacity10(c);
    case op::kServiceActionIn16:
      switch (cdb[1] & 0x1f) {
        case sa::kReadCapacity16: co_return read_capacity16(c);
        case sa::kGetLbaStatus: co_return get_lba_status(c);
        default: co_return illegal_request(asc::kInvalidFieldInCdb, 1, 4);
      }
    case op::kMaintenanceIn:
      switch (cdb[1] & 0x1f) {
        case sa::kReportTargetPortGroups: co_return report_target_port_groups(c);
        case sa::kReportSupportedOpcodes: co_return report_supported_opcodes(c);
        default: co_return illegal_request(asc::kInvalidFieldInCdb, 1, 4);
      }
    case op::kRead6: {
      const std::uint64_t lba =
          (static_cast<std::uint64_t>(cdb[1] & 0x1f) << 16) | load_be<std::uint16_t>(&cdb[2]);
      co_return co_await read(c, lba, cdb[4] == 0 ? 256 : cdb[4]);
    }
    case op::kRead10:
    case op::kRead12:
    case op::kRead16: {
      if (cdb[1] & 0xe0)
        co_return illegal_request(asc::kInvalidFieldInCdb, 1, 7);  // RDPROTECT: no protection info
      const auto [lba, n] = lba_and_length(cdb);
      co_return co_await read(c, lba, n);
    }
    case op::kWrite6: {
      const std::uint64_t lba =
          (static_cast<std::uint64_t>(cdb[1] & 0x1f) << 16) | load_be<std::uint16_t>(&cdb[2]);
      co_return co_await write(c, lba, cdb[4] == 0 ? 256 : cdb[4], false);
    }
    case op::kWrite10:
    case op::kWrite12:
    case op::kWrite16:
    case op::kWriteVerify10:
    case op::kWriteVerify12:
    case op::kWriteVerify16: {
      if (cdb[1] & 0xe0) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 7);  // WRPROTECT
      const auto [lba, n] = lba_and_length(cdb);
      // WRITE AND VERIFY: the data is verified by being durable before the status (FUA).
      const bool verify_op =
          cdb[0] == op::kWriteVerify10 || cdb[0] == op::kWriteVerify12 || cdb[0] == op::kWriteVerify16;
      co_return co_await write(c, lba, n, verify_op || (cdb[1] & 0x08));
    }
    case op::kVerify10:
    case op::kVerify12:
    case op::kVerify16: {
      if (cdb[1] & 0xe0) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 7);  // VRPROTECT
      const auto [lba, n] = lba_and_length(cdb);
      co_return co_await verify(c, lba, n, static_cast<std::uint8_t>((cdb[1] >> 1) & 0x03));
    }
    case op::kSynchronizeCache10: co_return co_await synchronize_cache(c, false);
    case op::kSynchronizeCache16: co_return co_await synchronize_cache(c, true);
    case op::kWriteSame10: co_return co_await write_same(c, false);
    case op::kWriteSame16: co_return co_await write_same(c, true);
    case op::kUnmap: co_return co_await unmap(c);
    case op::kCompareAndWrite: co_return co_await compare_and_write(c);
    case op::kPersistentReserveIn: co_return pr_->in(*c.nexus, cdb, c.data_in);
    case op::kPersistentReserveOut: {
      if (shared_) co_return co_await shared_reserve_out(c);
      CommandResult r = pr_->out(*c.nexus, cdb, c.data_out);
      co_await aborts_settled();  // PREEMPT AND ABORT: answered once the preempted commands are gone
      co_return r;
    }
    default: co_return illegal_request(asc::kInvalidOpcode, 0);
  }
}

// ---------------------------------------------------------------- block commands

Task<CommandResult> LogicalUnit::read(Command c, std::uint64_t lba, std::uint32_t blocks) {
  if (auto r = check_range(lba, blocks); r.status != ScsiStatus::good) co_return r;
  const std::uint64_t bytes = std::uint64_t{blocks} * cfg_.block_size;
  // The initiator may expect less than the CDB asks for, even part of a block: send what fits,
  // the transport reports the residual.
  const std::uint64_t n = std::min<std::uint64_t>(bytes, c.data_in.size());
  const std::uint64_t whole = n / cfg_.block_size * cfg_.block_size;
  if (whole) {
    Status st = co_await volume_.read(lba * cfg_.block_size, c.data_in.subspan(0, whole));
    if (!st) co_return from_status(st, false);
  }
  if (n > whole) {
    AlignedBuffer last(cfg_.block_size);
    Status st = co_await volume_.read((lba * cfg_.block_size) + whole, last.span());
    if (!st) co_return from_status(st, false);
    std::memcpy(c.data_in.data() + whole, last.span().data(), n - whole);
  }
  CommandResult r;
  r.data_in_length = static_cast<std::uint32_t>(n);
  co_return r;
}

Task<CommandResult> LogicalUnit::write(Command c, std::uint64_t lba, std::uint32_t blocks, bool fua) {
  if (auto r = check_range(lba, blocks); r.status != ScsiStatus::good) co_return r;
  const std::uint64_t bytes = std::uint64_t{blocks} * cfg_.block_size;
  // Fewer bytes than the CDB asks for (a transport overflow/underflow mismatch): write whole blocks
  // of what arrived; the transport reports the residual.
  const std::uint64_t n =
      std::min<std::uint64_t>(bytes, c.data_out.size() / cfg_.block_size * cfg_.block_size);
  CommandResult r;
  if (n) {
    co_await lock_range(lba, n / cfg_.block_size, false);
    Status st = co_await volume_.write(lba * cfg_.block_size, c.data_out.subspan(0, n), fua);
    unlock_range(lba, n / cfg_.block_size, false);
    if (!st) co_return from_status(st, true);
  }
  r.data_out_used = static_cast<std::uint32_t>(n);
  co_return r;
}

Task<CommandResult> LogicalUnit::verify(Command c, std::uint64_t lba, std::uint32_t blocks,
                                        std::uint8_t bytchk) {
  if (bytchk == 2) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 2);
  if (auto r = check_range(lba, blocks); r.status != ScsiStatus::good) co_return r;
  if (blocks == 0) co_return CommandResult{};
  const std::uint64_t bs = cfg_.block_size;
  const std::uint64_t bytes = blocks * bs;
  AlignedBuffer medium(bytes);
  Status st = co_await volume_.read(lba * bs, medium.span());
  if (!st) co_return from_status(st, false);
  if (bytchk == 0) co_return CommandResult{};  // medium verification: the read succeeded
  const std::uint64_t want = bytchk == 3 ? bs : bytes;
  if (c.data_out.size() < want) co_return illegal_request(asc::kParameterListLengthError, 0, -1, false);
  for (std::uint64_t i = 0; i < bytes; ++i) {
    const std::byte expected = bytchk == 3 ? c.data_out[i % bs] : c.data_out[i];
    if (medium.data()[i] != expected) {
      CommandResult r = check_condition(SenseKey::miscompare, asc::kMiscompareDuringVerify);
      r.sense.information_valid = true;
      r.sense.information = i;
      r.data_out_used = static_cast<std::uint32_t>(want);
      co_return r;
    }
  }
  CommandResult r;
  r.data_out_used = static_cast<std::uint32_t>(want);
  co_return r;
}

Task<CommandResult> LogicalUnit::synchronize_cache(Command c, bool sixteen) {
  const auto [lba, n] = lba_and_length(c.cdb);
  (void)sixteen;
  // NUMBER OF BLOCKS 0 means "to the end"; a range past the end is an error even though we flush all.
  if (auto r = check_range(lba, n); r.status != ScsiStatus::good) co_return r;
  Status st = co_await volume_.flush();
  if (!st) co_return from_status(st, true);
  co_return CommandResult{};
}

Task<CommandResult> LogicalUnit::write_same(Command c, bool sixteen) {
  const auto& cdb = c.cdb;
  const bool anchor = cdb[1] & 0x10, unmap_bit = cdb[1] & 0x08, ndob = sixteen && (cdb[1] & 0x01);
  if (anchor) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 4);
  if (cdb[1] & 0xe0) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 7);  // WRPROTECT
  const auto [lba, n] = lba_and_length(cdb);
  if (n == 0) co_return illegal_request(asc::kInvalidFieldInCdb, sixteen ? 10 : 7);  // WSNZ=1
  if (n > kMaxWriteSameBlocks) co_return illegal_request(asc::kInvalidFieldInCdb, sixteen ? 10 : 7);
  if (auto r = check_range(lba, n); r.status != ScsiStatus::good) co_return r;
  const std::uint64_t bs = cfg_.block_size;
  // Exactly one block of Data-Out: anything else means the initiator and we disagree on the
  // command (SBC-4 5.50), and guessing which block it meant would write the wrong pattern.
  if (!ndob && c.data_out.size() != bs)
    co_return illegal_request(asc::kParameterListLengthError, 0, -1, false);
  const std::span<const std::byte> block = ndob ? std::span<const std::byte>{} : c.data_out.subspan(0, bs);
  const bool zeroes =
      ndob || std::all_of(block.begin(), block.end(), [](std::byte b) { return b == std::byte{0}; });
  co_await lock_range(lba, n, false);
  Status st;
  if (zeroes) {
    // UNMAP set: deallocate (reads zeroes: LBPRZ). UNMAP clear: the blocks stay mapped.
    st = co_await volume_.write_zeroes(lba * bs, std::uint64_t{n} * bs, !unmap_bit, false);
  } else {
    const std::uint64_t chunk_blocks = std::min<std::uint64_t>(n, (1u << 20) / bs);
    AlignedBuffer pattern(chunk_blocks * bs);
    for (std::uint64_t i = 0; i < chunk_blocks; ++i) std::memcpy(pattern.data() + i * bs, block.data(), bs);
    for (std::uint64_t done = 0; done < n && st;) {
      const std::uint64_t k = std::min<std::uint64_t>(chunk_blocks, n - done);
      st = co_await volume_.write((lba + done) * bs, pattern.span().subspan(0, k * bs), false);
      done += k;
    }
  }
  unlock_range(lba, n, false);
  if (!st) co_return from_status(st, true);
  CommandResult r;
  r.data_out_used = ndob ? 0 : static_cast<std::uint32_t>(bs);
  co_return r;
}

Task<CommandResult> LogicalUnit::unmap(Command c) {
  const auto& cdb = c.cdb;
  if (cdb[1] & 0x01) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 0);  // ANCHOR
  const std::uint16_t plen = load_be<std::uint16_t>(&cdb[7]);
  if (plen == 0) co_return CommandResult{};
  if (plen < 8 || c.data_out.size() < plen) co_return illegal_request(asc::kParameterListLengthError, 7);
  const auto* p = reinterpret_cast<const std::uint8_t*>(c.data_out.data());
  const std::uint16_t data_len = load_be<std::uint16_t>(p);
  const std::uint16_t desc_len = load_be<std::uint16_t>(p + 2);
  if (data_len + 2u > plen || desc_len + 8u > plen || desc_len % 16)
    co_return illegal_request(asc::kParameterListLengthError, 7);
  const std::size_t count = desc_len / 16;
  if (count > kMaxUnmapDescriptors)
    co_return illegal_request(asc::kInvalidFieldInParameterList, 2, -1, false);
  // Validate every descriptor before changing anything: a bad one fails the whole command.
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint8_t* d = p + 8 + i * 16;
    const std::uint64_t lba = load_be<std::uint64_t>(d);
    const std::uint32_t n = load_be<std::uint32_t>(d + 8);
    if (n > kMaxUnmapBlocks)
      co_return illegal_request(asc::kInvalidFieldInParameterList, static_cast<std::uint16_t>(8 + i * 16 + 8),
                                -1, false);
    if (auto r = check_range(lba, n); r.status != ScsiStatus::good) co_return r;
  }
  const std::uint64_t bs = cfg_.block_size;
  for (std::size_t i = 0; i < count; ++i) {
    const std::uint8_t* d = p + 8 + i * 16;
    const std::uint64_t lba = load_be<std::uint64_t>(d);
    const std::uint32_t n = load_be<std::uint32_t>(d + 8);
    if (n == 0) continue;
    co_await lock_range(lba, n, false);
    Status st = co_await volume_.trim(lba * bs, std::uint64_t{n} * bs);
    unlock_range(lba, n, false);
    if (!st) co_return from_status(st, true);
  }
  CommandResult r;
  r.data_out_used = plen;
  co_return r;
}

Task<CommandResult> LogicalUnit::compare_and_write(Command c) {
  const auto& cdb = c.cdb;
  if (cdb[1] & 0xe0) co_return illegal_request(asc::kInvalidFieldInCdb, 1, 7);  // WRPROTECT
  const std::uint64_t lba = load_be<std::uint64_t>(&cdb[2]);
  const std::uint32_t n = cdb[13];
  const std::uint64_t bs = cfg_.block_size, bytes = std::uint64_t{n} * bs;
  // The Data-Out must be exactly the verify and write instances: a transport whose expected
  // length disagrees with NUMBER OF LOGICAL BLOCKS (e.g. 256 wrapped to 0) is refused outright.
  if (c.data_out.size() != 2 * bytes) co_return illegal_request(asc::kInvalidFieldInCdb, 13);
  if (n == 0) co_return CommandResult{};
  if (n > kMaxCompareAndWriteBlocks) co_return illegal_request(asc::kInvalidFieldInCdb, 13);
  if (auto r = check_range(lba, n); r.status != ScsiStatus::good) co_return r;
  const bool fua = cdb[1] & 0x08;
  // The range lock orders it against this LU's own commands; the volume makes the compare and
  // the write one step against writes through every node (a mirror's owner does both).
  co_await lock_range(lba, n, true);
  Result<volume::CompareOutcome> out = co_await volume_.compare_and_write(
      lba * bs, c.data_out.first(bytes), c.data_out.subspan(bytes, bytes), fua);
  CommandResult r;
  if (!out.is_ok()) {
    r = from_status(out.status(), true);
  } else if (!out->matched) {
    r = check_condition(SenseKey::miscompare, asc::kMiscompareDuringVerify);
    r.sense.information_valid = true;
    r.sense.information = out->miscompare_at;
  }
  unlock_range(lba, n, true);
  r.data_out_used = static_cast<std::uint32_t>(2 * bytes);
  co_return r;
}

}  // namespace duplex::scsi
