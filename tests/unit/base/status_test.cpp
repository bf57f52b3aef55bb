#include "duplex/base/status.h"

#include <gtest/gtest.h>

namespace duplex {
namespace {

TEST(Status, OkIsCheapAndTrue) {
  Status s;
  EXPECT_TRUE(s.is_ok());
  EXPECT_EQ(s.code(), Errc::ok);
  EXPECT_EQ(s.to_string(), "ok");
}

TEST(Status, ErrorCarriesCodeAndMessage) {
  Status s = Status::error(Errc::corrupt, "pool {}: block {} bad checksum", "p1", 7);
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), Errc::corrupt);
  EXPECT_EQ(s.message(), "pool p1: block 7 bad checksum");
  EXPECT_EQ(s.to_string(), "corrupt: pool p1: block 7 bad checksum");
}

TEST(Result, HoldsValueOrStatus) {
  Result<int> a = 5;
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, 5);
  Result<int> b = Status::error(Errc::not_found, "x");
  EXPECT_FALSE(b);
  EXPECT_EQ(b.status().code(), Errc::not_found);
}

Status fails() { return Status::error(Errc::io_error, "boom"); }
Status propagates() {
  DPX_TRY(fails());
  return Status::ok();
}

TEST(Status, TryPropagates) { EXPECT_EQ(propagates().code(), Errc::io_error); }

}  // namespace
}  // namespace duplex
