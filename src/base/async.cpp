#include "duplex/base/async.h"

namespace duplex {

namespace {
struct JoinState {
  std::size_t remaining = 0;
  Status first_error;
  std::coroutine_handle<> waiter;
};

struct JoinAwaiter {
  JoinState& st;
  bool await_ready() const noexcept { return st.remaining == 0; }
  void await_suspend(std::coroutine_handle<> h) noexcept { st.waiter = h; }
  void await_resume() const noexcept {}
};
}  // namespace

Task<Status> when_all(std::vector<Task<Status>> tasks) {
  if (tasks.size() == 1) co_return co_await std::move(tasks.front());
  JoinState st;
  st.remaining = tasks.size();
  for (auto& t : tasks) {
    spawn(std::move(t), [&st](Status s) {
      if (!s.is_ok() && st.first_error.is_ok()) st.first_error = std::move(s);
      if (--st.remaining == 0 && st.waiter) st.waiter.resume();
    });
  }
  co_await JoinAwaiter{st};
  co_return st.first_error;
}

}  // namespace duplex
