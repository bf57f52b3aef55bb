#include "duplex/reactor/tcp_stream.h"

#include <array>
#include <cstring>

#include <fmt/format.h>

#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/listen.h"

namespace duplex {

namespace {
constexpr std::size_t kReadBuffer = std::size_t{64} * 1024;

}  // namespace

TcpStream::TcpStream(asio::ip::tcp::socket s) : sock_(std::move(s)), rbuf_(kReadBuffer) {
  std::error_code ec;
  auto rep = sock_.remote_endpoint(ec);
  peer_ = ec ? "?" : endpoint_string(rep);
  auto lep = sock_.local_endpoint(ec);
  local_ = ec ? "?" : endpoint_string(lep);
  sock_.set_option(asio::ip::tcp::no_delay(true), ec);
  sock_.non_blocking(true, ec);
}

TcpStream::~TcpStream() {
  close();
  tls_free();
}

void TcpStream::close() {
  if (closed_) return;
  closed_ = true;
  std::error_code ec;
  sock_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  sock_.close(ec);
}

void TcpStream::rehome(asio::io_context& ctx) {
  std::error_code ec;
  const auto proto = sock_.local_endpoint(ec).protocol();
  const int fd = sock_.release();
  sock_ = asio::ip::tcp::socket(ctx, proto, fd);
  sock_.non_blocking(true, ec);
}

Task<Status> TcpStream::wait(bool readable) {
  const std::error_code ec = co_await asio_op_void([&](auto h) {
    sock_.async_wait(readable ? asio::ip::tcp::socket::wait_read : asio::ip::tcp::socket::wait_write,
                     std::move(h));
  });
  if (ec)
    co_return Status::error(Errc::io_error, "{} {}: {}", readable ? "read from" : "write to", peer_,
                            ec.message());
  co_return Status::ok();
}

Task<Status> TcpStream::read_exact(std::byte* dst, std::size_t n) {
  while (n > 0) {
    if (closed_) co_return Status::error(Errc::shutdown, "connection closed");
    if (rpos_ < rend_) {
      const std::size_t k = std::min(n, rend_ - rpos_);
      if (dst) {
        std::memcpy(dst, rbuf_.data() + rpos_, k);
        dst += k;
      }
      rpos_ += k;
      n -= k;
      continue;
    }
    rpos_ = rend_ = 0;
    // A large payload goes straight to its destination; anything else refills the buffer.
    const bool direct = dst != nullptr && n >= kReadBuffer;
    std::error_code ec;
    bool want_read = true;
    const std::size_t got =
        direct ? read_some(dst, n, ec, &want_read) : read_some(rbuf_.data(), rbuf_.size(), ec, &want_read);
    if (!ec) {
      if (direct) {
        dst += got;
        n -= got;
      } else {
        rend_ = got;
      }
      continue;
    }
    if (ec == asio::error::eof) co_return Status::error(Errc::shutdown, "{} closed the connection", peer_);
    if (ec != asio::error::would_block && ec != asio::error::try_again)
      co_return Status::error(Errc::io_error, "read from {}: {}", peer_, ec.message());
    DPX_CO_TRY(co_await wait(want_read));
  }
  co_return Status::ok();
}

Result<std::size_t> TcpStream::try_write(std::span<const asio::const_buffer> bufs) {
  if (closed_) return Status::error(Errc::shutdown, "connection closed");
  if (ssl_) return std::size_t{0};  // a TLS record must be retried as it was: leave it to write_all
  std::error_code ec;
  const std::size_t n = sock_.write_some(bufs, ec);
  if (!ec) return n;
  if (ec == asio::error::would_block || ec == asio::error::try_again) return std::size_t{0};
  return Status::error(Errc::io_error, "write to {}: {}", peer_, ec.message());
}

bool TcpStream::read_buffered(std::byte* dst, std::size_t n) {
  if (rend_ - rpos_ < n) return false;
  std::memcpy(dst, rbuf_.data() + rpos_, n);
  rpos_ += n;
  return true;
}

Task<Status> TcpStream::write_all(std::span<const asio::const_buffer> bufs) {
  // A PDU is a handful of buffers: keep them on the frame, no allocation per write.
  std::array<asio::const_buffer, 8> small;
  std::vector<asio::const_buffer> large;
  std::span<asio::const_buffer> rest;
  if (bufs.size() <= small.size()) {
    std::copy(bufs.begin(), bufs.end(), small.begin());
    rest = std::span(small.data(), bufs.size());
  } else {
    large.assign(bufs.begin(), bufs.end());
    rest = large;
  }
  std::size_t first = 0;
  while (first < rest.size()) {
    if (closed_) co_return Status::error(Errc::shutdown, "connection closed");
    std::error_code ec;
    bool want_read = false;
    std::size_t n = write_some(rest.subspan(first), ec, &want_read);
    if (ec) {
      if (ec != asio::error::would_block && ec != asio::error::try_again)
        co_return Status::error(Errc::io_error, "write to {}: {}", peer_, ec.message());
      DPX_CO_TRY(co_await wait(want_read));
      continue;
    }
    // Drop what was written: whole buffers, then the front of a partial one.
    while (first < rest.size() && n >= rest[first].size()) n -= rest[first++].size();
    if (first < rest.size()) rest[first] += n;
  }
  co_return Status::ok();
}

}  // namespace duplex
