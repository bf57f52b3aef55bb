#include "duplex/reactor/tls.h"

#include <cstdlib>
#include <cstring>
#include <fstream>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace duplex {

namespace {

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

const TlsContext* owner(SSL* ssl) {
  return static_cast<const TlsContext*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
}

unsigned int psk_client_cb(SSL* ssl, const char*, char* identity, unsigned int max_identity,
                           unsigned char* psk, unsigned int max_psk) {
  const auto& [id, key] = owner(ssl)->own_psk();
  if (id.size() + 1 > max_identity || key.size() > max_psk) return 0;
  std::memcpy(identity, id.c_str(), id.size() + 1);
  std::memcpy(psk, key.data(), key.size());
  return static_cast<unsigned int>(key.size());
}

unsigned int psk_server_cb(SSL* ssl, const char* identity, unsigned char* psk, unsigned int max_psk) {
  const auto* key = identity ? owner(ssl)->psk_of(identity) : nullptr;
  if (!key || key->size() > max_psk) return 0;  // unknown identity: the handshake fails
  std::memcpy(psk, key->data(), key->size());
  return static_cast<unsigned int>(key->size());
}

}  // namespace

Result<std::vector<std::pair<std::string, std::vector<unsigned char>>>> load_psk_file(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::error(Errc::not_found, "TLS PSK file {} cannot be read", path);
  std::vector<std::pair<std::string, std::vector<unsigned char>>> keys;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.empty() || line[0] == '#') continue;
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0)
      return Status::error(Errc::invalid, "{}:{}: expected identity:hexkey", path, n);
    const std::string hex = line.substr(colon + 1);
    if (hex.empty() || hex.size() % 2) return Status::error(Errc::invalid, "{}:{}: key is not hex", path, n);
    std::vector<unsigned char> key;
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      const std::string byte = hex.substr(i, 2);
      char* end = nullptr;
      const long v = std::strtol(byte.c_str(), &end, 16);
      if (*end) return Status::error(Errc::invalid, "{}:{}: key is not hex", path, n);
      key.push_back(static_cast<unsigned char>(v));
    }
    // Below 128 bits a PSK is guessable offline from one recorded handshake.
    if (key.size() < 16) return Status::error(Errc::invalid, "{}:{}: key shorter than 16 bytes", path, n);
    keys.emplace_back(line.substr(0, colon), std::move(key));
  }
  if (keys.empty()) return Status::error(Errc::invalid, "TLS PSK file {} has no keys", path);
  return keys;
}

Result<std::shared_ptr<TlsContext>> TlsContext::make(const TlsOptions& o) {
  if (!o.psk.empty() && !o.cert.empty())
    return Status::error(Errc::invalid, "TLS: a certificate or a PSK, not both");
  if (o.psk.empty() && (o.cert.empty() || o.key.empty() || o.ca.empty()))
    return Status::error(Errc::invalid, "TLS needs a certificate, its key and a CA, or a PSK file");
  std::shared_ptr<TlsContext> t(new TlsContext());
  ERR_clear_error();
  t->ctx_ = SSL_CTX_new(TLS_method());
  if (!t->ctx_) return Status::error(Errc::io_error, "TLS: {}", openssl_error());
  SSL_CTX* c = t->ctx_;
  SSL_CTX_set_app_data(c, t.get());
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  // A peer that drops the TCP connection is a closed link, told apart by the channel anyway.
  SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  // TcpStream retries a write with the same bytes, possibly from a new frame (the buffer moved).
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // A link is one long connection: no resumption, so no tickets to send or keep.
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  if (!o.psk.empty()) {
    auto keys = load_psk_file(o.psk);
    if (!keys) return keys.status();
    t->psk_ = std::move(*keys);
    SSL_CTX_set_psk_client_callback(c, psk_client_cb);
    SSL_CTX_set_psk_server_callback(c, psk_server_cb);
    return t;
  }
  if (SSL_CTX_use_certificate_chain_file(c, o.cert.c_str()) != 1)
    return Status::error(Errc::invalid, "TLS certificate {}: {}", o.cert, openssl_error());
  if (SSL_CTX_use_PrivateKey_file(c, o.key.c_str(), SSL_FILETYPE_PEM) != 1)
    return Status::error(Errc::invalid, "TLS key {}: {}", o.key, openssl_error());
  if (SSL_CTX_check_private_key(c) != 1)
    return Status::error(Errc::invalid, "TLS key {} does not match certificate {}: {}", o.key, o.cert,
                         openssl_error());
  if (SSL_CTX_load_verify_locations(c, o.ca.c_str(), nullptr) != 1)
    return Status::error(Errc::invalid, "TLS CA {}: {}", o.ca, openssl_error());
  // Mutual: whichever side dials, both present a certificate signed by the CA.
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  return t;
}

TlsContext::~TlsContext() {
  if (ctx_) SSL_CTX_free(ctx_);
}

const std::vector<unsigned char>* TlsContext::psk_of(const std::string& identity) const {
  for (const auto& [id, key] : psk_)
    if (id == identity) return &key;
  return nullptr;
}

}  // namespace duplex
