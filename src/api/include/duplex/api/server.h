#pragma once
// The REST API's HTTP(S) listener: cpp-httplib on its own thread pool, every request handed to
// Handler::handle. Separate from the event loops: API calls block on etcd, never on I/O.
//
//   constructed --start(): bind (port 0 = the kernel picks)--> listening --stop()--> stopped
//        |                                                                  (joins the thread)
//        +--start() fails (bad address, port taken, TLS files unreadable)--> Status, nothing runs
#include <memory>
#include <string>
#include <thread>

#include "duplex/api/handler.h"
#include "duplex/base/status.h"

namespace httplib {
class Server;
}

namespace duplex::api {

struct ServerOptions {
  std::string listen = "127.0.0.1:7480";  // "host:port"
  std::string token;                      // the bearer token (from [api] token_file)
  std::string tls_cert;                   // PEM files; both set = HTTPS
  std::string tls_key;
  unsigned threads = 4;
};

class Server {
 public:
  Server(Backend& backend, ServerOptions opts);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  Status start();
  void stop();
  // "127.0.0.1:41234": the bound address (the real port when listen asked for 0).
  std::string endpoint() const { return endpoint_; }
  bool tls() const { return !opts_.tls_cert.empty(); }

 private:
  ServerOptions opts_;
  Handler handler_;
  std::unique_ptr<httplib::Server> http_;
  std::thread thread_;
  std::string endpoint_;
};

}  // namespace duplex::api
