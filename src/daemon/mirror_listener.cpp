#include "duplex/daemon/mirror_listener.h"

#include <array>

#include <spdlog/spdlog.h>
#include <asio/steady_timer.hpp>

#include "duplex/mirror/channel.h"
#include "duplex/mirror/wire.h"
#include "duplex/reactor/listen.h"
#include "duplex/reactor/tcp_stream.h"

namespace duplex::daemon {

namespace wire = mirror::wire;

// Shared with the accept handler and every greeting in progress, so that stop() (or the
// listener's destruction) never leaves them pointing at freed members.
struct MirrorListener::State {
  EventLoop* loop = nullptr;
  Lookup lookup;
  std::chrono::milliseconds greet_timeout{10000};
  std::shared_ptr<const TlsContext> tls;
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  bool stopping = false;
};

namespace {

// A hello is a small JSON text (mirror/hello.h); anything much larger is not a peer of ours.
constexpr std::uint32_t kMaxHello = 64 * 1024;

// Refuses a hello: the dialer reads a hello_reply with a non-zero status and the reason.
Task<void> refuse(TcpStream* s, wire::Header hello, Errc why, std::string reason) {
  wire::Header h;
  h.type = wire::Type::hello_reply;
  h.status = static_cast<std::int32_t>(why);
  h.request_id = hello.request_id;
  h.volume = hello.volume;
  const auto* p = reinterpret_cast<const std::byte*>(reason.data());
  const std::span<const std::byte> payload(p, reason.size());
  h.payload_len = static_cast<std::uint32_t>(reason.size());
  h.payload_crc = wire::payload_crc(payload);
  std::array<std::byte, wire::kHeaderSize> hb{};
  wire::encode(h, std::span<std::byte, wire::kHeaderSize>(hb));
  const std::array<asio::const_buffer, 2> bufs{asio::buffer(hb.data(), hb.size()),
                                               asio::buffer(reason.data(), reason.size())};
  (void)co_await s->write_all(bufs);
}

}  // namespace

MirrorListener::MirrorListener(EventLoop& loop, Lookup lookup, std::chrono::milliseconds greet_timeout)
    : loop_(loop), st_(std::make_shared<State>()) {
  st_->loop = &loop;
  st_->lookup = std::move(lookup);
  st_->greet_timeout = greet_timeout;
}

MirrorListener::~MirrorListener() {
  st_->stopping = true;
  if (st_->acceptor) {
    std::error_code ec;
    st_->acceptor->close(ec);
  }
}

void MirrorListener::set_tls(std::shared_ptr<const TlsContext> tls) { st_->tls = std::move(tls); }

Status MirrorListener::start(const std::string& address) {
  auto a = listen_on(loop_.context(), address, "mirror");
  if (!a) return a.status();
  st_->acceptor = std::move(*a);
  endpoint_ = endpoint_string(st_->acceptor->local_endpoint());
  spdlog::info("event=mirror.listen address={} tls={}", endpoint_, st_->tls ? "on" : "off");
  accept_next();
  return Status::ok();
}

void MirrorListener::stop() {
  st_->stopping = true;
  if (st_->acceptor) {
    std::error_code ec;
    st_->acceptor->close(ec);
  }
}

void MirrorListener::accept_next() {
  auto st = st_;
  st->acceptor->async_accept(st->loop->context(), [this, st](std::error_code ec, asio::ip::tcp::socket sock) {
    if (st->stopping) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      spdlog::warn("event=mirror.accept_error error=\"{}\"", ec.message());
    } else {
      spawn(greet(st, std::make_unique<TcpStream>(std::move(sock))));
    }
    accept_next();
  });
}

Task<void> MirrorListener::greet(std::shared_ptr<State> st, std::unique_ptr<TcpStream> s) {
  const std::string peer = s->peer();
  // A connection that never completes its hello must not hold a coroutine forever: the timer
  // closes the stream, which fails the pending read.
  auto timer = std::make_shared<asio::steady_timer>(st->loop->context());
  auto done = std::make_shared<bool>(false);
  TcpStream* raw = s.get();
  timer->expires_after(st->greet_timeout);
  timer->async_wait([done, raw](std::error_code ec) {
    if (!ec && !*done) raw->close();
  });
  auto finish = [&] {
    *done = true;
    timer->cancel();
  };
  auto drop = [&](const std::string& why) {
    finish();
    spdlog::warn("event=mirror.greet_refused peer={} reason=\"{}\"", peer, why);
    s->close();
  };

  if (st->tls) {
    // Peers are not named here: the hello says who they are, the CA or the PSK that they are ours.
    std::string any_name;
    if (Status r = co_await s->start_tls(st->tls, true, std::move(any_name), st->greet_timeout); !r) {
      drop(r.message());
      co_return;
    }
  }
  std::array<std::byte, wire::kHeaderSize> hb{};
  if (Status r = co_await s->read_exact(hb.data(), hb.size()); !r) {
    drop(fmt::format("no hello: {}", r.message()));
    co_return;
  }
  auto h = wire::decode(std::span<const std::byte, wire::kHeaderSize>(hb));
  if (!h) {
    drop(fmt::format("bad header: {}", h.status().to_string()));
    co_return;
  }
  if (h->type != wire::Type::hello) {
    drop(fmt::format("first message is {}, not hello", wire::type_name(h->type)));
    co_return;
  }
  if (h->payload_len > kMaxHello) {
    drop(fmt::format("hello of {} bytes (at most {})", h->payload_len, kMaxHello));
    co_return;
  }
  mirror::Message m{*h, mirror::Payload(h->payload_len)};
  if (Status r = co_await s->read_exact(m.payload.data(), m.payload.size()); !r) {
    drop(fmt::format("hello payload: {}", r.message()));
    co_return;
  }
  if (Status r = wire::check_payload(m.header, m.payload); !r) {
    drop(fmt::format("hello payload: {}", r.to_string()));
    co_return;
  }
  std::optional<MirrorTarget> t = st->lookup(h->volume);
  if (!t || !t->vol || st->stopping) {
    finish();
    const std::string why =
        st->stopping ? "this node is stopping"
                     : fmt::format("no mirrored replica of volume {} on this node", h->volume.to_string());
    spdlog::warn("event=mirror.hello_refused peer={} volume={} reason=\"{}\"", peer, h->volume.to_string(),
                 why);
    co_await refuse(s.get(), *h, st->stopping ? Errc::shutdown : Errc::not_found, why);
    s->close();
    co_return;
  }
  finish();
  spdlog::info("event=mirror.accepted peer={} volume={} loop={}", peer, t->vol->name(), t->loop->index());
  if (t->loop != st->loop) s->rehome(t->loop->context());
  // Handed over through shared_ptrs: a posted handler must be copyable.
  auto stream = std::make_shared<std::unique_ptr<TcpStream>>(std::move(s));
  auto msg = std::make_shared<mirror::Message>(std::move(m));
  auto vol = t->vol;
  t->loop->post([vol, stream, msg] { vol->accept(std::move(*stream), std::move(*msg)); });
}

}  // namespace duplex::daemon
