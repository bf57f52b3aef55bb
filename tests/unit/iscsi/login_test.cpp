#include "duplex/iscsi/login.h"

#include <gtest/gtest.h>

#include <map>

namespace duplex::iscsi {
namespace {

constexpr const char* kTarget = "iqn.2026-11.io.duplex:demo";

LoginPolicy policy(bool chap) {
  LoginPolicy p;
  p.target_exists = [](const std::string& t) { return t == kTarget; };
  p.allowed = [](const std::string& i, const std::string&) { return i != "iqn.denied"; };
  p.chap_for = [chap](const std::string& t) -> std::optional<ChapCredentials> {
    if (chap && !t.empty()) return ChapCredentials{"alice", "secret-of-16byte", std::nullopt, std::nullopt};
    return std::nullopt;
  };
  p.new_tsih = [] { return std::uint16_t{7}; };
  p.tpgt = 2;
  return p;
}

struct Req {
  std::uint8_t csg, nsg;
  bool transit;
  std::vector<KeyValue> kvs;
  bool cont = false;
};

LoginPdu send(LoginMachine& m, const Req& r) {
  BhsBuilder b(Opcode::login_request);
  b.flags(static_cast<std::uint8_t>((r.transit ? 0x80 : 0) | (r.cont ? 0x40 : 0) | (r.csg << 2) |
                                    (r.transit ? r.nsg : 0)))
      .copy(8, std::array<std::uint8_t, 6>{0x40, 0, 0, 0, 0, 1})
      .itt(1)
      .u32(24, 10)
      .u32(28, 100);
  const auto data = encode_text(r.kvs);
  b.data_segment_length(static_cast<std::uint32_t>(data.size()));
  return m.on_request(Bhs(b.bytes()), data);
}

std::uint16_t status(const LoginPdu& p) { return static_cast<std::uint16_t>(p.bhs[36] << 8 | p.bhs[37]); }
std::map<std::string, std::string> keys(const LoginPdu& p) {
  std::map<std::string, std::string> m;
  auto kvs = parse_text(p.data);
  for (const auto& kv : *kvs) m[kv.key] = kv.value;
  return m;
}

std::vector<KeyValue> first(const std::string& initiator = "iqn.init") {
  return {{"InitiatorName", initiator}, {"SessionType", "Normal"}, {"TargetName", kTarget}};
}

TEST(Login, PlainLoginReachesFullFeature) {
  LoginMachine m(policy(false));
  auto kvs = first();
  kvs.push_back({"MaxRecvDataSegmentLength", "65536"});
  kvs.push_back({"ImmediateData", "Yes"});
  auto r = send(m, {1, 3, true, kvs});
  EXPECT_EQ(status(r), 0);
  EXPECT_EQ(r.bhs[0] & 0x3f, 0x23);
  EXPECT_EQ(r.bhs[1] & 0x83, 0x83) << "T set, NSG full feature";
  EXPECT_EQ(Bhs(r.bhs).u16(14), 7) << "TSIH assigned";
  EXPECT_EQ(Bhs(r.bhs).u32(28), 10u) << "ExpCmdSN follows the request's CmdSN";
  auto k = keys(r);
  EXPECT_EQ(k["TargetPortalGroupTag"], "2");
  EXPECT_EQ(k["MaxRecvDataSegmentLength"], "262144");
  EXPECT_TRUE(m.full_feature());
  EXPECT_EQ(m.params().initiator_mrdsl, 65536u);
  EXPECT_EQ(m.initiator_port(), "iqn.init,i,0x400000000001");
}

TEST(Login, UnknownTargetDeniedInitiatorAndMissingName) {
  {
    LoginMachine m(policy(false));
    auto r = send(m, {1, 3, true, {{"InitiatorName", "iqn.init"}, {"TargetName", "iqn.nope"}}});
    EXPECT_EQ(status(r), 0x0203);
    EXPECT_TRUE(m.close_after());
  }
  {
    LoginMachine m(policy(false));
    EXPECT_EQ(status(send(m, {1, 3, true, first("iqn.denied")})), 0x0202);
  }
  {
    LoginMachine m(policy(false));
    EXPECT_EQ(status(send(m, {1, 3, true, {{"TargetName", kTarget}}})), 0x0207);
  }
  {
    LoginMachine m(policy(false));
    EXPECT_EQ(status(send(m, {1, 1, true, first()})), 0x0200) << "NSG must move forward";
  }
}

TEST(Login, DiscoveryNeedsNoTargetName) {
  LoginMachine m(policy(true));
  auto r = send(m, {1, 3, true, {{"InitiatorName", "iqn.init"}, {"SessionType", "Discovery"}}});
  EXPECT_EQ(status(r), 0);
  EXPECT_TRUE(m.params().discovery);
  EXPECT_EQ(keys(r).count("TargetPortalGroupTag"), 0u);
}

TEST(Login, ChapRequiredCannotBeSkipped) {
  LoginMachine m(policy(true));
  EXPECT_EQ(status(send(m, {1, 3, true, first()})), 0x0201);
}

TEST(Login, ChapExchangeThenOperationalStage) {
  LoginMachine m(policy(true));
  auto kvs = first();
  kvs.push_back({"AuthMethod", "CHAP,None"});
  auto r1 = send(m, {0, 1, true, kvs});
  ASSERT_EQ(status(r1), 0) << m.error();
  EXPECT_EQ(keys(r1)["AuthMethod"], "CHAP");
  EXPECT_FALSE(r1.bhs[1] & 0x80) << "no transit before authentication";
  auto r2 = send(m, {0, 1, false, {{"CHAP_A", "5"}}});
  auto k2 = keys(r2);
  ASSERT_EQ(k2["CHAP_A"], "5");
  const auto c = *ChapTarget::decode_binary(k2["CHAP_C"]);
  const auto resp =
      ChapTarget::response(5, static_cast<std::uint8_t>(std::stoi(k2["CHAP_I"])), "secret-of-16byte", c);
  auto r3 = send(m, {0, 1, true, {{"CHAP_N", "alice"}, {"CHAP_R", ChapTarget::encode_hex(resp)}}});
  ASSERT_EQ(status(r3), 0) << m.error();
  EXPECT_EQ(r3.bhs[1] & 0x83, 0x81) << "T set, NSG operational";
  auto r4 = send(m, {1, 3, true, {{"HeaderDigest", "None"}}});
  ASSERT_EQ(status(r4), 0) << m.error();
  EXPECT_TRUE(m.full_feature());
}

TEST(Login, WrongChapSecretFails) {
  LoginMachine m(policy(true));
  auto kvs = first();
  kvs.push_back({"AuthMethod", "CHAP"});
  send(m, {0, 1, true, kvs});
  auto k = keys(send(m, {0, 1, false, {{"CHAP_A", "5"}}}));
  const auto c = *ChapTarget::decode_binary(k["CHAP_C"]);
  const auto bad =
      ChapTarget::response(5, static_cast<std::uint8_t>(std::stoi(k["CHAP_I"])), "not-the-secret!!", c);
  auto r = send(m, {0, 1, true, {{"CHAP_N", "alice"}, {"CHAP_R", ChapTarget::encode_hex(bad)}}});
  EXPECT_EQ(status(r), 0x0201);
  EXPECT_FALSE(m.full_feature());
}

TEST(Login, TextContinuationIsCollected) {
  LoginMachine m(policy(false));
  const auto all = encode_text(first());
  const std::size_t half = all.size() / 2;
  BhsBuilder b(Opcode::login_request);
  b.flags(0x40 | (1 << 2)).itt(1).u32(24, 1).copy(8, std::array<std::uint8_t, 6>{0x40, 0, 0, 0, 0, 1});
  auto ack = m.on_request(Bhs(b.bytes()), std::span(all).subspan(0, half));
  EXPECT_EQ(status(ack), 0);
  EXPECT_TRUE(ack.data.empty());
  b.flags(0x80 | (1 << 2) | 3);
  auto r = m.on_request(Bhs(b.bytes()), std::span(all).subspan(half));
  EXPECT_EQ(status(r), 0) << m.error();
  EXPECT_TRUE(m.full_feature());
}

TEST(Login, UnsupportedVersionAndSecurityKeysLate) {
  LoginMachine m(policy(false));
  BhsBuilder b(Opcode::login_request);
  b.flags(0x80 | (1 << 2) | 3).byte(3, 1);
  EXPECT_EQ(status(m.on_request(Bhs(b.bytes()), {})), 0x0205);
  LoginMachine m2(policy(false));
  auto kvs = first();
  kvs.push_back({"CHAP_A", "5"});
  EXPECT_EQ(status(send(m2, {1, 3, true, kvs})), 0x0200);
}

}  // namespace
}  // namespace duplex::iscsi
