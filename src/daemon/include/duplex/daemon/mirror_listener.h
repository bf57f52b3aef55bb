#pragma once
// The node's mirror port ([cluster] mirror_listen): peers open one link per mirrored volume here.
//
// Per accepted connection (on the listener's loop, loop 0):
//   with TLS on (set_tls): the TLS handshake first; a plain peer, a bad certificate or PSK, or
//     no handshake within `greet_timeout` --> close (logged with the reason)
//   read the 96-byte header (wire::decode) and its payload, within `greet_timeout`
//     malformed, not a hello, too large, bad CRC, or too slow --> close (logged; nothing else)
//     volume uuid unknown here --> hello_reply{status = not_found, reason} --> close
//     known --> re-home the socket onto the volume's loop (TcpStream::rehome: the native fd is
//               released from this loop's reactor and wrapped again there) and, on that loop,
//               MirrorVolume::accept(stream, hello)
// Nothing a peer sends can crash the daemon: every failure is a closed connection and a log line.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <asio/ip/tcp.hpp>

#include "duplex/base/status.h"
#include "duplex/base/uuid.h"
#include "duplex/mirror/mirror_volume.h"
#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/tls.h"

namespace duplex::daemon {

struct MirrorTarget {
  EventLoop* loop = nullptr;
  std::shared_ptr<mirror::MirrorVolume> vol;
};

class MirrorListener {
 public:
  // lookup() is called on the listener's loop; it must not block (a map under a mutex).
  using Lookup = std::function<std::optional<MirrorTarget>(const Uuid&)>;
  MirrorListener(EventLoop& loop, Lookup lookup,
                 std::chrono::milliseconds greet_timeout = std::chrono::seconds(10));
  ~MirrorListener();
  MirrorListener(const MirrorListener&) = delete;
  MirrorListener& operator=(const MirrorListener&) = delete;

  // Accept only TLS connections made with this context (before start()).
  void set_tls(std::shared_ptr<const TlsContext> tls);
  // Binds and starts accepting (call before the loop runs, or on it).
  Status start(const std::string& address);
  // The bound address ("127.0.0.11:7789"), what the node record advertises.
  std::string endpoint() const { return endpoint_; }
  // Stops accepting; on the listener's loop. Connections already handed to a volume are its own.
  void stop();

 private:
  struct State;
  void accept_next();
  static Task<void> greet(std::shared_ptr<State> st, std::unique_ptr<TcpStream> s);

  EventLoop& loop_;
  std::shared_ptr<State> st_;
  std::string endpoint_;
};

}  // namespace duplex::daemon
