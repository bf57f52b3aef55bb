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
#include <array>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
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

// Payload buffers: from payload_allocate(), 4 KiB aligned above 512 bytes so that a received
// write goes to an O_DIRECT device as it is (an unaligned buffer would be bounced: allocated and
// copied again), and recycled per thread (a 1 MiB buffer fresh from the kernel costs page faults
// on every message). Thread-safe: a buffer may be freed on another thread than it was made on.
void* payload_allocate(std::size_t bytes);
void payload_deallocate(void* p, std::size_t bytes) noexcept;

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
  T* allocate(std::size_t n) { return static_cast<T*>(payload_allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { payload_deallocate(p, n * sizeof(T)); }
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

  // One call in flight, in its caller's frame: start_call() queues the request and returns at
  // once, so that the caller can do its own part meanwhile (the owner writes its disk while the
  // peer writes its own); `co_await call` then waits for the reply. The Call must not move
  // between start_call() and the end of that co_await (the channel finds it by address); the
  // payload must stay valid as long. Destroying a Call that is still waiting withdraws it.
  class Call {
   public:
    Call() = default;
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    ~Call();
    bool await_ready() const noexcept { return result_.has_value(); }
    void await_suspend(std::coroutine_handle<> h) noexcept { waiter_ = h; }
    Result<Message> await_resume() { return std::move(*result_); }

   private:
    friend class Channel;
    std::shared_ptr<Channel> ch_;                  // set while registered
    std::chrono::steady_clock::time_point sent{};  // an answer proves the peer heard us at or after this
    std::chrono::steady_clock::time_point deadline{};
    std::chrono::milliseconds timeout{};
    std::uint64_t id = 0;
    wire::Type type = wire::Type::ping;
    std::coroutine_handle<> waiter_;
    std::optional<Result<Message>> result_;
  };

  static std::shared_ptr<Channel> make(EventLoop& loop, std::unique_ptr<TcpStream> s, ChannelOptions o);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  void start(Handler h, DownHandler d);  // spawns the reader, the writer and the pinger
  // Sends h (+payload) with a fresh request_id and waits for the reply with that id. Errors:
  // Errc::timeout after `timeout` (the channel is then declared down: a slow peer is ejected, it
  // does not stall I/O), Errc::unavailable if the channel is or goes down. A reply's non-zero
  // header.status is NOT turned into an error here: the caller reads it.
  Task<Result<Message>> call(wire::Header h, std::span<const std::byte> payload,
                             std::chrono::milliseconds timeout);
  // call() in two halves (see Call). Never suspends; an error (the channel is down, a payload
  // too large) is already in `c` when it returns.
  void start_call(Call& c, wire::Header h, std::span<const std::byte> payload,
                  std::chrono::milliseconds timeout);
  // A reply to `request`: copies its request_id and sets type (e.g. replicate_reply).
  Task<Status> reply(const wire::Header& request, wire::Header h, std::span<const std::byte> payload);
  // The same without a payload, queued without suspending (the handler need not wait for the
  // send: nothing of its frame is referred to). Errors only if the channel is down already.
  Status reply_now(const wire::Header& request, wire::Header h);
  // One-way message (no reply expected).
  Task<Status> send(wire::Header h, std::span<const std::byte> payload);
  // The same without a payload, queued without suspending. Errors only if the channel is down.
  Status send_now(wire::Header h);
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
  // System calls that sent messages, and messages sent (a batch is one system call when the
  // socket takes it all).
  std::uint64_t send_calls() const { return send_calls_; }
  std::uint64_t messages_sent() const { return messages_sent_; }

 private:
  // A message waiting for the writer. `done`, if set, is resumed once the bytes are in the socket
  // (or the channel is down): the payload lives in that waiter's frame until then.
  struct SendWait;
  struct Outgoing {
    std::array<std::byte, wire::kHeaderSize> header;
    std::span<const std::byte> payload;
    SendWait* done = nullptr;
    std::size_t sent = 0;  // bytes already written (a direct send the socket took in part)
    bool ping = false;
  };
  Channel(EventLoop& loop, std::unique_ptr<TcpStream> s, ChannelOptions o);

  // Queues one message (header fields payload_len/crc filled in here); the writer sends it with
  // everything else queued in the same turn of the loop, in order. Errors: channel down, payload
  // too large.
  Status enqueue(wire::Header h, std::span<const std::byte> payload, SendWait* done, bool ping = false);
  Task<Status> write_message(wire::Header h, std::span<const std::byte> payload);
  void complete(Call* c, Result<Message> r);
  void arm_call_timer(std::chrono::steady_clock::time_point at);
  void expire_calls();
  Status down_status() const;
  void answered(std::chrono::steady_clock::time_point sent);
  void finish_sends(std::vector<Outgoing>& batch, const Status& st);
  static Task<void> read_loop(std::shared_ptr<Channel> self);
  static Task<void> write_loop(std::shared_ptr<Channel> self);
  static Task<void> ping_loop(std::shared_ptr<Channel> self);

  EventLoop& loop_;
  std::unique_ptr<TcpStream> stream_;
  ChannelOptions opts_;
  std::string peer_;
  // Shared with every dispatched handler, which must outlive the coroutine it made (a copy of
  // the std::function per message would be an allocation per message).
  std::shared_ptr<const Handler> handler_;
  DownHandler down_;
  std::vector<Outgoing> outq_;     // queued, in order, not yet taken by the writer
  std::vector<Outgoing> sending_;  // the writer's current batch
  std::vector<asio::const_buffer> iov_;
  std::coroutine_handle<> writer_idle_;  // the writer, waiting for outq_ to fill
  asio::steady_timer ping_timer_;
  asio::steady_timer call_timer_;  // the earliest deadline of a call (see arm_call_timer)
  std::chrono::steady_clock::time_point call_timer_at_{};
  bool call_timer_armed_ = false;
  bool started_ = false;
  bool up_ = true;
  bool ping_in_flight_ = false;
  Status why_;
  std::uint64_t next_id_ = 1;
  // Calls waiting for their reply, by ascending id (ids grow, so a new call goes at the end, and
  // replies, mostly in order, are found near the front): no allocation per call.
  std::vector<Call*> pending_;
  std::vector<Call*>::iterator find_pending(std::uint64_t id);
  std::chrono::steady_clock::time_point last_heard_;
  std::chrono::steady_clock::time_point last_pong_for_{};
  WaitQueue answered_q_;  // woken when last_pong_for_ advances or the channel goes down
  std::uint64_t send_calls_ = 0, messages_sent_ = 0;
};

// Opens a TCP connection to host:port on `loop` (bounded by `timeout`). host is an IP address.
// With `tls`, the TLS handshake follows (bounded by `timeout` again); `peer_name`, if not empty,
// must then be the name in the peer's certificate.
Task<Result<std::unique_ptr<TcpStream>>> connect_tcp(EventLoop* loop, std::string host, std::uint16_t port,
                                                     std::chrono::milliseconds timeout,
                                                     std::shared_ptr<const TlsContext> tls = nullptr,
                                                     std::string peer_name = {});

}  // namespace duplex::mirror
