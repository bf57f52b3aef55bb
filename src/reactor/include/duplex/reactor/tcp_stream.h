#pragma once
// A plain TCP byte stream on one event loop, for protocols that frame their own messages (iSCSI).
// Reads go through a 64 KiB buffer so that a small header and the data behind it usually cost one
// system call; large payloads are read straight into the caller's buffer. Sockets are
// non-blocking: every operation is tried at once and only waits in the loop when the kernel has
// nothing (or no room), so at queue depth a coroutine runs on without a trip through the loop.
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex {

class TcpStream {
 public:
  explicit TcpStream(asio::ip::tcp::socket s);
  ~TcpStream();
  TcpStream(const TcpStream&) = delete;
  TcpStream& operator=(const TcpStream&) = delete;

  // Exactly n bytes into dst (dst may be null to discard them). Errc::shutdown: the peer closed.
  Task<Status> read_exact(std::byte* dst, std::size_t n);
  // Every byte of every buffer, in order, as one stream.
  Task<Status> write_all(std::span<const asio::const_buffer> bufs);
  // Aborts pending operations (they complete with an error) and closes; idempotent.
  void close();
  bool closed() const { return closed_; }
  // Moves the socket to another loop's context; no operation may be pending.
  void rehome(asio::io_context& ctx);
  const std::string& peer() const { return peer_; }
  const std::string& local() const { return local_; }
  // Bytes already received and not yet consumed (a peer pipelining requests).
  std::size_t buffered() const { return rend_ - rpos_; }

 private:
  Task<Status> wait(bool readable);

  asio::ip::tcp::socket sock_;
  std::vector<std::byte> rbuf_;
  std::size_t rpos_ = 0, rend_ = 0;
  std::string peer_, local_;
  bool closed_ = false;
};

}  // namespace duplex
