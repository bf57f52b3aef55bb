#include "duplex/reactor/uring_device.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "duplex/base/buffer.h"

namespace duplex {

namespace {

struct Alignment {
  std::uint32_t mem = 1;
  std::uint32_t offset = 1;
};

// What O_DIRECT demands of this fd. statx(STATX_DIOALIGN) knows exactly (Linux 6.1+); older
// kernels get the logical sector size of a block device, or 512 for a file (ext4/xfs on 512e
// disks; a 4Kn disk fails the first I/O with EINVAL, reported, never silent).
Alignment dio_alignment(int fd, bool blockdev) {
  Alignment a{512, 512};
#ifdef STATX_DIOALIGN
  struct statx stx{};
  if (::statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 && (stx.stx_mask & STATX_DIOALIGN) &&
      stx.stx_dio_offset_align != 0) {
    a.mem = std::max<std::uint32_t>(stx.stx_dio_mem_align, 1);
    a.offset = stx.stx_dio_offset_align;
    return a;
  }
#endif
  if (blockdev) {
    int ss = 0;
    if (::ioctl(fd, BLKSSZGET, &ss) == 0 && ss > 0) a.mem = a.offset = static_cast<std::uint32_t>(ss);
  }
  return a;
}

std::uint64_t round_down(std::uint64_t v, std::uint64_t a) { return v / a * a; }
std::uint64_t round_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace

bool uring_disabled_by_env() {
  const char* v = std::getenv("DUPLEX_NO_URING");
  return v && *v && std::strcmp(v, "0") != 0;
}

Result<std::unique_ptr<UringDevice>> UringDevice::open(const std::string& path, DeviceOptions opts,
                                                       Ring& ring) {
  FileDeviceOptions fo;
  fo.create = opts.create;
  fo.create_size = opts.create_size;
  fo.read_only = opts.read_only;
  fo.lock = opts.lock;
  fo.direct = opts.direct;
  auto file = FileDevice::open(path, fo);
  if (!file) return file.status();
  Alignment a;
  if (opts.direct) {
    a = dio_alignment((*file)->fd(), (*file)->is_block_device());
    // A file whose size is not a multiple of the sector cannot have its last bytes written with
    // O_DIRECT without growing it; such a file (never a pool we created) goes through the cache.
    if ((*file)->size() % a.offset != 0) {
      file.value().reset();  // release the fd and its lock before reopening
      fo.create = false;
      fo.direct = false;
      file = FileDevice::open(path, fo);
      if (!file) return file.status();
      a = Alignment{};
    }
  }
  // AlignedBuffer gives 4 KiB; a device wanting more would need a bigger bounce alignment.
  if (a.mem > AlignedBuffer::kAlign || a.offset > AlignedBuffer::kAlign * 16)
    return Status::error(Errc::unsupported, "{}: direct I/O alignment {}/{} is larger than supported", path,
                         a.mem, a.offset);
  return std::unique_ptr<UringDevice>(
      new UringDevice(std::move(*file), ring, opts.read_only, a.mem, a.offset));
}

// The aligned, in-range case, which is all the store issues, hands back the Ring's own task: one
// coroutine frame per I/O instead of two. Everything else takes the slow path.
Task<Status> UringDevice::read(std::uint64_t offset, std::span<std::byte> buf) {
  if (!buf.empty() && in_range(offset, buf.size()) && aligned(offset, buf.data(), buf.size()))
    return ring_.read_fill(fd(), offset, buf, name());
  return read_slow(offset, buf);
}

Task<Status> UringDevice::read_slow(std::uint64_t offset, std::span<std::byte> buf) {
  if (!in_range(offset, buf.size()))
    co_return Status::error(Errc::out_of_range, "{}: read of {} bytes at {} beyond device end {}", name(),
                            buf.size(), offset, size());
  if (buf.empty()) co_return Status::ok();
  ++stats_.bounced_reads;
  const std::uint64_t a0 = round_down(offset, offset_align_);
  const std::uint64_t a1 = round_up(offset + buf.size(), offset_align_);
  AlignedBuffer bounce(a1 - a0);
  DPX_CO_TRY(co_await ring_.read_fill(fd(), a0, bounce.span(), name()));
  std::memcpy(buf.data(), bounce.data() + (offset - a0), buf.size());
  co_return Status::ok();
}

Task<Status> UringDevice::write(std::uint64_t offset, std::span<const std::byte> buf) {
  if (!read_only_ && !buf.empty() && in_range(offset, buf.size()) && aligned(offset, buf.data(), buf.size()))
    return ring_.write(fd(), offset, buf, name());
  return write_slow(offset, buf);
}

Task<Status> UringDevice::write_slow(std::uint64_t offset, std::span<const std::byte> buf) {
  if (read_only_) co_return Status::error(Errc::read_only, "{}: opened read-only", name());
  if (!in_range(offset, buf.size()))
    co_return Status::error(Errc::out_of_range, "{}: write of {} bytes at {} beyond device end {}", name(),
                            buf.size(), offset, size());
  if (buf.empty()) co_return Status::ok();
  if (offset % offset_align_ == 0 && buf.size() % offset_align_ == 0) {
    ++stats_.bounced_writes;
    AlignedBuffer bounce(buf.size());
    std::memcpy(bounce.data(), buf.data(), buf.size());
    co_return co_await ring_.write(fd(), offset, bounce.span(), name());
  }
  co_await RmwLock{*this};
  Status s = co_await write_rmw(offset, buf);
  rmw_unlock();
  co_return s;
}

Task<Status> UringDevice::write_rmw(std::uint64_t offset, std::span<const std::byte> buf) {
  ++stats_.rmw_writes;
  const std::uint64_t a0 = round_down(offset, offset_align_);
  const std::uint64_t a1 = round_up(offset + buf.size(), offset_align_);
  AlignedBuffer bounce(a1 - a0);
  // Only the partial sectors at either end carry bytes we must keep.
  if (offset != a0)
    DPX_CO_TRY(co_await ring_.read_fill(fd(), a0, bounce.span().first(offset_align_), name()));
  const std::uint64_t tail = a1 - offset_align_;
  if (offset + buf.size() != a1 && (tail != a0 || offset == a0))
    DPX_CO_TRY(co_await ring_.read_fill(fd(), tail, bounce.span().subspan(tail - a0, offset_align_), name()));
  std::memcpy(bounce.data() + (offset - a0), buf.data(), buf.size());
  co_return co_await ring_.write(fd(), a0, bounce.span(), name());
}

void UringDevice::rmw_unlock() {
  if (rmw_waiters_.empty()) {
    rmw_locked_ = false;
    return;
  }
  // The lock passes straight to the oldest waiter, so no newcomer can overtake it.
  auto h = rmw_waiters_.front();
  rmw_waiters_.pop_front();
  h.resume();
}

Task<Status> UringDevice::flush() {
  if (read_only_) co_return Status::ok();
  Status s = co_await ring_.fdatasync(fd());
  if (!s) co_return Status::error(s.code(), "{}: {}", name(), s.message());
  co_return s;
}

Task<Status> UringDevice::discard(std::uint64_t offset, std::uint64_t length) {
  if (read_only_) co_return Status::error(Errc::read_only, "{}: opened read-only", name());
  if (offset + length > size() || offset + length < offset)
    co_return Status::error(Errc::out_of_range, "{}: discard of {} bytes at {} beyond device end {}", name(),
                            length, offset, size());
  if (length == 0) co_return Status::ok();
  // io_uring has no BLKDISCARD (before URING_CMD discard in 6.12); a discard is a rare hint, so the
  // inline ioctl is good enough for block devices.
  if (file_->is_block_device()) co_return file_->punch(offset, length);
  Status s = co_await ring_.fallocate(fd(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
  if (s.code() == Errc::unsupported) co_return Status::ok();  // a hint the filesystem cannot take
  if (!s) co_return Status::error(s.code(), "{}: {}", name(), s.message());
  co_return s;
}

Result<std::unique_ptr<BlockDevice>> open_block_device(const std::string& path, DeviceOptions opts,
                                                       Ring* ring) {
  if (ring && opts.use_uring && !uring_disabled_by_env()) {
    auto d = UringDevice::open(path, opts, *ring);
    if (!d) return d.status();
    return std::unique_ptr<BlockDevice>(std::move(*d));
  }
  FileDeviceOptions fo;
  fo.create = opts.create;
  fo.create_size = opts.create_size;
  fo.read_only = opts.read_only;
  fo.lock = opts.lock;
  fo.direct = false;
  auto f = FileDevice::open(path, fo);
  if (!f) return f.status();
  return std::unique_ptr<BlockDevice>(std::move(*f));
}

}  // namespace duplex
