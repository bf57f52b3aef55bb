#include "duplex/cluster/etcd.h"

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <charconv>
#include <mutex>

namespace duplex::cluster {

namespace {
using json = nlohmann::json;

// Base64, as the gateway encodes every key and value (bytes fields of the protobuf API).
std::string b64(const std::string& in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{static_cast<unsigned char>(in[i])} << 16) |
                            (std::uint32_t{static_cast<unsigned char>(in[i + 1])} << 8) |
                            static_cast<unsigned char>(in[i + 2]);
    for (int s : {18, 12, 6, 0}) out.push_back(kAlphabet[(v >> s) & 63]);
  }
  if (i < in.size()) {
    std::uint32_t v = std::uint32_t{static_cast<unsigned char>(in[i])} << 16;
    if (i + 1 < in.size()) v |= std::uint32_t{static_cast<unsigned char>(in[i + 1])} << 8;
    out.push_back(kAlphabet[(v >> 18) & 63]);
    out.push_back(kAlphabet[(v >> 12) & 63]);
    out.push_back(i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

Result<std::string> unb64(const std::string& in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    const int v = val(c);
    if (v < 0) return Status::error(Errc::invalid, "etcd: bad base64 in a response");
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return out;
}

// int64 fields come as JSON strings (proto3 JSON mapping); absent means 0.
std::int64_t i64(const json& j, const char* field) {
  if (!j.is_object() || !j.contains(field)) return 0;
  const auto& v = j.at(field);
  if (v.is_number_integer()) return v.get<std::int64_t>();
  if (!v.is_string()) return 0;
  const auto& str = v.get_ref<const std::string&>();
  std::int64_t out = 0;
  const auto [end, ec] = std::from_chars(str.data(), str.data() + str.size(), out);
  return ec == std::errc() && end == str.data() + str.size() ? out : 0;
}

// Whatever a member or something pretending to be one sends, a response of the wrong shape is an
// error value, never an exception out of the client (nlohmann-json throws on type mismatches).
template <typename F>
auto guarded(const char* what, F f) -> decltype(f()) {
  try {
    return f();
  } catch (const json::exception& e) {
    return Status::error(Errc::invalid, "etcd {}: malformed response ({})", what, e.what());
  }
}

Result<Kv> parse_kv(const json& j) {
  Kv kv;
  if (!j.is_object()) return Status::error(Errc::invalid, "etcd: a key-value that is not an object");
  if (j.contains("key")) {
    auto k = unb64(j.at("key").get<std::string>());
    if (!k) return k.status();
    kv.key = std::move(*k);
  }
  if (j.contains("value")) {
    auto v = unb64(j.at("value").get<std::string>());
    if (!v) return v.status();
    kv.value = std::move(*v);
  }
  kv.create_revision = i64(j, "create_revision");
  kv.mod_revision = i64(j, "mod_revision");
  kv.version = i64(j, "version");
  kv.lease = i64(j, "lease");
  return kv;
}

Result<std::vector<Kv>> parse_kvs(const json& j) {
  std::vector<Kv> out;
  if (!j.contains("kvs")) return out;
  for (const auto& e : j.at("kvs")) {
    auto kv = parse_kv(e);
    if (!kv) return kv.status();
    out.push_back(std::move(*kv));
  }
  return out;
}

json range_request(const std::string& key, bool prefix) {
  json r{{"key", b64(key)}};
  if (prefix) r["range_end"] = b64(prefix_end(key));
  return r;
}

json txn_op(const TxnOp& op) {
  switch (op.kind) {
    case TxnOp::Kind::put: {
      json p{{"key", b64(op.key)}, {"value", b64(op.value)}};
      if (op.lease) p["lease"] = std::to_string(op.lease);
      return json{{"request_put", p}};
    }
    case TxnOp::Kind::del: return json{{"request_delete_range", range_request(op.key, op.prefix)}};
    case TxnOp::Kind::get: return json{{"request_range", range_request(op.key, op.prefix)}};
  }
  return {};
}

json compare_json(const Compare& c) {
  static constexpr const char* kTargets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
  static constexpr const char* kOps[] = {"EQUAL", "NOT_EQUAL", "GREATER", "LESS"};
  json j{{"key", b64(c.key)},
         {"target", kTargets[static_cast<int>(c.target)]},
         {"result", kOps[static_cast<int>(c.op)]}};
  switch (c.target) {
    case Compare::Target::version: j["version"] = std::to_string(c.number); break;
    case Compare::Target::create_revision: j["create_revision"] = std::to_string(c.number); break;
    case Compare::Target::mod_revision: j["mod_revision"] = std::to_string(c.number); break;
    case Compare::Target::value: j["value"] = b64(c.value); break;
    case Compare::Target::lease: j["lease"] = std::to_string(c.number); break;
  }
  return j;
}

std::unique_ptr<httplib::Client> make_client(const std::string& endpoint, std::chrono::milliseconds timeout) {
  auto cli = std::make_unique<httplib::Client>(endpoint);
  const auto sec = std::chrono::duration_cast<std::chrono::seconds>(timeout);
  const auto usec = std::chrono::duration_cast<std::chrono::microseconds>(timeout - sec);
  cli->set_connection_timeout(sec.count(), usec.count());
  cli->set_read_timeout(sec.count(), usec.count());
  cli->set_write_timeout(sec.count(), usec.count());
  return cli;
}

Result<json> parse(const Result<std::string>& body) {
  if (!body) return body.status();
  json j = json::parse(*body, nullptr, false);
  if (j.is_discarded()) return Status::error(Errc::invalid, "etcd: a response that is not JSON");
  return j;
}
}  // namespace

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& last = end.back();
    if (static_cast<unsigned char>(last) < 0xff) {
      last = static_cast<char>(static_cast<unsigned char>(last) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Etcd::Etcd(EtcdOptions opts) : opts_(std::move(opts)) {}
Etcd::~Etcd() = default;

Result<std::string> Etcd::call(const std::string& path, const std::string& body) {
  if (opts_.endpoints.empty()) return Status::error(Errc::invalid, "etcd: no endpoint configured");
  std::string last_error;
  for (std::size_t n = 0; n < opts_.endpoints.size(); ++n) {
    const std::size_t i = (preferred_.load(std::memory_order_relaxed) + n) % opts_.endpoints.size();
    auto cli = make_client(opts_.endpoints[i], opts_.timeout);
    auto res = cli->Post(path.c_str(), body, "application/json");
    if (!res) {
      last_error = fmt::format("{}: {}", opts_.endpoints[i], httplib::to_string(res.error()));
      continue;
    }
    if (res->status == 200) {
      preferred_.store(i, std::memory_order_relaxed);
      return res->body;
    }
    // A member without a leader or a timed-out proposal: another member may do better.
    last_error = fmt::format("{}: HTTP {} {}", opts_.endpoints[i], res->status, res->body.substr(0, 200));
    if (res->status >= 500) continue;
    return Status::error(Errc::invalid, "etcd {}: {}", path, last_error);
  }
  return Status::error(Errc::unavailable, "etcd {}: no member answered ({})", path, last_error);
}

Result<Range> Etcd::get(const std::string& key) {
  return guarded("range", [&]() -> Result<Range> {
    auto j = parse(call("/v3/kv/range", range_request(key, false).dump()));
    if (!j) return j.status();
    auto kvs = parse_kvs(*j);
    if (!kvs) return kvs.status();
    return Range{std::move(*kvs), i64((*j)["header"], "revision")};
  });
}

Result<Range> Etcd::get_prefix(const std::string& prefix) {
  return guarded("range", [&]() -> Result<Range> {
    auto j = parse(call("/v3/kv/range", range_request(prefix, true).dump()));
    if (!j) return j.status();
    auto kvs = parse_kvs(*j);
    if (!kvs) return kvs.status();
    return Range{std::move(*kvs), i64((*j)["header"], "revision")};
  });
}

Result<std::int64_t> Etcd::put(const std::string& key, const std::string& value, std::int64_t lease) {
  return guarded("put", [&]() -> Result<std::int64_t> {
    json req{{"key", b64(key)}, {"value", b64(value)}};
    if (lease) req["lease"] = std::to_string(lease);
    auto j = parse(call("/v3/kv/put", req.dump()));
    if (!j) return j.status();
    return i64((*j)["header"], "revision");
  });
}

Result<std::int64_t> Etcd::del(const std::string& key, bool prefix) {
  return guarded("deleterange", [&]() -> Result<std::int64_t> {
    auto j = parse(call("/v3/kv/deleterange", range_request(key, prefix).dump()));
    if (!j) return j.status();
    return i64(*j, "deleted");
  });
}

Result<TxnResult> Etcd::txn(const std::vector<Compare>& compare, const std::vector<TxnOp>& then,
                            const std::vector<TxnOp>& otherwise) {
  return guarded("txn", [&]() -> Result<TxnResult> {
    json req{{"compare", json::array()}, {"success", json::array()}, {"failure", json::array()}};
    for (const auto& c : compare) req["compare"].push_back(compare_json(c));
    for (const auto& op : then) req["success"].push_back(txn_op(op));
    for (const auto& op : otherwise) req["failure"].push_back(txn_op(op));
    auto j = parse(call("/v3/kv/txn", req.dump()));
    if (!j) return j.status();
    TxnResult r;
    r.succeeded = j->value("succeeded", false);
    r.revision = i64((*j)["header"], "revision");
    if (j->contains("responses")) {
      for (const auto& resp : j->at("responses")) {
        if (!resp.contains("response_range")) continue;
        auto kvs = parse_kvs(resp.at("response_range"));
        if (!kvs) return kvs.status();
        r.ranges.push_back(std::move(*kvs));
      }
    }
    return r;
  });
}

Result<std::int64_t> Etcd::grant(std::chrono::seconds ttl) {
  return guarded("lease grant", [&]() -> Result<std::int64_t> {
    auto j = parse(call("/v3/lease/grant", json{{"TTL", std::to_string(ttl.count())}}.dump()));
    if (!j) return j.status();
    const std::int64_t id = i64(*j, "ID");
    if (id == 0) return Status::error(Errc::invalid, "etcd: lease grant without an ID: {}", j->dump());
    return id;
  });
}

Result<std::chrono::seconds> Etcd::keepalive(std::int64_t lease) {
  return guarded("lease keepalive", [&]() -> Result<std::chrono::seconds> {
    auto j = parse(call("/v3/lease/keepalive", json{{"ID", std::to_string(lease)}}.dump()));
    if (!j) return j.status();
    const std::int64_t ttl = i64((*j)["result"], "TTL");
    if (ttl <= 0) return Status::error(Errc::not_found, "etcd: lease {:x} has expired", lease);
    return std::chrono::seconds(ttl);
  });
}

Status Etcd::revoke(std::int64_t lease) {
  return guarded("lease revoke", [&]() -> Status {
    auto j = parse(call("/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump()));
    if (!j) return j.status();
    return Status::ok();
  });
}

// ---------------------------------------------------------------- watcher

Watcher::Watcher(EtcdOptions opts, std::string prefix, Callbacks cb)
    : opts_(std::move(opts)), prefix_(std::move(prefix)), cb_(std::move(cb)) {
  thread_ = std::thread([this] { run(); });
}

Watcher::~Watcher() {
  stop_ = true;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (active_) active_->stop();
  }
  if (thread_.joinable()) thread_.join();
}

void Watcher::run() {
  Etcd etcd(opts_);
  bool need_reset = true;
  std::size_t endpoint = 0;
  while (!stop_) {
    if (need_reset) {
      auto r = etcd.get_prefix(prefix_);
      if (!r) {
        if (cb_.on_error) cb_.on_error(r.status());
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      revision_ = r->revision;
      if (cb_.on_reset) cb_.on_reset(r->kvs, r->revision);
      need_reset = false;
    }
    // One watch stream; it ends on a disconnect, a cancel (compaction) or stop().
    json create{{"key", b64(prefix_)},
                {"range_end", b64(prefix_end(prefix_))},
                {"start_revision", std::to_string(revision_.load() + 1)}};
    const std::string body = json{{"create_request", create}}.dump();
    auto cli = make_client(opts_.endpoints[endpoint % opts_.endpoints.size()], opts_.timeout);
    cli->set_read_timeout(3600, 0);  // an idle watch is silent for as long as nothing changes
    {
      std::lock_guard<std::mutex> g(mu_);
      if (stop_) break;
      active_ = cli.get();
    }
    std::string buf;
    bool compacted = false;
    Status failure;
    httplib::Request req;
    req.method = "POST";
    req.path = "/v3/watch";
    req.body = body;
    req.set_header("Content-Type", "application/json");
    auto on_lines = [&]() -> bool {
      // The gateway sends one JSON object per line.
      for (std::size_t nl; (nl = buf.find('\n')) != std::string::npos;) {
        const std::string line = buf.substr(0, nl);
        buf.erase(0, nl + 1);
        json j = json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.contains("result")) {
          failure = Status::error(Errc::invalid, "etcd watch: unexpected message {}", line.substr(0, 200));
          return false;
        }
        const json& res = j["result"];
        if (i64(res, "compact_revision") > 0) {
          compacted = true;
          return false;
        }
        if (res.value("canceled", false)) {
          failure =
              Status::error(Errc::unavailable, "etcd watch canceled: {}", res.value("cancel_reason", ""));
          return false;
        }
        if (!res.contains("events")) continue;
        std::vector<WatchEvent> events;
        std::int64_t rev = i64(res["header"], "revision");
        for (const auto& e : res["events"]) {
          WatchEvent ev;
          ev.type = e.value("type", "PUT") == "DELETE" ? WatchEvent::Type::del : WatchEvent::Type::put;
          auto kv = parse_kv(e["kv"]);
          if (!kv) {
            failure = kv.status();
            return false;
          }
          ev.kv = std::move(*kv);
          rev = std::max(rev, ev.kv.mod_revision);
          events.push_back(std::move(ev));
        }
        // Resume after the last revision delivered, whatever happens next.
        std::int64_t last = 0;
        for (const auto& ev : events) last = std::max(last, ev.kv.mod_revision);
        if (last > 0) revision_ = last;
        if (cb_.on_events) cb_.on_events(events, last > 0 ? last : rev);
      }
      return !stop_.load();
    };
    req.content_receiver = [&](const char* data, std::size_t len, std::uint64_t, std::uint64_t) {
      buf.append(data, len);
      try {
        return on_lines();
      } catch (const json::exception& e) {  // a message of the wrong shape ends this stream
        failure = Status::error(Errc::invalid, "etcd watch: malformed message ({})", e.what());
        return false;
      }
    };
    httplib::Response resp;
    httplib::Error err = httplib::Error::Success;
    cli->send(req, resp, err);
    {
      std::lock_guard<std::mutex> g(mu_);
      active_ = nullptr;
    }
    if (stop_) break;
    if (compacted) {
      need_reset = true;
      continue;
    }
    if (failure.is_ok())
      failure = Status::error(Errc::unavailable, "etcd watch on {} ended: {}",
                              opts_.endpoints[endpoint % opts_.endpoints.size()], httplib::to_string(err));
    if (cb_.on_error) cb_.on_error(failure);
    ++endpoint;  // try the next member
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace duplex::cluster
