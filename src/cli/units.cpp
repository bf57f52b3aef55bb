#include "duplex/cli/units.h"

#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <utility>

namespace duplex::cli {

Result<std::uint64_t> parse_size(std::string_view text) {
  std::string_view s = text;
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) != 0 || s[i] == '.')) ++i;
  const std::string number(s.substr(0, i));
  std::string unit;
  for (char ch : s.substr(i)) unit += static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (number.empty() || number == "." || number.find('.') != number.rfind('.')) {
    return Status::error(Errc::invalid, "'{}' is not a size (examples: 10GiB, 512MiB, 1T, 4096)", text);
  }
  static const std::array<std::pair<const char*, double>, 16> units{{
      {"", 1.0},
      {"B", 1.0},
      {"K", 1024.0},
      {"KIB", 1024.0},
      {"M", 1048576.0},
      {"MIB", 1048576.0},
      {"G", 1073741824.0},
      {"GIB", 1073741824.0},
      {"T", 1099511627776.0},
      {"TIB", 1099511627776.0},
      {"P", 1125899906842624.0},
      {"PIB", 1125899906842624.0},
      {"KB", 1e3},
      {"MB", 1e6},
      {"GB", 1e9},
      {"TB", 1e12},
  }};
  double mult = 0;
  for (const auto& [name, m] : units) {
    if (unit == name) mult = m;
  }
  if (mult == 0)
    return Status::error(Errc::invalid, "'{}': unknown size unit '{}' (use KiB, MiB, GiB, TiB)", text, unit);
  const double value = std::strtod(number.c_str(), nullptr) * mult;
  if (value > 9.0e18) return Status::error(Errc::invalid, "'{}' is too large", text);
  if (value != std::floor(value))
    return Status::error(Errc::invalid, "'{}' is not a whole number of bytes", text);
  return static_cast<std::uint64_t>(value);
}

std::string format_size(std::uint64_t bytes) {
  static const std::array<const char*, 5> names{"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (bytes < 1024) return fmt::format("{} B", bytes);
  double v = static_cast<double>(bytes);
  size_t u = 0;
  v /= 1024.0;
  while (v >= 1024.0 && u + 1 < names.size()) {
    v /= 1024.0;
    ++u;
  }
  if (v == std::floor(v)) return fmt::format("{} {}", static_cast<std::uint64_t>(v), names[u]);
  return fmt::format("{:.1f} {}", v, names[u]);
}

std::string format_seconds(double seconds) {
  if (seconds < 60) return fmt::format("{:.1f}s", seconds);
  const auto total = static_cast<std::uint64_t>(seconds);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, (total / 60) % 60);
}

}  // namespace duplex::cli
