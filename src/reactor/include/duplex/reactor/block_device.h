#pragma once
// The contract every storage device (pool file, block device, io_uring device, the tests' fake
// disk) keeps. The store is written against this and nothing else.
//
// - read/write: any offset and length inside size(); buffers of any alignment (a device that
//   needs alignment, e.g. O_DIRECT, bounces). A completed write is visible to later reads but is
//   NOT durable until a flush() that started after it completed has completed: the device has
//   a volatile write cache, like every real disk.
// - flush(): every write completed before the call is durable when it returns OK.
// - discard(): the range's contents become unspecified (may read old data or zeroes); a hint to
//   return space. Never relied on for zeroes.
// - An error is reported, never hidden: a failed write leaves the range's contents unspecified.
// - Operations may complete inline (the coroutine never suspends) or later on the owning event
//   loop's thread. A device is used from one thread.
#include <cstdint>
#include <span>
#include <string>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex {

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  virtual std::uint64_t size() const = 0;
  // For messages: the path or a test name.
  virtual const std::string& name() const = 0;
  virtual Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) = 0;
  virtual Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf) = 0;
  virtual Task<Status> flush() = 0;
  virtual Task<Status> discard(std::uint64_t offset, std::uint64_t length) = 0;
};

}  // namespace duplex
