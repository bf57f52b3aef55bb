#include "duplex/reactor/file_device.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "duplex/base/buffer.h"

namespace duplex {

namespace {
Status errno_status(Errc c, const std::string& what, const std::string& path, int err) {
  return Status::error(c, "{} {}: {}", what, path, std::strerror(err));
}
}  // namespace

Result<std::unique_ptr<FileDevice>> FileDevice::open(const std::string& path, FileDeviceOptions opts) {
  int flags = O_CLOEXEC | (opts.read_only ? O_RDONLY : O_RDWR);
  if (opts.create) flags |= O_CREAT | O_EXCL;
  if (opts.direct) flags |= O_DIRECT;
  int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) {
    const int err = errno;
    return errno_status(err == ENOENT   ? Errc::not_found
                        : err == EEXIST ? Errc::exists
                                        : Errc::io_error,
                        "cannot open", path, err);
  }
  if (opts.lock && ::flock(fd, (opts.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK)
      return Status::error(Errc::busy, "{} is in use by another process (lock held)", path);
    return errno_status(Errc::io_error, "cannot lock", path, err);
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    return errno_status(Errc::io_error, "cannot stat", path, err);
  }
  const bool blockdev = S_ISBLK(st.st_mode);
  std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  if (blockdev) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      const int err = errno;
      ::close(fd);
      return errno_status(Errc::io_error, "cannot read size of", path, err);
    }
  } else if (opts.create) {
    // Sparse: only what is written takes space.
    if (::ftruncate(fd, static_cast<off_t>(opts.create_size)) != 0) {
      const int err = errno;
      ::close(fd);
      ::unlink(path.c_str());
      return errno_status(Errc::io_error, "cannot size", path, err);
    }
    size = opts.create_size;
  }
  return std::unique_ptr<FileDevice>(new FileDevice(path, fd, size, blockdev, opts.direct));
}

FileDevice::~FileDevice() { ::close(fd_); }

Status FileDevice::pread_all(std::uint64_t offset, std::span<std::byte> buf) {
  if (offset + buf.size() > size_ || offset + buf.size() < offset)
    return Status::error(Errc::out_of_range, "{}: read of {} bytes at {} beyond device end {}", path_,
                         buf.size(), offset, size_);
  AlignedBuffer bounce;
  std::span<std::byte> target = buf;
  if (direct_ && (!is_aligned(buf.data(), 512) || buf.size() % 512 || offset % 512)) {
    return Status::error(Errc::invalid, "{}: unaligned O_DIRECT read at {}", path_, offset);
  }
  std::size_t done = 0;
  while (done < target.size()) {
    ssize_t n = ::pread(fd_, target.data() + done, target.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::error(Errc::io_error, "{}: read at offset {}: {}", path_, offset + done,
                           std::strerror(errno));
    }
    if (n == 0) {  // sparse file shorter than its logical size reads as zeroes
      std::memset(target.data() + done, 0, target.size() - done);
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status FileDevice::pwrite_all(std::uint64_t offset, std::span<const std::byte> buf) {
  if (offset + buf.size() > size_ || offset + buf.size() < offset)
    return Status::error(Errc::out_of_range, "{}: write of {} bytes at {} beyond device end {}", path_,
                         buf.size(), offset, size_);
  if (direct_ && (!is_aligned(buf.data(), 512) || buf.size() % 512 || offset % 512))
    return Status::error(Errc::invalid, "{}: unaligned O_DIRECT write at {}", path_, offset);
  std::size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::pwrite(fd_, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::error(errno == ENOSPC ? Errc::no_space : Errc::io_error, "{}: write at offset {}: {}",
                           path_, offset + done, std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status FileDevice::sync() {
  if (::fdatasync(fd_) != 0)
    return Status::error(Errc::io_error, "{}: fdatasync: {}", path_, std::strerror(errno));
  return Status::ok();
}

Status FileDevice::extend(std::uint64_t size) {
  if (size <= size_) return Status::ok();
  if (blockdev_) {
    std::uint64_t now = 0;
    if (::ioctl(fd_, BLKGETSIZE64, &now) != 0)
      return Status::error(Errc::io_error, "{}: cannot read the size: {}", path_, std::strerror(errno));
    size_ = now;
    if (now < size)
      return Status::error(Errc::no_space, "{}: the block device holds {} bytes, {} needed", path_, now,
                           size);
    return Status::ok();
  }
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0)
    return Status::error(Errc::io_error, "{}: cannot lengthen to {} bytes: {}", path_, size,
                         std::strerror(errno));
  // fsync, not fdatasync: the new length is metadata the file system must keep across a crash.
  if (::fsync(fd_) != 0) return Status::error(Errc::io_error, "{}: fsync: {}", path_, std::strerror(errno));
  size_ = size;
  return Status::ok();
}

Status FileDevice::punch(std::uint64_t offset, std::uint64_t length) {
  if (blockdev_) {
    std::uint64_t range[2] = {offset, length};
    if (::ioctl(fd_, BLKDISCARD, &range) != 0 && errno != EOPNOTSUPP)
      return Status::error(Errc::io_error, "{}: discard: {}", path_, std::strerror(errno));
    return Status::ok();
  }
  if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                  static_cast<off_t>(length)) != 0 &&
      errno != EOPNOTSUPP)
    return Status::error(Errc::io_error, "{}: punch hole: {}", path_, std::strerror(errno));
  return Status::ok();
}

Task<Status> FileDevice::read(std::uint64_t offset, std::span<std::byte> buf) {
  co_return pread_all(offset, buf);
}
Task<Status> FileDevice::write(std::uint64_t offset, std::span<const std::byte> buf) {
  co_return pwrite_all(offset, buf);
}
Task<Status> FileDevice::flush() { co_return sync(); }
Task<Status> FileDevice::discard(std::uint64_t offset, std::uint64_t length) {
  co_return punch(offset, length);
}

}  // namespace duplex
