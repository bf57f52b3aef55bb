#pragma once
// Ring: the owner of one io_uring, used by exactly one thread (one event loop per core, no locks on
// the I/O path: cpp-anchors item 1).
//
// Life of an operation:
//   co_await ring.op(...)    the Op records its parameters and takes an SQE (or waits in the
//                            backlog, see below); user_data points at the Op, which lives in the
//                            awaiting coroutine's frame until it is resumed
//   flush_submissions()      one io_uring_enter for every SQE queued since the last one (SPDK's
//                            "minimise doorbells", cpp-anchors (b)); poll() and wait() call it, and
//                            an event loop calls it before it sleeps
//   poll() / wait()          reap CQEs, write each result into its Op and resume the coroutine
//
// Back-pressure instead of loss: at most cq_entries() operations are in the kernel at once, so the
// completion queue can never overflow; operations beyond that wait in a FIFO backlog and are
// admitted as completions free room. A full SQ is flushed and the SQE taken again.
//
// The raw Op returns the CQE result (bytes or -errno). The Task helpers (read/write/fdatasync/
// fallocate) add what every caller would otherwise repeat: short transfers resubmit the rest,
// -EINTR/-EAGAIN resubmit, errors become a Status naming the operation.
//
// Event-loop integration: event_fd() registers an eventfd the kernel signals on every completion.
// An Asio loop waits for it to be readable (posix::stream_descriptor::async_wait) and calls poll(),
// which drains it. A Ring that never hands out its eventfd pays nothing for it.
#include <liburing.h>

#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex {

class Ring {
 public:
  // Fails with Errc::unsupported when the kernel refuses io_uring (seccomp, old kernel, disabled
  // by sysctl): callers fall back to inline pread/pwrite.
  static Result<std::unique_ptr<Ring>> create(unsigned entries = 256);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // One SQE awaiting its CQE. Lives in the awaiting coroutine's frame; not copyable once queued.
  class Op {
   public:
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept {
      waiter_ = h;
      ring_->enqueue(this);
    }
    // Bytes transferred, 0 for fsync/fallocate, or -errno.
    int await_resume() const noexcept { return res_; }

   private:
    friend class Ring;
    Op(Ring* ring, std::uint8_t opcode, int fd, void* addr, std::uint64_t len, std::uint64_t off,
       std::uint32_t flags)
        : ring_(ring), opcode_(opcode), fd_(fd), addr_(addr), len_(len), off_(off), flags_(flags) {}
    void prep(io_uring_sqe* sqe);

    Ring* ring_;
    std::uint8_t opcode_;
    int fd_;
    void* addr_;
    std::uint64_t len_;  // fallocate takes a 64-bit length; read/write callers keep it < 4 GiB
    std::uint64_t off_;
    std::uint32_t flags_;  // fsync flags or fallocate mode
    int res_ = 0;
    std::coroutine_handle<> waiter_;
    Op* next_ = nullptr;  // backlog link
  };

  // --- single SQEs (the result is the raw CQE res) ---
  Op read_op(int fd, std::uint64_t off, std::span<std::byte> buf);
  Op write_op(int fd, std::uint64_t off, std::span<const std::byte> buf);
  Op fdatasync_op(int fd);
  Op fallocate_op(int fd, int mode, std::uint64_t off, std::uint64_t len);

  // --- complete operations ---
  // Reads until `buf` is full or end of file; returns the bytes read (< buf.size() only at EOF).
  Task<Result<std::size_t>> read(int fd, std::uint64_t off, std::span<std::byte> buf);
  // Fills all of `buf`; what lies past the end of the file reads as zeroes (a sparse file cut
  // shorter than the device it stands for). `who` (kept alive by the caller) starts error messages.
  Task<Status> read_fill(int fd, std::uint64_t off, std::span<std::byte> buf, std::string_view who = {});
  // Writes all of `buf` (short writes continue where they stopped).
  Task<Status> write(int fd, std::uint64_t off, std::span<const std::byte> buf, std::string_view who = {});
  Task<Status> fdatasync(int fd);
  // fallocate(2) through the ring; mode is e.g. FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE.
  Task<Status> fallocate(int fd, int mode, std::uint64_t off, std::uint64_t len);

  // Submits every queued SQE with one syscall. Returns SQEs submitted; a refusal the kernel
  // reports as temporary (EAGAIN/EBUSY) leaves them queued for the next turn.
  unsigned flush_submissions();
  // Non-blocking: reaps every ready CQE, resumes its coroutine, admits backlog, flushes.
  // Returns the number of completions.
  unsigned poll();
  // Blocks until at least one completion (unless nothing is outstanding), then poll().
  unsigned wait();
  // Polls without sleeping for up to `budget` while operations are in flight; returns at the
  // first completions (their count) or 0 when the budget ran out or nothing is in flight. For an
  // event loop about to sleep with I/O outstanding: a fast device often completes within a few
  // microseconds, and catching that here saves the eventfd wake-up and its context switches. It
  // burns the core meanwhile, so keep the budget small and use it only where cores are not shared.
  unsigned poll_spin(std::chrono::nanoseconds budget);

  // Registers (once) and returns an eventfd that becomes readable when completions arrive.
  Result<int> event_fd();

  // Operations in the kernel, queued SQEs not yet submitted, and backlog waiting for room.
  unsigned in_flight() const { return in_flight_; }
  unsigned queued() const { return io_uring_sq_ready(&ring_); }
  unsigned backlog() const { return backlog_len_; }
  bool idle() const { return in_flight_ == 0 && backlog_len_ == 0; }
  unsigned sq_entries() const { return ring_.sq.ring_entries; }
  unsigned cq_entries() const { return ring_.cq.ring_entries; }

  struct Stats {
    std::uint64_t submitted = 0;     // SQEs handed to the kernel
    std::uint64_t submit_calls = 0;  // io_uring_enter calls that submitted
    std::uint64_t completed = 0;
    std::uint64_t resubmitted = 0;  // short transfers, EINTR, EAGAIN
    std::uint64_t backlogged = 0;   // ops that waited for room
  };
  const Stats& stats() const { return stats_; }

 private:
  Ring() = default;
  void enqueue(Op* op);
  bool try_start(Op* op);
  void admit_backlog();
  void drain_event_fd();

  mutable io_uring ring_{};
  bool ring_ok_ = false;
  int event_fd_ = -1;
  unsigned in_flight_ = 0;  // SQEs taken (queued or submitted) whose CQE is not yet reaped
  Op* backlog_head_ = nullptr;
  Op* backlog_tail_ = nullptr;
  unsigned backlog_len_ = 0;
  Stats stats_;
};

}  // namespace duplex
