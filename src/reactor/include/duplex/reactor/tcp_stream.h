#pragma once
// A plain TCP byte stream on one event loop, for protocols that frame their own messages (iSCSI).
// Reads go through a 64 KiB buffer so that a small header and the data behind it usually cost one
// system call; large payloads are read straight into the caller's buffer. Sockets are
// non-blocking: every operation is tried at once and only waits in the loop when the kernel has
// nothing (or no room), so at queue depth a coroutine runs on without a trip through the loop.
//
// Optionally TLS (start_tls, before any other I/O): OpenSSL then works on the socket's descriptor
// directly, so the stream still re-homes onto another loop as a bare descriptor. The plain path
// pays one predictable branch per read or write call, nothing per byte. With TLS, SIGPIPE must be
// ignored by the process (the daemon does): OpenSSL writes to the socket with write(2).
#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <asio/ip/tcp.hpp>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

struct ssl_st;

namespace duplex {

class TlsContext;

class TcpStream {
 public:
  explicit TcpStream(asio::ip::tcp::socket s);
  ~TcpStream();
  TcpStream(const TcpStream&) = delete;
  TcpStream& operator=(const TcpStream&) = delete;

  // The TLS handshake, as the dialing (`server` false) or accepting side, within `limit` (then
  // Errc::timeout and the stream is closed). A dialer that names `peer_name` also requires the
  // peer's certificate to be issued to that name. Errors say why (certificate, PSK, not TLS).
  Task<Status> start_tls(std::shared_ptr<const TlsContext> ctx, bool server, std::string peer_name,
                         std::chrono::milliseconds limit);
  bool tls() const { return ssl_ != nullptr; }

  // Exactly n bytes into dst (dst may be null to discard them). Errc::shutdown: the peer closed.
  Task<Status> read_exact(std::byte* dst, std::size_t n);
  // Every byte of every buffer, in order, as one stream.
  Task<Status> write_all(std::span<const asio::const_buffer> bufs);
  // One non-blocking write attempt, without a coroutine (plain streams only; with TLS it writes
  // nothing): the bytes written, 0 when the socket has no room now. Errc::io_error on failure.
  Result<std::size_t> try_write(std::span<const asio::const_buffer> bufs);
  // Exactly n bytes from what is already buffered, without a coroutine: false (and nothing
  // consumed) if fewer are buffered. For a message parser's fast path before read_exact().
  bool read_buffered(std::byte* dst, std::size_t n);
  // Aborts pending operations (they complete with an error) and closes; idempotent.
  void close();
  bool closed() const { return closed_; }
  // Moves the socket to another loop's context; no operation may be pending.
  void rehome(asio::io_context& ctx);
  const std::string& peer() const { return peer_; }
  const std::string& local() const { return local_; }
  // Bytes already received and not yet consumed (a peer pipelining requests).
  std::size_t buffered() const { return rend_ - rpos_ + (ssl_ ? tls_pending() : 0); }

 private:
  Task<Status> wait(bool readable);
  // One read or write attempt, plain or TLS. would_block in `ec`: wait for `*want_read` (TLS may
  // need to write while reading and the other way round).
  std::size_t read_some(std::byte* dst, std::size_t n, std::error_code& ec, bool* want_read) {
    *want_read = true;
    if (!ssl_) [[likely]]
      return sock_.read_some(asio::buffer(dst, n), ec);
    return tls_read(dst, n, ec, want_read);
  }
  std::size_t write_some(std::span<const asio::const_buffer> bufs, std::error_code& ec, bool* want_read) {
    *want_read = false;
    if (!ssl_) [[likely]]
      return sock_.write_some(bufs, ec);
    return tls_write(bufs, ec, want_read);
  }
  std::size_t tls_read(std::byte* dst, std::size_t n, std::error_code& ec, bool* want_read);
  std::size_t tls_write(std::span<const asio::const_buffer> bufs, std::error_code& ec, bool* want_read);
  std::size_t tls_pending() const;
  void tls_free();

  asio::ip::tcp::socket sock_;
  std::vector<std::byte> rbuf_;
  std::size_t rpos_ = 0, rend_ = 0;
  std::string peer_, local_;
  bool closed_ = false;
  ssl_st* ssl_ = nullptr;
  std::shared_ptr<const TlsContext> tls_ctx_;  // the PSK callbacks find their keys through it
  std::vector<std::byte> tls_wbuf_;            // small buffers gathered into one TLS record
};

}  // namespace duplex
