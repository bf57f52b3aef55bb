#pragma once
// TLS for TcpStream (TcpStream::start_tls): one OpenSSL context per purpose (the mirror link),
// shared by every connection made with it, both when dialing and when accepting. TLS 1.3 only.
// Either mutual certificates (each side presents cert/key and verifies the other against `ca`) or
// a pre-shared key (each side proves it holds the same key; no certificates at all).
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "duplex/base/status.h"

struct ssl_ctx_st;

namespace duplex {

struct TlsOptions {
  std::string cert, key, ca;  // PEM files: this node's certificate and key, the CA that signs peers
  // A PSK file: "identity:hexkey" lines ('#' comments). The first line is what this side presents
  // when it dials; an accepting side takes any identity listed with its key.
  std::string psk;
};

class TlsContext {
 public:
  // Loads and checks the files; the error names the file and what is wrong with it.
  static Result<std::shared_ptr<TlsContext>> make(const TlsOptions& o);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  ssl_ctx_st* native() const { return ctx_; }
  bool uses_psk() const { return !psk_.empty(); }

  // The PSK of `identity` (empty if unknown) and the identity this side presents; OpenSSL callbacks.
  const std::vector<unsigned char>* psk_of(const std::string& identity) const;
  const std::pair<std::string, std::vector<unsigned char>>& own_psk() const { return psk_.front(); }

 private:
  TlsContext() = default;
  ssl_ctx_st* ctx_ = nullptr;
  std::vector<std::pair<std::string, std::vector<unsigned char>>> psk_;
};

// "identity:hexkey" lines -> keys, as above.
Result<std::vector<std::pair<std::string, std::vector<unsigned char>>>> load_psk_file(
    const std::string& path);

}  // namespace duplex
