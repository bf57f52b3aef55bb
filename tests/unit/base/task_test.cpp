#include "duplex/base/task.h"

#include <gtest/gtest.h>

#include <deque>
#include <functional>

#include "duplex/base/status.h"

namespace duplex {
namespace {

Task<long long> value(long long v) { co_return v; }
Task<long long> sum(int n) {
  long long s = 0;
  for (int i = 0; i < n; ++i) s += co_await value(i);
  co_return s;
}

TEST(Task, InlineCompletionChainsWithoutStackGrowth) {
  // A million synchronous awaits: symmetric transfer keeps the stack flat.
  EXPECT_EQ(sync_wait(sum(1000000)), 499999500000LL);
}

// A queue of resumptions stands in for an event loop.
struct Loop {
  std::deque<std::coroutine_handle<>> ready;
  void poll() {
    auto h = ready.front();
    ready.pop_front();
    h.resume();
  }
};

struct Yield {
  Loop& loop;
  bool await_ready() { return false; }
  void await_suspend(std::coroutine_handle<> h) { loop.ready.push_back(h); }
  void await_resume() {}
};

Task<Status> suspending(Loop& loop, int& steps) {
  for (int i = 0; i < 3; ++i) {
    co_await Yield{loop};
    ++steps;
  }
  co_return Status::error(Errc::busy, "after {}", steps);
}

TEST(Task, SuspendsAndResumesThroughALoop) {
  Loop loop;
  int steps = 0;
  Status s = sync_wait(suspending(loop, steps), [&] { loop.poll(); });
  EXPECT_EQ(steps, 3);
  EXPECT_EQ(s.code(), Errc::busy);
  EXPECT_EQ(s.message(), "after 3");
}

TEST(Task, SpawnCallsBack) {
  Loop loop;
  int steps = 0;
  bool called = false;
  spawn(suspending(loop, steps), [&](Status s) {
    called = true;
    EXPECT_FALSE(s.is_ok());
  });
  while (!loop.ready.empty()) loop.poll();
  EXPECT_TRUE(called);
}

TEST(Task, UnawaitedTaskIsDestroyedWithoutRunning) {
  int steps = 0;
  Loop loop;
  {
    auto t = suspending(loop, steps);
  }
  EXPECT_EQ(steps, 0);
  EXPECT_TRUE(loop.ready.empty());
}

}  // namespace
}  // namespace duplex
