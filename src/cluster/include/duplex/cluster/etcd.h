#pragma once
// A client for etcd v3 through its JSON gateway (the HTTP/JSON mapping of the gRPC API that every
// etcd 3.x server serves on its client port), with cpp-httplib and nlohmann-json.
//
// Why the gateway and not gRPC: Debian ships etcd's server and tools but no C++ gRPC stubs for its
// API; the gateway offers the same KV, Txn, Lease and Watch calls with two well-kept header
// libraries the daemon already needs for its REST API. The control plane is not on the I/O path:
// calls block, and are made from the node agent's own thread, never from an event loop.
//
// Endpoints are tried in order until one answers; a member that does not answer (or answers that
// it has no leader) makes the call move on to the next. When no member can serve the request the
// call fails with Errc::unavailable: no decision is taken without a quorum. For a write, that
// failure means "not confirmed", not "not done": a member may hold the proposal and commit it when
// a majority returns. Decisions are transactions whose compares are evaluated when applied, so a
// late commit is still a correct compare-and-swap; a caller re-reads before its next decision.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "duplex/base/status.h"

namespace httplib {
class Client;
}

namespace duplex::cluster {

struct Kv {
  std::string key;
  std::string value;
  std::int64_t create_revision = 0;
  std::int64_t mod_revision = 0;
  std::int64_t version = 0;  // 0: the key does not exist
  std::int64_t lease = 0;
};

// One comparison of a transaction (all must hold for the `then` branch).
struct Compare {
  enum class Target { version, create_revision, mod_revision, value, lease };
  enum class Op { equal, not_equal, greater, less };
  std::string key;
  Target target = Target::mod_revision;
  Op op = Op::equal;
  std::int64_t number = 0;
  std::string value;

  // The key is absent (version == 0).
  static Compare absent(std::string key) { return {std::move(key), Target::version, Op::equal, 0, {}}; }
  // The key was last written at `revision` (0: absent): compare-and-swap on a read.
  static Compare unchanged_since(std::string key, std::int64_t revision) {
    return {std::move(key), Target::mod_revision, Op::equal, revision, {}};
  }
  static Compare value_is(std::string key, std::string v) {
    return {std::move(key), Target::value, Op::equal, 0, std::move(v)};
  }
};

struct TxnOp {
  enum class Kind { put, del, get };
  Kind kind = Kind::get;
  std::string key;
  std::string value;
  bool prefix = false;  // del / get: every key starting with `key`
  std::int64_t lease = 0;

  static TxnOp put(std::string k, std::string v, std::int64_t lease = 0) {
    return {Kind::put, std::move(k), std::move(v), false, lease};
  }
  static TxnOp del(std::string k, bool prefix = false) { return {Kind::del, std::move(k), {}, prefix, 0}; }
  static TxnOp get(std::string k, bool prefix = false) { return {Kind::get, std::move(k), {}, prefix, 0}; }
};

struct TxnResult {
  bool succeeded = false;
  std::int64_t revision = 0;
  std::vector<std::vector<Kv>> ranges;  // one per `get` of the branch taken, in order
};

struct Range {
  std::vector<Kv> kvs;
  std::int64_t revision = 0;  // the store's revision the read saw
};

struct EtcdOptions {
  std::vector<std::string> endpoints;  // "http://127.0.0.1:2379"
  std::chrono::milliseconds timeout{2000};
};

class Etcd {
 public:
  explicit Etcd(EtcdOptions opts);
  ~Etcd();

  Result<Range> get(const std::string& key);
  Result<Range> get_prefix(const std::string& prefix);
  Result<std::int64_t> put(const std::string& key, const std::string& value, std::int64_t lease = 0);
  Result<std::int64_t> del(const std::string& key, bool prefix = false);
  Result<TxnResult> txn(const std::vector<Compare>& compare, const std::vector<TxnOp>& then,
                        const std::vector<TxnOp>& otherwise = {});

  // Leases: liveness. keepalive() returns the TTL left; Errc::not_found once the lease expired.
  Result<std::int64_t> grant(std::chrono::seconds ttl);
  Result<std::chrono::seconds> keepalive(std::int64_t lease);
  Status revoke(std::int64_t lease);

  // The JSON gateway's call, exposed for the watcher: POST `path` with `body` (JSON text).
  Result<std::string> call(const std::string& path, const std::string& body);
  const EtcdOptions& options() const { return opts_; }

 private:
  EtcdOptions opts_;
  // The endpoint that answered last; atomic because one client serves several API threads.
  std::atomic<std::size_t> preferred_{0};
};

struct WatchEvent {
  enum class Type { put, del };
  Type type = Type::put;
  Kv kv;
};

// Watches every key under a prefix on its own thread. Events arrive in revision order. After a
// disconnect the watch resumes from the revision after the last one delivered; if etcd has
// compacted that revision away, the watcher reads the whole prefix again and hands it to
// on_reset before resuming, so the caller's view is never silently missing a change.
//
//   start --read prefix--> on_reset(state, rev) --watch from rev+1--> on_events...
//     ^                                                  | disconnect: retry from last+1
//     +----------- compacted (revision gone) ------------+
class Watcher {
 public:
  struct Callbacks {
    std::function<void(const std::vector<Kv>& state, std::int64_t revision)> on_reset;
    std::function<void(const std::vector<WatchEvent>& events, std::int64_t revision)> on_events;
    std::function<void(const Status& why)> on_error;  // optional: a failed attempt (it retries)
  };
  Watcher(EtcdOptions opts, std::string prefix, Callbacks cb);
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  std::int64_t revision() const { return revision_.load(); }

 private:
  void run();

  EtcdOptions opts_;
  std::string prefix_;
  Callbacks cb_;
  std::atomic<bool> stop_{false};
  std::atomic<std::int64_t> revision_{0};
  std::mutex mu_;
  httplib::Client* active_ = nullptr;  // the stream in progress, stopped by the destructor
  std::thread thread_;
};

// The key just after every key with this prefix (etcd's range_end for a prefix).
std::string prefix_end(const std::string& prefix);

}  // namespace duplex::cluster
