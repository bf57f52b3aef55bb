#include "duplex/cli/client.h"

#include <cctype>

#include <httplib.h>

#include "duplex/cli/json_get.h"

namespace duplex::cli {

ApiClient::ApiClient(Endpoint ep, std::chrono::milliseconds timeout)
    : ep_(std::move(ep)), timeout_(timeout) {}

namespace {

httplib::Result send_one(httplib::Client& c, std::string_view method, const std::string& path,
                         const std::string& body) {
  const char* type = "application/json";
  if (method == "GET") return c.Get(path);
  if (method == "POST") return c.Post(path, body, type);
  if (method == "PUT") return c.Put(path, body, type);
  if (method == "PATCH") return c.Patch(path, body, type);
  return c.Delete(path);
}

// httplib's names ("Connection", "Read") say little to an operator.
std::string describe(httplib::Error e) {
  switch (e) {
    case httplib::Error::Connection:
      return "cannot connect (nothing listening, or the address is unreachable)";
    case httplib::Error::ConnectionTimeout: return "connection timed out";
    case httplib::Error::Read: return "no answer (the connection closed or the read timed out)";
    case httplib::Error::Write: return "cannot send the request";
    case httplib::Error::SSLConnection: return "TLS handshake failed";
    case httplib::Error::SSLServerVerification: return "the server's TLS certificate is not trusted";
    default: return httplib::to_string(e);
  }
}

Errc errc_for(int http) {
  switch (http) {
    case 400: return Errc::invalid;
    case 404: return Errc::not_found;
    case 409: return Errc::conflict;
    case 503: return Errc::unavailable;
    case 507: return Errc::no_space;
    case 501: return Errc::unsupported;
    default: return Errc::io_error;
  }
}

}  // namespace

Result<Reply> ApiClient::request(std::string_view method, const std::string& path,
                                 const nlohmann::json* body) const {
  if (ep_.apis.empty())
    return Status::error(Errc::invalid, "no API address (set --api, --dir or DUPLEX_API)");
  const std::string payload = body != nullptr ? body->dump() : std::string();
  std::string failures;
  for (const auto& base : ep_.apis) {
    httplib::Client c(base);
    if (!c.is_valid()) {
      failures += fmt::format("{}{}: not an http:// or https:// URL", failures.empty() ? "" : "; ", base);
      continue;
    }
    c.set_url_encode(false);  // paths are built with escape_segment already
    c.set_connection_timeout(std::chrono::seconds(3));
    c.set_read_timeout(timeout_ + std::chrono::seconds(5));
    c.set_write_timeout(std::chrono::seconds(10));
    if (!ep_.token.empty()) c.set_bearer_token_auth(ep_.token);
    auto res = send_one(c, method, path, payload);
    if (!res) {
      failures += fmt::format("{}{}: {}", failures.empty() ? "" : "; ", base, describe(res.error()));
      continue;
    }
    Reply r;
    r.status = res->status;
    r.text = res->body;
    r.from = base;
    r.body = nlohmann::json::parse(r.text, nullptr, /*allow_exceptions=*/false);
    if (r.body.is_discarded()) r.body = nullptr;
    return r;
  }
  return Status::error(Errc::unavailable, "cannot reach the API ({})", failures);
}

Result<Reply> ApiClient::call(std::string_view method, const std::string& path,
                              const nlohmann::json* body) const {
  auto r = request(method, path, body);
  if (!r) return r.status();
  if (r->status < 200 || r->status > 299) return api_error(*r);
  return r;
}

std::string error_code(const Reply& r) { return str(object(r.body, "error"), "code"); }
std::string error_field(const Reply& r) { return str(object(r.body, "error"), "field"); }

Status api_error(const Reply& r) {
  const json& e = object(r.body, "error");
  std::string message = str(e, "message");
  std::string code = str(e, "code");
  if (message.empty()) {
    // Not the API's error shape (a proxy, an old daemon): show what came back, on one line.
    message = r.text.substr(0, 200);
    for (char& ch : message) {
      if (ch == '\n' || ch == '\r') ch = ' ';
    }
    if (message.empty()) message = "empty answer";
  }
  return {errc_for(r.status), code.empty() ? fmt::format("{} (HTTP {})", message, r.status)
                                           : fmt::format("{} ({} {})", message, r.status, code)};
}

std::string escape_segment(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) != 0 || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      out += static_cast<char>(ch);
    } else {
      out += fmt::format("%{:02X}", ch);
    }
  }
  return out;
}

}  // namespace duplex::cli
