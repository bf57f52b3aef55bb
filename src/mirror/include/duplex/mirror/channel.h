#pragma once
// One mirror link: a message connection over a connected TcpStream, on ONE event loop. It matches
// replies to calls by request_id, dispatches inbound requests concurrently, answers pings, and
// declares the link down (once, with a reason) on the first sign of trouble: peer closed, I/O
// error, a malformed or corrupt message, a call not answered in time, or nothing heard for
// `timeout`. A down link is never reused: the engine makes a new connection and a new Channel.
//
// Lifetime: the reader, the pinger, every spawned handler and every call() hold a shared_ptr, so
// the Channel lives while any of them runs; close() ends them. Handlers should hold the engine by
// weak or raw pointer (a shared_ptr back to an owner of the Channel is a cycle until close()).
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <asio/steady_timer.hpp>

#include "duplex/base/async.h"
#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/mirror/wire.h"
#include "duplex/reactor/event_loop.h"
#include "duplex/reactor/tcp_stream.h"
#include "duplex/reactor/tls.h"

namespace duplex::mirror {

// Leaves the elements a resize() adds uninitialised: a payload buffer is read into at once, and
// zero-filling up to kMaxPayload bytes first would be a wasted pass over the data.
template <typename T>
struct UninitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  // Rebinds convert implicitly, as std::allocator's do.
  template <typename U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  template <typename U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
using Payload = std::vector<std::byte, UninitAllocator<std::byte>>;

struct Message {
  wire::Header header;
  Payload payload;
};

struct ChannelOptions {
  std::chrono::milliseconds ping_interval{500};
  std::chrono::milliseconds timeout{3000};  // nothing heard from the peer for this long -> down
};

class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // Called for every inbound message that is not a reply to one of our calls and not ping/pong
  // (those are handled inside). Runs on the loop; may co_await (e.g. a disk write) - inbound
  // requests are dispatched concurrently (each handler is spawned), so a slow one does not block
  // the reader. An inbound `close` is not delivered: it takes the channel down with its reason.
  using Handler = std::function<Task<void>(std::shared_ptr<Channel>, Message)>;
  // Called once when the channel goes down (peer closed, I/O error, protocol error, bad CRC,
  // timeout, or close()). Every pending call() completes with an error at that moment (their
  // coroutines resume from the loop afterwards). It runs synchronously inside whatever found the
  // failure, including a close() called by the engine itself, so it must not assume a fresh stack.
  using DownHandler = std::function<void(Status why)>;

  static std::shared_ptr<Channel> make(EventLoop& loop, std::unique_ptr<TcpStream> s, ChannelOptions o);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  void start(Handler h, DownHandler d);  // spawns the reader and the pinger
  // Sends h (+payload) with a fresh request_id and waits for the reply with that id. Errors:
  // Errc::timeout after `timeout` (the channel is then declared down: a slow peer is ejected, it
  // does not stall I/O), Errc::unavailable if the channel is or goes down. A reply's non-zero
  // header.status is NOT turned into an error here: the caller reads it.
  Task<Result<Message>> call(wire::Header h, std::span<const std::byte> payload,
                             std::chrono::milliseconds timeout);
  // A reply to `request`: copies its request_id and sets type (e.g. replicate_reply).
  Task<Status> reply(const wire::Header& request, wire::Header h, std::span<const std::byte> payload);
  // One-way message (no reply expected).
  Task<Status> send(wire::Header h, std::span<const std::byte> payload);
  // Sends a `close` message carrying `why` (bounded by the options' timeout), then close(why).
  Task<void> shutdown(Status why);
  void close(Status why);  // idempotent; runs the DownHandler once
  bool up() const { return up_; }
  // Why the channel went down (OK while it is up).
  const Status& down_reason() const { return why_; }
  // Time of the last message received from the peer (any type, including pong).
  std::chrono::steady_clock::time_point last_heard() const { return last_heard_; }
  // For the read lease: the send time of the newest ping or call that the peer answered (the
  // peer had heard from us by then at the latest).
  std::chrono::steady_clock::time_point last_pong_for() const { return last_pong_for_; }
  // Makes sure the peer answered something sent less than `lease` ago, pinging at once if not
  // (instead of waiting for the next periodic ping). False if the link went down or the round
  // trip is too slow for the lease.
  Task<bool> renew(std::chrono::steady_clock::duration lease);
  const std::string& peer() const { return peer_; }
  EventLoop& loop() const { return loop_; }
  // Calls waiting for their reply.
  std::size_t pending_calls() const { return pending_.size(); }

 private:
  struct Pending;
  Channel(EventLoop& loop, std::unique_ptr<TcpStream> s, ChannelOptions o);

  Task<Status> write_message(wire::Header h, std::span<const std::byte> payload);
  void complete(const std::shared_ptr<Pending>& p, Result<Message> r);
  void arm_call_timer(std::chrono::steady_clock::time_point at);
  void expire_calls();
  Status down_status() const;
  void answered(std::chrono::steady_clock::time_point sent);
  static Task<void> read_loop(std::shared_ptr<Channel> self);
  static Task<void> ping_loop(std::shared_ptr<Channel> self);
  static Task<void> send_pong(std::shared_ptr<Channel> self, std::uint64_t echo);
  static Task<void> send_ping(std::shared_ptr<Channel> self);
  static Task<void> dispatch(Handler h, std::shared_ptr<Channel> self, Message m);

  EventLoop& loop_;
  std::unique_ptr<TcpStream> stream_;
  ChannelOptions opts_;
  std::string peer_;
  Handler handler_;
  DownHandler down_;
  AsyncMutex write_mu_;
  asio::steady_timer ping_timer_;
  asio::steady_timer call_timer_;  // the earliest deadline of a call (see arm_call_timer)
  std::chrono::steady_clock::time_point call_timer_at_{};
  bool call_timer_armed_ = false;
  bool started_ = false;
  bool up_ = true;
  bool ping_in_flight_ = false;
  Status why_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<Pending>> pending_;
  std::chrono::steady_clock::time_point last_heard_;
  std::chrono::steady_clock::time_point last_pong_for_{};
  WaitQueue answered_q_;  // woken when last_pong_for_ advances or the channel goes down
};

// Opens a TCP connection to host:port on `loop` (bounded by `timeout`). host is an IP address.
// With `tls`, the TLS handshake follows (bounded by `timeout` again); `peer_name`, if not empty,
// must then be the name in the peer's certificate.
Task<Result<std::unique_ptr<TcpStream>>> connect_tcp(EventLoop* loop, std::string host, std::uint16_t port,
                                                     std::chrono::milliseconds timeout,
                                                     std::shared_ptr<const TlsContext> tls = nullptr,
                                                     std::string peer_name = {});

}  // namespace duplex::mirror
