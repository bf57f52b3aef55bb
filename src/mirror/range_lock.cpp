#include "duplex/mirror/range_lock.h"

#include <vector>

namespace duplex::mirror {

namespace {
bool overlaps(std::uint64_t b1, std::uint64_t e1, std::uint64_t b2, std::uint64_t e2) {
  return b1 < e2 && b2 < e1;
}
}  // namespace

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

bool RangeLock::LockAwaiter::await_ready() {
  if (length_ == 0) return true;
  auto& entries = lock_->entries_;
  it_ = entries.insert(entries.end(), Entry{begin_, begin_ + length_, exclusive_, false, {}});
  it_->granted = lock_->can_grant(it_);
  return it_->granted;
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
