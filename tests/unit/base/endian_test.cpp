#include "duplex/base/endian.h"

#include <gtest/gtest.h>

namespace duplex {
namespace {

TEST(Endian, LittleAndBigRoundTrip) {
  unsigned char b[8];
  store_le<std::uint32_t>(b, 0x11223344u);
  EXPECT_EQ(b[0], 0x44);
  EXPECT_EQ(load_le<std::uint32_t>(b), 0x11223344u);
  store_be<std::uint64_t>(b, 0x0102030405060708ull);
  EXPECT_EQ(b[0], 0x01);
  EXPECT_EQ(b[7], 0x08);
  EXPECT_EQ(load_be<std::uint64_t>(b), 0x0102030405060708ull);
}

TEST(Endian, LeFieldHasByteLayout) {
  le32 v = 0xAABBCCDDu;
  const auto* p = reinterpret_cast<const unsigned char*>(&v);
  EXPECT_EQ(p[0], 0xDD);
  EXPECT_EQ(static_cast<std::uint32_t>(v), 0xAABBCCDDu);
}

}  // namespace
}  // namespace duplex
