#include "duplex/mirror/channel.h"

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>

#include <fmt/format.h>
#include <asio/connect.hpp>

namespace duplex::mirror {

namespace {

using Clock = std::chrono::steady_clock;

Task<Status> ready(Status s) { co_return s; }

std::uint64_t clock_ns(Clock::time_point t) {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count());
}

// Payload buffers of 512 bytes and more are page aligned (O_DIRECT takes them as they are) and
// kept for reuse per thread, up to a bound: the link's payloads come in a few sizes (4 KiB, 64
// KiB, 1 MiB), so an exact-size match is the common case.
constexpr std::size_t kAlignFrom = 512;
constexpr std::align_val_t kPayloadAlign{4096};
constexpr std::size_t kCacheBuffers = 64;
constexpr std::size_t kCacheBytes = std::size_t{32} << 20;
// Set when this thread's cache is gone (thread exit): later frees go straight to the heap.
thread_local bool payload_cache_gone = false;
struct PayloadCache {
  std::vector<std::pair<void*, std::size_t>> free;  // oldest first
  std::size_t bytes = 0;
  PayloadCache() { free.reserve(kCacheBuffers); }
  PayloadCache(const PayloadCache&) = delete;
  PayloadCache& operator=(const PayloadCache&) = delete;
  ~PayloadCache() {
    payload_cache_gone = true;
    for (auto [p, n] : free) ::operator delete(p, n, kPayloadAlign);
  }
};
thread_local PayloadCache payload_cache;

}  // namespace

void* payload_allocate(std::size_t bytes) {
  if (bytes < kAlignFrom) return ::operator new(bytes);
  if (!payload_cache_gone) {
    auto& c = payload_cache;
    for (std::size_t i = c.free.size(); i-- > 0;) {
      if (c.free[i].second != bytes) continue;
      void* p = c.free[i].first;
      c.bytes -= bytes;
      c.free.erase(c.free.begin() + static_cast<std::ptrdiff_t>(i));
      return p;
    }
  }
  return ::operator new(bytes, kPayloadAlign);
}

void payload_deallocate(void* p, std::size_t bytes) noexcept {
  if (bytes < kAlignFrom) {
    ::operator delete(p, bytes);
    return;
  }
  if (payload_cache_gone || bytes > kCacheBytes / 4) {
    ::operator delete(p, bytes, kPayloadAlign);
    return;
  }
  auto& c = payload_cache;
  // Full: the oldest go, so that the cache follows the sizes in use now.
  while (!c.free.empty() && (c.free.size() >= kCacheBuffers || c.bytes + bytes > kCacheBytes)) {
    auto [q, n] = c.free.front();
    c.free.erase(c.free.begin());
    c.bytes -= n;
    ::operator delete(q, n, kPayloadAlign);
  }
  c.free.emplace_back(p, bytes);
  c.bytes += bytes;
}

// A send()/reply() waiting for its bytes to be written (its payload lives in its frame).
struct Channel::SendWait {
  Status st;
  bool finished = false;
  std::coroutine_handle<> waiter;
  bool await_ready() const noexcept { return finished; }
  void await_suspend(std::coroutine_handle<> h) noexcept { waiter = h; }
  Status await_resume() { return std::move(st); }
};

Channel::Call::~Call() {
  if (!ch_ || result_) return;
  if (auto it = ch_->find_pending(id); it != ch_->pending_.end()) ch_->pending_.erase(it);
}

std::vector<Channel::Call*>::iterator Channel::find_pending(std::uint64_t id) {
  auto it = std::lower_bound(pending_.begin(), pending_.end(), id,
                             [](const Call* c, std::uint64_t v) { return c->id < v; });
  return it != pending_.end() && (*it)->id == id ? it : pending_.end();
}

std::shared_ptr<Channel> Channel::make(EventLoop& loop, std::unique_ptr<TcpStream> s, ChannelOptions o) {
  return std::shared_ptr<Channel>(new Channel(loop, std::move(s), o));
}

Channel::Channel(EventLoop& loop, std::unique_ptr<TcpStream> s, ChannelOptions o)
    : loop_(loop),
      stream_(std::move(s)),
      opts_(o),
      peer_(stream_->peer()),
      ping_timer_(loop.context()),
      call_timer_(loop.context()),
      last_heard_(Clock::now()) {}

Channel::~Channel() = default;

void Channel::start(Handler h, DownHandler d) {
  if (started_) return;
  started_ = true;
  handler_ = std::make_shared<const Handler>(std::move(h));
  down_ = std::move(d);
  last_heard_ = Clock::now();
  spawn(read_loop(shared_from_this()));
  spawn(write_loop(shared_from_this()));
  spawn(ping_loop(shared_from_this()));
}

Status Channel::down_status() const {
  return Status::error(Errc::unavailable, "mirror link to {} is down: {}", peer_, why_.to_string());
}

void Channel::close(Status why) {
  if (!up_) return;
  up_ = false;
  why_ = why.is_ok() ? Status::error(Errc::shutdown, "mirror link to {} closed", peer_) : std::move(why);
  stream_->close();
  ping_timer_.cancel();
  call_timer_.cancel();
  auto pending = std::move(pending_);
  pending_.clear();
  for (Call* c : pending) complete(c, down_status());
  // Queued sends fail now; a batch being written fails when the writer sees the closed stream.
  auto queued = std::move(outq_);
  outq_.clear();
  finish_sends(queued, down_status());
  if (auto w = std::exchange(writer_idle_, nullptr))
    loop_.post([self = shared_from_this(), w] { w.resume(); });
  if (!answered_q_.empty()) loop_.post([self = shared_from_this()] { self->answered_q_.notify_all(); });
  // Drop the handlers: they may hold the engine, which holds this channel.
  handler_ = nullptr;
  auto down = std::move(down_);
  down_ = nullptr;
  if (down) down(why_);
}

void Channel::answered(Clock::time_point sent) {
  if (sent <= last_pong_for_) return;
  last_pong_for_ = sent;
  // Resumed from the loop: the reader must not run a waiter's continuation on its own stack.
  if (!answered_q_.empty()) loop_.post([self = shared_from_this()] { self->answered_q_.notify_all(); });
}

Task<bool> Channel::renew(std::chrono::steady_clock::duration lease) {
  auto self = shared_from_this();
  // A few rounds at most: a round trip longer than the lease can never renew it.
  for (int round = 0; round < 3 && up_; ++round) {
    if (Clock::now() < last_pong_for_ + lease) co_return true;
    wire::Header h;
    h.type = wire::Type::ping;
    h.offset = clock_ns(Clock::now());
    (void)enqueue(h, {}, nullptr);
    co_await answered_q_.wait();
  }
  co_return up_&& Clock::now() < last_pong_for_ + lease;
}

void Channel::complete(Call* c, Result<Message> r) {
  if (c->result_) return;
  c->result_.emplace(std::move(r));
  if (auto it = find_pending(c->id); it != pending_.end()) pending_.erase(it);
  // Resumed from the loop, not from here: the caller of complete() (the reader, close(), maybe
  // inside a handler) must not run the awaiting coroutine's continuation on its own stack.
  if (c->waiter_) loop_.post([h = c->waiter_] { h.resume(); });
}

Status Channel::enqueue(wire::Header h, std::span<const std::byte> payload, SendWait* done, bool ping) {
  if (payload.size() > wire::kMaxPayload)
    return Status::error(Errc::invalid, "mirror link to {}: {} payload of {} bytes exceeds {}", peer_,
                         wire::type_name(h.type), payload.size(), wire::kMaxPayload);
  if (!up_) return down_status();
  h.payload_len = static_cast<std::uint32_t>(payload.size());
  h.payload_crc = wire::payload_crc(payload);
  // Nothing queued and the writer idle: this message goes at once, from here (a lone write's
  // replicate leaves before the local disk write is submitted, and before the loop turns).
  const bool direct = writer_idle_ && outq_.empty();
  Outgoing& o = outq_.emplace_back();
  wire::encode(h, o.header);
  o.payload = payload;
  o.done = done;
  o.ping = ping;
  if (direct) {
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(o.header.data(), o.header.size()),
                                                 asio::buffer(payload.data(), payload.size())};
    auto n = stream_->try_write(std::span(bufs.data(), payload.empty() ? 1 : 2));
    if (!n.is_ok()) {
      close(n.status());  // fails `o` with everything else queued
      return down_status();
    }
    if (*n == o.header.size() + payload.size()) {
      ++send_calls_;
      ++messages_sent_;
      outq_.pop_back();
      if (ping) ping_in_flight_ = false;
      if (done) done->finished = true;
      // The writer is woken as if this had been queued: until it runs (the next turn of the
      // loop), later messages queue behind it and leave together in one system call, instead of
      // each being sent on its own (the replies of a batch of disk completions, say).
      if (auto w = std::exchange(writer_idle_, nullptr)) loop_.post([w] { w.resume(); });
      return Status::ok();
    }
    if (*n > 0) ++send_calls_;
    o.sent = *n;  // the writer sends the rest when the socket has room
  }
  // Woken through the loop, not resumed here: whatever else this turn of the loop queues goes
  // out in the same system call (under load, the replicate messages of many writes at once).
  if (auto w = std::exchange(writer_idle_, nullptr)) loop_.post([w] { w.resume(); });
  return Status::ok();
}

void Channel::finish_sends(std::vector<Outgoing>& batch, const Status& st) {
  for (auto& o : batch) {
    if (o.ping) ping_in_flight_ = false;
    if (!o.done) continue;
    o.done->st = st;
    o.done->finished = true;
    if (o.done->waiter) loop_.post([h = o.done->waiter] { h.resume(); });
  }
  batch.clear();
}

Task<void> Channel::write_loop(std::shared_ptr<Channel> self) {
  Channel& c = *self;
  struct Idle {
    Channel& c;
    bool await_ready() const noexcept { return !c.outq_.empty() || !c.up_; }
    void await_suspend(std::coroutine_handle<> h) noexcept { c.writer_idle_ = h; }
    void await_resume() const noexcept {}
  };
  while (true) {
    co_await Idle{c};
    if (!c.up_) break;
    if (c.outq_.empty()) continue;  // woken after a direct send, nothing queued behind it
    c.sending_.swap(c.outq_);
    c.iov_.clear();
    for (const auto& o : c.sending_) {
      if (o.sent < o.header.size()) c.iov_.emplace_back(o.header.data() + o.sent, o.header.size() - o.sent);
      const std::size_t skip = o.sent > o.header.size() ? o.sent - o.header.size() : 0;
      if (o.payload.size() > skip) c.iov_.emplace_back(o.payload.data() + skip, o.payload.size() - skip);
    }
    ++c.send_calls_;
    c.messages_sent_ += c.sending_.size();
    Status st = co_await c.stream_->write_all(c.iov_);
    if (!st) {
      c.close(st);
      st = c.down_status();
    } else if (!c.up_) {
      st = c.down_status();
    }
    c.finish_sends(c.sending_, st);
    if (!c.up_) break;
  }
}

Task<Status> Channel::write_message(wire::Header h, std::span<const std::byte> payload) {
  auto self = shared_from_this();
  SendWait w;
  if (Status st = enqueue(h, payload, &w); !st.is_ok()) co_return st;
  co_return co_await w;
}

void Channel::start_call(Call& c, wire::Header h, std::span<const std::byte> payload,
                         std::chrono::milliseconds timeout) {
  c.result_.reset();
  c.waiter_ = nullptr;
  if (!up_) {
    c.result_.emplace(down_status());
    return;
  }
  c.id = next_id_++;
  c.type = h.type;
  c.sent = Clock::now();
  // The deadline runs from before the send: a peer that stopped reading blocks the send too.
  c.timeout = timeout;
  c.deadline = c.sent + timeout;
  h.request_id = c.id;
  if (Status st = enqueue(h, payload, nullptr); !st.is_ok()) {
    c.result_.emplace(std::move(st));
    return;
  }
  c.ch_ = shared_from_this();
  pending_.push_back(&c);
  arm_call_timer(c.deadline);
}

Task<Result<Message>> Channel::call(wire::Header h, std::span<const std::byte> payload,
                                    std::chrono::milliseconds timeout) {
  Call c;
  start_call(c, h, payload, timeout);
  co_return co_await c;
}

// One timer for every call's deadline, not one per call: it is armed for the earliest deadline
// and left running when calls complete sooner (the common case), so a call costs no timer set-up
// and cancel; when it fires it fails a call whose deadline passed, or re-arms for the next one.
void Channel::arm_call_timer(Clock::time_point at) {
  if (call_timer_armed_ && call_timer_at_ <= at) return;
  call_timer_armed_ = true;
  call_timer_at_ = at;
  call_timer_.expires_at(at);
  call_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec) self->expire_calls();
  });
}

void Channel::expire_calls() {
  call_timer_armed_ = false;
  if (!up_) return;
  const auto now = Clock::now();
  Call* late = nullptr;
  Clock::time_point next = Clock::time_point::max();
  for (Call* c : pending_) {
    if (c->deadline <= now && (!late || c->deadline < late->deadline)) late = c;
    next = std::min(next, c->deadline);
  }
  if (late) {
    Status st = Status::error(Errc::timeout, "mirror link to {}: no reply to {} #{} within {} ms", peer_,
                              wire::type_name(late->type), late->id, late->timeout.count());
    complete(late, st);
    close(std::move(st));
  } else if (next != Clock::time_point::max()) {
    arm_call_timer(next);
  }
}

Task<Status> Channel::reply(const wire::Header& request, wire::Header h, std::span<const std::byte> payload) {
  // Not a coroutine: `request` is read here, before returning, never across a suspension.
  const auto t = wire::reply_type(request.type);
  if (!t)
    return ready(Status::error(Errc::invalid, "mirror link to {}: a {} is not answered", peer_,
                               wire::type_name(request.type)));
  h.type = *t;
  h.request_id = request.request_id;
  if (h.volume.is_nil()) h.volume = request.volume;
  return write_message(h, payload);
}

Status Channel::reply_now(const wire::Header& request, wire::Header h) {
  const auto t = wire::reply_type(request.type);
  if (!t)
    return Status::error(Errc::invalid, "mirror link to {}: a {} is not answered", peer_,
                         wire::type_name(request.type));
  h.type = *t;
  h.request_id = request.request_id;
  if (h.volume.is_nil()) h.volume = request.volume;
  return enqueue(h, {}, nullptr);
}

Task<Status> Channel::send(wire::Header h, std::span<const std::byte> payload) {
  return write_message(h, payload);
}

Status Channel::send_now(wire::Header h) { return enqueue(h, {}, nullptr); }

Task<void> Channel::shutdown(Status why) {
  auto self = shared_from_this();
  if (!up_) co_return;
  if (why.is_ok()) why = Status::error(Errc::shutdown, "mirror link to {} closed", peer_);
  const std::string text = why.to_string();
  asio::steady_timer bound(loop_.context(), opts_.timeout);
  bound.async_wait([self, why](std::error_code ec) {
    if (!ec) self->close(why);
  });
  wire::Header h;
  h.type = wire::Type::close;
  (void)co_await write_message(h, std::as_bytes(std::span(text)));
  bound.cancel();
  close(std::move(why));
}

Task<void> Channel::read_loop(std::shared_ptr<Channel> self) {
  Channel& c = *self;
  std::array<std::byte, wire::kHeaderSize> hb;
  while (c.up_) {
    Status st;
    // Messages pipelined behind each other are parsed from the read buffer without a coroutine
    // per read; read_exact() only when the buffer runs short.
    if (!c.stream_->read_buffered(hb.data(), hb.size()))
      st = co_await c.stream_->read_exact(hb.data(), hb.size());
    if (!st) {
      c.close(std::move(st));
      break;
    }
    auto h = wire::decode(hb);
    if (!h) {
      c.close(Status(h.status().code(), fmt::format("from {}: {}", c.peer_, h.status().message())));
      break;
    }
    Message m{*h, {}};
    if (h->payload_len > 0) {
      m.payload.resize(h->payload_len);
      if (!c.stream_->read_buffered(m.payload.data(), m.payload.size()))
        st = co_await c.stream_->read_exact(m.payload.data(), m.payload.size());
      if (!st) {
        c.close(std::move(st));
        break;
      }
    }
    st = wire::check_payload(m.header, m.payload);
    if (!st) {
      c.close(Status(st.code(), fmt::format("from {}: {}", c.peer_, st.message())));
      break;
    }
    if (!c.up_) break;
    const auto now = Clock::now();
    c.last_heard_ = now;
    const auto type = m.header.type;
    if (type == wire::Type::ping) {
      wire::Header pong;
      pong.type = wire::Type::pong;
      pong.offset = m.header.offset;
      (void)c.enqueue(pong, {}, nullptr);
    } else if (type == wire::Type::pong) {
      // Only our own pings are echoed; a time from the future is not one of them.
      const Clock::time_point sent{std::chrono::nanoseconds(m.header.offset)};
      if (sent <= now) c.answered(sent);
    } else if (type == wire::Type::close) {
      const std::string_view reason(reinterpret_cast<const char*>(m.payload.data()), m.payload.size());
      c.close(Status::error(Errc::shutdown, "{} closed the mirror link: {}", c.peer_, reason));
    } else if (wire::is_reply(type)) {
      // No match: the reply to a call that already failed (and then the channel is down).
      auto it = c.find_pending(m.header.request_id);
      if (it != c.pending_.end()) {
        Call* call = *it;
        c.answered(call->sent);
        c.complete(call, std::move(m));
      }
    } else if (c.handler_) {
      // The handler coroutine may refer to the callable it was made from (a lambda's captures),
      // which must outlive it even if close() drops handler_ meanwhile: the completion callback
      // holds it, in the same frame that runs the handler.
      auto h = c.handler_;
      spawn((*h)(self, std::move(m)), [h] {});
    }
  }
}

Task<void> Channel::ping_loop(std::shared_ptr<Channel> self) {
  Channel& c = *self;
  while (c.up_) {
    c.ping_timer_.expires_after(c.opts_.ping_interval);
    (void)co_await asio_op_void([&](auto h) { c.ping_timer_.async_wait(std::move(h)); });
    if (!c.up_) break;
    const auto silent = Clock::now() - c.last_heard_;
    if (silent >= c.opts_.timeout) {
      c.close(Status::error(Errc::timeout, "mirror link to {}: nothing heard for {} ms", c.peer_,
                            std::chrono::duration_cast<std::chrono::milliseconds>(silent).count()));
      break;
    }
    // One ping at a time: a peer that stopped reading must not pile up pings behind a full socket.
    if (!c.ping_in_flight_) {
      wire::Header h;
      h.type = wire::Type::ping;
      h.offset = clock_ns(Clock::now());
      // Set first: a ping the socket takes at once is no longer in flight when enqueue returns.
      c.ping_in_flight_ = true;
      if (!c.enqueue(h, {}, nullptr, true).is_ok()) c.ping_in_flight_ = false;
    }
  }
}

Task<Result<std::unique_ptr<TcpStream>>> connect_tcp(EventLoop* loop, std::string host, std::uint16_t port,
                                                     std::chrono::milliseconds timeout,
                                                     std::shared_ptr<const TlsContext> tls,
                                                     std::string peer_name) {
  std::string bare = host;
  if (bare.size() >= 2 && bare.front() == '[' && bare.back() == ']') bare = bare.substr(1, bare.size() - 2);
  std::error_code ec;
  const auto addr = asio::ip::make_address(bare, ec);
  if (ec) co_return Status::error(Errc::invalid, "mirror peer address '{}' is not an IP address", host);
  const asio::ip::tcp::endpoint ep(addr, port);
  // Shared with the timer's handler, which may run after this coroutine has finished.
  struct State {
    explicit State(asio::io_context& ctx) : sock(ctx), timer(ctx) {}
    asio::ip::tcp::socket sock;
    asio::steady_timer timer;
    bool timed_out = false;
  };
  auto st = std::make_shared<State>(loop->context());
  st->timer.expires_after(timeout);
  st->timer.async_wait([st](std::error_code e) {
    if (e) return;
    st->timed_out = true;
    std::error_code ignore;
    st->sock.close(ignore);
  });
  ec = co_await asio_op_void([&](auto h) { st->sock.async_connect(ep, std::move(h)); });
  st->timer.cancel();
  if (st->timed_out)
    co_return Status::error(Errc::timeout, "cannot connect to mirror peer {}:{}: no answer within {} ms",
                            host, port, timeout.count());
  if (ec)
    co_return Status::error(Errc::unavailable, "cannot connect to mirror peer {}:{}: {}", host, port,
                            ec.message());
  auto stream = std::make_unique<TcpStream>(std::move(st->sock));
  if (tls) {
    Status hs = co_await stream->start_tls(std::move(tls), false, std::move(peer_name), timeout);
    if (!hs) co_return hs;
  }
  co_return stream;
}

}  // namespace duplex::mirror
