#pragma once
// Explicit little-endian encoding for every on-disk and on-wire integer that is little-endian,
// and big-endian helpers for the network protocols (NBD, iSCSI/SCSI) that are big-endian.
#include <bit>
#include <cstdint>
#include <cstring>

namespace duplex {

template <typename T>
constexpr T byteswap(T v) {
  static_assert(std::is_integral_v<T>);
  if constexpr (sizeof(T) == 1)
    return v;
  else if constexpr (sizeof(T) == 2)
    return static_cast<T>(__builtin_bswap16(static_cast<std::uint16_t>(v)));
  else if constexpr (sizeof(T) == 4)
    return static_cast<T>(__builtin_bswap32(static_cast<std::uint32_t>(v)));
  else
    return static_cast<T>(__builtin_bswap64(static_cast<std::uint64_t>(v)));
}

template <typename T>
inline T load_le(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::big) v = byteswap(v);
  return v;
}
template <typename T>
inline void store_le(void* p, T v) {
  if constexpr (std::endian::native == std::endian::big) v = byteswap(v);
  std::memcpy(p, &v, sizeof v);
}
template <typename T>
inline T load_be(const void* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  if constexpr (std::endian::native == std::endian::little) v = byteswap(v);
  return v;
}
template <typename T>
inline void store_be(void* p, T v) {
  if constexpr (std::endian::native == std::endian::little) v = byteswap(v);
  std::memcpy(p, &v, sizeof v);
}

// An integer kept in little-endian byte order in memory: the field type of on-disk structs, so a
// struct's layout is its byte layout on every host.
template <typename T>
class le {
 public:
  le() = default;
  le(T v) { store_le(bytes_, v); }                   // NOLINT(google-explicit-constructor)
  operator T() const { return load_le<T>(bytes_); }  // NOLINT(google-explicit-constructor)
  le& operator=(T v) {
    store_le(bytes_, v);
    return *this;
  }

 private:
  unsigned char bytes_[sizeof(T)]{};
};
using le16 = le<std::uint16_t>;
using le32 = le<std::uint32_t>;
using le64 = le<std::uint64_t>;
static_assert(sizeof(le64) == 8 && alignof(le64) == 1);

}  // namespace duplex
