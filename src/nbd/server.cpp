#include "duplex/nbd/server.h"

#include <openssl/ssl.h>

#include <condition_variable>
#include <cstring>
#include <fstream>
#include <list>
#include <mutex>

#include <spdlog/spdlog.h>
#include <asio/ip/tcp.hpp>
#include <asio/ssl.hpp>
#include <asio/steady_timer.hpp>

#include "duplex/reactor/listen.h"
#include "tcp_transport.h"

namespace duplex::nbd {

namespace {

// PSK identities for the OpenSSL callback (one table per process is enough: one server).
struct PskTable {
  std::mutex mu;
  std::vector<std::pair<std::string, std::vector<unsigned char>>> keys;
};
PskTable& psk_table() {
  static PskTable t;
  return t;
}

unsigned int psk_server_cb(SSL*, const char* identity, unsigned char* psk, unsigned int max_len) {
  auto& t = psk_table();
  std::lock_guard<std::mutex> g(t.mu);  // handshake only, never on the I/O path
  for (const auto& [id, key] : t.keys) {
    if (identity && id == identity && key.size() <= max_len) {
      std::memcpy(psk, key.data(), key.size());
      return static_cast<unsigned int>(key.size());
    }
  }
  return 0;
}

Status load_psk(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::error(Errc::not_found, "TLS PSK file {} cannot be read", path);
  auto& t = psk_table();
  std::lock_guard<std::mutex> g(t.mu);
  t.keys.clear();
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty() || line[0] == '#') continue;
    auto colon = line.find(':');
    if (colon == std::string::npos)
      return Status::error(Errc::invalid, "{}:{}: expected identity:hexkey", path, n);
    std::string hex = line.substr(colon + 1);
    if (hex.size() % 2 || hex.empty()) return Status::error(Errc::invalid, "{}:{}: key is not hex", path, n);
    std::vector<unsigned char> key;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      char* end = nullptr;
      const std::string byte = hex.substr(i, 2);
      const long v = std::strtol(byte.c_str(), &end, 16);
      if (*end) return Status::error(Errc::invalid, "{}:{}: key is not hex", path, n);
      key.push_back(static_cast<unsigned char>(v));
    }
    t.keys.emplace_back(line.substr(0, colon), std::move(key));
  }
  if (t.keys.empty()) return Status::error(Errc::invalid, "TLS PSK file {} has no keys", path);
  return Status::ok();
}

Result<std::unique_ptr<asio::ssl::context>> make_tls_context(const TlsConfig& c) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  // TLS 1.3 only with certificates; PSK clients (GnuTLS) negotiate 1.3 as well.
  SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_compression);
  std::error_code ec;
  if (!c.cert_file.empty()) {
    ctx->use_certificate_chain_file(c.cert_file, ec);
    if (ec) return Status::error(Errc::invalid, "TLS certificate {}: {}", c.cert_file, ec.message());
    ctx->use_private_key_file(c.key_file, asio::ssl::context::pem, ec);
    if (ec) return Status::error(Errc::invalid, "TLS key {}: {}", c.key_file, ec.message());
  }
  if (!c.ca_file.empty()) {
    ctx->load_verify_file(c.ca_file, ec);
    if (ec) return Status::error(Errc::invalid, "TLS CA {}: {}", c.ca_file, ec.message());
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  if (!c.psk_file.empty()) {
    DPX_TRY(load_psk(c.psk_file));
    SSL_CTX_set_psk_server_callback(native, psk_server_cb);
  }
  if (c.cert_file.empty() && c.psk_file.empty())
    return Status::error(Errc::invalid, "[tls] needs cert+key or psk");
  return ctx;
}

// A volume on another loop, reached from a TLS connection that cannot move: every call hops to
// the owner loop and back.
class LoopProxyVolume final : public volume::BlockVolume {
 public:
  LoopProxyVolume(volume::BlockVolume& inner, EventLoop& owner, EventLoop& home)
      : inner_(inner), owner_(owner), home_(home) {
    sync([&] {
      name_ = inner_.name();
      size_ = inner_.size();
      ro_ = inner_.read_only();
      pbs_ = inner_.preferred_block_size();
      uuid_ = inner_.uuid();
      return 0;
    });
  }
  const std::string& name() const override { return name_; }
  Uuid uuid() const override { return uuid_; }
  std::uint64_t size() const override { return size_; }
  bool read_only() const override { return ro_; }
  std::uint32_t preferred_block_size() const override { return pbs_; }
  Task<Status> read(std::uint64_t o, std::span<std::byte> b) override {
    co_await switch_to(owner_);
    Status s = co_await inner_.read(o, b);
    co_await switch_to(home_);
    co_return s;
  }
  Task<Status> write(std::uint64_t o, std::span<const std::byte> b, bool fua) override {
    co_await switch_to(owner_);
    Status s = co_await inner_.write(o, b, fua);
    co_await switch_to(home_);
    co_return s;
  }
  Task<Status> flush() override {
    co_await switch_to(owner_);
    Status s = co_await inner_.flush();
    co_await switch_to(home_);
    co_return s;
  }
  Task<Status> trim(std::uint64_t o, std::uint64_t l) override {
    co_await switch_to(owner_);
    Status s = co_await inner_.trim(o, l);
    co_await switch_to(home_);
    co_return s;
  }
  Task<Status> write_zeroes(std::uint64_t o, std::uint64_t l, bool nu, bool fua) override {
    co_await switch_to(owner_);
    Status s = co_await inner_.write_zeroes(o, l, nu, fua);
    co_await switch_to(home_);
    co_return s;
  }
  Task<Result<volume::CompareOutcome>> compare_and_write(std::uint64_t o, std::span<const std::byte> e,
                                                         std::span<const std::byte> d, bool fua) override {
    co_await switch_to(owner_);
    Result<volume::CompareOutcome> r = co_await inner_.compare_and_write(o, e, d, fua);
    co_await switch_to(home_);
    co_return r;
  }
  Result<std::vector<volume::Extent>> block_status(std::uint64_t o, std::uint64_t l) const override {
    return sync([&] { return inner_.block_status(o, l); });
  }
  Result<std::vector<volume::Extent>> changed_since(const std::string& s, std::uint64_t o,
                                                    std::uint64_t l) const override {
    return sync([&] { return inner_.changed_since(s, o, l); });
  }

 private:
  // Runs f on the owner loop and blocks this thread until it is done (metadata calls only).
  template <typename F>
  auto sync(F f) const -> decltype(f()) {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<decltype(f())> out;
    owner_.post([&] {
      auto v = f();
      std::lock_guard<std::mutex> g(mu);
      out.emplace(std::move(v));
      cv.notify_one();
    });
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return out.has_value(); });
    return std::move(*out);
  }
  volume::BlockVolume& inner_;
  EventLoop& owner_;
  EventLoop& home_;
  std::string name_;
  std::uint64_t size_ = 0;
  bool ro_ = false;
  std::uint32_t pbs_ = 4096;
  Uuid uuid_;
};

}  // namespace

struct Conn {
  std::unique_ptr<Session> session;
  TcpTransport* tcp = nullptr;
  int loop = 0;
  bool transmitting = false;
  std::list<Conn*>::iterator pos;
};

struct Server::Impl {
  LoopGroup& loops;
  ExportCatalogue& cat;
  ServerConfig cfg;
  Server* self = nullptr;
  std::unique_ptr<asio::ssl::context> tls;
  std::vector<std::unique_ptr<asio::ip::tcp::acceptor>> acceptors;
  std::vector<std::list<Conn*>> conns;  // per loop; touched only on that loop
  std::atomic<bool> stopping{false};
  std::uint64_t next_id = 1;
  std::uint64_t refused = 0;
  std::chrono::steady_clock::time_point last_refusal_log{};

  Impl(LoopGroup& l, ExportCatalogue& c, ServerConfig cf) : loops(l), cat(c), cfg(std::move(cf)) {
    conns.resize(static_cast<std::size_t>(loops.size()));
  }

  void accept(asio::ip::tcp::acceptor& a) {
    a.async_accept(loops.at(0).context(), [this, &a](std::error_code ec, asio::ip::tcp::socket s) {
      if (ec) {
        if (ec == asio::error::operation_aborted || stopping) return;
        spdlog::warn("event=nbd.accept_error error=\"{}\"", ec.message());
        accept(a);
        return;
      }
      if (stopping) return;
      on_accept(std::move(s));
      accept(a);
    });
  }

  void on_accept(asio::ip::tcp::socket s) {
    std::error_code ec;
    auto ep = s.remote_endpoint(ec);
    const std::string peer = ec ? "?" : fmt::format("{}:{}", ep.address().to_string(), ep.port());
    if (self->count_.load() >= cfg.max_connections) {
      ++refused;
      // One line per refusal, but at most one per second under a flood (with the running total).
      const auto now = std::chrono::steady_clock::now();
      if (now - last_refusal_log < std::chrono::seconds(1)) {
        s.close(ec);
        return;
      }
      last_refusal_log = now;
      spdlog::warn(
          "event=nbd.connection_refused peer={} reason=\"connection limit reached\" max_connections={} "
          "refused_total={}",
          peer, cfg.max_connections, refused);
      s.close(ec);
      return;
    }
    self->count_.fetch_add(1);
    auto c = new Conn;
    auto t = std::make_unique<TcpTransport>(std::move(s), tls.get());
    c->tcp = t.get();
    NegotiationPolicy pol;
    pol.tls_available = tls != nullptr;
    pol.tls_required = cfg.tls && cfg.tls->required;
    c->session =
        std::make_unique<Session>(std::move(t), cat, pol, cfg.session, fmt::format("c{}", next_id++));
    c->loop = 0;
    conns[0].push_front(c);
    c->pos = conns[0].begin();
    spdlog::debug("event=nbd.accept conn={} peer={}", c->session->id(), peer);
    spawn(run(c));
  }

  Task<void> run(Conn* c) {
    Session& s = *c->session;
    asio::steady_timer timer(loops.at(0).context(), cfg.handshake_timeout);
    bool timed_out = false;
    timer.async_wait([&](std::error_code ec) {
      if (!ec) {
        timed_out = true;
        s.transport().close();
      }
    });
    const bool ok = co_await s.handshake();
    timer.cancel();
    if (!ok) {
      spdlog::info("event=nbd.handshake_end conn={} peer={} reason=\"{}\"", s.id(), s.transport().peer(),
                   timed_out ? "handshake timeout" : s.close_reason());
      // The timer handler may still be queued: let it run before the frame (and timer) go away.
      co_await asio_op_void(
          [&](auto h) { asio::post(loops.at(0).context(), [h] { h(std::error_code{}); }); });
      finish(c);
      co_return;
    }
    co_await asio_op_void([&](auto h) { asio::post(loops.at(0).context(), [h] { h(std::error_code{}); }); });
    const ExportInfo e = s.export_info();
    const int target = std::clamp(e.loop, 0, loops.size() - 1);
    std::unique_ptr<LoopProxyVolume> proxy;
    EventLoop& home = loops.at(c->loop);
    if (target != c->loop && !c->tcp->tls_active()) {
      conns[static_cast<std::size_t>(c->loop)].erase(c->pos);
      c->tcp->rehome(loops.at(target).context());
      co_await switch_to(loops.at(target));
      c->loop = target;
      conns[static_cast<std::size_t>(target)].push_front(c);
      c->pos = conns[static_cast<std::size_t>(target)].begin();
    }
    volume::BlockVolume* vol = nullptr;
    if (target != c->loop) {
      // TLS: stay here, reach the volume through its loop.
      volume::BlockVolume* inner = nullptr;
      co_await switch_to(loops.at(target));
      inner = cat.volume(e.name);
      co_await switch_to(home);
      if (inner) {
        proxy = std::make_unique<LoopProxyVolume>(*inner, loops.at(target), home);
        vol = proxy.get();
      }
    } else {
      vol = cat.volume(e.name);
    }
    if (!vol) {
      spdlog::warn("event=nbd.export_gone conn={} export={}", s.id(), e.name);
      s.transport().close();
      finish(c);
      co_return;
    }
    c->transmitting = true;
    if (stopping) s.request_stop();
    spdlog::info(
        "event=nbd.connect conn={} peer={} export={} size={} read_only={} structured={} contexts={} "
        "tls={} loop={}",
        s.id(), s.transport().peer(), e.name, e.size, e.read_only || vol->read_only(),
        s.negotiator().structured_replies(), s.negotiator().contexts().size(), c->tcp->tls_active(), c->loop);
    co_await s.transmission(vol);
    const auto& st = s.stats();
    spdlog::info(
        "event=nbd.disconnect conn={} peer={} export={} reason=\"{}\" requests={} errors={} "
        "bytes_read={} bytes_written={}",
        s.id(), s.transport().peer(), e.name, s.close_reason(), st.requests, st.errors, st.bytes_read,
        st.bytes_written);
    finish(c);
  }

  void finish(Conn* c) {
    conns[static_cast<std::size_t>(c->loop)].erase(c->pos);
    delete c;
    self->count_.fetch_sub(1);
  }
};

Server::Server(LoopGroup& loops, ExportCatalogue& catalogue, ServerConfig cfg)
    : impl_(std::make_unique<Impl>(loops, catalogue, std::move(cfg))) {
  impl_->self = this;
}

Server::~Server() = default;

Status Server::start() {
  auto& I = *impl_;
  if (I.cfg.tls) {
    auto ctx = make_tls_context(*I.cfg.tls);
    if (!ctx) return ctx.status();
    I.tls = std::move(*ctx);
  }
  if (I.cfg.listen.empty()) return Status::error(Errc::invalid, "no NBD listen address configured");
  for (const auto& l : I.cfg.listen) {
    auto a = listen_on(I.loops.at(0).context(), l, "NBD");
    if (!a) return a.status();
    I.acceptors.push_back(std::move(*a));
  }
  for (auto& a : I.acceptors) I.accept(*a);
  return Status::ok();
}

std::vector<std::string> Server::endpoints() const {
  std::vector<std::string> out;
  for (const auto& a : impl_->acceptors) {
    std::error_code ec;
    auto ep = a->local_endpoint(ec);
    if (!ec) out.push_back(endpoint_string(ep));
  }
  return out;
}

Task<void> Server::stop() {
  auto& I = *impl_;
  I.stopping = true;
  for (auto& a : I.acceptors) {
    std::error_code ec;
    a->close(ec);
  }
  // Phase 1: new requests get ESHUTDOWN; handshakes end now.
  for (int i = 0; i < I.loops.size(); ++i) {
    I.loops.at(i).post([&I, i] {
      for (Conn* c : I.conns[static_cast<std::size_t>(i)]) {
        c->session->request_stop();
        if (!c->transmitting) c->session->transport().close();
      }
    });
  }
  EventLoop& l0 = I.loops.at(0);
  const auto deadline = std::chrono::steady_clock::now() + I.cfg.stop_grace;
  while (count_.load() > 0 && std::chrono::steady_clock::now() < deadline)
    co_await sleep_for(&l0, std::chrono::milliseconds(20));
  // Phase 2: close the rest; each session drains its in-flight requests and flushes.
  for (int i = 0; i < I.loops.size(); ++i) {
    I.loops.at(i).post([&I, i] {
      for (Conn* c : I.conns[static_cast<std::size_t>(i)]) c->session->transport().close();
    });
  }
  for (int n = 0; count_.load() > 0 && n < 1500; ++n) co_await sleep_for(&l0, std::chrono::milliseconds(20));
  if (count_.load() > 0) spdlog::warn("event=nbd.stop_timeout connections={}", count_.load());
  // The messages posted above refer to this server: make sure every loop has run them (a round
  // trip through each loop's FIFO) before the caller may destroy it.
  co_await asio_op_void(
      [&](auto h) { asio::post(l0.context(), [h = std::move(h)]() mutable { h(std::error_code{}); }); });
  for (int i = 1; i < I.loops.size(); ++i) {
    co_await switch_to(I.loops.at(i));
    co_await switch_to(l0);
  }
}

}  // namespace duplex::nbd
