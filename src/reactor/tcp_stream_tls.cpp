// The TLS half of TcpStream: the handshake and the OpenSSL read/write attempts behind
// TcpStream::read_some/write_some (tcp_stream.h).
#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <asio/ssl/error.hpp>
#include <asio/steady_timer.hpp>

#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/tcp_stream.h"
#include "duplex/reactor/tls.h"

namespace duplex {

namespace {

// Small buffers (a 96-byte header and its payload) gathered into one record, not one each.
constexpr std::size_t kGather = std::size_t{16} * 1024;

std::string ssl_error_text(unsigned long e) {
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// An SSL_read/SSL_write/SSL_do_handshake result that is not progress, as an error code; the
// caller waits for the socket on would_block.
std::error_code ssl_failure(SSL* ssl, int r, bool* want_read) {
  switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ: *want_read = true; return asio::error::would_block;
    case SSL_ERROR_WANT_WRITE: *want_read = false; return asio::error::would_block;
    case SSL_ERROR_ZERO_RETURN: return asio::error::eof;
    case SSL_ERROR_SYSCALL: {
      const int err = errno;
      ERR_clear_error();
      if (err == 0 || err == EPIPE) return asio::error::eof;
      return {err, std::system_category()};
    }
    default: {
      const unsigned long e = ERR_get_error();
      ERR_clear_error();
      return {static_cast<int>(e), asio::error::get_ssl_category()};
    }
  }
}

}  // namespace

std::size_t TcpStream::tls_pending() const { return static_cast<std::size_t>(SSL_pending(ssl_)); }

void TcpStream::tls_free() {
  if (ssl_) SSL_free(ssl_);  // the socket BIO does not own the descriptor (BIO_NOCLOSE)
  ssl_ = nullptr;
}

std::size_t TcpStream::tls_read(std::byte* dst, std::size_t n, std::error_code& ec, bool* want_read) {
  ERR_clear_error();
  const int r = SSL_read(ssl_, dst, static_cast<int>(std::min<std::size_t>(n, INT_MAX)));
  if (r > 0) return static_cast<std::size_t>(r);
  ec = ssl_failure(ssl_, r, want_read);
  return 0;
}

std::size_t TcpStream::tls_write(std::span<const asio::const_buffer> bufs, std::error_code& ec,
                                 bool* want_read) {
  // SSL_write takes one buffer. A retry after would_block gathers the same bytes again (write_all
  // calls back with the same rest), as OpenSSL requires.
  const void* p = bufs[0].data();
  std::size_t n = bufs[0].size();
  if (bufs.size() > 1 && n < kGather) {
    tls_wbuf_.resize(kGather);
    n = 0;
    for (const auto& b : bufs) {
      const std::size_t k = std::min(b.size(), kGather - n);
      std::memcpy(tls_wbuf_.data() + n, b.data(), k);
      n += k;
      if (n == kGather) break;
    }
    p = tls_wbuf_.data();
  }
  ERR_clear_error();
  const int r = SSL_write(ssl_, p, static_cast<int>(std::min<std::size_t>(n, INT_MAX)));
  if (r > 0) return static_cast<std::size_t>(r);
  ec = ssl_failure(ssl_, r, want_read);
  return 0;
}

Task<Status> TcpStream::start_tls(std::shared_ptr<const TlsContext> ctx, bool server, std::string peer_name,
                                  std::chrono::milliseconds limit) {
  if (ssl_ || closed_) co_return Status::error(Errc::invalid, "TLS on {}: stream already used", peer_);
  tls_ctx_ = std::move(ctx);
  ssl_ = SSL_new(tls_ctx_->native());
  if (!ssl_ || SSL_set_fd(ssl_, sock_.native_handle()) != 1) {
    tls_free();
    co_return Status::error(Errc::io_error, "TLS on {}: cannot set up the session", peer_);
  }
  if (server) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
    // A server that answers a PSK with a certificate instead is not one of ours: with no CA
    // loaded, every certificate fails verification.
    if (tls_ctx_->uses_psk()) SSL_set_verify(ssl_, SSL_VERIFY_PEER, nullptr);
    if (!peer_name.empty() && !tls_ctx_->uses_psk()) SSL_set1_host(ssl_, peer_name.c_str());
  }
  // A silent peer must not hold the handshake: the timer closes the socket, failing the wait.
  auto timed_out = std::make_shared<bool>(false);
  asio::steady_timer timer(sock_.get_executor(), limit);
  timer.async_wait([this, timed_out](std::error_code e) {
    if (e) return;
    *timed_out = true;
    close();
  });
  Status st = Status::ok();
  while (true) {
    ERR_clear_error();
    const int r = SSL_do_handshake(ssl_);
    if (r == 1) break;
    bool want_read = true;
    const std::error_code ec = ssl_failure(ssl_, r, &want_read);
    if (ec == asio::error::would_block) {
      st = co_await wait(want_read);
      if (st.is_ok()) continue;
    } else if (ec == asio::error::eof) {
      st = Status::error(Errc::unavailable,
                         "TLS handshake with {}: the peer closed the connection (TLS off there, or it "
                         "refused our certificate or PSK)",
                         peer_);
    } else {
      const bool ssl = ec.category() == asio::error::get_ssl_category();
      std::string why = ssl ? ssl_error_text(static_cast<unsigned long>(ec.value())) : ec.message();
      if (ssl && ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_WRONG_VERSION_NUMBER)
        why += " (the peer does not speak TLS: is TLS on there?)";
      if (const long v = SSL_get_verify_result(ssl_); v != X509_V_OK)
        why += fmt::format(" ({})", X509_verify_cert_error_string(v));
      st = Status::error(Errc::unavailable, "TLS handshake with {} failed: {}", peer_, why);
    }
    break;
  }
  timer.cancel();
  if (*timed_out)
    st = Status::error(Errc::timeout, "TLS handshake with {}: not done within {} ms", peer_, limit.count());
  if (!st) close();
  co_return st;
}

}  // namespace duplex
