#pragma once
// The REST API as a function from request to response (docs/api.md is its contract): routing,
// bearer-token check, JSON decoding with errors that name the field, and the mapping of Errc onto
// HTTP statuses. No sockets here: api::Server feeds it from cpp-httplib, tests and the fuzz target
// call it directly. handle() never throws and accepts any bytes in any field.
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "duplex/api/backend.h"

namespace duplex::api {

struct Request {
  std::string method;                        // "GET", "POST", ...
  std::string path;                          // already percent-decoded, without the query
  std::map<std::string, std::string> query;  // first value of each parameter
  std::string authorization;                 // the Authorization header, "" if absent
  std::string body;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // Allow, WWW-Authenticate
};

struct HandlerOptions {
  // Bearer token every route but /v1/health and /metrics requires. Empty: no token was
  // configured, and those routes answer 401 (fail closed).
  std::string token;
  std::size_t max_body = std::size_t{64} * 1024;
  std::chrono::seconds default_timeout{30};
  std::chrono::seconds max_timeout{3600};
};

class Handler {
 public:
  Handler(Backend& backend, HandlerOptions opts) : backend_(backend), opts_(std::move(opts)) {}

  Response handle(const Request& req) const;

 private:
  Response dispatch(const Request& req) const;
  bool authorized(const std::string& header) const;

  Backend& backend_;
  HandlerOptions opts_;
};

// Parses a size: a JSON-less string of decimal digits with an optional binary suffix (K, M, G, T, P,
// each optionally followed by "i" and/or "B": "10GiB", "512M", "1T") or plain digits ("4096").
Result<std::uint64_t> parse_size(std::string_view s);

// Errc -> (HTTP status, error code string) as docs/api.md's table says.
std::pair<int, std::string_view> http_status_of(Errc c);

}  // namespace duplex::api
