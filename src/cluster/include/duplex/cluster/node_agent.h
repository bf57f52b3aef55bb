#pragma once
// A node's liveness in etcd: its key /duplex/v1/nodes/<name> is bound to a lease that the agent
// keeps alive from its own thread. Whoever reads the key knows the node is alive; when the key is
// gone, the node may no longer claim anything (serve as owner, win an arbitration).
//
// The agent decides "lost" on its own clock, never later than etcd could have expired the lease:
// if no keepalive has succeeded for `ttl - margin`, the node considers itself gone even if etcd
// cannot be reached to say so (a partitioned node must stop claiming before others take over).
//
//   register: grant(ttl) -> put key with lease -> alive
//   alive --keepalive ok every ttl/3--> alive
//   alive --no keepalive for ttl - margin, or etcd says the lease expired--> lost (on_change(false))
//   lost --register succeeds--> alive (a new lease; on_change(true))
//   destructor: revoke the lease (a clean stop removes the key at once)
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "duplex/cluster/etcd.h"

namespace duplex::cluster {

inline const std::string kNodesPrefix = "/duplex/v1/nodes/";

struct NodeAgentOptions {
  std::string name;                        // the node's name: the key's last component
  std::string info;                        // the key's value (JSON: site, addresses, version)
  std::chrono::milliseconds ttl{10000};    // lease TTL (rounded up to whole seconds for etcd)
  std::chrono::milliseconds margin{1000};  // "lost" this long before the lease could expire
};

class NodeAgent {
 public:
  // on_change(alive) is called from the agent's thread on every transition.
  NodeAgent(EtcdOptions etcd, NodeAgentOptions opts, std::function<void(bool alive)> on_change);
  ~NodeAgent();
  NodeAgent(const NodeAgent&) = delete;
  NodeAgent& operator=(const NodeAgent&) = delete;

  bool alive() const { return alive_.load(); }
  std::int64_t lease() const { return lease_.load(); }
  std::string key() const { return kNodesPrefix + opts_.name; }
  // When the last renewal that etcd confirmed was sent (the lease lives at least TTL after it).
  std::chrono::steady_clock::time_point last_renewal() const {
    return std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(last_renewal_.load()));
  }

 private:
  void run();
  void set_alive(bool a);

  Etcd etcd_;
  NodeAgentOptions opts_;
  std::function<void(bool)> on_change_;
  std::atomic<bool> alive_{false};
  std::atomic<std::int64_t> lease_{0};
  std::atomic<std::chrono::steady_clock::rep> last_renewal_{0};
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace duplex::cluster
