#include "duplex/base/uuid.h"

#include <fmt/format.h>

#include <random>

namespace duplex {

Uuid Uuid::random() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  Uuid u;
  for (std::size_t i = 0; i < 16; i += 8) {
    std::uint64_t r = rng();
    for (std::size_t j = 0; j < 8; ++j) u.bytes[i + j] = static_cast<std::uint8_t>(r >> (8 * j));
  }
  u.bytes[6] = static_cast<std::uint8_t>((u.bytes[6] & 0x0f) | 0x40);
  u.bytes[8] = static_cast<std::uint8_t>((u.bytes[8] & 0x3f) | 0x80);
  return u;
}

std::optional<Uuid> Uuid::parse(std::string_view s) {
  Uuid u;
  std::size_t n = 0;
  int hi = -1;
  for (char c : s) {
    if (c == '-') continue;
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10;
    else
      return std::nullopt;
    if (hi < 0) {
      hi = v;
    } else {
      if (n >= 16) return std::nullopt;
      u.bytes[n++] = static_cast<std::uint8_t>(hi << 4 | v);
      hi = -1;
    }
  }
  if (n != 16 || hi >= 0) return std::nullopt;
  return u;
}

std::string Uuid::to_string() const {
  std::string out;
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += fmt::format("{:02x}", bytes[i]);
  }
  return out;
}

bool Uuid::is_nil() const {
  for (auto b : bytes)
    if (b) return false;
  return true;
}

}  // namespace duplex
