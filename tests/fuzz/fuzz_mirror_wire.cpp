// libFuzzer target: what a mirror peer controls on the link. Byte 0 picks the path; the rest is a
// byte stream of messages. Even: decode/check_payload over consecutive messages, with the
// invariant that an accepted header re-encodes to the very bytes it came from. Odd: the bytes
// arrive on a Channel through a socketpair (its handler answers requests), which must go down
// with an error and leave nothing running, never crash.
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "duplex/mirror/channel.h"
#include "duplex/mirror/wire.h"

using namespace duplex;
using namespace duplex::mirror;

namespace {

void parse_all(std::span<const std::byte> in) {
  while (in.size() >= wire::kHeaderSize) {
    auto head = in.first<wire::kHeaderSize>();
    auto h = wire::decode(head);
    if (!h) return;
    std::array<std::byte, wire::kHeaderSize> again;
    wire::encode(*h, again);
    if (std::memcmp(again.data(), head.data(), wire::kHeaderSize) != 0) std::abort();
    if (h->payload_len > wire::kMaxPayload) std::abort();
    in = in.subspan(wire::kHeaderSize);
    const std::size_t n = std::min<std::size_t>(in.size(), h->payload_len);
    (void)wire::check_payload(*h, in.first(n));
    in = in.subspan(n);
  }
}

Task<void> answer(std::shared_ptr<Channel> ch, Message m) {
  (void)co_await ch->reply(m.header, {}, m.payload);
}

void through_channel(std::span<const std::byte> in) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) std::abort();
  // The peer's bytes, then EOF: the channel reads them all and then sees the peer close.
  std::size_t off = 0;
  while (off < in.size()) {
    const ssize_t n = ::write(fds[1], in.data() + off, in.size() - off);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::shutdown(fds[1], SHUT_WR);
  {
    EventLoop loop(0);
    asio::ip::tcp::socket s(loop.context());
    s.assign(asio::ip::tcp::v4(), fds[0]);
    auto ch = Channel::make(
        loop, std::make_unique<TcpStream>(std::move(s)),
        ChannelOptions{.ping_interval = std::chrono::hours(1), .timeout = std::chrono::hours(2)});
    bool down = false;
    ch->start(answer, [&down](Status why) {
      if (why.is_ok()) std::abort();
      down = true;
    });
    while (!down) loop.context().run_one();
    std::weak_ptr<Channel> w = ch;
    ch.reset();
    loop.context().run();
    if (!w.expired()) std::abort();  // a coroutine kept the channel after it went down
  }
  ::close(fds[1]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1 || size > 65536) return 0;
  const auto in = std::as_bytes(std::span(data + 1, size - 1));
  if (data[0] % 2 == 0)
    parse_all(in);
  else
    through_channel(in);
  return 0;
}
