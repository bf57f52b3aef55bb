#pragma once
// The NBD server: listening sockets, connection limit, handshake timeout, hand-over of each
// connection to the event loop that owns its export, TLS, and an orderly stop.
//
// Threading: connections are accepted and negotiated on loop 0. After NBD_OPT_GO the socket moves
// to the loop of the export (ExportInfo::loop), where the transmission phase runs next to the
// volume. A TLS connection cannot move (its OpenSSL state is bound to its loop); its volume calls
// hop to the export's loop and back instead (two messages per request).
#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/nbd/export.h"
#include "duplex/nbd/session.h"
#include "duplex/reactor/event_loop.h"

namespace duplex::nbd {

struct TlsConfig {
  std::string cert_file;  // PEM certificate chain (with key_file)
  std::string key_file;
  std::string ca_file;    // when set, clients must present a certificate signed by it
  std::string psk_file;   // "identity:hexkey" lines (the format of nbdkit/qemu/libnbd)
  bool required = false;  // FORCEDTLS: no export without TLS
};

struct ServerConfig {
  std::vector<std::string> listen;  // "127.0.0.11:10809", "[::1]:10809"
  unsigned max_connections = 64;
  std::chrono::milliseconds handshake_timeout{30000};
  std::chrono::milliseconds stop_grace{2000};  // ESHUTDOWN period before connections are closed
  SessionOptions session;
  std::optional<TlsConfig> tls;
};

class Server {
 public:
  Server(LoopGroup& loops, ExportCatalogue& catalogue, ServerConfig cfg);
  ~Server();
  // Binds every listen address; an error names the address and the cause (e.g. in use).
  Status start();
  // Stops accepting, answers ESHUTDOWN to new requests, lets in-flight ones finish and flush,
  // then closes every connection. Run on loop 0.
  Task<void> stop();
  unsigned connections() const { return count_.load(); }
  // The actual bound endpoints ("127.0.0.1:10809"), useful with port 0.
  std::vector<std::string> endpoints() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::atomic<unsigned> count_{0};
};

}  // namespace duplex::nbd
