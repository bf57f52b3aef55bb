// The daemon's mirror port (MirrorListener) against bad input: junk, a first message that is not a
// hello, a hello with a bad payload CRC and a silent client are closed; a well-formed hello for a
// volume this node does not hold gets a hello_reply with a non-zero status and its reason. The
// listener keeps accepting afterwards (nothing a peer sends stops it).
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <csignal>
#include <string>

#include "duplex/daemon/mirror_listener.h"
#include "duplex/mirror/channel.h"
#include "duplex/mirror/wire.h"
#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/tcp_stream.h"
#include "test_certs.h"

namespace duplex::daemon {
namespace {

namespace wire = mirror::wire;
using std::chrono::milliseconds;

class MirrorListenerTest : public ::testing::Test {
 protected:
  EventLoop loop{0};
  int lookups = 0;
  std::unique_ptr<MirrorListener> listener;
  std::uint16_t port = 0;

  void SetUp() override {
    listener = std::make_unique<MirrorListener>(
        loop,
        [this](const Uuid&) -> std::optional<MirrorTarget> {
          ++lookups;
          return std::nullopt;
        },
        milliseconds(300));
    ASSERT_TRUE(listener->start("127.0.0.1:0"));
    const auto ep = listener->endpoint();
    port = static_cast<std::uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
  }
  void TearDown() override { listener->stop(); }

  template <typename F>
  void run(F body) {
    bool done = false;
    spawn(body(), [&] {
      done = true;
      loop.stop();
    });
    if (!done) loop.run();
    ASSERT_TRUE(done);
  }

  Task<std::unique_ptr<TcpStream>> dial() {
    auto s = co_await mirror::connect_tcp(&loop, "127.0.0.1", port, milliseconds(2000));
    EXPECT_TRUE(s.is_ok());
    co_return s.is_ok() ? std::move(*s) : nullptr;
  }
  static Task<Status> send(TcpStream& s, const wire::Header& h, const std::string& payload) {
    std::array<std::byte, wire::kHeaderSize> hb{};
    wire::encode(h, std::span<std::byte, wire::kHeaderSize>(hb));
    const std::array<asio::const_buffer, 2> bufs{asio::buffer(hb.data(), hb.size()),
                                                 asio::buffer(payload.data(), payload.size())};
    co_return co_await s.write_all(bufs);
  }
  static wire::Header hello_header(const std::string& payload) {
    wire::Header h;
    h.type = wire::Type::hello;
    h.request_id = 7;
    h.volume = *Uuid::parse("7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11");
    h.payload_len = static_cast<std::uint32_t>(payload.size());
    h.payload_crc = wire::payload_crc(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(payload.data()), payload.size()));
    return h;
  }
  // True when the listener closed the connection (EOF or reset) without sending anything.
  static Task<bool> closed_silently(TcpStream& s) {
    std::byte b{};
    co_return !(co_await s.read_exact(&b, 1)).is_ok();
  }
};

TEST_F(MirrorListenerTest, UnknownVolumeGetsAHelloReplyWithAStatus) {
  run([this]() -> Task<void> {
    auto s = co_await dial();
    const std::string payload = "{}";
    EXPECT_TRUE((co_await send(*s, hello_header(payload), payload)).is_ok());
    std::array<std::byte, wire::kHeaderSize> hb{};
    EXPECT_TRUE((co_await s->read_exact(hb.data(), hb.size())).is_ok());
    auto h = wire::decode(std::span<const std::byte, wire::kHeaderSize>(hb));
    EXPECT_TRUE(h.is_ok());
    if (!h.is_ok()) co_return;
    EXPECT_EQ(h->type, wire::Type::hello_reply);
    EXPECT_EQ(h->request_id, 7u);
    EXPECT_EQ(h->status, static_cast<std::int32_t>(Errc::not_found));
    std::string reason(h->payload_len, '\0');
    EXPECT_TRUE((co_await s->read_exact(reinterpret_cast<std::byte*>(reason.data()), reason.size())).is_ok());
    EXPECT_NE(reason.find("7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11"), std::string::npos) << reason;
    EXPECT_TRUE(co_await closed_silently(*s));
    EXPECT_EQ(lookups, 1);
  });
}

TEST_F(MirrorListenerTest, BadInputIsClosedAndTheListenerGoesOn) {
  run([this]() -> Task<void> {
    {  // junk: bad magic
      auto s = co_await dial();
      const std::string junk(200, 'x');
      const std::array<asio::const_buffer, 1> b{asio::buffer(junk.data(), junk.size())};
      EXPECT_TRUE((co_await s->write_all(b)).is_ok());
      EXPECT_TRUE(co_await closed_silently(*s));
    }
    {  // a well-formed message that is not a hello
      auto s = co_await dial();
      wire::Header h;
      h.type = wire::Type::ping;
      EXPECT_TRUE((co_await send(*s, h, "")).is_ok());
      EXPECT_TRUE(co_await closed_silently(*s));
    }
    {  // a hello whose payload does not match its CRC
      auto s = co_await dial();
      const std::string payload = "{}";
      wire::Header h = hello_header(payload);
      h.payload_crc ^= 1;
      EXPECT_TRUE((co_await send(*s, h, payload)).is_ok());
      EXPECT_TRUE(co_await closed_silently(*s));
    }
    {  // a hello announcing more payload than a hello may have
      auto s = co_await dial();
      wire::Header h = hello_header("");
      h.payload_len = 1u << 20;
      EXPECT_TRUE((co_await send(*s, h, "")).is_ok());
      EXPECT_TRUE(co_await closed_silently(*s));
    }
    {  // a client that says nothing is closed after the greeting timeout
      auto s = co_await dial();
      const auto t0 = std::chrono::steady_clock::now();
      EXPECT_TRUE(co_await closed_silently(*s));
      EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(250));
    }
    EXPECT_EQ(lookups, 0) << "no bad message reaches the volume lookup";
    // Still accepting: a good hello is answered.
    auto s = co_await dial();
    const std::string payload = "{}";
    EXPECT_TRUE((co_await send(*s, hello_header(payload), payload)).is_ok());
    std::array<std::byte, wire::kHeaderSize> hb{};
    EXPECT_TRUE((co_await s->read_exact(hb.data(), hb.size())).is_ok());
    EXPECT_EQ(lookups, 1);
  });
}

// [mirror] tls = "on": the listener takes only TLS. A plain peer's hello is closed without an
// answer; a TLS peer with the right PSK gets its hello answered over TLS; a TLS peer with the
// wrong PSK is refused in the handshake. None of them reaches the volume lookup but the good one.
TEST_F(MirrorListenerTest, TlsListenerTakesOnlyTls) {
  ::signal(SIGPIPE, SIG_IGN);  // as in duplexd: OpenSSL writes with write(2)
  const auto certs = duplex::testing::TestCerts::make();
  ASSERT_TRUE(certs.ok) << "openssl could not make the test certificates";
  auto good = TlsContext::make(TlsOptions{"", "", "", certs.psk});
  auto bad = TlsContext::make(TlsOptions{"", "", "", certs.other_psk});
  ASSERT_TRUE(good && bad);
  listener->stop();
  listener = std::make_unique<MirrorListener>(
      loop,
      [this](const Uuid&) -> std::optional<MirrorTarget> {
        ++lookups;
        return std::nullopt;
      },
      milliseconds(300));
  listener->set_tls(*good);
  ASSERT_TRUE(listener->start("127.0.0.1:0"));
  const auto ep = listener->endpoint();
  port = static_cast<std::uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
  std::shared_ptr<const TlsContext> good_ctx = *good, bad_ctx = *bad;
  run([&]() -> Task<void> {
    const std::string payload = "{}";
    {  // plain
      auto s = co_await dial();
      EXPECT_TRUE((co_await send(*s, hello_header(payload), payload)).is_ok());
      EXPECT_TRUE(co_await closed_silently(*s));
    }
    {  // the wrong PSK
      auto s = co_await mirror::connect_tcp(&loop, "127.0.0.1", port, milliseconds(2000), bad_ctx);
      EXPECT_FALSE(s.is_ok());
      if (s.is_ok()) {
        EXPECT_TRUE(co_await closed_silently(**s));
      }
    }
    EXPECT_EQ(lookups, 0);
    auto s = co_await mirror::connect_tcp(&loop, "127.0.0.1", port, milliseconds(2000), good_ctx);
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    if (!s.is_ok()) co_return;
    EXPECT_TRUE((*s)->tls());
    EXPECT_TRUE((co_await send(**s, hello_header(payload), payload)).is_ok());
    std::array<std::byte, wire::kHeaderSize> hb{};
    EXPECT_TRUE((co_await (*s)->read_exact(hb.data(), hb.size())).is_ok());
    auto h = wire::decode(std::span<const std::byte, wire::kHeaderSize>(hb));
    EXPECT_TRUE(h.is_ok() && h->type == wire::Type::hello_reply && h->status != 0);
    EXPECT_EQ(lookups, 1);
  });
  certs.remove();
}

}  // namespace
}  // namespace duplex::daemon
