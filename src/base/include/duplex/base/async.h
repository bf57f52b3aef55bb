#pragma once
// Coordination between coroutines of ONE thread (an event loop). No atomics, no locks: these
// only order coroutines that interleave at suspension points.
#include <coroutine>
#include <cstddef>
#include <deque>
#include <utility>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex {

// Coroutines waiting for a condition; notify_all() resumes them in FIFO order.
class WaitQueue {
 public:
  struct Awaiter {
    WaitQueue& q;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) { q.waiters_.push_back(h); }
    void await_resume() const noexcept {}
  };
  Awaiter wait() { return Awaiter{*this}; }
  void notify_all() {
    auto ready = std::move(waiters_);
    waiters_.clear();
    for (auto h : ready) h.resume();
  }
  void notify_one() {
    if (waiters_.empty()) return;
    auto h = waiters_.front();
    waiters_.pop_front();
    h.resume();
  }
  bool empty() const { return waiters_.empty(); }

 private:
  std::deque<std::coroutine_handle<>> waiters_;
};

// A mutex for coroutines: `co_await m.lock(); ... m.unlock();` Ownership passes directly to the
// next waiter (FIFO), so no waiter starves.
class AsyncMutex {
 public:
  struct Awaiter {
    AsyncMutex& m;
    bool await_ready() noexcept {
      if (!m.locked_) {
        m.locked_ = true;
        return true;
      }
      return false;
    }
    void await_suspend(std::coroutine_handle<> h) { m.waiters_.push_back(h); }
    void await_resume() const noexcept {}
  };
  Awaiter lock() { return Awaiter{*this}; }
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    auto h = waiters_.front();
    waiters_.pop_front();
    h.resume();  // stays locked: ownership handed over
  }
  bool locked() const { return locked_; }
  bool has_waiters() const { return !waiters_.empty(); }

 private:
  bool locked_ = false;
  std::deque<std::coroutine_handle<>> waiters_;
};

// Unlocks an AsyncMutex the caller has locked when it goes out of scope (every co_return path),
// or earlier with release(): `co_await m.lock(); AsyncUnlock u{m};`
class AsyncUnlock {
 public:
  explicit AsyncUnlock(AsyncMutex& m) : m_(&m) {}
  AsyncUnlock(const AsyncUnlock&) = delete;
  AsyncUnlock& operator=(const AsyncUnlock&) = delete;
  ~AsyncUnlock() { release(); }
  void release() {
    if (m_ != nullptr) std::exchange(m_, nullptr)->unlock();
  }

 private:
  AsyncMutex* m_;
};

// Runs every task concurrently and completes when all have; the first error wins.
Task<Status> when_all(std::vector<Task<Status>> tasks);

}  // namespace duplex
