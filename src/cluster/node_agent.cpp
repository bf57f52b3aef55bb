#include "duplex/cluster/node_agent.h"

#include <algorithm>

namespace duplex::cluster {

NodeAgent::NodeAgent(EtcdOptions etcd, NodeAgentOptions opts, std::function<void(bool)> on_change)
    : etcd_(std::move(etcd)), opts_(std::move(opts)), on_change_(std::move(on_change)) {
  thread_ = std::thread([this] { run(); });
}

NodeAgent::~NodeAgent() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  // A clean stop: the key goes now rather than when the lease runs out.
  if (const std::int64_t l = lease_.load(); l != 0) (void)etcd_.revoke(l);
}

void NodeAgent::set_alive(bool a) {
  if (alive_.exchange(a) != a && on_change_) on_change_(a);
}

void NodeAgent::run() {
  using clock = std::chrono::steady_clock;
  using ms = std::chrono::milliseconds;
  const auto ttl_s = std::chrono::ceil<std::chrono::seconds>(opts_.ttl);
  const auto period = opts_.ttl / 3;
  const auto n = static_cast<long>(std::max<std::size_t>(1, etcd_.options().endpoints.size()));
  // Our deadline counts from *before* the request that succeeded: the lease may have been renewed
  // at any moment of that call.
  clock::time_point deadline{};
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      if (stop_) return;
    }
    const auto attempt = clock::now();
    if (alive_.load() && attempt >= deadline) {
      // No renewal confirmed for (almost) a TTL: etcd may already have dropped us. Stop claiming.
      lease_ = 0;
      set_alive(false);
    }
    // A call must end before the deadline, whatever etcd does: its timeout is what is left.
    EtcdOptions eo = etcd_.options();
    const auto left = alive_.load() ? std::chrono::duration_cast<ms>(deadline - attempt) : period;
    eo.timeout = std::clamp(left / n, ms(50), eo.timeout);
    Etcd etcd(eo);
    if (lease_.load() == 0) {
      auto l = etcd.grant(ttl_s);
      if (l) {
        if (etcd.put(key(), opts_.info, *l)) {
          lease_ = *l;
          last_renewal_ = attempt.time_since_epoch().count();
          deadline = attempt + opts_.ttl - opts_.margin;
          set_alive(true);
        } else {
          (void)etcd.revoke(*l);
        }
      }
    } else {
      auto k = etcd.keepalive(lease_.load());
      if (k) {
        last_renewal_ = attempt.time_since_epoch().count();
        deadline = attempt + opts_.ttl - opts_.margin;
      } else if (k.status().code() == Errc::not_found) {
        lease_ = 0;  // etcd expired it: we are gone, and register again
        set_alive(false);
        continue;
      }
    }
    std::unique_lock<std::mutex> lk(mu_);
    // Until the next renewal: the keepalive period, but never past our own deadline.
    auto wait =
        alive_.load() ? std::min<clock::duration>(period, deadline - clock::now()) : clock::duration(ms(200));
    if (wait > clock::duration::zero()) cv_.wait_for(lk, wait, [&] { return stop_; });
  }
}

}  // namespace duplex::cluster
