#include "duplex/api/server.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <charconv>
#include <chrono>

namespace duplex::api {

namespace {

Result<std::pair<std::string, int>> split_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0)
    return Status::error(Errc::invalid, "api listen \"{}\" must be host:port", listen);
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  const char* b = listen.data() + colon + 1;
  const char* e = listen.data() + listen.size();
  auto [ptr, ec] = std::from_chars(b, e, port);
  if (ec != std::errc{} || ptr != e || port < 0 || port > 65535)
    return Status::error(Errc::invalid, "api listen \"{}\": the port must be 0..65535", listen);
  return std::pair{host, port};
}

Request to_request(const httplib::Request& r) {
  Request out;
  out.method = r.method;
  out.path = r.path;
  // The query comes from the URL only: cpp-httplib also merges a form-encoded body into params,
  // and a JSON body sent as a form (curl -d) must be read as the body, not as query keys.
  if (const auto q = r.target.find('?'); q != std::string::npos) {
    httplib::Params params;
    httplib::detail::parse_query_text(r.target.substr(q + 1), params);
    for (const auto& [k, v] : params) out.query.emplace(k, v);  // emplace keeps the first value
  }
  out.authorization = r.get_header_value("Authorization");
  out.body = r.body;
  return out;
}

}  // namespace

Server::Server(Backend& backend, ServerOptions opts)
    : opts_(std::move(opts)), handler_(backend, HandlerOptions{opts_.token}) {}

Server::~Server() { stop(); }

Status Server::start() {
  auto hp = split_listen(opts_.listen);
  if (!hp) return hp.status();
  if (opts_.tls_cert.empty() != opts_.tls_key.empty())
    return Status::error(Errc::invalid, "api: tls_cert and tls_key must be given together");
  if (!opts_.tls_cert.empty()) {
    auto s = std::make_unique<httplib::SSLServer>(opts_.tls_cert.c_str(), opts_.tls_key.c_str());
    if (!s->is_valid())
      return Status::error(Errc::invalid, "api: cannot load TLS certificate {} / key {}", opts_.tls_cert,
                           opts_.tls_key);
    http_ = std::move(s);
  } else {
    http_ = std::make_unique<httplib::Server>();
  }
  const unsigned threads = std::max(1U, opts_.threads);
  http_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // Above the handler's 64 KiB limit so that an oversized body gets the API's JSON 413.
  http_->set_payload_max_length(1 << 20);
  // httplib's default also sets SO_REUSEPORT, which would let a second duplexd share the port
  // silently; a taken port must be an error.
  http_->set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  // Routing is the Handler's: one catch-all per method (the body is read before these run).
  const auto serve = [this](const httplib::Request& req, httplib::Response& res) {
    const Response r = handler_.handle(to_request(req));
    res.status = r.status;
    for (const auto& [k, v] : r.headers) res.set_header(k, v);
    res.set_content(r.body, r.content_type);
    if (req.method != "GET" && req.method != "HEAD")
      spdlog::info("event=api.request method={} path={} status={}", req.method, req.path, r.status);
  };
  http_->Get(".*", serve);
  http_->Post(".*", serve);
  http_->Put(".*", serve);
  http_->Patch(".*", serve);
  http_->Delete(".*", serve);
  http_->Options(".*", serve);

  const auto& [host, port] = *hp;
  int bound = port;
  if (port == 0) {
    bound = http_->bind_to_any_port(host);
    if (bound < 0) return Status::error(Errc::unavailable, "api: cannot listen on {}", opts_.listen);
  } else if (!http_->bind_to_port(host, port)) {
    return Status::error(Errc::unavailable, "api: cannot listen on {} (address in use or not local?)",
                         opts_.listen);
  }
  endpoint_ = fmt::format("{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host, bound);
  thread_ = std::thread([this] { http_->listen_after_bind(); });
  // httplib's stop() does nothing until the listening loop has started; wait for it so that a
  // stop() right after start() cannot leave the thread blocked in accept() forever.
  for (int i = 0; i < 5000 && !http_->is_running(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (!http_->is_running()) {
    stop();
    return Status::error(Errc::unavailable, "api: the listener on {} did not start", endpoint_);
  }
  spdlog::info("event=api.listening endpoint={} tls={}", endpoint_, tls());
  return Status::ok();
}

void Server::stop() {
  if (http_) http_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace duplex::api
