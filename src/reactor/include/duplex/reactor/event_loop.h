#pragma once
// One event loop per core. Each EventLoop is an asio::io_context driven by one thread; a pool,
// its volumes and the connections serving them belong to exactly one loop, so nothing on the
// per-I/O path takes a lock. Work moves between loops only by post() (a message), never by
// sharing data.
//
// Disk I/O integrates through watch_readable(): an io_uring's eventfd (duplex::Ring::event_fd())
// is registered here and the ring is polled whenever it signals, so sockets (epoll, inside Asio),
// timers and disk completions are all dispatched by the same thread.
//
// The awaiters at the bottom let a duplex::Task coroutine wait for an Asio asynchronous operation:
// the operation's completion handler resumes the coroutine on the loop thread.
#include <atomic>
#include <coroutine>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <asio/io_context.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/post.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex {

class EventLoop {
 public:
  explicit EventLoop(int index);
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  int index() const { return index_; }
  asio::io_context& context() { return ctx_; }

  // Runs the loop on a new thread (named "duplex-loop-N") until stop().
  void start();
  // Runs the loop on the calling thread until stop() (loop 0 of the daemon, and tests).
  void run();
  // Asks the loop to return from run() once; safe from any thread.
  void stop();
  void join();
  bool in_loop_thread() const { return std::this_thread::get_id() == thread_id_.load(); }

  // Queue fn to run on the loop thread; safe from any thread.
  template <typename F>
  void post(F&& fn) {
    asio::post(ctx_, std::forward<F>(fn));
  }

  // Calls fn() on the loop thread every time fd is readable (level-triggered; fn must consume
  // the readiness, e.g. read the eventfd counter). The fd stays owned by the caller.
  void watch_readable(int fd, std::function<void()> fn);
  void unwatch_all();
  // Calls fn() on the loop thread after each batch of handlers, before the loop sleeps: where an
  // io_uring submits the SQEs queued by that batch with one system call.
  void add_before_sleep(std::function<void()> fn) { before_sleep_.push_back(std::move(fn)); }

 private:
  struct Watch;
  void arm(Watch* w);

  int index_;
  asio::io_context ctx_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};
  std::vector<std::unique_ptr<Watch>> watches_;
  std::vector<std::function<void()>> before_sleep_;
  std::atomic<bool> stop_requested_{false};
};

// N loops, one per core by default.
class LoopGroup {
 public:
  explicit LoopGroup(int n);
  int size() const { return static_cast<int>(loops_.size()); }
  EventLoop& at(int i) { return *loops_.at(static_cast<std::size_t>(i)); }
  // Starts loops 1..N-1 on their own threads; loop 0 runs on the caller via at(0).run().
  void start_others();
  void stop_all();
  void join_others();

 private:
  std::vector<std::unique_ptr<EventLoop>> loops_;
};

// --- Task <-> Asio bridge -----------------------------------------------------------------------

// co_await asio_op<Result>(init): init(handler) starts an Asio operation whose handler has the
// signature (std::error_code, R); the coroutine resumes with {ec, r} inside the handler.
template <typename R>
struct AsioResult {
  std::error_code ec;
  R value{};
};

template <typename R, typename Init>
struct AsioAwaiter {
  Init init;
  AsioResult<R> out;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    init([this, h](std::error_code ec, R v) {
      out.ec = ec;
      out.value = std::move(v);
      h.resume();
    });
  }
  AsioResult<R> await_resume() { return std::move(out); }
};
template <typename R, typename Init>
AsioAwaiter<R, Init> asio_op(Init init) {
  return AsioAwaiter<R, Init>{std::move(init), {}};
}

// Same for handlers with the signature (std::error_code).
template <typename Init>
struct AsioVoidAwaiter {
  Init init;
  std::error_code ec;
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> h) {
    init([this, h](std::error_code e) {
      ec = e;
      h.resume();
    });
  }
  std::error_code await_resume() { return ec; }
};
template <typename Init>
AsioVoidAwaiter<Init> asio_op_void(Init init) {
  return AsioVoidAwaiter<Init>{std::move(init), {}};
}

// co_await switch_to(loop): continue this coroutine on `loop`'s thread.
struct SwitchTo {
  EventLoop& loop;
  bool await_ready() const noexcept { return loop.in_loop_thread(); }
  void await_suspend(std::coroutine_handle<> h) {
    loop.post([h] { h.resume(); });
  }
  void await_resume() const noexcept {}
};
inline SwitchTo switch_to(EventLoop& loop) { return SwitchTo{loop}; }

// co_await sleep_for(&loop, d)
Task<void> sleep_for(EventLoop* loop, std::chrono::steady_clock::duration d);

}  // namespace duplex
