// libFuzzer target: the REST handler (api::Handler) over the in-memory backend. Input: one byte
// picking the method, then NUL-separated path, query ("k=v&k=v"), Authorization header and body.
// Each input runs against a fresh backend holding one volume with a snapshot, so deeper routes
// are reachable. Invariants: no crash or escaping exception, a status from docs/api.md's table
// (never 500: the in-memory backend has no bugs to report), and every JSON answer parses, with
// an error object on every error status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "duplex/api/handler.h"
#include "memory_backend.h"

using namespace duplex;

namespace {

std::string_view next(std::string_view& in) {
  const auto z = in.find('\0');
  std::string_view part = in.substr(0, z);
  in.remove_prefix(z == std::string_view::npos ? in.size() : z + 1);
  return part;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    const auto amp = q.find('&');
    const std::string_view kv = q.substr(0, amp);
    const auto eq = kv.find('=');
    out.emplace(std::string(kv.substr(0, eq)),
                eq == std::string_view::npos ? "" : std::string(kv.substr(eq + 1)));
    q.remove_prefix(amp == std::string_view::npos ? q.size() : amp + 1);
  }
  return out;
}

[[noreturn]] void fail(const char* why, const api::Response& r) {
  fprintf(stderr, "fuzz_api_request: %s: status %d body %s\n", why, r.status, r.body.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  static const char* const kMethods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", ""};
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  api::Request req;
  req.method = kMethods[data[0] % 8];
  req.path = next(in);
  req.query = parse_query(next(in));
  req.authorization = next(in);
  req.body = in;
  // Never wait: the in-memory backend answers at once anyway, and a fuzzer must not sleep.
  if (req.query.count("timeout")) req.query["timeout"] = "0";

  test::MemoryBackend backend;
  backend.apply = (data[0] & 0x80) == 0;
  api::Handler setup(backend, api::HandlerOptions{"fuzz"});
  (void)setup.handle(
      api::Request{"POST", "/v1/volumes", {}, "Bearer fuzz", R"({"name":"vol","size":"1MiB"})"});
  (void)setup.handle(
      api::Request{"POST", "/v1/volumes/vol/snapshots", {}, "Bearer fuzz", R"({"name":"s1"})"});

  api::Handler handler(backend, api::HandlerOptions{"fuzz"});
  const api::Response r = handler.handle(req);
  switch (r.status) {
    case 200:
    case 201:
    case 202:
    case 400:
    case 401:
    case 404:
    case 405:
    case 409:
    case 413:
    case 503:
    case 507: break;
    default: fail("status outside the contract", r);
  }
  if (r.content_type == "application/json") {
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    if (j.is_discarded()) fail("answer is not JSON", r);
    if (r.status >= 400 && !(j.is_object() && j.contains("error") && j["error"].is_object() &&
                             j["error"].contains("code") && j["error"]["code"].is_string()))
      fail("error without an error object", r);
  } else if (r.status != 200) {
    fail("non-JSON error answer", r);
  }
  return 0;
}
