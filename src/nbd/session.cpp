#include "duplex/nbd/session.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include <spdlog/spdlog.h>

namespace duplex::nbd {

// ------------------------------------------------------------------------------------------------
// Request validation

Checked check_request(const Request& r, const TxState& s) {
  Checked c;
  if (r.magic.get() != kRequestMagic) {
    c.fatal = true;
    c.message = fmt::format("bad request magic {:#x}", r.magic.get());
    return c;
  }
  const std::uint16_t type = r.type.get();
  const std::uint16_t flags = r.flags.get();
  const std::uint64_t off = r.offset.get();
  const std::uint32_t len = r.length.get();
  if (type == kCmdWrite) c.payload = len;
  if (type == kCmdDisc) {
    c.disconnect = true;
    return c;
  }
  auto fail = [&](std::uint32_t e, std::string msg) {
    c.error = e;
    c.message = std::move(msg);
    return c;
  };
  if (s.stopping) return fail(kESHUTDOWN, "server is shutting down");

  std::uint16_t allowed = (s.tx_flags & kFlagSendFua) ? kCmdFlagFua : 0;
  switch (type) {
    case kCmdRead:
      if (s.structured) allowed |= kCmdFlagDf;
      break;
    case kCmdWrite:
    case kCmdFlush:
    case kCmdTrim:
    case kCmdCache: break;
    case kCmdWriteZeroes: allowed |= kCmdFlagNoHole | kCmdFlagFastZero; break;
    case kCmdBlockStatus: allowed |= kCmdFlagReqOne; break;
    default: return fail(kEINVAL, fmt::format("unknown command {}", type));
  }
  if (flags & ~allowed)
    return fail(kEINVAL, fmt::format("flags {:#x} not valid for command {}", flags, type));

  const bool modifies = type == kCmdWrite || type == kCmdTrim || type == kCmdWriteZeroes;
  if (modifies && s.read_only) return fail(kEPERM, "export is read-only");
  if (type == kCmdFlush) {
    if (off != 0 || len != 0) return fail(kEINVAL, "FLUSH with nonzero offset or length");
    return c;
  }
  if (len == 0) return fail(kEINVAL, "zero-length request");
  if ((type == kCmdRead || type == kCmdWrite) && len > s.max_payload) {
    if (type == kCmdRead && (flags & kCmdFlagDf))
      return fail(kEOVERFLOW,
                  fmt::format("read of {} bytes exceeds the maximum payload {}", len, s.max_payload));
    return fail(kEINVAL,
                fmt::format("request of {} bytes exceeds the maximum payload {}", len, s.max_payload));
  }
  if (off > s.size || len > s.size - off) {
    const bool grows = type == kCmdWrite || type == kCmdWriteZeroes;
    return fail(grows ? kENOSPC : kEINVAL,
                fmt::format("range {}+{} beyond the end of the export ({} bytes)", off, len, s.size));
  }
  if (type == kCmdBlockStatus && s.contexts == 0)
    return fail(kEINVAL, "BLOCK_STATUS without a negotiated metadata context");
  if (type == kCmdWriteZeroes && (flags & kCmdFlagFastZero) && (flags & kCmdFlagNoHole))
    return fail(kENOTSUP, "fast zero is not possible without punching holes");
  return c;
}

std::uint32_t to_nbd_error(const Status& s, std::uint16_t cmd) {
  const bool grows = cmd == kCmdWrite || cmd == kCmdWriteZeroes;
  switch (s.code()) {
    case Errc::ok: return kOk;
    case Errc::invalid:
    case Errc::not_found: return kEINVAL;
    case Errc::out_of_range: return grows ? kENOSPC : kEINVAL;
    case Errc::no_space: return kENOSPC;
    case Errc::read_only: return kEPERM;
    case Errc::shutdown: return kESHUTDOWN;
    case Errc::unsupported: return cmd == kCmdWriteZeroes ? kENOTSUP : kEINVAL;
    default: return kEIO;
  }
}

// ------------------------------------------------------------------------------------------------
// Buffers

IoBuf::IoBuf(std::size_t cap) {
  cap_ = (cap + 4095) / 4096 * 4096;
  if (cap_ == 0) cap_ = 4096;
  p_ = static_cast<std::byte*>(std::aligned_alloc(4096, cap_));
  if (!p_) throw std::bad_alloc();
}
IoBuf& IoBuf::operator=(IoBuf&& o) noexcept {
  if (this != &o) {
    std::free(p_);
    p_ = std::exchange(o.p_, nullptr);
    cap_ = std::exchange(o.cap_, 0);
  }
  return *this;
}
IoBuf::~IoBuf() { std::free(p_); }

int BufferCache::cls(std::size_t n) {
  int c = 0;
  std::size_t s = 4096;
  while (s < n && c < 15) {
    s <<= 1;
    ++c;
  }
  return s >= n ? c : -1;
}
IoBuf BufferCache::get(std::size_t n) {
  const int c = cls(n);
  if (c < 0) return IoBuf(n);
  auto& fl = free_[c];
  if (!fl.empty()) {
    IoBuf b = std::move(fl.back());
    fl.pop_back();
    return b;
  }
  return IoBuf(std::size_t{4096} << c);
}
void BufferCache::put(IoBuf b) {
  if (!b) return;
  const int c = cls(b.capacity());
  if (c < 0 || (std::size_t{4096} << c) != b.capacity()) return;
  // Keep a few buffers per size: enough for a queue depth of small I/O, few large ones.
  const std::size_t keep = c <= 4 ? 64 : c <= 8 ? 16 : 2;
  if (free_[c].size() < keep) free_[c].push_back(std::move(b));
}

// ------------------------------------------------------------------------------------------------
// Session

struct Session::OutMsg {
  unsigned char hdr[32];
  std::size_t hdr_len = 0;
  IoBuf data;
  std::size_t data_len = 0;
  std::size_t charge = 0;  // inflight_bytes_ released once written (or dropped)
  std::vector<std::byte> extra;
};

Session::Session(std::unique_ptr<Transport> t, const ExportCatalogue& cat, NegotiationPolicy policy,
                 SessionOptions opts, std::string id)
    : t_(std::move(t)), neg_(cat, policy), opts_(opts), id_(std::move(id)) {
  rcap_ = std::max<std::size_t>(opts_.read_buffer, kMaxOptionLength + 64);
  rbuf_ = IoBuf(rcap_);
}

Session::~Session() = default;

Task<Status> Session::fill(std::size_t n) {
  if (rend_ - rpos_ >= n) co_return Status::ok();
  if (rcap_ - rpos_ < n) {
    std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
    rend_ -= rpos_;
    rpos_ = 0;
  }
  while (rend_ - rpos_ < n) {
    auto r = co_await t_->read_some({rbuf_.data() + rend_, rcap_ - rend_});
    if (!r) co_return r.status();
    if (*r == 0) co_return Status::error(Errc::shutdown, "peer closed the connection");
    rend_ += *r;
  }
  co_return Status::ok();
}

Task<Status> Session::read_exact(std::byte* dst, std::size_t n) {
  const std::size_t have = std::min(n, rend_ - rpos_);
  if (have != 0) std::memcpy(dst, rbuf_.data() + rpos_, have);  // dst may be null when n == 0
  rpos_ += have;
  dst += have;
  n -= have;
  if (n == 0) co_return Status::ok();
  if (n < std::size_t{64} * 1024) {
    DPX_CO_TRY(co_await fill(n));
    std::memcpy(dst, rbuf_.data() + rpos_, n);
    rpos_ += n;
    co_return Status::ok();
  }
  while (n > 0) {  // large payloads go straight into their buffer
    auto r = co_await t_->read_some({dst, n});
    if (!r) co_return r.status();
    if (*r == 0) co_return Status::error(Errc::shutdown, "peer closed the connection in a payload");
    dst += *r;
    n -= *r;
  }
  co_return Status::ok();
}

Task<Status> Session::skip(std::uint64_t n) {
  while (n > 0) {
    if (rend_ == rpos_) DPX_CO_TRY(co_await fill(1));
    const std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(n, rend_ - rpos_));
    rpos_ += take;
    n -= take;
  }
  co_return Status::ok();
}

Task<Status> Session::write_now(std::span<const std::byte> bytes) {
  ConstBuf b{bytes.data(), bytes.size()};
  co_return co_await t_->write_all({&b, 1});
}

Task<bool> Session::handshake() {
  auto g = Negotiator::greeting();
  if (!(co_await write_now(g))) {
    close_reason_ = "write failed during handshake";
    co_return false;
  }
  if (auto st = co_await fill(4); !st) {
    close_reason_ = "closed before sending client flags";
    co_return false;
  }
  const auto cflags = load_be<std::uint32_t>(rbuf_.data() + rpos_);
  rpos_ += 4;
  if (!neg_.on_client_flags(cflags)) {
    close_reason_ = neg_.last_error();
    co_return false;
  }
  for (;;) {
    if (auto st = co_await fill(sizeof(OptionHeader)); !st) {
      close_reason_ = "closed during option haggling";
      co_return false;
    }
    OptionHeader h;
    std::memcpy(&h, rbuf_.data() + rpos_, sizeof h);
    rpos_ += sizeof h;
    if (h.magic.get() != kIHaveOpt) {
      close_reason_ = fmt::format("bad option magic {:#x}", h.magic.get());
      co_return false;
    }
    const std::uint32_t opt = h.option.get();
    const std::uint32_t len = h.length.get();
    Action a;
    if (len > kMaxOptionLength) {
      if (len > 16 * 1024 * 1024) {
        close_reason_ = fmt::format("option {} with {} bytes of data", opt, len);
        co_return false;
      }
      if (!(co_await skip(len))) co_return false;
      a = neg_.on_oversized_option(opt);
    } else {
      if (auto st = co_await fill(len); !st) {
        close_reason_ = "closed inside option data";
        co_return false;
      }
      a = neg_.on_option(opt, {rbuf_.data() + rpos_, len});
      rpos_ += len;
    }
    if (!neg_.out().empty()) {
      auto out = std::move(neg_.out());
      neg_.out().clear();
      if (!(co_await write_now(out))) {
        close_reason_ = "write failed during handshake";
        co_return false;
      }
    }
    switch (a) {
      case Action::next_option: continue;
      case Action::close: close_reason_ = neg_.last_error(); co_return false;
      case Action::transmission: co_return true;
      case Action::start_tls:
        if (rend_ != rpos_) {
          close_reason_ = "client sent data after STARTTLS before the TLS handshake";
          co_return false;
        }
        if (auto st = co_await t_->start_tls(); !st) {
          close_reason_ = "TLS handshake failed: " + st.message();
          co_return false;
        }
        neg_.on_tls_started();
        continue;
    }
  }
}

void Session::wake() {
  if (auto h = std::exchange(waiter_, nullptr)) h.resume();
}

void Session::op_done() {
  --inflight_;
  wake();  // must stay the last use of `this`: the reader may finish and free the session
}

void Session::enqueue(std::unique_ptr<OutMsg> m) {
  if (dead_) {
    release(m->charge);
    return;
  }
  queue_.push_back(std::move(m));
  if (!writing_) {
    writing_ = true;
    spawn(writer_loop());
  }
}

Task<void> Session::writer_loop() {
  std::vector<ConstBuf> iov;
  std::vector<std::unique_ptr<OutMsg>> batch;
  // Replies completed by the same batch of events leave together: one system call, not one each.
  co_await t_->yield();
  while (!queue_.empty() && !dead_) {
    batch.swap(queue_);
    iov.clear();
    for (auto& m : batch) {
      if (m->hdr_len) iov.push_back({m->hdr, m->hdr_len});
      if (m->data_len) iov.push_back({m->data.data(), m->data_len});
      if (!m->extra.empty()) iov.push_back({m->extra.data(), m->extra.size()});
    }
    const Status st = co_await t_->write_all(iov);
    for (auto& m : batch) {
      release(m->charge);
      cache_.put(std::move(m->data));
    }
    batch.clear();
    if (!st) {
      if (!dead_) close_reason_ = "write failed: " + st.message();
      dead_ = true;
      t_->close();  // unblocks the reader
    }
  }
  for (auto& m : queue_) release(m->charge);
  queue_.clear();
  writing_ = false;
  wake();  // last use of `this`
}

void Session::send_ok(const Req& q) {
  auto m = std::make_unique<OutMsg>();
  SimpleReply r{};
  r.magic.set(kSimpleReplyMagic);
  r.error.set(kOk);
  r.cookie.set(q.cookie);
  std::memcpy(m->hdr, &r, sizeof r);
  m->hdr_len = sizeof r;
  enqueue(std::move(m));
}

void Session::send_error(const Req& q, std::uint32_t err, std::string_view msg) {
  ++stats_.errors;
  spdlog::debug("event=nbd.request_error conn={} cmd={} offset={} length={} error={} msg=\"{}\"", id_, q.type,
                q.offset, q.length, error_name(err), msg);
  auto m = std::make_unique<OutMsg>();
  if (tx_.structured) {
    msg = msg.substr(0, 1024);
    StructuredReplyHeader h{};
    h.magic.set(kStructuredReplyMagic);
    h.flags.set(kReplyFlagDone);
    h.type.set(kReplyTypeError);
    h.cookie.set(q.cookie);
    h.length.set(static_cast<std::uint32_t>(6 + msg.size()));
    std::memcpy(m->hdr, &h, sizeof h);
    store_be<std::uint32_t>(m->hdr + 20, err);
    store_be<std::uint16_t>(m->hdr + 24, static_cast<std::uint16_t>(msg.size()));
    m->hdr_len = 26;
    const auto* b = reinterpret_cast<const std::byte*>(msg.data());
    m->extra.assign(b, b + msg.size());
  } else {
    SimpleReply r{};
    r.magic.set(kSimpleReplyMagic);
    r.error.set(err);
    r.cookie.set(q.cookie);
    std::memcpy(m->hdr, &r, sizeof r);
    m->hdr_len = sizeof r;
  }
  enqueue(std::move(m));
}

void Session::send_read(const Req& q, IoBuf data) {
  auto m = std::make_unique<OutMsg>();
  if (tx_.structured) {
    StructuredReplyHeader h{};
    h.magic.set(kStructuredReplyMagic);
    h.flags.set(kReplyFlagDone);
    h.type.set(kReplyTypeOffsetData);
    h.cookie.set(q.cookie);
    h.length.set(8 + q.length);
    std::memcpy(m->hdr, &h, sizeof h);
    store_be<std::uint64_t>(m->hdr + 20, q.offset);
    m->hdr_len = 28;
  } else {
    SimpleReply r{};
    r.magic.set(kSimpleReplyMagic);
    r.error.set(kOk);
    r.cookie.set(q.cookie);
    std::memcpy(m->hdr, &r, sizeof r);
    m->hdr_len = sizeof r;
  }
  m->data = std::move(data);
  m->data_len = q.length;
  m->charge = q.length;
  stats_.bytes_read += q.length;
  enqueue(std::move(m));
}

Task<void> Session::block_status(Req q) {
  std::vector<std::byte> out;
  const bool one = q.flags & kCmdFlagReqOne;
  for (std::size_t i = 0; i < contexts_.size(); ++i) {
    const MetaContext& mc = contexts_[i];
    auto r = mc.kind == MetaContext::Kind::allocation ? vol_->block_status(q.offset, q.length)
                                                      : vol_->changed_since(mc.snapshot, q.offset, q.length);
    if (!r) {
      send_error(q, to_nbd_error(r.status(), q.type), r.status().message());
      co_return;
    }
    // Merge neighbours with equal flags; lengths fit 32 bits because the request's does.
    std::vector<std::pair<std::uint64_t, std::uint32_t>> d;
    for (const auto& e : *r) {
      if (e.length == 0) continue;
      std::uint32_t f;
      if (mc.kind == MetaContext::Kind::allocation)
        f = (e.allocated ? 0 : kStateHole) | (e.zero ? kStateZero : 0);
      else
        f = e.allocated ? kStateDirty : 0;
      if (!d.empty() && d.back().second == f)
        d.back().first += e.length;
      else
        d.emplace_back(e.length, f);
      if (d.size() >= kMaxBlockStatusExtents) break;
    }
    // Nothing reported for the range: data (allocation) or unchanged (changed-since), both flag 0.
    if (d.empty()) d.emplace_back(q.length, 0u);
    if (one) d.resize(1);
    const std::size_t base = out.size();
    out.resize(base + sizeof(StructuredReplyHeader) + 4 + 8 * d.size());
    StructuredReplyHeader h{};
    h.magic.set(kStructuredReplyMagic);
    h.flags.set(i + 1 == contexts_.size() ? kReplyFlagDone : 0);
    h.type.set(kReplyTypeBlockStatus);
    h.cookie.set(q.cookie);
    h.length.set(static_cast<std::uint32_t>(4 + 8 * d.size()));
    std::memcpy(out.data() + base, &h, sizeof h);
    std::byte* p = out.data() + base + sizeof h;
    store_be<std::uint32_t>(p, mc.id);
    p += 4;
    for (const auto& [len, f] : d) {
      store_be<std::uint32_t>(p, static_cast<std::uint32_t>(std::min<std::uint64_t>(len, q.length)));
      store_be<std::uint32_t>(p + 4, f);
      p += 8;
    }
  }
  auto m = std::make_unique<OutMsg>();
  m->extra = std::move(out);
  enqueue(std::move(m));
}

Task<void> Session::execute(Req q, IoBuf payload) {
  Status st;
  switch (q.type) {
    case kCmdRead: {
      IoBuf b = cache_.get(q.length);
      st = co_await vol_->read(q.offset, {b.data(), q.length});
      if (st) {
        send_read(q, std::move(b));
        op_done();
        co_return;
      }
      cache_.put(std::move(b));
      release(q.length);
      break;
    }
    case kCmdWrite:
      st = co_await vol_->write(q.offset, {payload.data(), q.length}, q.flags & kCmdFlagFua);
      cache_.put(std::move(payload));
      release(q.length);
      if (st) {
        stats_.bytes_written += q.length;
        dirty_ = !(q.flags & kCmdFlagFua) || dirty_;
      }
      break;
    case kCmdFlush:
      dirty_ = false;
      st = co_await vol_->flush();
      break;
    case kCmdTrim:
      st = co_await vol_->trim(q.offset, q.length);
      if (st && (q.flags & kCmdFlagFua))
        st = co_await vol_->flush();
      else if (st)
        dirty_ = true;
      break;
    case kCmdWriteZeroes:
      st = co_await vol_->write_zeroes(q.offset, q.length, q.flags & kCmdFlagNoHole, q.flags & kCmdFlagFua);
      if (st && !(q.flags & kCmdFlagFua)) dirty_ = true;
      break;
    case kCmdCache:
      // The store keeps no cache a client could warm; the range was validated.
      break;
    case kCmdBlockStatus:
      co_await block_status(q);
      op_done();
      co_return;
    default: st = Status::error(Errc::invalid, "unknown command {}", q.type);
  }
  if (st)
    send_ok(q);
  else
    send_error(q, to_nbd_error(st, q.type), st.message());
  op_done();
}

Task<void> Session::transmission(volume::BlockVolume* vol) {
  vol_ = vol;
  const ExportInfo& e = neg_.export_info();
  tx_.size = vol->size();
  tx_.read_only = e.read_only || vol->read_only();
  tx_.structured = neg_.structured_replies();
  contexts_ = neg_.contexts();
  tx_.contexts = contexts_.size();
  tx_.tx_flags = neg_.flags_for(e);
  tx_.max_payload = std::min(e.max_block, kMaxPayload);

  bool disc = false;
  while (!dead_) {
    while (inflight_ >= opts_.max_inflight && !dead_) co_await Waiter{this};
    if (dead_) break;
    if (auto st = co_await fill(sizeof(Request)); !st) {
      if (close_reason_.empty()) close_reason_ = st.message();
      break;
    }
    Request r;
    std::memcpy(&r, rbuf_.data() + rpos_, sizeof r);
    rpos_ += sizeof r;
    tx_.stopping = stopping_;
    Checked c = check_request(r, tx_);
    if (c.fatal) {
      close_reason_ = c.message;
      break;
    }
    if (c.disconnect) {
      disc = true;
      close_reason_ = "client disconnected (NBD_CMD_DISC)";
      break;
    }
    ++stats_.requests;
    Req q{r.flags.get(), r.type.get(), r.cookie.get(), r.offset.get(), r.length.get()};
    const bool charged = !c.error && (q.type == kCmdRead || q.type == kCmdWrite);
    if (charged) {
      // Memory bound: wait until this request's payload fits (one request always may run).
      while (inflight_bytes_ > 0 && inflight_bytes_ + q.length > opts_.max_inflight_bytes && !dead_)
        co_await Waiter{this};
      if (dead_) break;
      inflight_bytes_ += q.length;
    }
    IoBuf payload;
    if (c.payload) {
      if (c.error) {
        if (auto st = co_await skip(c.payload); !st) {
          close_reason_ = st.message();
          break;
        }
      } else {
        payload = cache_.get(q.length);
        if (auto st = co_await read_exact(payload.data(), q.length); !st) {
          close_reason_ = st.message();
          release(q.length);
          break;
        }
      }
    }
    if (c.error) {
      send_error(q, c.error, c.message);
      continue;
    }
    ++inflight_;
    spawn(execute(q, std::move(payload)));
  }
  // Drain: every request read gets its reply before the connection closes.
  while (inflight_ > 0 || writing_) co_await Waiter{this};
  if (dirty_) {
    // Not required by the protocol (clients flush), but a disconnect is a cheap point to make
    // the connection's writes durable.
    (void)co_await vol->flush();
  }
  (void)disc;
  t_->close();
}

}  // namespace duplex::nbd
