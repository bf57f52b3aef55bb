#include "connection.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <asio/buffer.hpp>

#include "duplex/base/crc32c.h"
#include "duplex/scsi/reservations.h"

namespace duplex::iscsi {

namespace {
using namespace std::chrono_literals;

constexpr std::uint8_t kFinal = 0x80;
constexpr std::uint32_t kMaxBuffer = 32u << 20;  // largest Data-Out/Data-In buffer per command
constexpr std::uint8_t kOpReportLuns = 0xa0, kOpInquiry = 0x12, kOpRequestSense = 0x03;
constexpr std::uint8_t kOpPersistentReserveOut = 0x5f;

// Task management functions (RFC 7143 §11.5.1) and responses (§11.6.1).
enum Tmf : std::uint8_t {
  kAbortTask = 1,
  kAbortTaskSet = 2,
  kClearAca = 3,
  kClearTaskSet = 4,
  kLunReset = 5,
  kTargetWarmReset = 6,
  kTargetColdReset = 7,
  kTaskReassign = 8,
};
enum TmfResponse : std::uint8_t {
  kFunctionComplete = 0,
  kTaskDoesNotExist = 1,
  kLunDoesNotExist = 2,
  kReassignNotSupported = 4,
  kTmfNotSupported = 5,
  kFunctionRejected = 255,
};

// Bytes a READ CDB asks for (for the overflow residual); 0 when the command is not a READ.
std::uint64_t read_length(std::span<const std::uint8_t> cdb, std::uint32_t block_size) {
  switch (cdb[0]) {
    case 0x08: return std::uint64_t{cdb[4] == 0 ? 256u : cdb[4]} * block_size;
    case 0x28: return std::uint64_t{load_be<std::uint16_t>(&cdb[7])} * block_size;
    case 0xa8: return std::uint64_t{load_be<std::uint32_t>(&cdb[6])} * block_size;
    case 0x88: return std::uint64_t{load_be<std::uint32_t>(&cdb[10])} * block_size;
    default: return 0;
  }
}

std::span<const std::byte> as_bytes(const std::vector<std::uint8_t>& v) {
  return {reinterpret_cast<const std::byte*>(v.data()), v.size()};
}
}  // namespace

Connection::Connection(Portal::Impl& portal, std::unique_ptr<TcpStream> io, std::string id)
    : portal_(portal), io_(std::move(io)), id_(std::move(id)) {
  last_rx_ = std::chrono::steady_clock::now();
}

Connection::~Connection() = default;

void Connection::close(const std::string& why) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = why;
  io_->close();
  if (timer_) timer_->cancel();
}

// ---------------------------------------------------------------- login

LoginPolicy Connection::policy() {
  LoginPolicy p;
  Portal::Impl* portal = &portal_;
  p.target_exists = [portal](const std::string& t) { return portal->targets.find(t) != nullptr; };
  p.allowed = [portal](const std::string& initiator, const std::string& t) {
    if (t.empty()) return true;  // discovery: SendTargets filters by ACL
    const Target* target = portal->targets.find(t);
    return target != nullptr && target->access_for(initiator) != Access::none;
  };
  p.chap_for = [portal](const std::string& t) -> std::optional<ChapCredentials> {
    if (t.empty()) return portal->cfg.discovery_chap;
    const Target* target = portal->targets.find(t);
    return target ? target->chap : std::nullopt;
  };
  p.new_tsih = [portal] {
    std::uint16_t t = portal->next_tsih++;
    if (t == 0) t = portal->next_tsih++;
    return t;
  };
  p.tpgt = portal_.cfg.tpgt;
  p.limits = portal_.cfg.limits;
  return p;
}

Task<bool> Connection::login() {
  login_.emplace(policy());
  for (;;) {
    std::array<std::uint8_t, kBhsSize> raw{};
    Status st = co_await io_->read_exact(reinterpret_cast<std::byte*>(raw.data()), raw.size());
    if (!st) {
      close_reason_ = st.message();
      co_return false;
    }
    const Bhs h(raw);
    if (h.opcode() != Opcode::login_request || h.total_ahs_bytes() != 0 || h.data_segment_length() > 65536) {
      // Anything but a Login Request before full feature phase: the RFC lets us just close.
      close_reason_ = fmt::format("opcode {:#04x} during login", h.raw_opcode());
      co_return false;
    }
    std::vector<std::uint8_t> data(h.data_segment_length());
    st = co_await io_->read_exact(reinterpret_cast<std::byte*>(data.data()), data.size());
    if (st) st = co_await io_->read_exact(nullptr, padded(h.data_segment_length()) - h.data_segment_length());
    if (!st) {
      close_reason_ = st.message();
      co_return false;
    }
    LoginPdu resp = login_->on_request(h, data);
    const std::uint32_t len = static_cast<std::uint32_t>(resp.data.size());
    static constexpr std::array<std::uint8_t, 3> kPad{};
    const std::array<asio::const_buffer, 3> bufs{asio::buffer(resp.bhs), asio::buffer(resp.data),
                                                 asio::buffer(kPad.data(), padded(len) - len)};
    st = co_await io_->write_all(bufs);
    if (!st) {
      close_reason_ = st.message();
      co_return false;
    }
    if (login_->close_after()) {
      close_reason_ = "login failed: " + login_->error();
      spdlog::info("event=iscsi.login_failed conn={} peer={} initiator={} target={} reason=\"{}\"", id_,
                   io_->peer(), login_->params().initiator_name, login_->params().target_name,
                   login_->error());
      co_return false;
    }
    if (login_->full_feature()) break;
  }
  params_ = login_->params();
  tsih_ = login_->tsih();
  stat_sn_ = login_->next_stat_sn();
  exp_cmd_sn_ = login_->exp_cmd_sn();
  max_cmd_sn_ = exp_cmd_sn_ + 127;  // what the login responses announced
  nexus_.initiator_port = login_->initiator_port();
  nexus_.relative_port = 1;
  if (!params_.discovery) {
    target_ = portal_.targets.find(params_.target_name);
    if (!target_) {
      close_reason_ = "target vanished during login";
      co_return false;
    }
    nexus_.read_only = target_->access_for(params_.initiator_name) == Access::read_only;
    nexus_.target_port = fmt::format("{},t,0x{:04x}", target_->name, portal_.cfg.tpgt);
    if (!target_->luns.empty()) nexus_.relative_port = target_->luns.front().lu->config().relative_port;
  }
  full_feature_ = true;
  co_return true;
}

// Session reinstatement (RFC 7143 §6.3.5): a login with the ISID of a live session of the same
// initiator and target replaces it; the old connection is closed and its commands end first.
Task<bool> Connection::join_session() {
  std::string isid;
  for (auto b : login_->isid()) isid += fmt::format("{:02x}", b);
  std::string initiator = params_.initiator_name;
  for (auto& ch : initiator) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  registry_key_ = fmt::format("{}|{}|{}", initiator, isid, params_.target_name);
  EventLoop& l0 = portal_.loops.at(0);
  for (int tries = 0;; ++tries) {
    auto it = portal_.registry.find(registry_key_);
    if (it == portal_.registry.end()) break;
    Connection* old = it->second;
    if (tries == 0) {
      spdlog::info("event=iscsi.session_reinstated conn={} old_conn={} initiator={} target={}", id_,
                   old->id(), params_.initiator_name, params_.target_name);
      const int ol = old->loop;
      portal_.loops.at(ol).post([old] { old->close("session reinstated by a new login"); });
    }
    if (tries > 500) {
      close_reason_ = "the session being reinstated did not end";
      co_return false;
    }
    co_await sleep_for(&l0, 10ms);
  }
  portal_.registry[registry_key_] = this;
  registered_ = true;
  portal_.session_count.fetch_add(1);
  co_return true;
}

Task<void> Connection::run() {
  EventLoop& l0 = portal_.loops.at(0);
  bool ok = false;
  {
    asio::steady_timer deadline(l0.context(), portal_.cfg.login_timeout);
    bool timed_out = false;
    deadline.async_wait([&](std::error_code ec) {
      if (!ec) {
        timed_out = true;
        io_->close();
      }
    });
    ok = co_await login();
    deadline.cancel();
    // Let a queued timer handler run before `deadline` goes away.
    co_await asio_op_void([&](auto h) { asio::post(l0.context(), [h] { h(std::error_code{}); }); });
    if (timed_out) close_reason_ = "login timeout";
  }
  if (ok && !params_.discovery) ok = co_await join_session();
  if (ok && portal_.stopping) {
    ok = false;
    close_reason_ = "portal stopping";
  }
  if (ok) {
    spdlog::info(
        "event=iscsi.login conn={} peer={} initiator={} isid={} target={} tsih={} access={} header_digest={} "
        "data_digest={} mrdsl={}/{} burst={}/{} initial_r2t={} immediate_data={}",
        id_, io_->peer(), params_.initiator_name, nexus_.initiator_port,
        params_.discovery ? "discovery" : params_.target_name, tsih_,
        nexus_.read_only ? "read-only" : "read-write", params_.header_digest, params_.data_digest,
        params_.initiator_mrdsl, params_.target_mrdsl, params_.first_burst_length, params_.max_burst_length,
        params_.initial_r2t, params_.immediate_data);
    // A normal session runs next to its LUNs.
    const int home = target_ ? std::clamp(target_->loop, 0, portal_.loops.size() - 1) : 0;
    if (home != loop) {
      portal_.conns[static_cast<std::size_t>(loop)].erase(pos);
      io_->rehome(portal_.loops.at(home).context());
      co_await switch_to(portal_.loops.at(home));
      loop = home;
      portal_.conns[static_cast<std::size_t>(loop)].push_front(this);
      pos = portal_.conns[static_cast<std::size_t>(loop)].begin();
    }
    if (target_) {
      // Before the first command: an LU-wide abort must find every command of the session.
      std::vector<std::pair<const scsi::LogicalUnit*, EventLoop*>> lus;
      lus.reserve(target_->luns.size());
      for (const auto& l : target_->luns)
        lus.emplace_back(l.lu, &portal_.loops.at(std::clamp(l.loop, 0, portal_.loops.size() - 1)));
      tasks_ = std::make_shared<SessionTasks>(this, portal_.loops.at(loop), nexus_, std::move(lus));
      for (const auto& l : target_->luns) l.lu->join_task_set(tasks_);
    }
    co_await full_feature();
    spdlog::info(
        "event=iscsi.logout conn={} peer={} initiator={} target={} reason=\"{}\" commands={} errors={} "
        "bytes_in={} bytes_out={} rejects={}",
        id_, io_->peer(), params_.initiator_name, params_.discovery ? "discovery" : params_.target_name,
        close_reason_, stats_.commands, stats_.errors, stats_.bytes_in, stats_.bytes_out, stats_.rejects);
  } else {
    spdlog::debug("event=iscsi.connection_end conn={} peer={} reason=\"{}\"", id_, io_->peer(),
                  close_reason_);
  }
  if (loop != 0) {
    // The registry and the count live on loop 0.
    portal_.conns[static_cast<std::size_t>(loop)].erase(pos);
    co_await switch_to(l0);
    loop = 0;
    portal_.conns[0].push_front(this);
    pos = portal_.conns[0].begin();
  }
  if (registered_) {
    auto it = portal_.registry.find(registry_key_);
    if (it != portal_.registry.end() && it->second == this) portal_.registry.erase(it);
    portal_.session_count.fetch_sub(1);
  }
  portal_.finished(this);
}

// ---------------------------------------------------------------- full feature phase

Task<void> Connection::full_feature() {
  EventLoop& home = portal_.loops.at(loop);
  timer_.emplace(home.context());
  bool pinger_done = portal_.cfg.nop_interval.count() == 0;
  WaitQueue pinger_exit;
  if (!pinger_done)
    spawn(pinger(), [&] {
      pinger_done = true;
      pinger_exit.notify_all();
    });
  for (;;) {
    Bhs h;
    Status st = co_await read_header(&h);
    if (!st) {
      if (!closing_)
        close_reason_ = st.code() == Errc::shutdown ? "initiator closed the connection" : st.message();
      break;
    }
    if (h.opcode() == Opcode::task_management) {
      // May wait for commands to end: the reader goes on (Data-Out for other commands). A TMF
      // carries no data; anything there is read and ignored so that framing holds.
      st = co_await read_data(nullptr, h.data_segment_length(), nullptr);
      if (!st) break;
      ++executing_;
      spawn(on_task_management(std::make_unique<Bhs>(h)), [this] {
        if (--executing_ == 0) idle_.notify_all();
      });
      continue;
    }
    switch (h.opcode()) {
      case Opcode::scsi_command: st = co_await on_scsi_command(&h); break;
      case Opcode::data_out: st = co_await on_data_out(&h); break;
      case Opcode::nop_out: st = co_await on_nop_out(&h); break;
      case Opcode::text_request: st = co_await on_text(&h); break;
      case Opcode::logout_request: st = co_await on_logout(&h); break;
      case Opcode::snack:  // ErrorRecoveryLevel 0: no SNACK
        st = co_await read_data(nullptr, h.data_segment_length(), nullptr);
        if (st) st = co_await reject(&h, RejectReason::protocol_error);
        break;
      default:  // a Login Request in full feature phase, or an opcode we do not know
        st = co_await read_data(nullptr, h.data_segment_length(), nullptr);
        if (st) st = co_await reject(&h, RejectReason::protocol_error);
        break;
    }
    if (!st) {
      if (!closing_) close_reason_ = st.message();
      break;
    }
    if (closing_) break;
  }
  const std::string why = close_reason_;
  close(why);
  // Commands that are still collecting data are dropped; executing ones finish unanswered.
  abort_where([](const Cmd&) { return true; });
  while (executing_ > 0) co_await idle_.wait();
  // No command left: an LU-wide abort from now on has nothing to wait for here (and must not
  // count on this connection, which goes away).
  if (tasks_) tasks_->conn = nullptr;
  if (!pinger_done) co_await pinger_exit.wait();
  timer_.reset();
}

Task<Status> Connection::read_header(Bhs* out) {
  std::array<std::uint8_t, kBhsSize + 256> raw{};
  DPX_CO_TRY(co_await io_->read_exact(reinterpret_cast<std::byte*>(raw.data()), kBhsSize));
  const Bhs h(std::span<const std::uint8_t, kBhsSize>(raw.data(), kBhsSize));
  if (Status st = validate_bhs(h, params_.target_mrdsl); !st) {
    // A length we did not allow (or an opcode that is no request) leaves the stream unframed:
    // say why and close (RFC 7143 §7.8: the connection is lost for ErrorRecoveryLevel 0).
    (void)co_await reject(&h, RejectReason::protocol_error);
    co_return st;
  }
  const std::uint32_t ahs = h.total_ahs_bytes();
  if (ahs) DPX_CO_TRY(co_await io_->read_exact(reinterpret_cast<std::byte*>(raw.data() + kBhsSize), ahs));
  if (params_.header_digest) {
    std::array<std::uint8_t, kDigestSize> got{};
    DPX_CO_TRY(co_await io_->read_exact(reinterpret_cast<std::byte*>(got.data()), got.size()));
    if (got != digest({raw.data(), kBhsSize + ahs}))
      co_return Status::error(Errc::corrupt, "header digest error");  // framing cannot be trusted
  }
  ahs_.assign(raw.begin() + kBhsSize, raw.begin() + kBhsSize + ahs);
  last_rx_ = std::chrono::steady_clock::now();
  *out = h;
  co_return Status::ok();
}

Task<Status> Connection::read_data(std::byte* dst, std::uint32_t len, bool* digest_ok) {
  if (digest_ok) *digest_ok = true;
  const std::uint32_t total = padded(len);
  if (!params_.data_digest || len == 0) {
    DPX_CO_TRY(co_await io_->read_exact(dst, len));
    DPX_CO_TRY(co_await io_->read_exact(nullptr, total - len));
    co_return Status::ok();
  }
  // The digest covers the data and its padding; a discarded segment is checked as well.
  std::uint32_t crc = 0;
  std::array<std::uint8_t, 4> pad{};
  if (dst) {
    DPX_CO_TRY(co_await io_->read_exact(dst, len));
    crc = crc32c(dst, len);
  } else {
    if (scratch_.size() < 65536) scratch_.resize(65536);
    for (std::uint32_t done = 0; done < len;) {
      const std::uint32_t k = std::min<std::uint32_t>(len - done, 65536);
      DPX_CO_TRY(co_await io_->read_exact(scratch_.data(), k));
      crc = crc32c(scratch_.data(), k, crc);
      done += k;
    }
  }
  DPX_CO_TRY(co_await io_->read_exact(reinterpret_cast<std::byte*>(pad.data()), total - len));
  crc = crc32c(pad.data(), total - len, crc);
  std::array<std::uint8_t, kDigestSize> got{};
  DPX_CO_TRY(co_await io_->read_exact(reinterpret_cast<std::byte*>(got.data()), got.size()));
  const std::array<std::uint8_t, kDigestSize> want{
      static_cast<std::uint8_t>(crc), static_cast<std::uint8_t>(crc >> 8),
      static_cast<std::uint8_t>(crc >> 16), static_cast<std::uint8_t>(crc >> 24)};
  if (digest_ok) *digest_ok = got == want;
  co_return Status::ok();
}

// ---------------------------------------------------------------- sending

Task<Status> Connection::send(BhsBuilder b, std::span<const std::byte> data, Stat stat) {
  co_await write_lock_.lock();
  if (stat != Stat::none) {
    b.u32(24, stat_sn_);
    if (stat == Stat::advance) ++stat_sn_;
  }
  // The window: as many commands as the queue depth beyond those still outstanding, never shrinking.
  const std::uint32_t qd = std::max<std::uint32_t>(portal_.cfg.queue_depth, 1);
  const std::uint32_t outstanding = std::min<std::uint32_t>(static_cast<std::uint32_t>(cmds_.size()), qd - 1);
  const std::uint32_t max_sn = exp_cmd_sn_ + (qd - outstanding) - 1;
  if (sn_lt(max_cmd_sn_, max_sn)) max_cmd_sn_ = max_sn;
  b.u32(28, exp_cmd_sn_).u32(32, max_cmd_sn_).data_segment_length(static_cast<std::uint32_t>(data.size()));
  const auto& bhs = b.bytes();
  const std::uint32_t len = static_cast<std::uint32_t>(data.size());
  static constexpr std::array<std::uint8_t, 3> kPad{};
  std::array<std::uint8_t, kDigestSize> hd{}, dd{};
  std::array<asio::const_buffer, 5> bufs;
  std::size_t n = 0;
  bufs[n++] = asio::buffer(bhs);
  if (params_.header_digest) {
    hd = digest(bhs);
    bufs[n++] = asio::buffer(hd);
  }
  if (len) {
    bufs[n++] = asio::buffer(data.data(), len);
    if (padded(len) != len) bufs[n++] = asio::buffer(kPad.data(), padded(len) - len);
    if (params_.data_digest) {
      std::uint32_t crc = crc32c(data.data(), len);
      crc = crc32c(kPad.data(), padded(len) - len, crc);
      dd = {static_cast<std::uint8_t>(crc), static_cast<std::uint8_t>(crc >> 8),
            static_cast<std::uint8_t>(crc >> 16), static_cast<std::uint8_t>(crc >> 24)};
      bufs[n++] = asio::buffer(dd);
    }
  }
  Status st = co_await io_->write_all(std::span(bufs.data(), n));
  stats_.bytes_out += len;
  write_lock_.unlock();
  co_return st;
}

Task<Status> Connection::reject(const Bhs* pdu, RejectReason why) {
  const Bhs& h = *pdu;
  ++stats_.rejects;
  spdlog::debug("event=iscsi.reject conn={} opcode={:#04x} reason={:#04x}", id_, h.raw_opcode(),
                static_cast<unsigned>(why));
  BhsBuilder b(Opcode::reject);
  b.flags(kFinal).byte(2, static_cast<std::uint8_t>(why)).itt(kReservedTag);
  const auto& raw = h.bytes();
  co_return co_await send(b, {reinterpret_cast<const std::byte*>(raw.data()), raw.size()}, Stat::advance);
}

Task<void> Connection::pinger() {
  const auto interval = portal_.cfg.nop_interval;
  const auto timeout = std::max(portal_.cfg.nop_timeout, interval);
  auto last_ping = std::chrono::steady_clock::now();
  while (!closing_) {
    timer_->expires_after(std::min<std::chrono::steady_clock::duration>(interval, 1s));
    const std::error_code ec = co_await asio_op_void([&](auto h) { timer_->async_wait(std::move(h)); });
    if (ec || closing_) break;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_rx_ >= timeout) {
      spdlog::warn("event=iscsi.initiator_silent conn={} peer={} initiator={} silent_ms={}", id_, io_->peer(),
                   params_.initiator_name,
                   std::chrono::duration_cast<std::chrono::milliseconds>(now - last_rx_).count());
      close("no answer to NOP-In pings (initiator gone)");
      break;
    }
    if (now - last_rx_ >= interval && now - last_ping >= interval) {
      last_ping = now;
      BhsBuilder b(Opcode::nop_in);
      b.flags(kFinal).itt(kReservedTag).u32(20, ping_ttt_++);
      if (ping_ttt_ == kReservedTag) ping_ttt_ = 0x1000;
      if (Status st = co_await send(b, {}, Stat::current); !st) break;
    }
  }
}

// ---------------------------------------------------------------- CmdSN

bool Connection::cmd_sn_acceptable(const Bhs& h) {
  if (h.immediate()) return true;
  const std::uint32_t sn = h.u32(Bhs::kCmdSn);
  return sn_le(exp_cmd_sn_, sn) && sn_le(sn, max_cmd_sn_);
}

void Connection::advance_cmd_sn(const Bhs& h) {
  if (h.immediate()) return;
  const std::uint32_t sn = h.u32(Bhs::kCmdSn);
  // One connection delivers in order: the command is the expected one (or, after a dropped
  // command, the window moves past the gap).
  if (sn_le(exp_cmd_sn_, sn)) exp_cmd_sn_ = sn + 1;
}

// ---------------------------------------------------------------- NOP, text, logout

Task<Status> Connection::on_nop_out(const Bhs* pdu) {
  const Bhs& h = *pdu;
  const std::uint32_t len = h.data_segment_length();
  std::vector<std::byte> data(std::min<std::uint32_t>(len, params_.initiator_mrdsl));
  bool ok = true;
  if (len > data.size()) {
    DPX_CO_TRY(co_await read_data(nullptr, len, &ok));
  } else {
    DPX_CO_TRY(co_await read_data(data.data(), len, &ok));
  }
  if (!ok) co_return co_await reject(&h, RejectReason::data_digest_error);
  if (h.itt() == kReservedTag) {
    // The answer to our ping (TTT ours) or a one-way ping: nothing to send.
    if (!h.immediate()) co_return co_await reject(&h, RejectReason::protocol_error);
    co_return Status::ok();
  }
  if (!cmd_sn_acceptable(h)) co_return Status::ok();
  advance_cmd_sn(h);
  BhsBuilder b(Opcode::nop_in);
  b.flags(kFinal).u64(8, h.lun()).itt(h.itt()).u32(20, kReservedTag);
  co_return co_await send(b, data, Stat::advance);
}

Task<Status> Connection::on_text(const Bhs* pdu) {
  const Bhs& h = *pdu;
  const std::uint32_t len = h.data_segment_length();
  std::vector<std::uint8_t> data(len);
  bool ok = true;
  DPX_CO_TRY(co_await read_data(reinterpret_cast<std::byte*>(data.data()), len, &ok));
  if (!ok) co_return co_await reject(&h, RejectReason::data_digest_error);
  if (!cmd_sn_acceptable(h)) co_return Status::ok();
  advance_cmd_sn(h);
  const std::uint32_t ttt = h.u32(20);
  std::vector<std::uint8_t> body;
  if (ttt != kReservedTag && ttt == text_ttt_ && !text_pending_.empty()) {
    body = std::move(text_pending_);  // continuation of our long answer
    text_pending_.clear();
  } else {
    if (h.flags() & 0x40)  // C bit: a request split over PDUs; we accept only whole ones
      co_return co_await reject(&h, RejectReason::protocol_error);
    auto kvs = parse_text(data);
    if (!kvs) co_return co_await reject(&h, RejectReason::protocol_error);
    std::vector<KeyValue> answer;
    for (const auto& kv : *kvs) {
      if (kv.key != "SendTargets") {
        answer.push_back({kv.key, "NotUnderstood"});
        continue;
      }
      // A discovery session may ask for All or one name; a normal session learns only about its
      // own target (RFC 7143 Appendix C).
      for (const Target* t : portal_.targets.targets()) {
        if (t->access_for(params_.initiator_name) == Access::none) continue;
        const bool wanted = params_.discovery
                                ? kv.value == "All" || kv.value == t->name
                                : t->name == params_.target_name &&
                                      (kv.value.empty() || kv.value == "All" || kv.value == t->name);
        if (!wanted) continue;
        answer.push_back({"TargetName", t->name});
        answer.push_back({"TargetAddress", fmt::format("{},{}", io_->local(), portal_.cfg.tpgt)});
      }
    }
    body = encode_text(answer);
  }
  // Answers longer than the initiator receives go in parts, each part asked for by the initiator.
  const std::size_t max = params_.initiator_mrdsl;
  BhsBuilder b(Opcode::text_response);
  b.u64(8, h.lun()).itt(h.itt());
  if (body.size() > max) {
    text_pending_.assign(body.begin() + static_cast<std::ptrdiff_t>(max), body.end());
    body.resize(max);
    text_ttt_ = ++next_ttt_;
    b.flags(0x40).u32(20, text_ttt_);
  } else {
    b.flags(kFinal).u32(20, kReservedTag);
  }
  co_return co_await send(b, as_bytes(body), Stat::advance);
}

Task<Status> Connection::on_logout(const Bhs* pdu) {
  const Bhs& h = *pdu;
  DPX_CO_TRY(co_await read_data(nullptr, h.data_segment_length(), nullptr));
  if (!cmd_sn_acceptable(h)) co_return Status::ok();
  advance_cmd_sn(h);
  const std::uint8_t reason = h.flags() & 0x7f;
  std::uint8_t response = 0;
  if (reason == 2)
    response = 2;  // remove a connection for recovery: ErrorRecoveryLevel 0 has none
  else if (reason > 2)
    co_return co_await reject(&h, RejectReason::invalid_pdu_field);
  if (response == 0) {
    // Commands of the session end first; their responses are not sent after a logout.
    abort_where([](const Cmd&) { return true; });
    while (executing_ > 0) co_await idle_.wait();
  }
  BhsBuilder b(Opcode::logout_response);
  b.flags(kFinal).byte(2, response).itt(h.itt()).u16(40, 0).u16(42, 0);
  DPX_CO_TRY(co_await send(b, {}, Stat::advance));
  if (response == 0) close("logout");
  co_return Status::ok();
}

void Connection::request_logout() {
  if (closing_) return;
  spawn([](Connection* self) -> Task<void> {
    BhsBuilder b(Opcode::async_message);
    b.flags(kFinal)
        .itt(kReservedTag)
        .u32(20, kReservedTag)
        .byte(36, 1)  // AsyncEvent 1: logout requested
        .u16(42, static_cast<std::uint16_t>(std::max<long>(1, self->portal_.cfg.stop_grace.count() / 1000)));
    (void)co_await self->send(b, {}, Stat::advance);
  }(this));
}

// ---------------------------------------------------------------- SCSI commands

Task<Status> Connection::on_scsi_command(const Bhs* pdu) {
  const Bhs& h = *pdu;
  const std::uint32_t dsl = h.data_segment_length();
  const std::uint8_t flags = h.flags();
  const bool final = flags & 0x80, rd = flags & 0x40, wr = flags & 0x20;
  const std::uint32_t edtl = h.u32(Bhs::kEdtl);
  auto discard_and = [&](RejectReason why) -> Task<Status> {
    DPX_CO_TRY(co_await read_data(nullptr, dsl, nullptr));
    co_return co_await reject(&h, why);
  };
  if (params_.discovery) co_return co_await discard_and(RejectReason::protocol_error);
  if (h.itt() == kReservedTag) co_return co_await discard_and(RejectReason::invalid_pdu_field);
  if (!cmd_sn_acceptable(h)) {
    // Outside the window: the RFC says ignore it silently.
    DPX_CO_TRY(co_await read_data(nullptr, dsl, nullptr));
    co_return Status::ok();
  }
  const bool unsolicited_follows = wr && !final;
  if ((dsl > 0 && (!wr || !params_.immediate_data)) || dsl > edtl || dsl > params_.first_burst_length ||
      (unsolicited_follows && params_.initial_r2t) || (!wr && !final))
    co_return co_await discard_and(RejectReason::protocol_error);
  if (cmds_.count(h.itt())) co_return co_await discard_and(RejectReason::task_in_progress);
  advance_cmd_sn(h);
  ++stats_.commands;

  auto owned = std::make_unique<Cmd>();
  Cmd* c = owned.get();
  c->itt = h.itt();
  c->cmd_sn = h.u32(Bhs::kCmdSn);
  c->lun_field = h.lun();
  c->read = rd;
  c->write = wr;
  c->edtl = edtl;
  c->cdb.assign(h.cdb().begin(), h.cdb().end());
  // An Extended CDB AHS (type 1) carries the bytes beyond the 16th.
  for (std::size_t at = 0; at + 4 <= ahs_.size();) {
    const std::size_t len = load_be<std::uint16_t>(&ahs_[at]);
    const std::uint8_t type = ahs_[at + 2];
    if (at + 3 + len > ahs_.size()) break;
    if (type == 1 && len > 1)
      c->cdb.insert(c->cdb.end(), ahs_.begin() + static_cast<std::ptrdiff_t>(at + 4),
                    ahs_.begin() + static_cast<std::ptrdiff_t>(at + 3 + len));
    at += (3 + len + 3) & ~std::size_t{3};
  }
  if (auto n = decode_lun(c->lun_field)) c->lun = target_->lun(*n);

  if (wr) {
    std::uint64_t need = 0;
    if (c->lun) need = c->lun->lu->data_out_length(c->cdb);
    if (edtl <= kMaxBuffer) {
      c->out = take_buffer(edtl);
      c->want = static_cast<std::uint32_t>(std::min<std::uint64_t>(edtl, need));
    } else {
      c->early = scsi::illegal_request(scsi::asc::kInvalidFieldInCdb, 0);  // more than we buffer
    }
    const std::uint32_t first_burst = std::min(params_.first_burst_length, edtl);
    c->unsolicited = unsolicited_follows ? first_burst - dsl : 0;
    c->unsolicited_done = !unsolicited_follows;
    bool ok = true;
    DPX_CO_TRY(co_await read_data(c->out.size() == 0 ? nullptr : c->out.data(), dsl, &ok));
    if (!ok) {
      // The immediate data is damaged: the command ends with CHECK CONDITION once its data is in.
      c->early = scsi::check_condition(scsi::SenseKey::aborted_command, scsi::Asc{0x47, 0x05});
      DPX_CO_TRY(co_await reject(&h, RejectReason::data_digest_error));
    }
    c->received = dsl;
    stats_.bytes_in += dsl;
    c->next_r2t_offset = dsl;
    c->unsolicited_burst = Cmd::Burst{0, first_burst, dsl, 0};
  }
  cmds_.emplace(c->itt, std::move(owned));
  if (!wr || (c->unsolicited_done && (c->early || c->received >= c->want))) {
    spawn(execute(c));
    co_return Status::ok();
  }
  if (c->unsolicited_done) co_return co_await solicit(c);
  co_return Status::ok();
}

Task<Status> Connection::solicit(Cmd* c) {
  const std::uint32_t itt = c->itt;
  while (c->next_r2t_offset < c->want && c->outstanding_r2t < params_.max_outstanding_r2t) {
    const std::uint32_t offset = c->next_r2t_offset;
    const std::uint32_t len = std::min(params_.max_burst_length, c->want - offset);
    std::uint32_t ttt = ++next_ttt_;
    if (ttt == kReservedTag) ttt = ++next_ttt_;
    c->r2ts[ttt] = Cmd::Burst{offset, len, offset, 0};
    c->next_r2t_offset += len;
    ++c->outstanding_r2t;
    BhsBuilder b(Opcode::r2t);
    b.flags(kFinal)
        .u64(8, c->lun_field)
        .itt(itt)
        .u32(20, ttt)
        .u32(36, c->r2t_sn++)
        .u32(40, offset)
        .u32(44, len);
    DPX_CO_TRY(co_await send(b, {}, Stat::current));
    // The command may have been aborted while we waited for the socket.
    auto it = cmds_.find(itt);
    if (it == cmds_.end() || it->second.get() != c || c->aborted) break;
  }
  co_return Status::ok();
}

Task<Status> Connection::on_data_out(const Bhs* pdu) {
  const Bhs& h = *pdu;
  const std::uint32_t dsl = h.data_segment_length();
  const std::uint32_t ttt = h.u32(20), offset = h.u32(Bhs::kBufferOffset);
  auto it = cmds_.find(h.itt());
  if (it == cmds_.end() || it->second->aborted || it->second->executing) {
    // Data for a command that was aborted (or never was): drop it quietly (RFC 7143 §4.2.3.3).
    DPX_CO_TRY(co_await read_data(nullptr, dsl, nullptr));
    co_return Status::ok();
  }
  Cmd* c = it->second.get();
  bool in_bounds = std::uint64_t{offset} + dsl <= c->edtl;
  decltype(c->r2ts)::iterator r2t = c->r2ts.end();
  if (ttt == kReservedTag) {
    in_bounds = in_bounds && !c->unsolicited_done && dsl <= c->unsolicited;
  } else {
    r2t = c->r2ts.find(ttt);
    in_bounds = in_bounds && r2t != c->r2ts.end() && offset >= r2t->second.offset &&
                std::uint64_t{offset} + dsl <= std::uint64_t{r2t->second.offset} + r2t->second.length;
  }
  if (!in_bounds) {
    DPX_CO_TRY(co_await read_data(nullptr, dsl, nullptr));
    co_return co_await reject(&h, RejectReason::protocol_error);
  }
  // Each sequence numbers its PDUs from 0 and, with DataPDUInOrder, fills its range front to back.
  // A PDU out of sequence cannot be put right at ErrorRecoveryLevel 0; the command must not run
  // on data we cannot vouch for. The PDU is rejected and the command ends with CHECK CONDITION
  // (ABORTED COMMAND, DATA PHASE ERROR) once its data flow is over; the connection stays.
  Cmd::Burst& burst = ttt == kReservedTag ? c->unsolicited_burst : r2t->second;
  const bool out_of_sequence =
      h.u32(Bhs::kDataSn) != burst.next_data_sn || (params_.data_pdu_in_order && offset != burst.next_offset);
  ++burst.next_data_sn;
  burst.next_offset = offset + dsl;
  bool ok = true;
  c->receiving = true;
  DPX_CO_TRY(
      co_await read_data(c->out.size() == 0 || out_of_sequence ? nullptr : c->out.data() + offset, dsl, &ok));
  c->receiving = false;
  if (c->aborted) {
    // Aborted while its data arrived (a TMF or an LU-wide abort): abort_where left it to us.
    forget(c);
    co_return Status::ok();
  }
  if (out_of_sequence || !ok) {
    spdlog::info(
        "event=iscsi.data_out_error conn={} itt={:#x} data_sn={} offset={} expected_data_sn={} "
        "expected_offset={} digest_ok={}",
        id_, c->itt, h.u32(Bhs::kDataSn), offset, burst.next_data_sn - 1, burst.next_offset - dsl, ok);
    // DATA PHASE ERROR for a sequence error, PROTOCOL SERVICE CRC ERROR for a digest mismatch.
    c->early = scsi::check_condition(scsi::SenseKey::aborted_command,
                                     ok ? scsi::Asc{0x4b, 0x00} : scsi::Asc{0x47, 0x05});
    DPX_CO_TRY(co_await reject(&h, ok ? RejectReason::protocol_error : RejectReason::data_digest_error));
  }
  c->received += dsl;
  stats_.bytes_in += dsl;
  const bool final = h.final_bit();
  if (ttt == kReservedTag) {
    c->unsolicited -= dsl;
    if (final) {
      c->unsolicited_done = true;
      c->next_r2t_offset = std::max(c->next_r2t_offset, offset + dsl);
    }
  } else if (final) {
    c->r2ts.erase(r2t);
    --c->outstanding_r2t;
  }
  if (!c->unsolicited_done) co_return Status::ok();
  if (c->r2ts.empty() && (c->early || c->next_r2t_offset >= c->want)) {
    spawn(execute(c));
    co_return Status::ok();
  }
  co_return co_await solicit(c);
}

Task<void> Connection::execute(Cmd* c) {
  c->executing = true;
  ++executing_;
  const std::uint8_t opcode = c->cdb[0];
  // Aligned, so that an O_DIRECT volume reads straight into it (no bounce copy); exactly the
  // expected length, which the logical unit takes as its limit.
  const std::size_t in_len = c->read ? std::min(c->edtl, kMaxBuffer) : 0;
  AlignedBuffer in_buf = take_buffer(in_len);
  const std::span<std::byte> in = in_buf.span().subspan(0, in_len);
  scsi::CommandResult r;
  if (c->early) {
    r = *c->early;
  } else if (opcode == kOpReportLuns) {
    std::vector<std::uint64_t> luns;
    luns.reserve(target_->luns.size());
    for (const auto& l : target_->luns) luns.push_back(l.number);
    r = scsi::report_luns(c->cdb, luns, in);
  } else if (!c->lun) {
    if (opcode == kOpInquiry && c->cdb[1] == 0 && c->cdb[2] == 0) {
      // No LU here: peripheral qualifier 011b, device type 1Fh (SPC-4 6.6.2).
      std::array<std::uint8_t, 36> d{};
      d[0] = 0x7f;
      d[2] = 0x06;
      d[3] = 0x02;
      d[4] = 31;
      const std::size_t n = std::min<std::size_t>({d.size(), in.size(), load_be<std::uint16_t>(&c->cdb[3])});
      if (n) std::memcpy(in.data(), d.data(), n);
      r.data_in_length = static_cast<std::uint32_t>(n);
    } else if (opcode == kOpRequestSense) {
      scsi::Sense s;
      s.key = scsi::SenseKey::illegal_request;
      s.code = scsi::asc::kLunNotSupported;
      const auto d = s.encode();
      const std::size_t n = std::min<std::size_t>({d.size(), in.size(), c->cdb[4]});
      if (n) std::memcpy(in.data(), d.data(), n);
      r.data_in_length = static_cast<std::uint32_t>(n);
    } else {
      r = scsi::check_condition(scsi::SenseKey::illegal_request, scsi::asc::kLunNotSupported);
    }
  } else {
    const std::uint32_t have =
        std::min<std::uint32_t>(c->received, static_cast<std::uint32_t>(c->out.size()));
    scsi::Command cmd{c->cdb, std::span<const std::byte>(c->out.data(), have), in, &nexus_};
    EventLoop& home = portal_.loops.at(loop);
    EventLoop& lun_loop = portal_.loops.at(c->lun->loop);
    if (&lun_loop != &home) co_await switch_to(lun_loop);
    r = co_await c->lun->lu->execute(cmd);
    if (&lun_loop != &home) co_await switch_to(home);
  }
  if (r.status != scsi::ScsiStatus::good) ++stats_.errors;
  if (!c->aborted && !closing_) {
    Status st = co_await respond(c, r, std::span<const std::byte>(in.data(), r.data_in_length));
    if (!st && !closing_) close(st.message());
  }
  give_buffer(std::move(in_buf));
  give_buffer(std::move(c->out));
  c->executing = false;
  c->done = true;
  c->finished.notify_all();  // waiters must not touch c once resumed: it is forgotten next
  forget(c);
  --executing_;
  if (executing_ == 0) idle_.notify_all();
}

Task<Status> Connection::respond(Cmd* c, scsi::CommandResult r, std::span<const std::byte> data) {
  const std::uint32_t itt = c->itt;
  const bool good = r.status == scsi::ScsiStatus::good;
  // Residuals (RFC 7143 §11.4.5): what the command wanted against what the initiator expected.
  std::uint8_t res_flags = 0;
  std::uint32_t residual = 0;
  std::uint64_t wanted = 0;
  if (c->write && c->lun)
    wanted = c->lun->lu->data_out_length(c->cdb);
  else if (c->read && c->lun)
    wanted = read_length(c->cdb, c->lun->lu->config().block_size);
  const std::uint64_t moved = c->write ? std::min<std::uint64_t>(wanted, c->edtl) : data.size();
  if (wanted > c->edtl) {
    res_flags = 0x04;  // O
    residual = static_cast<std::uint32_t>(std::min<std::uint64_t>(wanted - c->edtl, 0xffffffffu));
  } else if ((c->write || c->read) && moved < c->edtl) {
    res_flags = 0x02;  // U
    residual = static_cast<std::uint32_t>(c->edtl - moved);
  }
  // Data-In, cut to what the initiator receives per PDU and per sequence; status goes with the last
  // PDU when there is no sense to send (phase collapse).
  const std::uint32_t mrdsl = std::max<std::uint32_t>(params_.initiator_mrdsl, 512);
  const std::uint32_t mbl = std::max<std::uint32_t>(params_.max_burst_length, mrdsl);
  std::size_t off = 0;
  std::uint32_t in_burst = 0;
  while (off < data.size()) {
    const std::uint32_t len =
        static_cast<std::uint32_t>(std::min<std::size_t>({data.size() - off, mrdsl, mbl - in_burst}));
    const bool last = off + len == data.size();
    in_burst += len;
    const bool seq_end = last || in_burst == mbl;
    if (seq_end) in_burst = 0;
    const bool with_status = last && good;
    BhsBuilder b(Opcode::data_in);
    b.flags(static_cast<std::uint8_t>((seq_end ? 0x80 : 0) | (with_status ? 0x01 | res_flags : 0)))
        .byte(3, with_status ? static_cast<std::uint8_t>(r.status) : 0)
        .u64(8, c->lun_field)
        .itt(itt)
        .u32(20, kReservedTag)
        .u32(36, c->data_sn++)
        .u32(40, static_cast<std::uint32_t>(off))
        .u32(44, with_status ? residual : 0);
    DPX_CO_TRY(co_await send(b, data.subspan(off, len), with_status ? Stat::advance : Stat::none));
    off += len;
    if (with_status) co_return Status::ok();
  }
  std::vector<std::byte> sense;
  if (r.status == scsi::ScsiStatus::check_condition) {
    const auto s = r.sense.encode();
    sense.resize(2 + s.size());
    sense[0] = std::byte{0};
    sense[1] = static_cast<std::byte>(s.size());
    std::memcpy(sense.data() + 2, s.data(), s.size());
  }
  BhsBuilder b(Opcode::scsi_response);
  b.flags(static_cast<std::uint8_t>(0x80 | res_flags))
      .byte(2, 0)
      .byte(3, static_cast<std::uint8_t>(r.status))
      .itt(itt)
      .u32(36, c->read ? c->data_sn : c->r2t_sn)
      .u32(44, residual);
  co_return co_await send(b, sense, Stat::advance);
}

AlignedBuffer Connection::take_buffer(std::size_t n) {
  constexpr std::size_t kClass = std::size_t{64} * 1024;
  if (n < kClass) return AlignedBuffer::uninitialized(n);
  const std::size_t rounded = (n + kClass - 1) / kClass * kClass;
  for (auto it = spare_.begin(); it != spare_.end(); ++it) {
    if (it->size() != rounded) continue;
    AlignedBuffer b = std::move(*it);
    spare_.erase(it);
    return b;
  }
  return AlignedBuffer::uninitialized(rounded);
}

void Connection::give_buffer(AlignedBuffer b) {
  // Enough for a sequential stream at queue depth 8 of 1 MiB both ways; at most 16 MiB per connection.
  constexpr std::size_t kKeepBytes = std::size_t{16} << 20;
  if (b.size() < std::size_t{64} * 1024) return;
  std::size_t kept = b.size();
  for (const auto& x : spare_) kept += x.size();
  while (kept > kKeepBytes && !spare_.empty()) {
    kept -= spare_.front().size();
    spare_.erase(spare_.begin());
  }
  if (kept <= kKeepBytes) spare_.push_back(std::move(b));
}

void Connection::forget(Cmd* c) {
  auto it = cmds_.find(c->itt);
  if (it != cmds_.end() && it->second.get() == c) cmds_.erase(it);
}

void Connection::abort_where(const std::function<bool(const Cmd&)>& pred) {
  std::vector<Cmd*> drop;
  for (auto& [itt, c] : cmds_) {
    if (!pred(*c) || c->aborted) continue;
    c->aborted = true;
    if (!c->executing && !c->receiving) drop.push_back(c.get());
  }
  // Neither executing nor receiving data: nothing references them but the map. The others are
  // forgotten by execute() or on_data_out() when they are done with them.
  for (Cmd* c : drop) forget(c);
}

Task<void> Connection::wait_ended(std::vector<std::uint32_t> itts) {
  // Aborted commands that are still executing; they are gone from cmds_ when done.
  for (;;) {
    Cmd* busy = nullptr;
    for (auto itt : itts) {
      auto it = cmds_.find(itt);
      if (it != cmds_.end() && it->second->aborted && it->second->executing) busy = it->second.get();
    }
    if (!busy) co_return;
    co_await busy->finished.wait();
  }
}

// ---------------------------------------------------------------- LU-wide aborts

Task<std::size_t> SessionTasks::abort_tasks(const scsi::LogicalUnit* lu) {
  EventLoop* back = &home_;
  for (const auto& [l, l_loop] : lus_)
    if (l == lu) back = l_loop;
  co_await switch_to(home_);
  std::size_t n = 0;
  if (conn) n = co_await conn->abort_for_lu(lu);
  co_await switch_to(*back);
  co_return n;
}

Task<std::size_t> Connection::abort_for_lu(const scsi::LogicalUnit* lu) {
  ++executing_;  // the connection does not finish before this has
  std::vector<std::uint32_t> itts;
  for (auto& [itt, c] : cmds_) {
    if (c->aborted || !c->lun || c->lun->lu != lu) continue;
    // Already waiting for the order of reservation changes (scsi::TaskSetMember): left alone.
    if (c->executing && !c->cdb.empty() && c->cdb[0] == kOpPersistentReserveOut) continue;
    itts.push_back(itt);
  }
  abort_where([&itts](const Cmd& c) { return std::find(itts.begin(), itts.end(), c.itt) != itts.end(); });
  const std::size_t n = itts.size();
  if (n > 0)
    spdlog::info(
        "event=iscsi.tasks_aborted conn={} initiator={} target={} commands={} reason=\"LU-wide abort\"", id_,
        nexus_.initiator_port, params_.target_name, n);
  co_await wait_ended(std::move(itts));
  if (--executing_ == 0) idle_.notify_all();
  co_return n;
}

// ---------------------------------------------------------------- task management

Task<void> Connection::on_task_management(std::unique_ptr<Bhs> pdu) {
  const Bhs& h = *pdu;
  const std::uint8_t function = h.flags() & 0x7f;
  std::uint8_t response = kFunctionComplete;
  if (!cmd_sn_acceptable(h)) co_return;
  const std::uint32_t exp_before = exp_cmd_sn_;
  advance_cmd_sn(h);
  const std::uint64_t lun_field = h.lun();
  auto lun_exists = [&] {
    auto n = decode_lun(lun_field);
    return n && target_ && target_->lun(*n);
  };
  switch (function) {
    case kAbortTask: {
      const std::uint32_t rtt = h.u32(20), ref_cmd_sn = h.u32(32);
      auto it = cmds_.find(rtt);
      if (it == cmds_.end() || it->second->lun_field != lun_field) {
        // Never received but inside the window (RefCmdSN not yet seen, before the TMF's own):
        // treat it as received and aborted. A command already answered does not exist.
        response = sn_le(exp_before, ref_cmd_sn) && sn_lt(ref_cmd_sn, h.u32(Bhs::kCmdSn)) ? kFunctionComplete
                                                                                          : kTaskDoesNotExist;
        if (it == cmds_.end()) break;
        if (it->second->lun_field != lun_field) {
          response = kTaskDoesNotExist;
          break;
        }
      }
      abort_where([rtt](const Cmd& c) { return c.itt == rtt; });
      std::vector<std::uint32_t> one(1, rtt);  // not {rtt}: GCC 12 miscompiles init lists in coroutines
      co_await wait_ended(std::move(one));
      break;
    }
    case kAbortTaskSet:
    case kClearTaskSet:
    case kLunReset: {
      if (!lun_exists()) {
        response = kLunDoesNotExist;
        break;
      }
      std::vector<std::uint32_t> itts;
      for (auto& [itt, c] : cmds_)
        if (c->lun_field == lun_field) itts.push_back(itt);
      abort_where([lun_field](const Cmd& c) { return c.lun_field == lun_field; });
      co_await wait_ended(std::move(itts));
      if (function != kLunReset) break;
      const Lun* l = target_->lun(*decode_lun(lun_field));
      EventLoop& home = portal_.loops.at(loop);
      co_await switch_to(portal_.loops.at(l->loop));
      co_await l->lu->reset_everywhere();  // LU-wide: the other node serving it resets too
      co_await switch_to(home);
      spdlog::info("event=iscsi.lun_reset conn={} initiator={} target={} lun={}", id_, params_.initiator_name,
                   params_.target_name, l->number);
      break;
    }
    case kTargetWarmReset:
    case kTargetColdReset: {
      if (!target_) {
        response = kFunctionRejected;
        break;
      }
      std::vector<std::uint32_t> itts;
      itts.reserve(cmds_.size());
      for (auto& [itt, c] : cmds_) itts.push_back(itt);
      abort_where([](const Cmd&) { return true; });
      co_await wait_ended(itts);
      EventLoop& home = portal_.loops.at(loop);
      for (const auto& l : target_->luns) {
        co_await switch_to(portal_.loops.at(l.loop));
        co_await l.lu->reset_everywhere();  // each LU is reset as a whole, on every node serving it
        co_await switch_to(home);
      }
      spdlog::info("event=iscsi.target_reset conn={} initiator={} target={} cold={}", id_,
                   params_.initiator_name, params_.target_name, function == kTargetColdReset);
      break;
    }
    case kClearAca: response = kTmfNotSupported; break;
    case kTaskReassign: response = kReassignNotSupported; break;
    default: response = kFunctionRejected; break;
  }
  if (closing_) co_return;
  BhsBuilder b(Opcode::task_management_response);
  b.flags(kFinal).byte(2, response).itt(h.itt());
  Status st = co_await send(b, {}, Stat::advance);
  if (!st)
    close(st.message());
  else if (function == kTargetColdReset && response == kFunctionComplete)
    close("target cold reset");
}

}  // namespace duplex::iscsi
