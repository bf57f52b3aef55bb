// The mirror link over TLS on loopback: a channel pair passes calls (small and large payloads)
// with mutual certificates and with a PSK; a peer with a certificate from another CA, the wrong
// name, the wrong PSK, or no TLS at all is refused on both sides with a reason; a silent peer
// fails the handshake in its time limit. Certificates are made at test time (test_certs.h).
#include <csignal>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "duplex/mirror/channel.h"
#include "duplex/reactor/tls.h"
#include "test_certs.h"

namespace duplex::mirror {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

class ChannelTlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::signal(SIGPIPE, SIG_IGN);  // as in duplexd: OpenSSL writes with write(2)
    certs_ = new testing::TestCerts(testing::TestCerts::make());
  }
  static void TearDownTestSuite() {
    certs_->remove();
    delete certs_;
  }
  void SetUp() override { ASSERT_TRUE(certs_->ok) << "openssl could not make the test certificates"; }

  static std::shared_ptr<const TlsContext> ctx_of(TlsOptions o) {
    auto c = TlsContext::make(o);
    EXPECT_TRUE(c.is_ok()) << c.status().to_string();
    return c.is_ok() ? std::shared_ptr<const TlsContext>(*c) : nullptr;
  }
  static std::shared_ptr<const TlsContext> node(const std::string& cert, const std::string& key,
                                                const std::string& ca) {
    return ctx_of(TlsOptions{cert, key, ca, ""});
  }
  static std::shared_ptr<const TlsContext> psk(const std::string& file) {
    return ctx_of(TlsOptions{"", "", "", file});
  }

  asio::io_context& io() { return loop_.context(); }

  template <typename T>
  T run(Task<T> t) {
    return sync_wait(std::move(t), [this] { io().run_one_for(100ms); });
  }

  // The accepting side's handshake runs detached while the dialer's runs in run(); both results.
  struct Pair {
    Result<std::unique_ptr<TcpStream>> dialer = Status::error(Errc::invalid, "not run");
    std::optional<Status> server;
    std::unique_ptr<TcpStream> accepted;
  };
  Pair handshake(std::shared_ptr<const TlsContext> dial_ctx, std::shared_ptr<const TlsContext> accept_ctx,
                 std::string name = "", std::chrono::milliseconds limit = 2000ms) {
    Pair p;
    const auto port = acceptor_.local_endpoint().port();
    // The dialer's connect completes in the kernel's backlog; the accept below takes it.
    auto dial = connect_tcp(&loop_, "127.0.0.1", port, limit, std::move(dial_ctx), std::move(name));
    std::optional<Result<std::unique_ptr<TcpStream>>> dialed;
    spawn(std::move(dial), [&](Result<std::unique_ptr<TcpStream>> r) { dialed.emplace(std::move(r)); });
    p.accepted = std::make_unique<TcpStream>(acceptor_.accept());
    if (accept_ctx) {
      std::string any;
      spawn(p.accepted->start_tls(std::move(accept_ctx), true, std::move(any), limit),
            [&](Status s) { p.server = std::move(s); });
    } else {
      p.server = Status::ok();
    }
    const auto end = Clock::now() + limit + 2s;
    while ((!dialed || !p.server) && Clock::now() < end) io().run_one_for(20ms);
    EXPECT_TRUE(dialed && p.server) << "a handshake did not finish in its time limit";
    if (dialed) p.dialer = std::move(*dialed);
    return p;
  }

  void TearDown() override {
    guard_.reset();
    io().restart();
    io().run_for(3s);
    EXPECT_TRUE(io().stopped()) << "work left on the loop";
  }

  static testing::TestCerts* certs_;
  EventLoop loop_{0};
  // Keeps the loop from stopping between steps (a stopped loop's run_one_for returns at once).
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_{io().get_executor()};
  tcp::acceptor acceptor_{io(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
};
testing::TestCerts* ChannelTlsTest::certs_ = nullptr;

// Answers every write with write_reply carrying the payload reversed.
Task<void> echo_reversed(std::shared_ptr<Channel> ch, Message m) {
  wire::Header h;
  std::vector<std::byte> out(m.payload.rbegin(), m.payload.rend());
  (void)co_await ch->reply(m.header, h, out);
}

// Calls through a TLS channel pair: a small payload and one larger than the stream's read buffer
// (read straight into the payload) and than a TLS record.
void expect_calls_pass(ChannelTlsTest* t, std::unique_ptr<TcpStream> a_stream,
                       std::unique_ptr<TcpStream> b_stream, EventLoop& loop,
                       const std::function<Result<Message>(Task<Result<Message>>)>& run) {
  ASSERT_TRUE(a_stream->tls() && b_stream->tls());
  auto a = Channel::make(loop, std::move(a_stream), {});
  auto b = Channel::make(loop, std::move(b_stream), {});
  a->start([](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  b->start(echo_reversed, [](Status) {});
  for (std::size_t size : {std::size_t{5}, std::size_t{1} << 20}) {
    std::vector<std::byte> data(size);
    for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::byte>(i * 7 + 3);
    wire::Header h;
    h.type = wire::Type::write;
    h.op = wire::Op::write;
    h.volume = Uuid::random();
    h.length = static_cast<std::uint32_t>(size);
    auto r = run(a->call(h, data, 5000ms));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->header.type, wire::Type::write_reply);
    ASSERT_EQ(r->payload.size(), size);
    EXPECT_TRUE(std::equal(data.rbegin(), data.rend(), r->payload.begin()))
        << size << " bytes came back changed";
  }
  EXPECT_TRUE(a->up() && b->up());
  a->close(Status::error(Errc::shutdown, "test over"));
  b->close(Status::error(Errc::shutdown, "test over"));
  (void)t;
}

TEST_F(ChannelTlsTest, MutualCertificatesCarryCalls) {
  auto p = handshake(node(certs_->n1_cert, certs_->n1_key, certs_->ca),
                     node(certs_->n2_cert, certs_->n2_key, certs_->ca), "n2");
  ASSERT_TRUE(p.dialer.is_ok()) << p.dialer.status().to_string();
  ASSERT_TRUE(p.server && p.server->is_ok()) << p.server->to_string();
  expect_calls_pass(this, std::move(*p.dialer), std::move(p.accepted), loop_,
                    [this](Task<Result<Message>> t) { return run(std::move(t)); });
}

TEST_F(ChannelTlsTest, PskCarriesCalls) {
  auto p = handshake(psk(certs_->psk), psk(certs_->psk));
  ASSERT_TRUE(p.dialer.is_ok()) << p.dialer.status().to_string();
  ASSERT_TRUE(p.server && p.server->is_ok()) << p.server->to_string();
  expect_calls_pass(this, std::move(*p.dialer), std::move(p.accepted), loop_,
                    [this](Task<Result<Message>> t) { return run(std::move(t)); });
}

TEST_F(ChannelTlsTest, ServerFromAnotherCaIsRefusedByTheDialer) {
  auto p = handshake(node(certs_->n1_cert, certs_->n1_key, certs_->ca),
                     node(certs_->rogue_cert, certs_->rogue_key, certs_->rogue_ca), "n2");
  ASSERT_FALSE(p.dialer.is_ok());
  EXPECT_EQ(p.dialer.status().code(), Errc::unavailable);
  EXPECT_NE(p.dialer.status().message().find("certificate verify failed"), std::string::npos)
      << p.dialer.status().to_string();
  ASSERT_TRUE(p.server.has_value());
  EXPECT_FALSE(p.server->is_ok()) << "the accepting side must see the refusal too";
}

TEST_F(ChannelTlsTest, DialerFromAnotherCaIsRefusedByTheServer) {
  // TLS 1.3: the dialer's handshake ends before the server has checked its certificate, so the
  // dialer learns of the refusal on its first read; the server refuses at once.
  auto p = handshake(node(certs_->rogue_cert, certs_->rogue_key, certs_->ca),
                     node(certs_->n2_cert, certs_->n2_key, certs_->ca));
  ASSERT_TRUE(p.server.has_value());
  ASSERT_FALSE(p.server->is_ok());
  EXPECT_NE(p.server->message().find("certificate verify failed"), std::string::npos)
      << p.server->to_string();
  if (p.dialer.is_ok()) {
    auto a = Channel::make(loop_, std::move(*p.dialer), {});
    a->start([](auto, Message) -> Task<void> { co_return; }, [](Status) {});
    wire::Header h;
    h.type = wire::Type::hello;
    auto r = run(a->call(h, {}, 2000ms));
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), Errc::unavailable) << r.status().to_string();
    EXPECT_FALSE(a->up());
  }
}

TEST_F(ChannelTlsTest, WrongPeerNameIsRefused) {
  auto p = handshake(node(certs_->n1_cert, certs_->n1_key, certs_->ca),
                     node(certs_->n2_cert, certs_->n2_key, certs_->ca), "n3");
  ASSERT_FALSE(p.dialer.is_ok());
  EXPECT_NE(p.dialer.status().message().find("hostname mismatch"), std::string::npos)
      << p.dialer.status().to_string();
}

TEST_F(ChannelTlsTest, WrongPskIsRefusedOnBothSides) {
  auto p = handshake(psk(certs_->psk), psk(certs_->other_psk));
  ASSERT_FALSE(p.dialer.is_ok());
  EXPECT_EQ(p.dialer.status().code(), Errc::unavailable) << p.dialer.status().to_string();
  ASSERT_TRUE(p.server.has_value());
  EXPECT_FALSE(p.server->is_ok());
}

TEST_F(ChannelTlsTest, CertificateAndPskSidesDoNotMeet) {
  // A PSK dialer must not settle for a certificate instead (it has no CA to judge one by).
  auto p = handshake(psk(certs_->psk), node(certs_->n2_cert, certs_->n2_key, certs_->ca));
  ASSERT_FALSE(p.dialer.is_ok());
  EXPECT_NE(p.dialer.status().message().find("certificate verify failed"), std::string::npos)
      << p.dialer.status().to_string();
  ASSERT_TRUE(p.server.has_value());
  EXPECT_FALSE(p.server->is_ok());
}

TEST_F(ChannelTlsTest, PlainDialerIsRefusedByATlsServer) {
  auto p = handshake(nullptr, nullptr);
  ASSERT_TRUE(p.dialer.is_ok());
  // What a plain peer sends first: a 96-byte message header.
  std::array<std::byte, wire::kHeaderSize> hb{};
  wire::Header h;
  h.type = wire::Type::hello;
  wire::encode(h, hb);
  const std::array<asio::const_buffer, 1> b{asio::buffer(hb.data(), hb.size())};
  auto write = (*p.dialer)->write_all(b);
  (void)run(std::move(write));
  const auto end = Clock::now() + 3s;
  std::optional<Status> server;
  std::string any;
  spawn(p.accepted->start_tls(psk(certs_->psk), true, std::move(any), 2000ms), [&](Status s) { server = s; });
  while (!server && Clock::now() < end) io().run_one_for(20ms);
  ASSERT_TRUE(server.has_value());
  ASSERT_FALSE(server->is_ok());
  EXPECT_NE(server->message().find("TLS handshake"), std::string::npos) << server->to_string();
}

TEST_F(ChannelTlsTest, TlsDialerIsRefusedByAPlainServer) {
  const auto port = acceptor_.local_endpoint().port();
  std::optional<Result<std::unique_ptr<TcpStream>>> dialed;
  spawn(connect_tcp(&loop_, "127.0.0.1", port, 2000ms, psk(certs_->psk)),
        [&](Result<std::unique_ptr<TcpStream>> r) { dialed.emplace(std::move(r)); });
  // The plain side reads the ClientHello as a (bad) 96-byte header and closes, as the listener does.
  auto plain = std::make_unique<TcpStream>(acceptor_.accept());
  std::array<std::byte, wire::kHeaderSize> hb{};
  EXPECT_TRUE(run(plain->read_exact(hb.data(), hb.size())).is_ok());
  EXPECT_FALSE(wire::decode(hb).is_ok());
  plain->close();
  const auto start = Clock::now();
  while (!dialed && Clock::now() < start + 3s) io().run_one_for(20ms);
  ASSERT_TRUE(dialed.has_value());
  ASSERT_FALSE(dialed->is_ok());
  EXPECT_LT(Clock::now() - start, 1s) << "a closed connection is seen at once, not at the time limit";
  EXPECT_EQ(dialed->status().code(), Errc::unavailable) << dialed->status().to_string();
  EXPECT_NE(dialed->status().message().find("TLS handshake"), std::string::npos)
      << dialed->status().to_string();
}

TEST_F(ChannelTlsTest, SilentPeerTimesOutTheHandshake) {
  // A server that accepts and never answers: the dialer gives up after its limit.
  const auto start = Clock::now();
  auto p = handshake(psk(certs_->psk), nullptr, "", 300ms);
  ASSERT_FALSE(p.dialer.is_ok());
  EXPECT_EQ(p.dialer.status().code(), Errc::timeout) << p.dialer.status().to_string();
  EXPECT_LT(Clock::now() - start, 2s);
  // A dialer that connects and never sends its ClientHello: the server gives up too.
  const auto port = acceptor_.local_endpoint().port();
  tcp::socket silent(io());
  silent.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  auto server = std::make_unique<TcpStream>(acceptor_.accept());
  std::string any;
  auto r = run(server->start_tls(psk(certs_->psk), true, std::move(any), 300ms));
  EXPECT_EQ(r.code(), Errc::timeout) << r.to_string();
  EXPECT_TRUE(server->closed());
}

TEST_F(ChannelTlsTest, ContextRefusesBadFiles) {
  auto missing = TlsContext::make(TlsOptions{certs_->dir + "/nope.pem", certs_->n1_key, certs_->ca, ""});
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("nope.pem"), std::string::npos);
  auto mismatched = TlsContext::make(TlsOptions{certs_->n1_cert, certs_->n2_key, certs_->ca, ""});
  ASSERT_FALSE(mismatched.is_ok());
  EXPECT_NE(mismatched.status().message().find("mismatch"), std::string::npos)
      << mismatched.status().to_string();
  auto both = TlsContext::make(TlsOptions{certs_->n1_cert, certs_->n1_key, certs_->ca, certs_->psk});
  EXPECT_FALSE(both.is_ok());
  auto no_ca = TlsContext::make(TlsOptions{certs_->n1_cert, certs_->n1_key, "", ""});
  EXPECT_FALSE(no_ca.is_ok());
}

}  // namespace
}  // namespace duplex::mirror
