#pragma once
// Task<T>: the coroutine type of the data path. Lazy (starts when awaited), single awaiter,
// symmetric transfer on completion so long chains of synchronously completing awaits do not grow
// the stack. Exceptions are not part of the data path: an escaping exception terminates.
//
// spawn() starts a task detached and hands its result to a callback: the bridge to event loops
// and to other coroutine libraries (Asio's awaitable, via async_initiate).
#include <cassert>
#include <coroutine>
#include <cstdlib>
#include <exception>
#include <optional>
#include <utility>

namespace duplex {

template <typename T = void>
class Task;

namespace detail {

struct TaskPromiseBase {
  std::coroutine_handle<> continuation;

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      auto c = h.promise().continuation;
      return c ? c : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  [[noreturn]] void unhandled_exception() noexcept { std::terminate(); }
};

template <typename T>
struct TaskPromise : TaskPromiseBase {
  std::optional<T> value;
  Task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  T take() { return std::move(*value); }
};

template <>
struct TaskPromise<void> : TaskPromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void take() {}
};

}  // namespace detail

template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::TaskPromise<T>;
  using handle = std::coroutine_handle<promise_type>;

  Task() = default;
  explicit Task(handle h) : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
    h_.promise().continuation = awaiting;
    return h_;
  }
  T await_resume() { return h_.promise().take(); }

  bool done() const { return h_ && h_.done(); }
  // Starts the task without an awaiter; used by spawn() and sync_wait().
  void start() { h_.resume(); }
  T result() { return h_.promise().take(); }

 private:
  handle h_;
};

namespace detail {
template <typename T>
inline Task<T> TaskPromise<T>::get_return_object() noexcept {
  return Task<T>{std::coroutine_handle<TaskPromise<T>>::from_promise(*this)};
}
inline Task<void> TaskPromise<void>::get_return_object() noexcept {
  return Task<void>{std::coroutine_handle<TaskPromise<void>>::from_promise(*this)};
}

// A fire-and-forget coroutine frame that owns the task it runs and frees itself at the end.
struct Detached {
  struct promise_type {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    [[noreturn]] void unhandled_exception() noexcept { std::terminate(); }
  };
};
}  // namespace detail

// Runs `t` detached; `done(result)` is called when it completes (possibly before spawn returns).
template <typename T, typename F>
detail::Detached spawn(Task<T> t, F done) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(t);
    done();
  } else {
    done(co_await std::move(t));
  }
}
template <typename T>
detail::Detached spawn(Task<T> t) {
  co_await std::move(t);
}

// Runs `t` to completion on this thread. `poll()` is called while it has not completed (it should
// wait for and dispatch completions, e.g. run one turn of an event loop). With devices that
// complete inline, `poll` is never called.
template <typename T, typename Poll>
T sync_wait(Task<T> t, Poll poll) {
  std::optional<std::conditional_t<std::is_void_v<T>, int, T>> out;
  bool finished = false;
  if constexpr (std::is_void_v<T>) {
    spawn(std::move(t), [&] { finished = true; });
  } else {
    spawn(std::move(t), [&](T v) {
      out.emplace(std::move(v));
      finished = true;
    });
  }
  while (!finished) poll();  // NOLINT(bugprone-infinite-loop): the callback sets it during poll()
  if constexpr (!std::is_void_v<T>) return std::move(*out);
}
template <typename T>
T sync_wait(Task<T> t) {
  return sync_wait(std::move(t), [] {
    assert(!"sync_wait: task suspended but no poll function was given");
    std::abort();
  });
}

}  // namespace duplex
