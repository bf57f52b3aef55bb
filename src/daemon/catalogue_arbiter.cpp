#include "duplex/daemon/catalogue_arbiter.h"

#include <coroutine>
#include <optional>

#include <spdlog/spdlog.h>

namespace duplex::daemon {

struct CatalogueArbiter::Call {
  std::function<Result<mirror::InSyncSet>()> fn;
  std::optional<Result<mirror::InSyncSet>> out;
  std::coroutine_handle<> h;
};

namespace {

mirror::InSyncSet to_set(const cluster::InSyncRecord& r) {
  mirror::InSyncSet s;
  s.generation = static_cast<std::uint64_t>(r.generation);
  s.members = r.members;
  // The catalogue stores the members in placement order and the owner as the first of them; take
  // the first member rather than trust a stored owner that disagrees.
  s.owner = r.members.empty() ? r.owner : r.members.front();
  return s;
}

}  // namespace

CatalogueArbiter::CatalogueArbiter(cluster::EtcdOptions etcd, std::string volume, std::string uuid,
                                   std::string node, EventLoop* loop)
    : etcd_(std::move(etcd)),
      cat_(etcd_),
      volume_(std::move(volume)),
      uuid_(std::move(uuid)),
      node_(std::move(node)),
      loop_(loop) {
  thread_ = std::thread([this] { worker(); });
}

CatalogueArbiter::~CatalogueArbiter() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CatalogueArbiter::post_job(Job j) {
  {
    std::lock_guard lk(mu_);
    if (!stop_) {
      jobs_.push_back(std::move(j));
      cv_.notify_all();
      return;
    }
  }
  j(true);  // stopping: never run, but the waiting coroutine still gets an answer
}

void CatalogueArbiter::worker() {
  for (;;) {
    Job j;
    bool cancelled = false;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;
      j = std::move(jobs_.front());
      jobs_.pop_front();
      cancelled = stop_;
    }
    j(cancelled);
  }
}

Task<Result<mirror::InSyncSet>> CatalogueArbiter::run_off_loop(
    std::function<Result<mirror::InSyncSet>()> fn) {
  struct Awaiter {
    CatalogueArbiter* self;
    std::shared_ptr<Call> c;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
      c->h = h;
      // The resume is posted, never run inline: the coroutine continues on the volume's loop
      // whichever thread produced the answer.
      self->post_job([c = c, loop = self->loop_](bool cancelled) {
        if (cancelled)
          c->out.emplace(Status::error(Errc::shutdown, "the arbiter is stopping"));
        else
          c->out.emplace(c->fn());
        loop->post([c] { c->h.resume(); });
      });
    }
    Result<mirror::InSyncSet> await_resume() { return std::move(*c->out); }
  };
  auto call = std::make_shared<Call>();
  call->fn = std::move(fn);
  Awaiter a{this, call};
  co_return co_await a;
}

Task<Result<mirror::InSyncSet>> CatalogueArbiter::read() {
  return run_off_loop([this] { return do_read(); });
}

Task<Result<mirror::InSyncSet>> CatalogueArbiter::change(std::uint64_t expected_generation,
                                                         std::vector<std::string> members,
                                                         std::string reason) {
  return run_off_loop([this, expected_generation, members = std::move(members), reason = std::move(reason)] {
    return do_change(expected_generation, members, reason);
  });
}

// On the worker thread.
Result<mirror::InSyncSet> CatalogueArbiter::do_read() {
  auto r = cat_.insync(volume_);
  if (!r) return r.status();
  if (r->uuid != uuid_)
    return Status::error(Errc::not_found, "the in-sync set of '{}' belongs to uuid {}, not {}", volume_,
                         r->uuid, uuid_);
  return to_set(*r);
}

// On the worker thread.
Result<mirror::InSyncSet> CatalogueArbiter::do_change(std::uint64_t expected,
                                                      std::vector<std::string> members,
                                                      const std::string& reason) {
  auto cur = cat_.insync(volume_);
  if (!cur) return cur.status();
  if (cur->uuid != uuid_)
    return Status::error(Errc::not_found, "the in-sync set of '{}' belongs to uuid {}, not {}", volume_,
                         cur->uuid, uuid_);
  if (static_cast<std::uint64_t>(cur->generation) != expected)
    return Status::error(Errc::conflict, "the in-sync set of '{}' is at generation {}, not {}", volume_,
                         cur->generation, expected);
  auto next = cat_.change_insync(*cur, std::move(members), node_, reason);
  if (!next) {
    spdlog::warn("event=mirror.arbiter.change_failed volume={} expected_generation={} error=\"{}\"", volume_,
                 expected, next.status().to_string());
    return next.status();
  }
  return to_set(*next);
}

}  // namespace duplex::daemon
