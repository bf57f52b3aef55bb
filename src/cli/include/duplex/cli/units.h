#pragma once
// Sizes as people type and read them: "10GiB", "512M", "1T", "4096" in; "1 GiB", "1.5 GiB" out.
#include <cstdint>
#include <string>
#include <string_view>

#include "duplex/base/status.h"

namespace duplex::cli {

// Bytes from "N", "N[KMGTP]", "N[KMGTP]iB" (binary, 1024) or "NKB".."NTB" (decimal, 1000).
// A fraction is allowed with a unit ("1.5GiB"); the result must be a whole number of bytes.
Result<std::uint64_t> parse_size(std::string_view text);
std::string format_size(std::uint64_t bytes);
std::string format_seconds(double seconds);

}  // namespace duplex::cli
