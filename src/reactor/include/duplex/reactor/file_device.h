#pragma once
// A BlockDevice over a file or a block device with plain pread/pwrite/fdatasync, completing inline.
// It is the fallback where io_uring is unavailable (seccomp, old kernels) and the device of the
// offline tools (duplex-fsck). Opening takes an exclusive advisory lock, so a second process on
// the same pool is refused.
#include <cstdint>
#include <memory>
#include <string>

#include "duplex/base/status.h"
#include "duplex/reactor/block_device.h"

namespace duplex {

struct FileDeviceOptions {
  bool create = false;  // create a sparse file of create_size bytes
  std::uint64_t create_size = 0;
  bool direct = false;  // O_DIRECT (bypass the page cache)
  bool read_only = false;
  bool lock = true;  // flock(LOCK_EX|LOCK_NB): refuse a second user
};

class FileDevice final : public BlockDevice {
 public:
  static Result<std::unique_ptr<FileDevice>> open(const std::string& path, FileDeviceOptions opts);
  ~FileDevice() override;

  std::uint64_t size() const override { return size_; }
  const std::string& name() const override { return path_; }
  int fd() const { return fd_; }
  bool is_block_device() const { return blockdev_; }
  bool direct() const { return direct_; }

  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf) override;
  Task<Status> flush() override;
  Task<Status> discard(std::uint64_t offset, std::uint64_t length) override;

  // Synchronous forms, shared with the io_uring device's fallback path.
  Status pread_all(std::uint64_t offset, std::span<std::byte> buf);
  Status pwrite_all(std::uint64_t offset, std::span<const std::byte> buf);
  Status sync();
  Status punch(std::uint64_t offset, std::uint64_t length);
  // Makes the device at least `size` bytes: a regular file is lengthened (sparse; the new tail
  // reads as zeroes) and its new length made durable; a block device is only re-measured (a
  // partition or LV grown by the operator). Never shrinks.
  Status extend(std::uint64_t size);

 private:
  FileDevice(std::string path, int fd, std::uint64_t size, bool blockdev, bool direct)
      : path_(std::move(path)), fd_(fd), size_(size), blockdev_(blockdev), direct_(direct) {}
  std::string path_;
  int fd_;
  std::uint64_t size_;
  bool blockdev_;
  bool direct_;
};

}  // namespace duplex
