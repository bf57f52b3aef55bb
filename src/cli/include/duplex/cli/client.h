#pragma once
// The HTTP side of duplexctl: one call = one request to the REST API (docs/api.md) of the first node
// that answers. A node that cannot be reached is skipped for the next one listed; an HTTP error is an
// answer and is not retried elsewhere (any node answers for the whole cluster).
#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "duplex/base/status.h"

namespace duplex::cli {

struct Endpoint {
  std::vector<std::string> apis;  // base URLs, "http://127.0.0.11:7480", tried in order
  std::string token;              // bearer token; empty: none sent
};

struct Reply {
  int status = 0;
  nlohmann::json body;  // null when the answer is not JSON (GET /metrics)
  std::string text;     // the answer as received
  std::string from;     // the base URL that answered
};

class ApiClient {
 public:
  ApiClient(Endpoint ep, std::chrono::milliseconds timeout);

  // Any HTTP answer, whatever its status; an error only when no node could be reached.
  Result<Reply> request(std::string_view method, const std::string& path,
                        const nlohmann::json* body = nullptr) const;
  // As request(), but a non-2xx answer becomes an error carrying the API's message (api_error).
  Result<Reply> call(std::string_view method, const std::string& path,
                     const nlohmann::json* body = nullptr) const;
  Result<Reply> get(const std::string& path) const { return call("GET", path); }

  const Endpoint& endpoint() const { return ep_; }

 private:
  Endpoint ep_;
  std::chrono::milliseconds timeout_;
};

// The one line an operator sees for an HTTP error answer:
// "volume 'x' does not exist (404 not_found)". The Errc follows the HTTP status.
Status api_error(const Reply& r);
// The "code" of an error answer ("not_found", "unsupported"), empty when there is none.
std::string error_code(const Reply& r);
std::string error_field(const Reply& r);

// Percent-encodes one path segment (an initiator IQN contains ':').
std::string escape_segment(std::string_view s);

}  // namespace duplex::cli
