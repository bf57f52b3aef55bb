#pragma once
// Transport over a TCP socket, upgraded in place to TLS (asio::ssl over OpenSSL) on STARTTLS.
// Plain reads and writes are tried non-blocking first and only wait in the event loop when the
// socket is not ready: at queue depth the data is usually already there, and the coroutine then
// continues without a trip through the loop.
#include <memory>
#include <string>

#include <asio/ip/tcp.hpp>
#include <asio/ssl.hpp>

#include "duplex/nbd/transport.h"

namespace duplex::nbd {

class TcpTransport final : public Transport {
 public:
  TcpTransport(asio::ip::tcp::socket s, asio::ssl::context* tls);
  ~TcpTransport() override;

  Task<Result<std::size_t>> read_some(std::span<std::byte> buf) override;
  Task<Status> write_all(std::span<const ConstBuf> bufs) override;
  bool tls_capable() const override { return tls_ctx_ != nullptr; }
  bool tls_active() const override { return tls_ != nullptr; }
  Task<Status> start_tls() override;
  void close() override;
  Task<void> yield() override;
  const std::string& peer() const override { return peer_; }

  // Moves the socket to another event loop's context (plain TCP only, no operation pending).
  void rehome(asio::io_context& ctx);

 private:
  asio::ip::tcp::socket sock_;
  asio::ssl::context* tls_ctx_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  std::string peer_;
  bool closed_ = false;
};

}  // namespace duplex::nbd
