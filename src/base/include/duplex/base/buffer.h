#pragma once
// Page-aligned, owning byte buffer: O_DIRECT and io_uring fixed buffers need 4 KiB alignment.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <utility>

namespace duplex {

class AlignedBuffer {
 public:
  static constexpr std::size_t kAlign = 4096;

  AlignedBuffer() = default;
  explicit AlignedBuffer(std::size_t size) : AlignedBuffer(size, true) {}
  // Contents undefined: for buffers that are always filled before they are read (I/O staging),
  // where zeroing a large fresh allocation costs a page fault and a clear per page.
  static AlignedBuffer uninitialized(std::size_t size) { return AlignedBuffer(size, false); }
  AlignedBuffer(AlignedBuffer&& o) noexcept
      : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) {
      std::free(data_);
      data_ = std::exchange(o.data_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }

  std::byte* data() { return data_; }
  const std::byte* data() const { return data_; }
  std::size_t size() const { return size_; }
  std::span<std::byte> span() { return {data_, size_}; }
  std::span<const std::byte> span() const { return {data_, size_}; }
  void zero() {
    if (data_) std::memset(data_, 0, size_);
  }

 private:
  AlignedBuffer(std::size_t size, bool zero) : size_(size) {
    if (size == 0) return;
    const std::size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
    data_ = static_cast<std::byte*>(std::aligned_alloc(kAlign, rounded));
    if (!data_) throw std::bad_alloc();
    if (zero) std::memset(data_, 0, rounded);
  }

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

inline bool is_aligned(const void* p, std::size_t a = AlignedBuffer::kAlign) {
  return reinterpret_cast<std::uintptr_t>(p) % a == 0;
}

}  // namespace duplex
