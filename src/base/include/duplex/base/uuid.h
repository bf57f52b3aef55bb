#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace duplex {

// A random (version 4) UUID: volume and pool identities, lineage checks.
struct Uuid {
  std::array<std::uint8_t, 16> bytes{};

  static Uuid random();
  static std::optional<Uuid> parse(std::string_view s);
  std::string to_string() const;
  bool is_nil() const;
  friend bool operator==(const Uuid&, const Uuid&) = default;
};

}  // namespace duplex
