#include <gtest/gtest.h>

#include <map>

#include "duplex/iscsi/chap.h"
#include "duplex/iscsi/pdu.h"
#include "duplex/iscsi/text.h"

namespace duplex::iscsi {
namespace {

std::span<const std::uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}
std::map<std::string, std::string> as_map(const std::vector<KeyValue>& kvs) {
  std::map<std::string, std::string> m;
  for (const auto& kv : kvs) m[kv.key] = kv.value;
  return m;
}

TEST(Digest, Rfc3720VectorsInWireOrder) {
  std::vector<std::uint8_t> zeros(32, 0), ones(32, 0xff), up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[i] = static_cast<std::uint8_t>(i);
    down[i] = static_cast<std::uint8_t>(31 - i);
  }
  using A = std::array<std::uint8_t, 4>;
  EXPECT_EQ(digest(zeros), (A{0xaa, 0x36, 0x91, 0x8a}));
  EXPECT_EQ(digest(ones), (A{0x43, 0xab, 0xa8, 0x62}));
  EXPECT_EQ(digest(up), (A{0x4e, 0x79, 0xdd, 0x46}));
  EXPECT_EQ(digest(down), (A{0x5c, 0xdb, 0x3f, 0x11}));
}

TEST(Bhs, ValidationRefusesTargetOpcodesAndOversizedSegments) {
  std::array<std::uint8_t, kBhsSize> raw{};
  raw[0] = 0x01;  // SCSI command
  raw[5] = 0x00;
  raw[6] = 0x20;
  raw[7] = 0x00;  // 8192 bytes
  EXPECT_TRUE(validate_bhs(Bhs(raw), 8192));
  EXPECT_EQ(Bhs(raw).data_segment_length(), 8192u);
  EXPECT_FALSE(validate_bhs(Bhs(raw), 8191));
  raw[0] = 0x21;  // a target opcode sent by an initiator
  EXPECT_FALSE(validate_bhs(Bhs(raw), 1 << 20));
  raw[0] = 0x01;
  raw[4] = 255;  // 1020 bytes of AHS
  EXPECT_FALSE(validate_bhs(Bhs(raw), 1 << 20));
}

TEST(Bhs, SerialArithmeticWraps) {
  EXPECT_TRUE(sn_lt(0xfffffff0u, 5));
  EXPECT_FALSE(sn_lt(5, 0xfffffff0u));
  EXPECT_TRUE(sn_le(7, 7));
}

TEST(Text, ParsesPairsAndRefusesMalformedOnes) {
  auto r = parse_text(bytes(std::string("InitiatorName=iqn.x\0SessionType=Normal\0\0\0", 42)));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0], (KeyValue{"InitiatorName", "iqn.x"}));
  EXPECT_FALSE(parse_text(bytes(std::string("NoEquals\0", 9))));
  EXPECT_FALSE(parse_text(bytes(std::string("=v\0", 3))));
  EXPECT_FALSE(parse_text(bytes(std::string("Unterminated=1"))));
  EXPECT_FALSE(parse_text(bytes(std::string(64, 'K') + std::string("=1\0", 3))));
  EXPECT_FALSE(parse_text(bytes(std::string("Bad Key=1\0", 10))));
  const auto enc = encode_text({{"A", "1"}, {"B", "two"}});
  EXPECT_EQ(std::string(enc.begin(), enc.end()), std::string("A=1\0B=two\0", 10));
}

TEST(Negotiation, FollowsEachKeysRule) {
  OperationalNegotiation n(TargetLimits{});
  auto r = n.apply({{"HeaderDigest", "CRC32C,None"},
                    {"DataDigest", "None"},
                    {"MaxRecvDataSegmentLength", "65536"},
                    {"MaxBurstLength", "16776192"},
                    {"FirstBurstLength", "262144"},
                    {"InitialR2T", "No"},
                    {"ImmediateData", "Yes"},
                    {"MaxOutstandingR2T", "1"},
                    {"ErrorRecoveryLevel", "2"},
                    {"MaxConnections", "8"},
                    {"DefaultTime2Wait", "0"},
                    {"X-com.example.Key", "1"}});
  ASSERT_TRUE(r) << r.status().to_string();
  auto m = as_map(*r);
  EXPECT_EQ(m["HeaderDigest"], "CRC32C");
  EXPECT_EQ(m["DataDigest"], "None");
  EXPECT_EQ(m["MaxRecvDataSegmentLength"], "262144");  // our own declaration
  EXPECT_EQ(m["MaxBurstLength"], std::to_string(1 << 20));
  EXPECT_EQ(m["FirstBurstLength"], "262144");
  EXPECT_EQ(m["InitialR2T"], "No");
  EXPECT_EQ(m["ImmediateData"], "Yes");
  EXPECT_EQ(m["ErrorRecoveryLevel"], "0");
  EXPECT_EQ(m["MaxConnections"], "1");
  EXPECT_EQ(m["DefaultTime2Wait"], "2");
  EXPECT_EQ(m["X-com.example.Key"], "NotUnderstood");
  n.finish();
  EXPECT_TRUE(n.params().header_digest);
  EXPECT_EQ(n.params().initiator_mrdsl, 65536u);
  EXPECT_FALSE(n.params().initial_r2t);
}

TEST(Negotiation, RejectsBadValuesAndRepeatedKeys) {
  OperationalNegotiation n(TargetLimits{});
  auto r = n.apply({{"MaxBurstLength", "100"}, {"InitialR2T", "Maybe"}, {"HeaderDigest", "MD5"}});
  ASSERT_TRUE(r);
  auto m = as_map(*r);
  EXPECT_EQ(m["MaxBurstLength"], "Reject");
  EXPECT_EQ(m["InitialR2T"], "Reject");
  EXPECT_EQ(m["HeaderDigest"], "Reject");
  EXPECT_FALSE(n.apply({{"MaxBurstLength", "4096"}})) << "a key negotiated twice is a protocol error";
  EXPECT_FALSE(OperationalNegotiation(TargetLimits{}).apply({{"MaxRecvDataSegmentLength", "12"}}));
}

TEST(Negotiation, FirstBurstNeverExceedsMaxBurstAndTargetDeclaresUnasked) {
  OperationalNegotiation n(TargetLimits{});
  ASSERT_TRUE(n.apply({{"MaxBurstLength", "4096"}}));
  auto fin = as_map(n.finish());
  EXPECT_EQ(fin["MaxRecvDataSegmentLength"], "262144");
  EXPECT_LE(n.params().first_burst_length, n.params().max_burst_length);
}

ChapCredentials creds(bool mutual) {
  ChapCredentials c{"alice", "secret-of-16byte", std::nullopt, std::nullopt};
  if (mutual) {
    c.target_user = "target";
    c.target_secret = "another-secret-16";
  }
  return c;
}

TEST(Chap, ValidatesSecrets) {
  EXPECT_TRUE(ChapTarget::validate(creds(true)));
  EXPECT_FALSE(ChapTarget::validate({"u", "short", std::nullopt, std::nullopt}));
  auto same = creds(true);
  same.target_secret = same.secret;
  EXPECT_FALSE(ChapTarget::validate(same));
}

TEST(Chap, OneWayAndMutual) {
  for (int alg : {5, 7}) {
    ChapTarget t(creds(false));
    auto a = t.on_algorithms(alg == 5 ? "5" : "7,5");
    ASSERT_TRUE(a);
    auto m = as_map(*a);
    EXPECT_EQ(m["CHAP_A"], std::to_string(alg));
    const auto id = static_cast<std::uint8_t>(std::stoi(m["CHAP_I"]));
    const auto c = *ChapTarget::decode_binary(m["CHAP_C"]);
    EXPECT_GE(c.size(), 16u);
    const auto resp = ChapTarget::response(alg, id, "secret-of-16byte", c);
    auto ok = t.on_response({{"CHAP_N", "alice"}, {"CHAP_R", ChapTarget::encode_hex(resp)}});
    ASSERT_TRUE(ok) << ok.status().to_string();
    EXPECT_TRUE(t.authenticated());
  }
  ChapTarget t(creds(true));
  auto m = as_map(*t.on_algorithms("5"));
  const auto c = *ChapTarget::decode_binary(m["CHAP_C"]);
  const auto resp =
      ChapTarget::response(5, static_cast<std::uint8_t>(std::stoi(m["CHAP_I"])), "secret-of-16byte", c);
  const std::vector<std::uint8_t> mine(16, 0x5a);
  auto r = t.on_response({{"CHAP_N", "alice"},
                          {"CHAP_R", ChapTarget::encode_hex(resp)},
                          {"CHAP_I", "9"},
                          {"CHAP_C", ChapTarget::encode_hex(mine)}});
  ASSERT_TRUE(r) << r.status().to_string();
  auto back = as_map(*r);
  EXPECT_EQ(back["CHAP_N"], "target");
  EXPECT_EQ(*ChapTarget::decode_binary(back["CHAP_R"]),
            ChapTarget::response(5, 9, "another-secret-16", mine));
}

TEST(Chap, RefusesWrongSecretReflectionAndMissingMutual) {
  ChapTarget t(creds(false));
  auto m = as_map(*t.on_algorithms("5"));
  const auto c = *ChapTarget::decode_binary(m["CHAP_C"]);
  const auto id = static_cast<std::uint8_t>(std::stoi(m["CHAP_I"]));
  EXPECT_FALSE(t.on_response(
      {{"CHAP_N", "alice"},
       {"CHAP_R", ChapTarget::encode_hex(ChapTarget::response(5, id, "wrong-secret-xxxx", c))}}));
  EXPECT_FALSE(t.on_response({{"CHAP_N", "alice"}, {"CHAP_R", "0x1234"}}));
  EXPECT_FALSE(t.authenticated());

  ChapTarget mt(creds(true));
  auto mm = as_map(*mt.on_algorithms("5"));
  const auto mc = *ChapTarget::decode_binary(mm["CHAP_C"]);
  const auto mresp =
      ChapTarget::response(5, static_cast<std::uint8_t>(std::stoi(mm["CHAP_I"])), "secret-of-16byte", mc);
  EXPECT_FALSE(mt.on_response({{"CHAP_N", "alice"},
                               {"CHAP_R", ChapTarget::encode_hex(mresp)},
                               {"CHAP_I", "1"},
                               {"CHAP_C", mm["CHAP_C"]}}))
      << "a reflected challenge is refused";
  EXPECT_FALSE(mt.on_response({{"CHAP_N", "alice"}, {"CHAP_R", ChapTarget::encode_hex(mresp)}}))
      << "mutual CHAP is configured, so the initiator must ask for it";
  EXPECT_FALSE(ChapTarget(creds(false)).on_algorithms("99"));
}

TEST(Chap, DecodesBase64AndHex) {
  EXPECT_EQ(*ChapTarget::decode_binary("0x0a0B"), (std::vector<std::uint8_t>{0x0a, 0x0b}));
  EXPECT_EQ(*ChapTarget::decode_binary("0bAQID"), (std::vector<std::uint8_t>{1, 2, 3}));
  EXPECT_EQ(*ChapTarget::decode_binary("0bAQ=="), (std::vector<std::uint8_t>{1}));
  EXPECT_FALSE(ChapTarget::decode_binary("0xzz"));
  EXPECT_FALSE(ChapTarget::decode_binary("1234"));
}

}  // namespace
}  // namespace duplex::iscsi
