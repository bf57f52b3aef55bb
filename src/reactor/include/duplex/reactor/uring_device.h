#pragma once
// UringDevice: a BlockDevice whose every operation goes through a Ring, and the factory that picks
// it or the inline FileDevice.
//
// Opening, locking and sizing are FileDevice's (a UringDevice owns one and uses its fd), so both
// devices refuse a second user of a pool the same way. Files and block devices are opened with
// O_DIRECT by default: the store does its own caching, and the page cache would only add a copy
// and hide the disk's real latency from the benchmarks. The BlockDevice contract promises any
// alignment, so:
//   - offset and length aligned, buffer address not: the data is copied through an AlignedBuffer;
//   - offset or length not aligned: reads read the covering aligned range; writes read-modify-
//     write the partial head/tail sectors. Those RMW writes are serialized per device, because two
//     of them touching different bytes of one sector would otherwise undo each other.
// The aligned path, which is what the store issues, allocates nothing beyond the coroutine frames.
#include <coroutine>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>

#include "duplex/base/status.h"
#include "duplex/reactor/block_device.h"
#include "duplex/reactor/file_device.h"
#include "duplex/reactor/uring.h"

namespace duplex {

struct DeviceOptions {
  bool create = false;  // create a sparse file of create_size bytes (O_EXCL)
  std::uint64_t create_size = 0;
  bool read_only = false;
  bool lock = true;
  bool direct = true;     // O_DIRECT; unaligned requests bounce (UringDevice only)
  bool use_uring = true;  // false, or DUPLEX_NO_URING=1 in the environment, selects FileDevice
};

class UringDevice final : public BlockDevice {
 public:
  static Result<std::unique_ptr<UringDevice>> open(const std::string& path, DeviceOptions opts, Ring& ring);

  std::uint64_t size() const override { return file_->size(); }
  const std::string& name() const override { return file_->name(); }
  int fd() const { return file_->fd(); }
  bool direct() const { return file_->direct(); }
  Ring& ring() { return ring_; }
  FileDevice& file() { return *file_; }  // for what the ring does not do (extend)
  // Direct-I/O alignment of buffer addresses and of offsets/lengths (1 when not O_DIRECT).
  std::uint32_t mem_align() const { return mem_align_; }
  std::uint32_t offset_align() const { return offset_align_; }

  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf) override;
  Task<Status> flush() override;
  Task<Status> discard(std::uint64_t offset, std::uint64_t length) override;

  struct Stats {
    std::uint64_t bounced_reads = 0;   // through an aligned copy
    std::uint64_t bounced_writes = 0;  // aligned range, unaligned memory
    std::uint64_t rmw_writes = 0;      // partial sectors read-modify-written
  };
  const Stats& stats() const { return stats_; }

 private:
  UringDevice(std::unique_ptr<FileDevice> file, Ring& ring, bool read_only, std::uint32_t mem_align,
              std::uint32_t offset_align)
      : file_(std::move(file)),
        ring_(ring),
        read_only_(read_only),
        mem_align_(mem_align),
        offset_align_(offset_align) {}
  bool aligned(std::uint64_t offset, const void* p, std::size_t len) const {
    return offset % offset_align_ == 0 && len % offset_align_ == 0 &&
           reinterpret_cast<std::uintptr_t>(p) % mem_align_ == 0;
  }
  bool in_range(std::uint64_t offset, std::uint64_t len) const {
    return offset + len <= size() && offset + len >= offset;
  }
  Task<Status> read_slow(std::uint64_t offset, std::span<std::byte> buf);
  Task<Status> write_slow(std::uint64_t offset, std::span<const std::byte> buf);
  Task<Status> write_rmw(std::uint64_t offset, std::span<const std::byte> buf);

  // The RMW lock: a FIFO of coroutines, handed over on unlock.
  struct RmwLock {
    UringDevice& d;
    bool await_ready() const noexcept {
      if (d.rmw_locked_) return false;
      d.rmw_locked_ = true;
      return true;
    }
    void await_suspend(std::coroutine_handle<> h) { d.rmw_waiters_.push_back(h); }
    void await_resume() const noexcept {}
  };
  void rmw_unlock();

  std::unique_ptr<FileDevice> file_;
  Ring& ring_;
  bool read_only_;
  std::uint32_t mem_align_;
  std::uint32_t offset_align_;
  bool rmw_locked_ = false;
  std::deque<std::coroutine_handle<>> rmw_waiters_;
  Stats stats_;
};

// Whether DUPLEX_NO_URING=1 (or any value but "0"/"") is set: operators and tests force the
// inline fallback with it.
bool uring_disabled_by_env();

// A UringDevice when `ring` is non-null and io_uring is allowed, else a FileDevice doing inline
// pread/pwrite. The fallback never uses O_DIRECT: FileDevice does not bounce unaligned buffers,
// and with the page cache in between every alignment works; durability still comes from flush().
Result<std::unique_ptr<BlockDevice>> open_block_device(const std::string& path, DeviceOptions opts,
                                                       Ring* ring);

}  // namespace duplex
