#include "duplex/iscsi/portal.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "connection.h"
#include "duplex/reactor/listen.h"

namespace duplex::iscsi {

Portal::Impl::Impl(LoopGroup& l, TargetCatalogue& t, PortalConfig c)
    : loops(l), targets(t), cfg(std::move(c)) {
  conns.resize(static_cast<std::size_t>(loops.size()));
}

void Portal::Impl::accept(asio::ip::tcp::acceptor& a) {
  a.async_accept(loops.at(0).context(), [this, &a](std::error_code ec, asio::ip::tcp::socket s) {
    if (ec) {
      if (ec == asio::error::operation_aborted || stopping) return;
      spdlog::warn("event=iscsi.accept_error error=\"{}\"", ec.message());
      accept(a);
      return;
    }
    if (stopping) return;
    on_accept(std::move(s));
    accept(a);
  });
}

void Portal::Impl::on_accept(asio::ip::tcp::socket s) {
  if (self->count_.load() >= cfg.max_connections) {
    std::error_code ec;
    auto ep = s.remote_endpoint(ec);
    spdlog::warn(
        "event=iscsi.connection_refused peer={} reason=\"connection limit reached\" max_connections={}",
        ec ? std::string("?") : ep.address().to_string(), cfg.max_connections);
    s.close(ec);
    return;
  }
  self->count_.fetch_add(1);
  auto io = std::make_unique<TcpStream>(std::move(s));
  auto* c = new Connection(*this, std::move(io), fmt::format("i{}", next_id++));
  c->loop = 0;
  conns[0].push_front(c);
  c->pos = conns[0].begin();
  spawn(c->run());
}

// Called by the connection's run() as its last act, on loop 0.
void Portal::Impl::finished(Connection* c) {
  conns[static_cast<std::size_t>(c->loop)].erase(c->pos);
  // run() is still on the stack: delete once it has returned.
  loops.at(0).post([this, c] {
    delete c;
    self->count_.fetch_sub(1);
  });
}

Portal::Portal(LoopGroup& loops, TargetCatalogue& targets, PortalConfig cfg)
    : impl_(std::make_unique<Impl>(loops, targets, std::move(cfg))) {
  impl_->self = this;
}

Portal::~Portal() = default;

unsigned Portal::sessions() const { return impl_->session_count.load(); }

Status Portal::start() {
  auto& I = *impl_;
  if (I.cfg.listen.empty()) return Status::error(Errc::invalid, "no iSCSI listen address configured");
  if (I.cfg.discovery_chap) DPX_TRY(ChapTarget::validate(*I.cfg.discovery_chap));
  for (const Target* t : I.targets.targets()) {
    if (!valid_iscsi_name(t->name))
      return Status::error(Errc::invalid, "target '{}' is not a valid iSCSI name", t->name);
    if (t->chap) {
      if (Status st = ChapTarget::validate(*t->chap); !st)
        return Status::error(Errc::invalid, "target {}: {}", t->name, st.message());
    }
  }
  for (const auto& l : I.cfg.listen) {
    auto a = listen_on(I.loops.at(0).context(), l, "iSCSI");
    if (!a) return a.status();
    I.acceptors.push_back(std::move(*a));
  }
  for (auto& a : I.acceptors) I.accept(*a);
  return Status::ok();
}

std::vector<std::string> Portal::endpoints() const {
  std::vector<std::string> out;
  for (const auto& a : impl_->acceptors) {
    std::error_code ec;
    auto ep = a->local_endpoint(ec);
    if (!ec) out.push_back(endpoint_string(ep));
  }
  return out;
}

Task<void> Portal::stop() {
  auto& I = *impl_;
  I.stopping = true;
  for (auto& a : I.acceptors) {
    std::error_code ec;
    a->close(ec);
  }
  // Phase 1: ask every initiator to log out (Async Message, event 1).
  for (int i = 0; i < I.loops.size(); ++i)
    I.loops.at(i).post([&I, i] {
      for (Connection* c : I.conns[static_cast<std::size_t>(i)]) c->request_logout();
    });
  EventLoop& l0 = I.loops.at(0);
  const auto deadline = std::chrono::steady_clock::now() + I.cfg.stop_grace;
  while (count_.load() > 0 && std::chrono::steady_clock::now() < deadline)
    co_await sleep_for(&l0, std::chrono::milliseconds(20));
  // Phase 2: close the rest; commands in flight end before each connection goes.
  for (int i = 0; i < I.loops.size(); ++i)
    I.loops.at(i).post([&I, i] {
      for (Connection* c : I.conns[static_cast<std::size_t>(i)]) c->close("target shutting down");
    });
  for (int n = 0; count_.load() > 0 && n < 1500; ++n) co_await sleep_for(&l0, std::chrono::milliseconds(20));
  if (count_.load() > 0) spdlog::warn("event=iscsi.stop_timeout connections={}", count_.load());
  // Every loop must have run what was posted above before the portal may be destroyed.
  co_await asio_op_void(
      [&](auto h) { asio::post(l0.context(), [h = std::move(h)]() mutable { h(std::error_code{}); }); });
  for (int i = 1; i < I.loops.size(); ++i) {
    co_await switch_to(I.loops.at(i));
    co_await switch_to(l0);
  }
}

}  // namespace duplex::iscsi
