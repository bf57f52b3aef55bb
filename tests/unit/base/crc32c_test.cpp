#include "duplex/base/crc32c.h"

#include <gtest/gtest.h>

#include <string>

namespace duplex {
namespace {

TEST(Crc32c, KnownVectors) {
  const std::string check = "123456789";
  EXPECT_EQ(crc32c(check.data(), check.size()), 0xE3069283u);
  unsigned char zeros[32] = {};
  EXPECT_EQ(crc32c(zeros, sizeof zeros), 0x8A9136AAu);  // RFC 3720 B.4
}

TEST(Crc32c, Chains) {
  const std::string a = "1234", b = "56789";
  EXPECT_EQ(crc32c(b.data(), b.size(), crc32c(a.data(), a.size())), 0xE3069283u);
}

}  // namespace
}  // namespace duplex
