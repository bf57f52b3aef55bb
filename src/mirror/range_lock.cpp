#include "duplex/mirror/range_lock.h"

#include <vector>

namespace duplex::mirror {

namespace {
bool overlaps(std::uint64_t b1, std::uint64_t e1, std::uint64_t b2, std::uint64_t e2) {
  return b1 < e2 && b2 < e1;
}
}  // namespace

struct RangeLock::Awaiter {
  RangeLock* lock;
  std::list<Entry>::iterator it;
  bool await_ready() const noexcept { return it->granted; }
  void await_suspend(std::coroutine_handle<> h) noexcept { it->waiter = h; }
  void await_resume() const noexcept {}
};

bool RangeLock::can_grant(std::list<Entry>::iterator it) const {
  for (auto e = entries_.begin(); e != it; ++e) {
    if (!overlaps(e->begin, e->end, it->begin, it->end)) continue;
    if (e->exclusive || it->exclusive) return false;
    // Shared after shared: fine only if that earlier one is granted (else it waits for a writer
    // that we must not overtake).
    if (!e->granted) return false;
  }
  return true;
}

Task<RangeLock::Guard> RangeLock::lock(std::uint64_t offset, std::uint64_t length, bool exclusive) {
  if (length == 0) co_return Guard{};
  auto it = entries_.insert(entries_.end(), Entry{offset, offset + length, exclusive, false, {}});
  it->granted = can_grant(it);
  co_await Awaiter{this, it};
  co_return Guard{this, it};
}

void RangeLock::release(std::list<Entry>::iterator it) {
  const std::uint64_t b = it->begin, e = it->end;
  entries_.erase(it);
  // Only waiters overlapping the released range can become grantable.
  std::vector<std::coroutine_handle<>> wake;
  for (auto w = entries_.begin(); w != entries_.end(); ++w) {
    if (w->granted || !overlaps(w->begin, w->end, b, e)) continue;
    if (can_grant(w)) {
      w->granted = true;
      wake.push_back(w->waiter);
    }
  }
  for (auto h : wake) h.resume();
}

}  // namespace duplex::mirror
