// The mirror link's wire format: every type round-trips, and each kind of damage is refused with a
// message naming what is wrong.
#include "duplex/mirror/wire.h"

#include <array>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "duplex/base/crc32c.h"
#include "duplex/base/endian.h"

namespace duplex::mirror::wire {
namespace {

using Bytes = std::array<std::byte, kHeaderSize>;

Header sample(Type t) {
  Header h;
  h.type = t;
  h.op = Op::write;
  h.flags = kFlagFua | kFlagNoUnmap;
  h.status = -7;
  h.request_id = 0x0102030405060708ULL;
  h.volume = Uuid::random();
  h.generation = 42;
  h.seq = 0xFFFFFFFFFFFFFFFEULL;
  h.offset = 1ULL << 40;
  h.length = 8u << 20;
  h.payload_len = 5;
  h.payload_crc = crc32c("hello", 5);
  return h;
}

Bytes encoded(const Header& h) {
  Bytes b;
  encode(h, b);
  return b;
}

// Re-seals the header CRC after a deliberate change, so the check under test is the one that fires.
void reseal(Bytes& b) {
  store_be<std::uint32_t>(b.data() + layout::header_crc, crc32c(b.data(), layout::header_crc));
}

std::string refusal(const Bytes& b, Errc want) {
  auto r = decode(b);
  EXPECT_FALSE(r.is_ok());
  if (r.is_ok()) return {};
  EXPECT_EQ(r.status().code(), want) << r.status().to_string();
  return r.status().message();
}

TEST(MirrorWire, EveryTypeRoundTrips) {
  for (std::uint16_t t = kMinType; t <= kMaxType; ++t) {
    for (std::uint8_t op = 0; op <= kMaxOp; ++op) {
      Header h = sample(static_cast<Type>(t));
      h.op = static_cast<Op>(op);
      auto r = decode(encoded(h));
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      EXPECT_EQ(*r, h) << type_name(h.type);
    }
  }
}

TEST(MirrorWire, FixedFieldsSitWhereTheTableSays) {
  const Header h = sample(Type::replicate);
  const Bytes b = encoded(h);
  EXPECT_EQ(load_be<std::uint32_t>(b.data()), 0x44584D4Cu);
  EXPECT_EQ(std::memcmp(b.data(), "DXML", 4), 0);
  EXPECT_EQ(load_be<std::uint16_t>(b.data() + layout::version), kVersion);
  EXPECT_EQ(load_be<std::uint16_t>(b.data() + layout::type), 7);
  EXPECT_EQ(load_be<std::uint64_t>(b.data() + layout::request_id), h.request_id);
  EXPECT_EQ(std::memcmp(b.data() + layout::volume, h.volume.bytes.data(), 16), 0);
  EXPECT_EQ(load_be<std::uint32_t>(b.data() + layout::header_crc), crc32c(b.data(), 92));
}

TEST(MirrorWire, ReplyTypesAreTheEvenOnesButStateAndClose) {
  for (std::uint16_t t = kMinType; t <= kMaxType; ++t)
    EXPECT_EQ(is_reply(static_cast<Type>(t)), t % 2 == 0 && t != 16) << t;
}

TEST(MirrorWire, BadMagicIsRefused) {
  Bytes b = encoded(sample(Type::ping));
  b[0] = std::byte{'X'};
  reseal(b);
  EXPECT_NE(refusal(b, Errc::invalid).find("magic"), std::string::npos);
}

TEST(MirrorWire, OtherVersionIsRefused) {
  Bytes b = encoded(sample(Type::ping));
  store_be<std::uint16_t>(b.data() + layout::version, 2);
  reseal(b);
  EXPECT_NE(refusal(b, Errc::version).find("version 2"), std::string::npos);
}

TEST(MirrorWire, EveryFlippedBitAfterTheVersionIsRefused) {
  const Bytes good = encoded(sample(Type::write));
  // Bits of the magic and version are reported as those; every other bit breaks the header CRC.
  for (std::size_t bit = 6 * 8; bit < kHeaderSize * 8; ++bit) {
    Bytes b = good;
    b[bit / 8] ^= std::byte(1u << (bit % 8));
    auto r = decode(b);
    ASSERT_FALSE(r.is_ok()) << "bit " << bit;
    EXPECT_EQ(r.status().code(), Errc::corrupt) << "bit " << bit << ": " << r.status().to_string();
    EXPECT_NE(r.status().message().find("CRC"), std::string::npos);
  }
  for (std::size_t bit = 0; bit < 6 * 8; ++bit) {
    Bytes b = good;
    b[bit / 8] ^= std::byte(1u << (bit % 8));
    EXPECT_FALSE(decode(b).is_ok()) << "bit " << bit;
  }
}

TEST(MirrorWire, PayloadCrcIsChecked) {
  const std::string text = "hello";
  const auto payload = std::as_bytes(std::span(text));
  Header h = sample(Type::write);
  EXPECT_TRUE(check_payload(h, payload).is_ok());
  std::vector<std::byte> bad(payload.begin(), payload.end());
  bad[2] ^= std::byte{0x10};
  Status st = check_payload(h, bad);
  EXPECT_EQ(st.code(), Errc::corrupt);
  EXPECT_NE(st.message().find("payload CRC32C"), std::string::npos) << st.to_string();
  // A payload of another size than the header says.
  st = check_payload(h, payload.first(4));
  EXPECT_EQ(st.code(), Errc::corrupt);
  EXPECT_NE(st.message().find("header says 5"), std::string::npos) << st.to_string();
  // Empty payload: CRC 0.
  h.payload_len = 0;
  h.payload_crc = 0;
  EXPECT_TRUE(check_payload(h, {}).is_ok());
  EXPECT_EQ(payload_crc({}), 0u);
}

TEST(MirrorWire, OversizePayloadIsRefused) {
  Header h = sample(Type::write);
  h.payload_len = kMaxPayload;
  EXPECT_TRUE(decode(encoded(h)).is_ok());
  h.payload_len = kMaxPayload + 1;
  EXPECT_NE(refusal(encoded(h), Errc::invalid).find("exceeds"), std::string::npos);
}

TEST(MirrorWire, UnknownTypeOpAndFlagsAreRefused) {
  for (std::uint16_t t :
       {std::uint16_t{0}, static_cast<std::uint16_t>(kMaxType + 1), std::uint16_t{0xFFFF}}) {
    Bytes b = encoded(sample(Type::ping));
    store_be<std::uint16_t>(b.data() + layout::type, t);
    reseal(b);
    EXPECT_NE(refusal(b, Errc::invalid).find("type"), std::string::npos) << t;
  }
  for (std::uint8_t op : {static_cast<std::uint8_t>(kMaxOp + 1), std::uint8_t{0xFF}}) {
    Bytes b = encoded(sample(Type::ping));
    b[layout::op] = std::byte{op};
    reseal(b);
    EXPECT_NE(refusal(b, Errc::invalid).find("op"), std::string::npos) << int(op);
  }
  Bytes b = encoded(sample(Type::ping));
  b[layout::flags] = std::byte{0x80};
  reseal(b);
  EXPECT_NE(refusal(b, Errc::invalid).find("flags"), std::string::npos);
}

TEST(MirrorWire, NonZeroReservedBytesAreRefused) {
  std::vector<std::size_t> reserved = {layout::reserved0, layout::reserved0 + 1};
  for (std::size_t i = layout::reserved1; i < layout::header_crc; ++i) reserved.push_back(i);
  for (std::size_t i : reserved) {
    Bytes b = encoded(sample(Type::ping));
    b[i] = std::byte{1};
    reseal(b);
    EXPECT_NE(refusal(b, Errc::invalid).find("reserved"), std::string::npos) << i;
  }
}

TEST(MirrorWire, EmptyPayloadWithACrcIsRefused) {
  Header h = sample(Type::ping);
  h.payload_len = 0;
  h.payload_crc = 1;
  EXPECT_NE(refusal(encoded(h), Errc::invalid).find("empty payload"), std::string::npos);
}

// Every request type has exactly one reply type and every reply type answers exactly one
// request: a type missing from either list makes its calls time out on a healthy link.
TEST(MirrorWire, EveryRequestHasItsReplyType) {
  int answered = 0, replies = 0;
  for (std::uint16_t v = kMinType; v <= kMaxType; ++v) {
    const auto t = static_cast<Type>(v);
    if (is_reply(t)) ++replies;
    if (auto r = reply_type(t)) {
      ++answered;
      EXPECT_TRUE(is_reply(*r)) << type_name(t);
      EXPECT_FALSE(is_reply(t)) << type_name(t);
    }
  }
  EXPECT_EQ(answered, replies);
  EXPECT_EQ(reply_type(Type::state), std::nullopt);
  EXPECT_EQ(reply_type(Type::close), std::nullopt);
}

}  // namespace
}  // namespace duplex::mirror::wire
