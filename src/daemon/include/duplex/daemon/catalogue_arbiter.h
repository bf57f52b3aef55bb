#pragma once
// The mirror engine's Arbiter over the in-sync set in etcd (cluster::Catalogue::insync and
// change_insync). Those calls are blocking HTTP round trips, and an event loop must never wait on
// etcd (it would stall every volume and connection of that loop for up to the etcd timeout), so
// each call runs on this arbiter's own worker thread and the awaiting coroutine is resumed on the
// volume's loop by a post().
//
// Mapping (mirror/arbiter.h):
//   read():   insync(V) -> {generation, members, owner}; a record of another uuid (V deleted and
//             created again) is not_found: this replica must not act on it.
//   change(): re-reads insync(V); a generation other than `expected` is conflict without a write;
//             else change_insync on that record's mod_revision (lost compare -> conflict,
//             no quorum -> unavailable, passed through).
// One worker thread per mirrored volume: arbitration is rare (a link loss, a resync's end), and
// a call stuck on an unreachable etcd then delays only its own volume's decisions.
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "duplex/cluster/catalogue.h"
#include "duplex/mirror/arbiter.h"
#include "duplex/reactor/event_loop.h"

namespace duplex::daemon {

class CatalogueArbiter final : public mirror::Arbiter {
 public:
  CatalogueArbiter(cluster::EtcdOptions etcd, std::string volume, std::string uuid, std::string node,
                   EventLoop* loop);
  // Joins the worker: a call in progress finishes (bounded by the etcd timeout); calls still
  // queued complete with Errc::shutdown.
  ~CatalogueArbiter() override;
  CatalogueArbiter(const CatalogueArbiter&) = delete;
  CatalogueArbiter& operator=(const CatalogueArbiter&) = delete;

  Task<Result<mirror::InSyncSet>> read() override;
  Task<Result<mirror::InSyncSet>> change(std::uint64_t expected_generation, std::vector<std::string> members,
                                         std::string reason) override;

 private:
  using Job = std::function<void(bool cancelled)>;
  struct Call;  // one blocking call and the coroutine waiting for it
  Task<Result<mirror::InSyncSet>> run_off_loop(std::function<Result<mirror::InSyncSet>()> fn);
  void post_job(Job j);
  void worker();
  Result<mirror::InSyncSet> do_read();
  Result<mirror::InSyncSet> do_change(std::uint64_t expected, std::vector<std::string> members,
                                      const std::string& reason);

  cluster::Etcd etcd_;
  cluster::Catalogue cat_;
  std::string volume_, uuid_, node_;
  EventLoop* loop_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace duplex::daemon
