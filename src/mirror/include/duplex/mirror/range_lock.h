#pragma once
// Byte-range locks for coroutines of one event loop: the owner's write ordering (docs/mirror.md).
// A write holds its range exclusively from before its local write and its replicate message until
// both replicas have applied it; reads and resync chunks take the same lock, so two overlapping
// operations are never in flight at once and every replica applies them in grant order.
//
// Grants are FIFO among overlapping requests: a request waits for every earlier overlapping
// request that conflicts, granted or still waiting, so a stream of readers cannot starve a writer
// and two overlapping writes are granted in arrival order.
#include <coroutine>
#include <cstdint>
#include <list>
#include <utility>

namespace duplex::mirror {

class RangeLock {
  struct Entry {
    std::uint64_t begin = 0, end = 0;  // [begin, end)
    bool exclusive = false;
    bool granted = false;
    std::coroutine_handle<> waiter;
  };

 public:
  class Guard {
   public:
    Guard() = default;
    Guard(RangeLock* l, std::list<Entry>::iterator it) : lock_(l), it_(it) {}
    Guard(Guard&& o) noexcept : lock_(std::exchange(o.lock_, nullptr)), it_(o.it_) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        lock_ = std::exchange(o.lock_, nullptr);
        it_ = o.it_;
      }
      return *this;
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() { release(); }
    void release() {
      if (lock_) std::exchange(lock_, nullptr)->release(it_);
    }
    bool held() const { return lock_ != nullptr; }

   private:
    RangeLock* lock_ = nullptr;
    std::list<Entry>::iterator it_;
  };

  // `co_await lock(...)` waits until [offset, offset+length) is granted and gives its Guard
  // (length 0 locks nothing and returns at once). An awaiter, not a coroutine: a lock granted at
  // once (the common case) costs no frame. The request joins the queue when awaited.
  class LockAwaiter {
   public:
    LockAwaiter(RangeLock* l, std::uint64_t offset, std::uint64_t length, bool exclusive)
        : lock_(l), begin_(offset), length_(length), exclusive_(exclusive) {}
    bool await_ready();
    void await_suspend(std::coroutine_handle<> h) noexcept { it_->waiter = h; }
    Guard await_resume() { return length_ == 0 ? Guard{} : Guard{lock_, it_}; }

   private:
    RangeLock* lock_;
    std::uint64_t begin_, length_;
    bool exclusive_;
    std::list<Entry>::iterator it_;
  };
  LockAwaiter lock(std::uint64_t offset, std::uint64_t length, bool exclusive) {
    return LockAwaiter{this, offset, length, exclusive};
  }
  // Ranges currently held or waited for (tests, status).
  std::size_t entries() const { return entries_.size(); }

 private:
  bool can_grant(std::list<Entry>::iterator it) const;
  void release(std::list<Entry>::iterator it);

  std::list<Entry> entries_;  // arrival order
};

}  // namespace duplex::mirror
