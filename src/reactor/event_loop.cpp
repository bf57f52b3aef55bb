#include "duplex/reactor/event_loop.h"

#include <pthread.h>
#include <unistd.h>

#include <fmt/format.h>

namespace duplex {

struct EventLoop::Watch {
  asio::posix::stream_descriptor sd;
  std::function<void()> fn;
  bool dead = false;
};

EventLoop::EventLoop(int index) : index_(index) {}

EventLoop::~EventLoop() {
  stop();
  join();
  // Handlers still queued are destroyed with the io_context, never run: they may point at
  // objects that are gone by now. The watches go first (they are registered with the context).
  for (auto& w : watches_) w->dead = true;
  watches_.clear();
}

void EventLoop::start() {
  thread_ = std::thread([this] {
    const std::string name = fmt::format("duplex-loop-{}", index_);
    pthread_setname_np(pthread_self(), name.c_str());
    run();
  });
}

void EventLoop::run() {
  thread_id_.store(std::this_thread::get_id());
  work_.emplace(ctx_.get_executor());
  ctx_.restart();
  stop_requested_.store(false);
  if (before_sleep_.empty()) {
    ctx_.run();
  } else {
    // One handler at a time, then the hooks: a hook with nothing to do costs no system call,
    // and the SQEs a handler queued are submitted before the loop can block in epoll.
    while (!ctx_.stopped()) {
      if (ctx_.run_one() == 0) break;
      for (auto& f : before_sleep_) f();
    }
  }
  thread_id_.store(std::thread::id{});
}

void EventLoop::stop() {
  stop_requested_.store(true);
  ctx_.stop();
}

void EventLoop::join() {
  if (thread_.joinable()) thread_.join();
}

void EventLoop::watch_readable(int fd, std::function<void()> fn) {
  // dup(): the stream_descriptor owns (and closes) its fd; the caller keeps the original.
  auto w = std::make_unique<Watch>(Watch{asio::posix::stream_descriptor(ctx_, ::dup(fd)), std::move(fn)});
  Watch* raw = w.get();
  watches_.push_back(std::move(w));
  arm(raw);
}

void EventLoop::arm(Watch* w) {
  w->sd.async_wait(asio::posix::stream_descriptor::wait_read, [this, w](std::error_code ec) {
    if (ec || w->dead) return;
    w->fn();
    arm(w);
  });
}

void EventLoop::unwatch_all() {
  // The Watch objects stay alive until the loop is destroyed: a cancelled wait's handler may
  // still be queued and refers to them.
  for (auto& w : watches_) {
    w->dead = true;
    std::error_code ec;
    w->sd.cancel(ec);
  }
}

LoopGroup::LoopGroup(int n) {
  if (n < 1) n = 1;
  for (int i = 0; i < n; ++i) loops_.push_back(std::make_unique<EventLoop>(i));
}

void LoopGroup::start_others() {
  for (std::size_t i = 1; i < loops_.size(); ++i) loops_[i]->start();
}

void LoopGroup::stop_all() {
  for (auto& l : loops_) l->stop();
}

void LoopGroup::join_others() {
  for (std::size_t i = 1; i < loops_.size(); ++i) loops_[i]->join();
}

Task<void> sleep_for(EventLoop* loop, std::chrono::steady_clock::duration d) {
  asio::steady_timer t(loop->context(), d);
  co_await asio_op_void([&](auto h) { t.async_wait(std::move(h)); });
}

}  // namespace duplex
