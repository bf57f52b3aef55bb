// Mirror link channels on loopback: calls and replies, concurrency, timeouts, a peer that closes,
// goes silent or sends garbage. Each test ends by closing everything and checking that the loop
// then runs out of work: no coroutine, timer or socket is left behind.
#include "duplex/mirror/channel.h"

#include <array>
#include <string>

#include <gtest/gtest.h>
#include <asio/write.hpp>

#include "duplex/base/crc32c.h"
#include "duplex/base/endian.h"

namespace duplex::mirror {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s)); }
std::string text_of(std::span<const std::byte> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size());
}

class ChannelTest : public ::testing::Test {
 protected:
  ChannelTest() : acceptor_(ctx(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {}

  asio::io_context& ctx() { return loop_.context(); }

  // Two ends of one loopback connection, as plain sockets (a loopback connect completes in the
  // kernel's backlog, so a blocking connect then accept needs no loop).
  std::pair<tcp::socket, tcp::socket> socket_pair() {
    tcp::socket client(ctx());
    client.connect(acceptor_.local_endpoint());
    tcp::socket server = acceptor_.accept();
    return {std::move(client), std::move(server)};
  }

  std::shared_ptr<Channel> channel(tcp::socket s, ChannelOptions o = {}) {
    auto c = Channel::make(loop_, std::make_unique<TcpStream>(std::move(s)), o);
    channels_.push_back(c);
    return c;
  }

  // Starts ch; its DownHandler is skipped once the test body is over (it may refer to the body's
  // locals, and TearDown closes every channel).
  void start(const std::shared_ptr<Channel>& ch, Channel::Handler h, Channel::DownHandler d) {
    ch->start(std::move(h), [this, d = std::move(d)](Status why) {
      if (!tearing_down_) d(std::move(why));
    });
  }

  template <typename T>
  T run(Task<T> t) {
    return sync_wait(std::move(t), [this] { ctx().run_one_for(100ms); });
  }
  // Runs the loop until pred() holds or `limit` passes; returns pred().
  template <typename Pred>
  bool run_until(Pred pred, std::chrono::milliseconds limit = 5000ms) {
    const auto end = Clock::now() + limit;
    while (!pred() && Clock::now() < end) ctx().run_one_for(20ms);
    return pred();
  }

  void TearDown() override {
    tearing_down_ = true;
    for (auto& w : channels_)
      if (auto c = w.lock()) c->close(Status::error(Errc::shutdown, "test over"));
    guard_.reset();
    ctx().restart();
    ctx().run_for(5s);
    EXPECT_TRUE(ctx().stopped()) << "work left on the loop after every channel closed";
    for (auto& w : channels_) EXPECT_TRUE(w.expired()) << "a channel outlived its connection";
  }

  EventLoop loop_{0};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard_{ctx().get_executor()};
  tcp::acceptor acceptor_;
  std::vector<std::weak_ptr<Channel>> channels_;
  bool tearing_down_ = false;
};

// Answers every write with write_reply: seq = the request's offset, payload = the data reversed.
Task<void> echo_reversed(std::shared_ptr<Channel> ch, Message m) {
  wire::Header h;
  h.seq = m.header.offset;
  std::vector<std::byte> out(m.payload.rbegin(), m.payload.rend());
  (void)co_await ch->reply(m.header, h, out);
}

TEST_F(ChannelTest, CallAndReplyRoundTrip) {
  auto [a_sock, b_sock] = socket_pair();
  auto a = channel(std::move(a_sock)), b = channel(std::move(b_sock));
  int a_down = 0, b_down = 0;
  start(a, [](auto, Message) -> Task<void> { co_return; }, [&](Status) { ++a_down; });
  start(b, echo_reversed, [&](Status) { ++b_down; });
  wire::Header h;
  h.type = wire::Type::write;
  h.op = wire::Op::write;
  h.volume = Uuid::random();
  h.generation = 9;
  h.offset = 4096;
  h.length = 5;
  const std::string data = "abcde";
  auto r = run(a->call(h, bytes_of(data), 2000ms));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->header.type, wire::Type::write_reply);
  EXPECT_EQ(r->header.seq, 4096u);
  EXPECT_EQ(r->header.volume, h.volume) << "a reply without a volume carries the request's";
  EXPECT_EQ(text_of(r->payload), "edcba");
  EXPECT_EQ(a->pending_calls(), 0u);
  EXPECT_TRUE(a->up() && b->up());
  // A one-way message reaches the handler; a reply to a one-way message is refused.
  std::optional<Message> got;
  auto [c_sock, d_sock] = socket_pair();
  auto c = channel(std::move(c_sock)), d = channel(std::move(d_sock));
  start(c, [](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  start(
      d,
      [&](std::shared_ptr<Channel> ch, Message m) -> Task<void> {
        Status st = co_await ch->reply(m.header, {}, {});
        EXPECT_EQ(st.code(), Errc::invalid);
        got = std::move(m);
      },
      [](Status) {});
  wire::Header s;
  s.type = wire::Type::state;
  const std::string json = R"({"generation":3})";
  ASSERT_TRUE(run(c->send(s, bytes_of(json))).is_ok());
  ASSERT_TRUE(run_until([&] { return got.has_value(); }));
  EXPECT_EQ(got->header.type, wire::Type::state);
  EXPECT_EQ(text_of(got->payload), json);
  EXPECT_EQ(a_down + b_down, 0);
}

TEST_F(ChannelTest, TwoHundredConcurrentCallsAnsweredOutOfOrderAreMatched) {
  auto [a_sock, b_sock] = socket_pair();
  auto a = channel(std::move(a_sock)), b = channel(std::move(b_sock));
  start(a, [](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  EventLoop* loop = &loop_;
  int max_in_flight = 0, in_flight = 0;
  start(
      b,
      [loop, &max_in_flight, &in_flight](std::shared_ptr<Channel> ch, Message m) -> Task<void> {
        max_in_flight = std::max(max_in_flight, ++in_flight);
        // Later requests tend to be answered first: the delay falls with the offset, mod 7.
        co_await sleep_for(loop, std::chrono::milliseconds(1 + 3 * (6 - m.header.offset % 7)));
        --in_flight;
        co_await echo_reversed(ch, std::move(m));
      },
      [](Status) {});
  std::vector<std::uint64_t> order;
  auto one = [](std::shared_ptr<Channel> ch, std::uint64_t i,
                std::vector<std::uint64_t>* order) -> Task<Status> {
    wire::Header h;
    h.type = wire::Type::write;
    h.op = wire::Op::write;
    h.offset = i;
    const std::string data = std::to_string(i) + "-x";
    auto r = co_await ch->call(h, bytes_of(data), 5000ms);
    if (!r) co_return r.status();
    order->push_back(r->header.seq);
    if (r->header.seq != i || text_of(r->payload) != std::string(data.rbegin(), data.rend()))
      co_return Status::error(Errc::corrupt, "call {} got the reply of {}", i, r->header.seq);
    co_return Status::ok();
  };
  std::vector<Task<Status>> calls;
  for (std::uint64_t i = 0; i < 200; ++i) calls.push_back(one(a, i, &order));
  Status st = run(when_all(std::move(calls)));
  EXPECT_TRUE(st.is_ok()) << st.to_string();
  ASSERT_EQ(order.size(), 200u);
  EXPECT_FALSE(std::is_sorted(order.begin(), order.end()))
      << "replies came back in order: test proves nothing";
  EXPECT_GT(max_in_flight, 1) << "the handlers did not run concurrently";
  EXPECT_EQ(a->pending_calls(), 0u);
}

TEST_F(ChannelTest, UnansweredCallTimesOutAndTakesTheChannelDown) {
  auto [a_sock, b_sock] = socket_pair();
  auto a = channel(std::move(a_sock)), b = channel(std::move(b_sock));
  std::vector<Status> a_down;
  bool b_down = false;
  start(a, [](auto, Message) -> Task<void> { co_return; }, [&](Status s) { a_down.push_back(s); });
  start(b, [](auto, Message) -> Task<void> { co_return; }, [&](Status) { b_down = true; });
  wire::Header h;
  h.type = wire::Type::flush;
  const auto t0 = Clock::now();
  auto r = run(a->call(h, {}, 200ms));
  const auto took = Clock::now() - t0;
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), Errc::timeout) << r.status().to_string();
  EXPECT_GE(took, 200ms);
  EXPECT_LT(took, 2000ms);
  EXPECT_FALSE(a->up());
  ASSERT_EQ(a_down.size(), 1u);
  EXPECT_EQ(a_down[0].code(), Errc::timeout);
  // Later calls fail at once; the peer sees the connection go.
  auto again = run(a->call(h, {}, 5000ms));
  EXPECT_EQ(again.status().code(), Errc::unavailable);
  EXPECT_NE(again.status().message().find("no reply to flush"), std::string::npos)
      << again.status().to_string();
  EXPECT_TRUE(run_until([&] { return b_down; }));
}

TEST_F(ChannelTest, PeerClosingFailsPendingCallsAtOnceAndRunsDownHandlerOnce) {
  auto [a_sock, b_sock] = socket_pair();
  auto a = channel(std::move(a_sock)), b = channel(std::move(b_sock));
  int a_down = 0, b_down = 0;
  Status a_why;
  std::weak_ptr<Channel> wa = a;
  start(
      a, [](auto, Message) -> Task<void> { co_return; },
      [&, wa](Status s) {
        ++a_down;
        a_why = s;
        // close() from inside the DownHandler is a no-op, not a second run.
        if (auto c = wa.lock()) c->close(Status::error(Errc::shutdown, "again"));
      });
  int received = 0;
  start(
      b,
      [&received](std::shared_ptr<Channel> ch, Message) -> Task<void> {
        // The third request closes the link from inside a handler; none is answered.
        if (++received == 3) ch->close(Status::error(Errc::shutdown, "peer leaving"));
        co_return;
      },
      [&](Status) { ++b_down; });
  std::vector<Status> results;
  auto one = [](std::shared_ptr<Channel> ch, std::vector<Status>* out) -> Task<Status> {
    wire::Header h;
    h.type = wire::Type::replicate;
    auto r = co_await ch->call(h, {}, 30000ms);
    out->push_back(r.status());
    co_return Status::ok();
  };
  std::vector<Task<Status>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(one(a, &results));
  const auto t0 = Clock::now();
  (void)run(when_all(std::move(calls)));
  EXPECT_LT(Clock::now() - t0, 5000ms) << "pending calls waited for their timeout";
  ASSERT_EQ(results.size(), 3u);
  for (auto& s : results) EXPECT_EQ(s.code(), Errc::unavailable) << s.to_string();
  EXPECT_EQ(a_down, 1);
  EXPECT_EQ(b_down, 1);
  EXPECT_EQ(a_why.code(), Errc::shutdown) << a_why.to_string();
  EXPECT_NE(a_why.message().find("closed the connection"), std::string::npos) << a_why.to_string();
  EXPECT_EQ(a->pending_calls(), 0u);
}

TEST_F(ChannelTest, OrderlyShutdownTellsThePeerWhy) {
  auto [a_sock, b_sock] = socket_pair();
  auto a = channel(std::move(a_sock)), b = channel(std::move(b_sock));
  std::optional<Status> b_why;
  start(a, [](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  start(b, [](auto, Message) -> Task<void> { co_return; }, [&](Status s) { b_why = s; });
  run(a->shutdown(Status::error(Errc::conflict, "lost the in-sync CAS")));
  EXPECT_FALSE(a->up());
  ASSERT_TRUE(run_until([&] { return b_why.has_value(); }));
  EXPECT_EQ(b_why->code(), Errc::shutdown);
  EXPECT_NE(b_why->message().find("lost the in-sync CAS"), std::string::npos) << b_why->to_string();
}

TEST_F(ChannelTest, HeartbeatsKeepAnIdleLinkUpAndReportThePongTime) {
  auto [a_sock, b_sock] = socket_pair();
  const ChannelOptions o{.ping_interval = 20ms, .timeout = 400ms};
  auto a = channel(std::move(a_sock), o), b = channel(std::move(b_sock), o);
  start(a, [](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  start(b, [](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  const auto t0 = Clock::now();
  // Idle for several timeouts: only pings and pongs cross.
  EXPECT_FALSE(run_until([&] { return !a->up() || !b->up(); }, 1200ms));
  EXPECT_TRUE(a->up() && b->up());
  EXPECT_GT(a->last_pong_for(), t0 + 900ms);
  EXPECT_LE(a->last_pong_for(), a->last_heard());
  EXPECT_GT(b->last_pong_for(), t0 + 900ms);
}

TEST_F(ChannelTest, SilentPeerIsDeclaredDownWithinTimeoutPlusPingInterval) {
  // The peer is a plain socket that never reads or writes.
  auto [a_sock, silent] = socket_pair();
  const ChannelOptions o{.ping_interval = 50ms, .timeout = 300ms};
  auto a = channel(std::move(a_sock), o);
  std::optional<Status> why;
  Clock::time_point down_at;
  const auto t0 = Clock::now();
  start(
      a, [](auto, Message) -> Task<void> { co_return; },
      [&](Status s) {
        why = s;
        down_at = Clock::now();
      });
  ASSERT_TRUE(run_until([&] { return why.has_value(); }));
  EXPECT_EQ(why->code(), Errc::timeout) << why->to_string();
  EXPECT_NE(why->message().find("nothing heard"), std::string::npos);
  EXPECT_GE(down_at - t0, 300ms);
  EXPECT_LT(down_at - t0, 300ms + 50ms + 700ms) << "(700 ms of slack for a loaded machine)";
}

TEST_F(ChannelTest, PeerThatStopsReadingCannotStallCalls) {
  // The peer accepts data into its socket buffer but never reads: a large call blocks in the
  // send, and must still fail by its timeout.
  auto [a_sock, silent] = socket_pair();
  auto a = channel(std::move(a_sock), ChannelOptions{.ping_interval = 1000ms, .timeout = 10000ms});
  start(a, [](auto, Message) -> Task<void> { co_return; }, [](Status) {});
  std::vector<std::byte> big(wire::kMaxPayload);
  wire::Header h;
  h.type = wire::Type::replicate;
  h.op = wire::Op::write;
  auto many = [](std::shared_ptr<Channel> ch, wire::Header h, std::vector<std::byte>* big) -> Task<Status> {
    auto r = co_await ch->call(h, *big, 300ms);
    co_return r.status();
  };
  std::vector<Task<Status>> calls;
  for (int i = 0; i < 4; ++i) calls.push_back(many(a, h, &big));
  const auto t0 = Clock::now();
  Status st = run(when_all(std::move(calls)));
  EXPECT_LT(Clock::now() - t0, 3000ms);
  EXPECT_FALSE(st.is_ok());
  EXPECT_TRUE(st.code() == Errc::timeout || st.code() == Errc::unavailable) << st.to_string();
  EXPECT_FALSE(a->up());
  EXPECT_EQ(a->down_reason().code(), Errc::timeout) << a->down_reason().to_string();
}

TEST_F(ChannelTest, PingIsAnsweredWithItsTimeAndAStrayReplyIsIgnored) {
  auto [a_sock, raw] = socket_pair();
  auto a = channel(std::move(a_sock), ChannelOptions{.ping_interval = 10000ms, .timeout = 20000ms});
  bool down = false;
  start(a, [](auto, Message) -> Task<void> { co_return; }, [&](Status) { down = true; });
  const auto send = [&raw](wire::Header h) {
    std::array<std::byte, wire::kHeaderSize> hb;
    wire::encode(h, hb);
    asio::write(raw, asio::buffer(hb.data(), hb.size()));
  };
  wire::Header stray;
  stray.type = wire::Type::replicate_reply;
  stray.request_id = 999;
  send(stray);
  wire::Header ping;
  ping.type = wire::Type::ping;
  ping.offset = 0x1122334455667788ULL;
  send(ping);
  // The pong comes back from the loop: run it while the raw side waits for 96 bytes.
  std::array<std::byte, wire::kHeaderSize> got;
  std::size_t have = 0;
  raw.non_blocking(true);
  ASSERT_TRUE(run_until([&] {
    std::error_code ec;
    have += raw.read_some(asio::buffer(got.data() + have, got.size() - have), ec);
    return have == got.size();
  }));
  auto pong = wire::decode(got);
  ASSERT_TRUE(pong.is_ok()) << pong.status().to_string();
  EXPECT_EQ(pong->type, wire::Type::pong);
  EXPECT_EQ(pong->offset, ping.offset);
  EXPECT_TRUE(a->up());
  EXPECT_FALSE(down);
  // A pong from "the future" (not one of ours) does not move the lease time.
  wire::Header forged;
  forged.type = wire::Type::pong;
  forged.offset = ~0ULL;
  send(forged);
  const auto before = a->last_heard();
  ASSERT_TRUE(run_until([&] { return a->last_heard() != before; }));
  EXPECT_EQ(a->last_pong_for(), Clock::time_point{});
}

// Raw bytes from a plain socket: a valid ping header, then one kind of damage.
struct Garbage {
  const char* name;
  Errc want;
  const char* says;
};

class ChannelGarbageTest : public ChannelTest, public ::testing::WithParamInterface<Garbage> {};

TEST_P(ChannelGarbageTest, CorruptBytesOnTheWireTakeTheChannelDown) {
  const Garbage g = GetParam();
  auto [a_sock, raw] = socket_pair();
  auto a = channel(std::move(a_sock));
  std::optional<Status> why;
  bool handled = false;
  start(
      a,
      [&handled](auto, Message) -> Task<void> {
        handled = true;
        co_return;
      },
      [&](Status s) { why = s; });
  const std::string payload = "0123456789";
  wire::Header h;
  h.type = wire::Type::replicate;
  h.op = wire::Op::write;
  h.payload_len = static_cast<std::uint32_t>(payload.size());
  h.payload_crc = wire::payload_crc(bytes_of(payload));
  std::array<std::byte, wire::kHeaderSize> hb;
  wire::encode(h, hb);
  std::string tail = payload;
  const std::string name = g.name;
  if (name == "header_bit") hb[33] ^= std::byte{0x04};
  if (name == "payload_bit") tail[3] ^= 0x01;
  if (name == "magic") std::memcpy(hb.data(), "HTTP", 4);
  if (name == "truncated") tail.resize(4);
  asio::write(raw, asio::buffer(hb.data(), hb.size()));
  asio::write(raw, asio::buffer(tail));
  if (name == "truncated") raw.shutdown(tcp::socket::shutdown_send);
  ASSERT_TRUE(run_until([&] { return why.has_value(); }));
  EXPECT_EQ(why->code(), g.want) << why->to_string();
  EXPECT_NE(why->message().find(g.says), std::string::npos) << why->to_string();
  EXPECT_FALSE(handled) << "a damaged message reached the handler";
  // The channel closed its end: the raw peer reads EOF.
  std::array<char, 16> sink;
  std::error_code ec;
  while (!ec) raw.read_some(asio::buffer(sink), ec);
  EXPECT_EQ(ec, asio::error::eof);
}

INSTANTIATE_TEST_SUITE_P(Kinds, ChannelGarbageTest,
                         ::testing::Values(Garbage{"header_bit", Errc::corrupt, "header CRC32C"},
                                           Garbage{"payload_bit", Errc::corrupt, "payload CRC32C"},
                                           Garbage{"magic", Errc::invalid, "bad magic"},
                                           Garbage{"truncated", Errc::shutdown, "closed the connection"}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_F(ChannelTest, ConnectTcpReachesAListenerAndReportsARefusal) {
  const auto port = acceptor_.local_endpoint().port();
  auto s = run(connect_tcp(&loop_, "127.0.0.1", port, 1000ms));
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  tcp::socket server = acceptor_.accept();
  EXPECT_EQ((*s)->peer(), "127.0.0.1:" + std::to_string(port));
  (*s)->close();
  // A port nobody listens on: refused at once.
  tcp::acceptor spare(ctx(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto dead_port = spare.local_endpoint().port();
  spare.close();
  auto refused = run(connect_tcp(&loop_, "127.0.0.1", dead_port, 1000ms));
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), Errc::unavailable) << refused.status().to_string();
  auto bad = run(connect_tcp(&loop_, "peer.example", 1, 1000ms));
  EXPECT_EQ(bad.status().code(), Errc::invalid);
}

}  // namespace
}  // namespace duplex::mirror
