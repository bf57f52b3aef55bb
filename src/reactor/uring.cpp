#include "duplex/reactor/uring.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace duplex {

namespace {

// A read or write larger than this is split: the SQE length is 32 bits, and the kernel caps one
// transfer at MAX_RW_COUNT (just under 2 GiB) anyway.
constexpr std::size_t kMaxChunk = std::size_t{1} << 30;

Errc errc_of(int err) {
  switch (err) {
    case ENOSPC:
    case EDQUOT: return Errc::no_space;
    case EINVAL: return Errc::invalid;
    case EROFS:
    case EBADF: return Errc::read_only;
    case EOPNOTSUPP: return Errc::unsupported;
    default: return Errc::io_error;
  }
}

bool retryable(int res) { return res == -EINTR || res == -EAGAIN; }

}  // namespace

Result<std::unique_ptr<Ring>> Ring::create(unsigned entries) {
  std::unique_ptr<Ring> r(new Ring());
  // No SETUP flags on purpose: COOP/DEFER_TASKRUN delay completions until this thread enters the
  // kernel, which would leave the eventfd silent while an Asio loop sleeps in epoll_wait.
  int rc = io_uring_queue_init(std::max(entries, 2u), &r->ring_, 0);
  if (rc < 0)
    return Status::error(Errc::unsupported, "io_uring unavailable (io_uring_queue_init: {})",
                         std::strerror(-rc));
  r->ring_ok_ = true;
  // Kernels before 5.6 have io_uring without plain READ/WRITE/FALLOCATE: treat as unsupported
  // rather than fail on the first I/O.
  if (io_uring_probe* probe = io_uring_get_probe_ring(&r->ring_)) {
    const bool ok = io_uring_opcode_supported(probe, IORING_OP_READ) &&
                    io_uring_opcode_supported(probe, IORING_OP_WRITE) &&
                    io_uring_opcode_supported(probe, IORING_OP_FSYNC) &&
                    io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
    io_uring_free_probe(probe);
    if (!ok) return Status::error(Errc::unsupported, "io_uring lacks READ/WRITE/FSYNC/FALLOCATE");
  }
  return r;
}

Ring::~Ring() {
  // Operations still in the kernel are cancelled and waited for by io_uring_queue_exit, so no
  // buffer is written after this returns; their coroutines are never resumed (destroy a Ring
  // only when idle()).
  if (ring_ok_) io_uring_queue_exit(&ring_);
  if (event_fd_ >= 0) ::close(event_fd_);
}

void Ring::Op::prep(io_uring_sqe* sqe) {
  switch (opcode_) {
    case IORING_OP_READ: io_uring_prep_read(sqe, fd_, addr_, static_cast<unsigned>(len_), off_); break;
    case IORING_OP_WRITE: io_uring_prep_write(sqe, fd_, addr_, static_cast<unsigned>(len_), off_); break;
    case IORING_OP_FSYNC: io_uring_prep_fsync(sqe, fd_, flags_); break;
    case IORING_OP_FALLOCATE:
      io_uring_prep_fallocate(sqe, fd_, static_cast<int>(flags_), static_cast<off_t>(off_),
                              static_cast<off_t>(len_));
      break;
    default: io_uring_prep_nop(sqe); break;
  }
  io_uring_sqe_set_data(sqe, this);
}

Ring::Op Ring::read_op(int fd, std::uint64_t off, std::span<std::byte> buf) {
  return Op(this, IORING_OP_READ, fd, buf.data(), buf.size(), off, 0);
}
Ring::Op Ring::write_op(int fd, std::uint64_t off, std::span<const std::byte> buf) {
  // The kernel only reads from the buffer; the SQE has one pointer type for both directions.
  return Op(this, IORING_OP_WRITE, fd, const_cast<std::byte*>(buf.data()), buf.size(), off, 0);
}
Ring::Op Ring::fdatasync_op(int fd) {
  return Op(this, IORING_OP_FSYNC, fd, nullptr, 0, 0, IORING_FSYNC_DATASYNC);
}
Ring::Op Ring::fallocate_op(int fd, int mode, std::uint64_t off, std::uint64_t len) {
  return Op(this, IORING_OP_FALLOCATE, fd, nullptr, len, off, static_cast<std::uint32_t>(mode));
}

bool Ring::try_start(Op* op) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) {
    flush_submissions();
    sqe = io_uring_get_sqe(&ring_);
    if (!sqe) return false;
  }
  op->prep(sqe);
  ++in_flight_;
  return true;
}

void Ring::enqueue(Op* op) {
  if (backlog_head_) admit_backlog();
  // Capping what is outstanding at the CQ size means the kernel never has to hold back a CQE.
  if (!backlog_head_ && in_flight_ < cq_entries() && try_start(op)) return;
  op->next_ = nullptr;
  if (backlog_tail_)
    backlog_tail_->next_ = op;
  else
    backlog_head_ = op;
  backlog_tail_ = op;
  ++backlog_len_;
  ++stats_.backlogged;
}

void Ring::admit_backlog() {
  while (backlog_head_ && in_flight_ < cq_entries()) {
    Op* op = backlog_head_;
    if (!try_start(op)) return;
    backlog_head_ = op->next_;
    if (!backlog_head_) backlog_tail_ = nullptr;
    --backlog_len_;
  }
}

unsigned Ring::flush_submissions() {
  if (io_uring_sq_ready(&ring_) == 0) return 0;
  for (;;) {
    const int r = io_uring_submit(&ring_);
    if (r >= 0) {
      stats_.submitted += static_cast<unsigned>(r);
      ++stats_.submit_calls;
      return static_cast<unsigned>(r);
    }
    if (r == -EINTR) continue;
    // EAGAIN/EBUSY: the kernel is short of memory or still holds overflowed completions. The
    // SQEs stay queued and go with the next flush, after poll() has made room.
    return 0;
  }
}

void Ring::drain_event_fd() {
  std::uint64_t v;
  // Non-blocking; EAGAIN just means no completion was signalled since the last drain. Draining
  // before reaping means a CQE that lands after this read signals the eventfd again.
  [[maybe_unused]] ssize_t n = ::read(event_fd_, &v, sizeof v);
}

unsigned Ring::poll() {
  if (event_fd_ >= 0) drain_event_fd();
  unsigned n = 0;
  io_uring_cqe* cqe = nullptr;
  // io_uring_peek_cqe enters the kernel only when completions overflowed into the kernel's
  // backlog, so a CQ overflow (should the cap ever be exceeded) is flushed here, not lost.
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
    auto* op = static_cast<Op*>(io_uring_cqe_get_data(cqe));
    const int res = cqe->res;
    io_uring_cqe_seen(&ring_, cqe);
    --in_flight_;
    ++n;
    // Backlog first, so a resumed coroutine's next operation queues behind earlier waiters.
    if (backlog_head_) admit_backlog();
    op->res_ = res;
    op->waiter_.resume();  // `op` may be gone after this
  }
  stats_.completed += n;
  if (backlog_head_) admit_backlog();
  flush_submissions();
  return n;
}

unsigned Ring::wait() {
  if (backlog_head_) admit_backlog();
  if (in_flight_ == 0) return poll();  // nothing could ever complete: do not sleep
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(&ring_, &cqe) != 0) {
    // Submit what is queued and sleep for one completion in the same syscall.
    const unsigned ready = io_uring_sq_ready(&ring_);
    const int r = io_uring_submit_and_wait(&ring_, 1);
    if (r > 0) {
      stats_.submitted += static_cast<unsigned>(r);
      if (ready) ++stats_.submit_calls;
    }
  }
  return poll();
}

unsigned Ring::poll_spin(std::chrono::nanoseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (;;) {
    const unsigned n = poll();  // also submits what is queued, so the spin waits on real I/O
    if (n > 0 || in_flight_ == 0) return n;
    if (std::chrono::steady_clock::now() >= deadline) return 0;
  }
}

Result<int> Ring::event_fd() {
  if (event_fd_ >= 0) return event_fd_;
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return Status::error(Errc::io_error, "eventfd: {}", std::strerror(errno));
  const int rc = io_uring_register_eventfd(&ring_, fd);
  if (rc < 0) {
    ::close(fd);
    return Status::error(Errc::unsupported, "io_uring_register_eventfd: {}", std::strerror(-rc));
  }
  event_fd_ = fd;
  return fd;
}

Task<Result<std::size_t>> Ring::read(int fd, std::uint64_t off, std::span<std::byte> buf) {
  std::size_t done = 0;
  while (done < buf.size()) {
    const std::size_t chunk = std::min(buf.size() - done, kMaxChunk);
    const int r = co_await read_op(fd, off + done, buf.subspan(done, chunk));
    if (retryable(r)) {
      ++stats_.resubmitted;
      continue;
    }
    if (r < 0)
      co_return Status::error(errc_of(-r), "read of {} bytes at {}: {}", chunk, off + done,
                              std::strerror(-r));
    if (r == 0) break;  // end of file
    done += static_cast<std::size_t>(r);
    if (static_cast<std::size_t>(r) < chunk) ++stats_.resubmitted;
  }
  co_return done;
}

Task<Status> Ring::read_fill(int fd, std::uint64_t off, std::span<std::byte> buf, std::string_view who) {
  std::size_t done = 0;
  while (done < buf.size()) {
    const std::size_t chunk = std::min(buf.size() - done, kMaxChunk);
    const int r = co_await read_op(fd, off + done, buf.subspan(done, chunk));
    if (retryable(r)) {
      ++stats_.resubmitted;
      continue;
    }
    if (r < 0)
      co_return Status::error(errc_of(-r), "{}{}read of {} bytes at {}: {}", who, who.empty() ? "" : ": ",
                              chunk, off + done, std::strerror(-r));
    if (r == 0) {
      std::memset(buf.data() + done, 0, buf.size() - done);
      break;
    }
    done += static_cast<std::size_t>(r);
    if (static_cast<std::size_t>(r) < chunk) ++stats_.resubmitted;
  }
  co_return Status::ok();
}

Task<Status> Ring::write(int fd, std::uint64_t off, std::span<const std::byte> buf, std::string_view who) {
  std::size_t done = 0;
  while (done < buf.size()) {
    const std::size_t chunk = std::min(buf.size() - done, kMaxChunk);
    const int r = co_await write_op(fd, off + done, buf.subspan(done, chunk));
    if (retryable(r)) {
      ++stats_.resubmitted;
      continue;
    }
    if (r < 0)
      co_return Status::error(errc_of(-r), "{}{}write of {} bytes at {}: {}", who, who.empty() ? "" : ": ",
                              chunk, off + done, std::strerror(-r));
    if (r == 0)  // the kernel made no progress and gave no reason: do not spin
      co_return Status::error(Errc::io_error, "{}{}write of {} bytes at {}: no progress", who,
                              who.empty() ? "" : ": ", chunk, off + done);
    done += static_cast<std::size_t>(r);
    if (static_cast<std::size_t>(r) < chunk) ++stats_.resubmitted;
  }
  co_return Status::ok();
}

Task<Status> Ring::fdatasync(int fd) {
  for (;;) {
    const int r = co_await fdatasync_op(fd);
    if (retryable(r)) {
      ++stats_.resubmitted;
      continue;
    }
    if (r < 0) co_return Status::error(errc_of(-r), "fdatasync: {}", std::strerror(-r));
    co_return Status::ok();
  }
}

Task<Status> Ring::fallocate(int fd, int mode, std::uint64_t off, std::uint64_t len) {
  for (;;) {
    const int r = co_await fallocate_op(fd, mode, off, len);
    if (retryable(r)) {
      ++stats_.resubmitted;
      continue;
    }
    if (r < 0)
      co_return Status::error(errc_of(-r), "fallocate(mode {:#x}) of {} bytes at {}: {}", mode, len, off,
                              std::strerror(-r));
    co_return Status::ok();
  }
}

}  // namespace duplex
