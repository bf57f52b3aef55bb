#include "tcp_transport.h"

#include <vector>

#include <fmt/format.h>
#include <asio/post.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include "duplex/reactor/event_loop.h"

namespace duplex::nbd {

TcpTransport::TcpTransport(asio::ip::tcp::socket s, asio::ssl::context* tls)
    : sock_(std::move(s)), tls_ctx_(tls) {
  std::error_code ec;
  auto ep = sock_.remote_endpoint(ec);
  peer_ = ec ? "?" : fmt::format("{}:{}", ep.address().to_string(), ep.port());
  sock_.set_option(asio::ip::tcp::no_delay(true), ec);
  sock_.non_blocking(true, ec);
}

TcpTransport::~TcpTransport() { close(); }

void TcpTransport::close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ec;
  sock_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  sock_.close(ec);
}

void TcpTransport::rehome(asio::io_context& ctx) {
  const auto proto = sock_.local_endpoint().protocol();
  const int fd = sock_.release();
  sock_ = asio::ip::tcp::socket(ctx, proto, fd);
  std::error_code ec;
  sock_.non_blocking(true, ec);
}

Task<Result<std::size_t>> TcpTransport::read_some(std::span<std::byte> buf) {
  if (closed_) co_return Status::error(Errc::shutdown, "connection closed");
  auto mb = asio::buffer(buf.data(), buf.size());
  if (tls_) {
    auto r = co_await asio_op<std::size_t>([&](auto h) { tls_->async_read_some(mb, std::move(h)); });
    if (r.ec == asio::error::eof || r.ec == asio::ssl::error::stream_truncated) co_return std::size_t{0};
    if (r.ec) co_return Status::error(Errc::io_error, "read from {}: {}", peer_, r.ec.message());
    co_return r.value;
  }
  for (;;) {
    std::error_code ec;
    const std::size_t n = sock_.read_some(mb, ec);
    if (!ec) co_return n;
    if (ec == asio::error::eof) co_return std::size_t{0};
    if (ec != asio::error::would_block && ec != asio::error::try_again)
      co_return Status::error(Errc::io_error, "read from {}: {}", peer_, ec.message());
    const std::error_code wec = co_await asio_op_void(
        [&](auto h) { sock_.async_wait(asio::ip::tcp::socket::wait_read, std::move(h)); });
    if (wec) co_return Status::error(Errc::io_error, "read from {}: {}", peer_, wec.message());
  }
}

Task<Status> TcpTransport::write_all(std::span<const ConstBuf> bufs) {
  if (closed_) co_return Status::error(Errc::shutdown, "connection closed");
  std::vector<asio::const_buffer> v;
  v.reserve(bufs.size());
  std::size_t total = 0;
  for (const auto& b : bufs) {
    v.emplace_back(b.data, b.size);
    total += b.size;
  }
  if (tls_) {
    auto r = co_await asio_op<std::size_t>([&](auto h) { asio::async_write(*tls_, v, std::move(h)); });
    if (r.ec) co_return Status::error(Errc::io_error, "write to {}: {}", peer_, r.ec.message());
    co_return Status::ok();
  }
  // Non-blocking attempt first; the rest (if any) through the loop.
  std::size_t done = 0;
  while (done < total) {
    std::error_code ec;
    // Skip fully written buffers.
    std::size_t skip = done;
    std::vector<asio::const_buffer> rest;
    for (const auto& b : v) {
      if (skip >= b.size()) {
        skip -= b.size();
        continue;
      }
      rest.push_back(b + skip);
      skip = 0;
    }
    const std::size_t n = sock_.write_some(rest, ec);
    if (!ec) {
      done += n;
      continue;
    }
    if (ec != asio::error::would_block && ec != asio::error::try_again)
      co_return Status::error(Errc::io_error, "write to {}: {}", peer_, ec.message());
    const std::error_code wec = co_await asio_op_void(
        [&](auto h) { sock_.async_wait(asio::ip::tcp::socket::wait_write, std::move(h)); });
    if (wec) co_return Status::error(Errc::io_error, "write to {}: {}", peer_, wec.message());
  }
  co_return Status::ok();
}

Task<void> TcpTransport::yield() {
  co_await asio_op_void([&](auto h) {
    asio::post(sock_.get_executor(), [h = std::move(h)]() mutable { h(std::error_code{}); });
  });
}

Task<Status> TcpTransport::start_tls() {
  if (!tls_ctx_) co_return Status::error(Errc::unsupported, "TLS not configured");
  std::error_code ec;
  sock_.non_blocking(false, ec);  // asio::ssl drives the socket through async operations only
  tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(sock_, *tls_ctx_);
  const std::error_code hec = co_await asio_op_void(
      [&](auto h) { tls_->async_handshake(asio::ssl::stream_base::server, std::move(h)); });
  if (hec) co_return Status::error(Errc::invalid, "{}", hec.message());
  co_return Status::ok();
}

}  // namespace duplex::nbd
