#include "duplex/scsi/logical_unit.h"

#include <gtest/gtest.h>

#include <cstring>
#include <memory>

#include "duplex/base/endian.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

namespace duplex::scsi {
namespace {

constexpr std::uint64_t kVolBytes = 8 << 20;  // 16384 blocks of 512

class LuTest : public ::testing::Test {
 protected:
  void SetUp() override { make(false); }

  void make(bool read_only) {
    lu_.reset();
    vol_.reset();
    if (!pool_) {
      disk_ = std::make_unique<test::FakeDisk>(32 << 20);
      store::PoolOptions po;
      po.cluster_size = 4096;
      auto p = sync_wait(store::Pool::create(*disk_, po));
      ASSERT_TRUE(p) << p.status().to_string();
      pool_ = std::move(*p);
      auto id = sync_wait(pool_->create_volume("lun0", kVolBytes));
      ASSERT_TRUE(id);
      id_ = *id;
    }
    vol_ = std::make_unique<volume::LocalVolume>(*pool_, id_, "lun0", read_only);
    LuConfig cfg;
    cfg.serial = "0123456789abcdef";
    cfg.target_port_name = "iqn.2026-11.io.duplex:lun0,t,0x0001";
    lu_ = std::make_unique<LogicalUnit>(*vol_, cfg);
  }

  CommandResult run(std::vector<std::uint8_t> cdb, std::vector<std::byte> out = {}, std::size_t in_len = 0,
                    const std::string& initiator = "iqn.init,i,0x1") {
    in_.assign(in_len, std::byte{0});
    out_ = std::move(out);
    nexus_ = Nexus{initiator, 1};
    Command c{cdb, out_, in_, &nexus_};
    return sync_wait(lu_->execute(c));
  }
  const std::uint8_t* in() const { return reinterpret_cast<const std::uint8_t*>(in_.data()); }

  static std::vector<std::uint8_t> rw16(std::uint8_t opcode, std::uint64_t lba, std::uint32_t n,
                                        std::uint8_t flags = 0) {
    std::vector<std::uint8_t> cdb(16, 0);
    cdb[0] = opcode;
    cdb[1] = flags;
    store_be<std::uint64_t>(&cdb[2], lba);
    store_be<std::uint32_t>(&cdb[10], n);
    return cdb;
  }
  static std::vector<std::byte> pattern(std::size_t n, int seed) {
    std::vector<std::byte> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 7 + seed) & 0xff);
    return v;
  }
  static void expect_sense(const CommandResult& r, SenseKey key, Asc code) {
    ASSERT_EQ(r.status, ScsiStatus::check_condition);
    EXPECT_EQ(r.sense.key, key);
    EXPECT_EQ(r.sense.code.asc, code.asc);
    EXPECT_EQ(r.sense.code.ascq, code.ascq);
  }

  std::unique_ptr<test::FakeDisk> disk_;
  std::unique_ptr<store::Pool> pool_;
  store::ObjectId id_ = 0;
  std::unique_ptr<volume::LocalVolume> vol_;
  std::unique_ptr<LogicalUnit> lu_;
  std::vector<std::byte> in_, out_;
  Nexus nexus_;
};

TEST_F(LuTest, StandardInquiryIdentifiesAnAluaBlockDevice) {
  auto r = run({0x12, 0, 0, 0, 255, 0}, {}, 255);
  ASSERT_EQ(r.status, ScsiStatus::good);
  ASSERT_GE(r.data_in_length, 36u);
  EXPECT_EQ(in()[0], 0x00);         // direct access block device, connected
  EXPECT_EQ(in()[2], 0x06);         // SPC-4
  EXPECT_EQ(in()[5] & 0x30, 0x10);  // TPGS implicit
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(in()) + 8, 8), "DUPLEX  ");
  EXPECT_EQ(in()[4] + 5u, r.data_in_length);
}

TEST_F(LuTest, InquiryTruncatesToAllocationLengthAndRejectsBadFields) {
  auto r = run({0x12, 0, 0, 0, 10, 0}, {}, 255);
  EXPECT_EQ(r.data_in_length, 10u);
  r = run({0x12, 0, 0x80, 0, 255, 0}, {}, 255);  // page code without EVPD
  expect_sense(r, SenseKey::illegal_request, asc::kInvalidFieldInCdb);
  EXPECT_TRUE(r.sense.field_pointer_valid);
  EXPECT_EQ(r.sense.field_byte, 2);
}

TEST_F(LuTest, VpdPagesAreListedAscendingAndServed) {
  auto r = run({0x12, 1, 0x00, 0, 255, 0}, {}, 255);
  ASSERT_EQ(r.status, ScsiStatus::good);
  const std::vector<std::uint8_t> pages(in() + 4, in() + 4 + in()[3]);
  EXPECT_EQ(pages, (std::vector<std::uint8_t>{0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2}));
  for (auto p : pages) {
    r = run({0x12, 1, p, 0, 255, 0}, {}, 255);
    ASSERT_EQ(r.status, ScsiStatus::good) << int(p);
    EXPECT_EQ(in()[1], p);
  }
  r = run({0x12, 1, 0x80, 0, 255, 0}, {}, 255);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(in()) + 4, in()[3]), "0123456789abcdef");
  r = run({0x12, 1, 0x42, 0, 255, 0}, {}, 255);
  expect_sense(r, SenseKey::illegal_request, asc::kInvalidFieldInCdb);
}

TEST_F(LuTest, DeviceIdentificationCarriesNaaAndPortDesignators) {
  auto r = run({0x12, 1, 0x83, 0, 255, 0}, {}, 255);
  ASSERT_EQ(r.status, ScsiStatus::good);
  const std::size_t len = load_be<std::uint16_t>(in() + 2) + 4u;
  bool naa = false, relport = false, tpg = false, name = false;
  for (std::size_t pos = 4; pos + 4 <= len; pos += 4 + in()[pos + 3]) {
    const std::uint8_t type = in()[pos + 1] & 0x0f, assoc = (in()[pos + 1] >> 4) & 0x3;
    if (type == 3 && assoc == 0) {
      naa = true;
      EXPECT_EQ(in()[pos + 4] >> 4, 6);  // NAA 6
      const auto n = lu_->naa();
      EXPECT_EQ(0, std::memcmp(in() + pos + 4, n.data(), 16));
    }
    if (type == 4 && assoc == 1) relport = load_be<std::uint16_t>(in() + pos + 6) == 1;
    if (type == 5 && assoc == 1) tpg = load_be<std::uint16_t>(in() + pos + 6) == 1;
    if (type == 8 && assoc == 1) name = true;
  }
  EXPECT_TRUE(naa && relport && tpg && name);
}

TEST_F(LuTest, ThinProvisioningIsAdvertised) {
  auto r = run({0x12, 1, 0xb2, 0, 255, 0}, {}, 255);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(in()[5] & 0xe4, 0xe4);  // LBPU LBPWS LBPWS10 LBPRZ
  EXPECT_EQ(in()[6] & 0x07, 0x02);  // thin
  r = run({0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, {}, 32);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(load_be<std::uint64_t>(in()), kVolBytes / 512 - 1);
  EXPECT_EQ(load_be<std::uint32_t>(in() + 8), 512u);
  EXPECT_EQ(in()[13] & 0x0f, 3);     // 4 KiB physical blocks
  EXPECT_EQ(in()[14] & 0xc0, 0xc0);  // LBPME, LBPRZ
  r = run({0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {}, 8);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(load_be<std::uint32_t>(in()), kVolBytes / 512 - 1);
}

TEST_F(LuTest, WriteThenReadEveryCdbSize) {
  const auto data = pattern(8 * 512, 3);
  auto r = run(rw16(0x8a, 100, 8), data);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(r.data_out_used, data.size());
  r = run(rw16(0x88, 100, 8), {}, 8 * 512);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(0, std::memcmp(in_.data(), data.data(), data.size()));
  std::vector<std::uint8_t> r10{0x28, 0, 0, 0, 0, 100, 0, 0, 8, 0};
  r = run(r10, {}, 8 * 512);
  EXPECT_EQ(0, std::memcmp(in_.data(), data.data(), data.size()));
  std::vector<std::uint8_t> r12{0xa8, 0, 0, 0, 0, 100, 0, 0, 0, 8, 0, 0};
  r = run(r12, {}, 8 * 512);
  EXPECT_EQ(0, std::memcmp(in_.data(), data.data(), data.size()));
  std::vector<std::uint8_t> r6{0x08, 0, 0, 100, 8, 0};
  r = run(r6, {}, 8 * 512);
  EXPECT_EQ(0, std::memcmp(in_.data(), data.data(), data.size()));
}

TEST_F(LuTest, OutOfRangeGetsLbaOutOfRangeAndChangesNothing) {
  const std::uint64_t last = kVolBytes / 512 - 1;
  auto r = run(rw16(0x8a, last, 2), pattern(1024, 1));
  expect_sense(r, SenseKey::illegal_request, asc::kLbaOutOfRange);
  r = run(rw16(0x88, last + 1, 1), {}, 512);
  expect_sense(r, SenseKey::illegal_request, asc::kLbaOutOfRange);
  r = run(rw16(0x88, ~0ull, 1), {}, 512);  // overflow of lba + length
  expect_sense(r, SenseKey::illegal_request, asc::kLbaOutOfRange);
  r = run(rw16(0x88, last, 1), {}, 512);
  ASSERT_EQ(r.status, ScsiStatus::good);
  for (auto b : in_) EXPECT_EQ(b, std::byte{0});
}

TEST_F(LuTest, ReadOnlyMappingRefusesEveryModification) {
  make(true);
  auto r = run({0x1a, 0, 0x3f, 0, 255, 0}, {}, 255);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(in()[2] & 0x80, 0x80);  // WP
  expect_sense(run(rw16(0x8a, 0, 1), pattern(512, 1)), SenseKey::data_protect, asc::kWriteProtected);
  expect_sense(run(rw16(0x93, 0, 1, 0x08), pattern(512, 0)), SenseKey::data_protect, asc::kWriteProtected);
  std::vector<std::uint8_t> unmap{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0};
  expect_sense(run(unmap, std::vector<std::byte>(24)), SenseKey::data_protect, asc::kWriteProtected);
  std::vector<std::uint8_t> caw(16, 0);
  caw[0] = 0x89;
  caw[13] = 1;
  expect_sense(run(caw, std::vector<std::byte>(1024)), SenseKey::data_protect, asc::kWriteProtected);
  EXPECT_EQ(run(rw16(0x88, 0, 1), {}, 512).status, ScsiStatus::good);
}

// The ACL's read-only mapping is per nexus: the same LU stays writable through another nexus.
TEST_F(LuTest, ReadOnlyNexusIsWriteProtectedWhileOthersWrite) {
  auto as_ro = [&](std::vector<std::uint8_t> cdb, std::vector<std::byte> out = {}, std::size_t in_len = 0) {
    in_.assign(in_len, std::byte{0});
    out_ = std::move(out);
    nexus_ = Nexus{"iqn.backup,i,0x1", 1};
    nexus_.read_only = true;
    Command c{cdb, out_, in_, &nexus_};
    return sync_wait(lu_->execute(c));
  };
  EXPECT_EQ(run(rw16(0x8a, 0, 1), pattern(512, 3)).status, ScsiStatus::good);
  auto ms = as_ro({0x1a, 0, 0x3f, 0, 255, 0}, {}, 255);
  ASSERT_EQ(ms.status, ScsiStatus::good);
  EXPECT_EQ(in()[2] & 0x80, 0x80);  // WP for the read-only nexus
  expect_sense(as_ro(rw16(0x8a, 0, 1), pattern(512, 9)), SenseKey::data_protect, asc::kWriteProtected);
  std::vector<std::uint8_t> ws{0x41, 0x08, 0, 0, 0, 0, 0, 0, 1, 0};  // WRITE SAME(10) with UNMAP
  expect_sense(as_ro(ws, std::vector<std::byte>(512)), SenseKey::data_protect, asc::kWriteProtected);
  std::vector<std::uint8_t> prout{0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0};  // PR OUT REGISTER
  expect_sense(as_ro(prout, std::vector<std::byte>(24)), SenseKey::data_protect, asc::kWriteProtected);
  // What the read-only nexus reads is what the writer wrote; the writer still sees WP clear.
  auto rd = as_ro(rw16(0x88, 0, 1), {}, 512);
  ASSERT_EQ(rd.status, ScsiStatus::good);
  EXPECT_TRUE(std::equal(in_.begin(), in_.end(), pattern(512, 3).begin()));
  ASSERT_EQ(run({0x1a, 0, 0x3f, 0, 255, 0}, {}, 255).status, ScsiStatus::good);
  EXPECT_EQ(in()[2] & 0x80, 0);
}

TEST_F(LuTest, CompareAndWriteIsAtomicCompare) {
  auto v1 = pattern(512, 9);
  ASSERT_EQ(run(rw16(0x8a, 7, 1), v1).status, ScsiStatus::good);
  std::vector<std::uint8_t> caw(16, 0);
  caw[0] = 0x89;
  store_be<std::uint64_t>(&caw[2], 7);
  caw[13] = 1;
  auto v2 = pattern(512, 77);
  std::vector<std::byte> payload(v1);
  payload.insert(payload.end(), v2.begin(), v2.end());
  ASSERT_EQ(run(caw, payload).status, ScsiStatus::good);
  // Now the medium holds v2: comparing against v1 fails at the first differing byte.
  auto r = run(caw, payload);
  expect_sense(r, SenseKey::miscompare, asc::kMiscompareDuringVerify);
  EXPECT_TRUE(r.sense.information_valid);
  EXPECT_EQ(r.sense.information, 0u);
  run(rw16(0x88, 7, 1), {}, 512);
  EXPECT_EQ(0, std::memcmp(in_.data(), v2.data(), 512));
}

TEST_F(LuTest, UnmapAndWriteSameUnmapReadZeroesAndFreeSpace) {
  const auto before = pool_->info().free_clusters;
  ASSERT_EQ(run(rw16(0x8a, 0, 64), pattern(64 * 512, 5)).status, ScsiStatus::good);
  EXPECT_LT(pool_->info().free_clusters, before);
  std::vector<std::byte> param(24, std::byte{0});
  store_be<std::uint16_t>(param.data(), 22);
  store_be<std::uint16_t>(param.data() + 2, 16);
  store_be<std::uint64_t>(param.data() + 8, 0);
  store_be<std::uint32_t>(param.data() + 16, 32);
  std::vector<std::uint8_t> unmap{0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0};
  ASSERT_EQ(run(unmap, param).status, ScsiStatus::good);
  ASSERT_EQ(run(rw16(0x93, 32, 32, 0x08), std::vector<std::byte>(512)).status, ScsiStatus::good);
  ASSERT_EQ(sync_wait(pool_->flush()).is_ok(), true);
  EXPECT_EQ(pool_->info().free_clusters, before);
  run(rw16(0x88, 0, 64), {}, 64 * 512);
  for (auto b : in_) ASSERT_EQ(b, std::byte{0});
  // An out-of-range descriptor fails the whole command.
  store_be<std::uint64_t>(param.data() + 8, kVolBytes / 512);
  expect_sense(run(unmap, param), SenseKey::illegal_request, asc::kLbaOutOfRange);
}

TEST_F(LuTest, WriteSameReplicatesTheBlockAndRefusesZeroLength) {
  auto block = pattern(512, 42);
  ASSERT_EQ(run(rw16(0x93, 10, 20), block).status, ScsiStatus::good);
  run(rw16(0x88, 10, 20), {}, 20 * 512);
  for (int i = 0; i < 20; ++i) ASSERT_EQ(0, std::memcmp(in_.data() + i * 512, block.data(), 512));
  expect_sense(run(rw16(0x93, 10, 0), block), SenseKey::illegal_request, asc::kInvalidFieldInCdb);
}

TEST_F(LuTest, VerifyComparesWithByteCheck) {
  auto data = pattern(1024, 11);
  ASSERT_EQ(run(rw16(0x8a, 50, 2), data).status, ScsiStatus::good);
  EXPECT_EQ(run(rw16(0x8f, 50, 2, 0x02), data).status, ScsiStatus::good);
  data[700] ^= std::byte{1};
  auto r = run(rw16(0x8f, 50, 2, 0x02), data);
  expect_sense(r, SenseKey::miscompare, asc::kMiscompareDuringVerify);
  EXPECT_EQ(r.sense.information, 700u);
  EXPECT_EQ(run(rw16(0x8f, 50, 2, 0x00), {}).status, ScsiStatus::good);
}

TEST_F(LuTest, UnitAttentionAfterResetIsReportedOncePerNexus) {
  EXPECT_EQ(run({0, 0, 0, 0, 0, 0}, {}, 0, "a").status, ScsiStatus::good);
  EXPECT_EQ(run({0, 0, 0, 0, 0, 0}, {}, 0, "b").status, ScsiStatus::good);
  lu_->reset();
  // INQUIRY neither reports nor clears it.
  EXPECT_EQ(run({0x12, 0, 0, 0, 36, 0}, {}, 36, "a").status, ScsiStatus::good);
  expect_sense(run({0, 0, 0, 0, 0, 0}, {}, 0, "a"), SenseKey::unit_attention, asc::kLunReset);
  EXPECT_EQ(run({0, 0, 0, 0, 0, 0}, {}, 0, "a").status, ScsiStatus::good);
  // REQUEST SENSE returns and clears it for the other nexus.
  auto r = run({0x03, 0, 0, 0, 18, 0}, {}, 18, "b");
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(in()[2] & 0x0f, 0x06);
  EXPECT_EQ(in()[12], 0x29);
  EXPECT_EQ(run({0, 0, 0, 0, 0, 0}, {}, 0, "b").status, ScsiStatus::good);
}

TEST_F(LuTest, ReportSupportedOperationCodesMatchesDispatch) {
  std::vector<std::uint8_t> all{0xa3, 0x0c, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0};
  auto r = run(all, {}, 4096);
  ASSERT_EQ(r.status, ScsiStatus::good);
  const std::uint32_t len = load_be<std::uint32_t>(in());
  ASSERT_EQ(len % 8, 0u);
  for (std::uint32_t pos = 4; pos < len + 4; pos += 8) {
    const std::uint8_t opc = in()[pos];
    const bool has_sa = in()[pos + 5] & 1;
    const std::uint16_t sa = load_be<std::uint16_t>(in() + pos + 2);
    std::vector<std::uint8_t> one{0xa3,
                                  0x0c,
                                  static_cast<std::uint8_t>(has_sa ? 2 : 1),
                                  opc,
                                  static_cast<std::uint8_t>(sa >> 8),
                                  static_cast<std::uint8_t>(sa),
                                  0,
                                  0,
                                  1,
                                  0,
                                  0,
                                  0};
    std::vector<std::byte> save(in_.begin(), in_.end());
    auto r1 = run(one, {}, 256);
    ASSERT_EQ(r1.status, ScsiStatus::good) << int(opc);
    EXPECT_EQ(in()[1] & 0x07, 3) << int(opc);
    EXPECT_EQ(in()[4], opc);
    in_ = save;
  }
  std::vector<std::uint8_t> unsupported{0xa3, 0x0c, 1, 0xc7, 0, 0, 0, 0, 1, 0, 0, 0};
  ASSERT_EQ(run(unsupported, {}, 256).status, ScsiStatus::good);
  EXPECT_EQ(in()[1] & 0x07, 1);
}

TEST_F(LuTest, ReportTargetPortGroupsListsThisGroupActiveOptimized) {
  std::vector<std::uint8_t> rtpg{0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  auto r = run(rtpg, {}, 256);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(in()[4], 0x10);  // extended header
  EXPECT_EQ(in()[8] & 0x0f, 0);
  EXPECT_EQ(load_be<std::uint16_t>(in() + 10), 1);
  EXPECT_EQ(in()[15], 1);  // one port
}

// Two nodes' groups as the daemon builds them for a mirrored volume: this node (group 1, port 1)
// and its peer (group 2, port 2).
std::vector<TargetPortGroup> two_groups(AluaState mine, AluaState peer) {
  return {TargetPortGroup{1, mine, mine == AluaState::active_optimized, {1}},
          TargetPortGroup{2, peer, peer == AluaState::active_optimized, {2}}};
}

const std::vector<std::uint8_t> kRtpg{0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
const std::vector<std::uint8_t> kTur{0, 0, 0, 0, 0, 0};

TEST_F(LuTest, PortGroupChangeRaisesAsymmetricAccessStateChangedOncePerNexus) {
  EXPECT_EQ(run(kTur, {}, 0, "a").status, ScsiStatus::good);
  EXPECT_EQ(run(kTur, {}, 0, "b").status, ScsiStatus::good);
  lu_->set_port_groups(two_groups(AluaState::active_optimized, AluaState::active_non_optimized));
  // INQUIRY answers without clearing it (SAM-5 5.14); the next command reports it, once.
  EXPECT_EQ(run({0x12, 0, 0, 0, 36, 0}, {}, 36, "a").status, ScsiStatus::good);
  expect_sense(run(kTur, {}, 0, "a"), SenseKey::unit_attention, asc::kAsymmetricAccessStateChanged);
  EXPECT_EQ(run(kTur, {}, 0, "a").status, ScsiStatus::good);
  expect_sense(run(kTur, {}, 0, "b"), SenseKey::unit_attention, asc::kAsymmetricAccessStateChanged);
  ASSERT_EQ(run(kRtpg, {}, 256, "b").status, ScsiStatus::good);
  ASSERT_EQ(load_be<std::uint32_t>(in()), 24u);  // two descriptors of 12 bytes (one port each)
  EXPECT_EQ(in()[4], 0x80 | 0x0);                // PREF, active/optimized
  EXPECT_EQ(load_be<std::uint16_t>(in() + 6), 1);
  EXPECT_EQ(load_be<std::uint16_t>(in() + 14), 1);  // relative port 1
  EXPECT_EQ(in()[16], 0x1);                         // the peer: active/non-optimized
  EXPECT_EQ(load_be<std::uint16_t>(in() + 18), 2);
  EXPECT_EQ(load_be<std::uint16_t>(in() + 26), 2);  // the peer's relative port
  // The same groups again: nothing changed, no unit attention.
  lu_->set_port_groups(two_groups(AluaState::active_optimized, AluaState::active_non_optimized));
  EXPECT_EQ(run(kTur, {}, 0, "a").status, ScsiStatus::good);
}

// A grown volume (docs/mirror.md "Growing a mirrored volume"): every nexus that used the LU hears
// CAPACITY DATA HAS CHANGED once, READ CAPACITY reports the new size, and an LBA past the old
// end is writable. A nexus that first comes after the grow has nothing to hear.
TEST_F(LuTest, AGrownVolumeRaisesCapacityDataHasChangedOncePerNexus) {
  const std::vector<std::uint8_t> rc16 = {0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0};
  ASSERT_EQ(run(rc16, {}, 32, "a").status, ScsiStatus::good);
  EXPECT_EQ(load_be<std::uint64_t>(in()), kVolBytes / 512 - 1);
  EXPECT_EQ(run(kTur, {}, 0, "b").status, ScsiStatus::good);
  ASSERT_TRUE(sync_wait(pool_->grow(id_, 2 * kVolBytes)));
  EXPECT_EQ(run({0x12, 0, 0, 0, 36, 0}, {}, 36, "a").status, ScsiStatus::good) << "INQUIRY keeps it";
  expect_sense(run(rc16, {}, 32, "a"), SenseKey::unit_attention, asc::kCapacityDataChanged);
  ASSERT_EQ(run(rc16, {}, 32, "a").status, ScsiStatus::good);
  EXPECT_EQ(load_be<std::uint64_t>(in()), 2 * kVolBytes / 512 - 1);
  expect_sense(run(kTur, {}, 0, "b"), SenseKey::unit_attention, asc::kCapacityDataChanged);
  EXPECT_EQ(run(kTur, {}, 0, "b").status, ScsiStatus::good);
  EXPECT_EQ(run(kTur, {}, 0, "c").status, ScsiStatus::good) << "a new nexus saw no old capacity";
  const auto data = pattern(512, 5);
  EXPECT_EQ(run(rw16(0x8a, kVolBytes / 512, 1), data, 0, "a").status, ScsiStatus::good);
  ASSERT_EQ(run(rw16(0x88, kVolBytes / 512, 1), {}, 512, "b").status, ScsiStatus::good);
  EXPECT_EQ(in_, data);
}

TEST_F(LuTest, UnavailablePortAnswersNotReadyExceptWhatSpc4Allows) {
  EXPECT_EQ(run(kTur).status, ScsiStatus::good);  // the nexus exists before the change
  lu_->set_port_groups(two_groups(AluaState::unavailable, AluaState::active_optimized));
  expect_sense(run(kTur), SenseKey::unit_attention, asc::kAsymmetricAccessStateChanged);
  expect_sense(run(kTur), SenseKey::not_ready, asc::kNotReadyUnavailable);
  expect_sense(run(rw16(0x88, 0, 1), {}, 512), SenseKey::not_ready, asc::kNotReadyUnavailable);
  expect_sense(run(rw16(0x8a, 0, 1), pattern(512, 1)), SenseKey::not_ready, asc::kNotReadyUnavailable);
  expect_sense(run({0x1a, 0, 0x3f, 0, 255, 0}, {}, 255), SenseKey::not_ready, asc::kNotReadyUnavailable);
  EXPECT_EQ(run({0x12, 0, 0, 0, 36, 0}, {}, 36).status, ScsiStatus::good);
  EXPECT_EQ(in()[0], 0x00);  // the LU is still here: only this port cannot serve it
  EXPECT_EQ(run({0x03, 0, 0, 0, 18, 0}, {}, 18).status, ScsiStatus::good);
  ASSERT_EQ(run(kRtpg, {}, 256).status, ScsiStatus::good);
  EXPECT_EQ(in()[4] & 0x0f, 0x3);  // this group unavailable
  EXPECT_EQ(in()[16], 0x80);       // the peer's active/optimized and preferred
  // Back in: one unit attention, then I/O.
  lu_->set_port_groups(two_groups(AluaState::active_non_optimized, AluaState::active_optimized));
  expect_sense(run(rw16(0x88, 0, 1), {}, 512), SenseKey::unit_attention, asc::kAsymmetricAccessStateChanged);
  EXPECT_EQ(run(rw16(0x88, 0, 1), {}, 512).status, ScsiStatus::good);
}

TEST_F(LuTest, StandbyPortAllowsModeAndReservationCommands) {
  EXPECT_EQ(run(kTur).status, ScsiStatus::good);
  lu_->set_port_groups(two_groups(AluaState::standby, AluaState::active_optimized));
  expect_sense(run(kTur), SenseKey::unit_attention, asc::kAsymmetricAccessStateChanged);
  expect_sense(run(rw16(0x88, 0, 1), {}, 512), SenseKey::not_ready, asc::kNotReadyStandby);
  EXPECT_EQ(run({0x1a, 0, 0x3f, 0, 255, 0}, {}, 255).status, ScsiStatus::good);
  EXPECT_EQ(run({0x5e, 0x00, 0, 0, 0, 0, 0, 1, 0, 0}, {}, 256).status, ScsiStatus::good);
}

TEST_F(LuTest, RefreshHookRunsBeforeEveryCommand) {
  int calls = 0;
  AluaState next = AluaState::active_optimized;
  lu_->set_refresh_hook([&](LogicalUnit& lu) {
    ++calls;
    lu.set_port_groups(two_groups(next, AluaState::active_non_optimized));
  });
  // The first refresh installs the two groups before this new nexus is known: nothing to hear.
  EXPECT_EQ(run(kTur).status, ScsiStatus::good);
  calls = 0;
  EXPECT_EQ(run(kTur).status, ScsiStatus::good);
  EXPECT_EQ(calls, 1);
  next = AluaState::unavailable;  // the cluster fenced this node between two commands
  expect_sense(run(kTur), SenseKey::unit_attention, asc::kAsymmetricAccessStateChanged);
  expect_sense(run(kTur), SenseKey::not_ready, asc::kNotReadyUnavailable);
  EXPECT_EQ(lu_->own_state(), AluaState::unavailable);
}

TEST_F(LuTest, GoneLogicalUnitIsNotSupportedAndInquirySaysNoneHere) {
  EXPECT_EQ(run(kTur).status, ScsiStatus::good);
  lu_->reset();  // a pending unit attention does not hide the loss
  lu_->set_gone();
  expect_sense(run(kTur), SenseKey::illegal_request, asc::kLunNotSupported);
  expect_sense(run(rw16(0x88, 0, 1), {}, 512), SenseKey::illegal_request, asc::kLunNotSupported);
  expect_sense(run(rw16(0x8a, 0, 1), pattern(512, 1)), SenseKey::illegal_request, asc::kLunNotSupported);
  expect_sense(run(kRtpg, {}, 256), SenseKey::illegal_request, asc::kLunNotSupported);
  ASSERT_EQ(run({0x12, 0, 0, 0, 36, 0}, {}, 36).status, ScsiStatus::good);
  EXPECT_EQ(in()[0], 0x7f);
}

TEST_F(LuTest, ModeSenseAndSelect) {
  auto r = run({0x5a, 0, 0x08, 0, 0, 0, 0, 1, 0, 0}, {}, 256);
  ASSERT_EQ(r.status, ScsiStatus::good);
  const std::size_t bdl = load_be<std::uint16_t>(in() + 6);
  const std::vector<std::uint8_t> page(in() + 8 + bdl, in() + 8 + bdl + 20);
  EXPECT_EQ(page[0] & 0x3f, 0x08);
  EXPECT_EQ(page[2] & 0x04, 0x04);  // WCE
  expect_sense(run({0x1a, 0, 0xc8, 0, 255, 0}, {}, 255), SenseKey::illegal_request,
               asc::kSavingParametersNotSupported);
  // Selecting the current caching page is accepted; turning WCE off is not (we would not honour it).
  std::vector<std::byte> sel(4 + 20, std::byte{0});
  std::memcpy(sel.data() + 4, page.data(), 20);
  std::vector<std::uint8_t> ms6{0x15, 0x10, 0, 0, 24, 0};
  EXPECT_EQ(run(ms6, sel).status, ScsiStatus::good);
  sel[4 + 2] = std::byte{0};
  expect_sense(run(ms6, sel), SenseKey::illegal_request, asc::kInvalidFieldInParameterList);
}

TEST_F(LuTest, GetLbaStatusReportsMappedAndDeallocated) {
  ASSERT_EQ(run(rw16(0x8a, 16, 8), pattern(4096, 1)).status, ScsiStatus::good);
  auto r = run({0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0}, {}, 4096);
  ASSERT_EQ(r.status, ScsiStatus::good);
  EXPECT_EQ(load_be<std::uint64_t>(in() + 8), 0u);
  EXPECT_EQ(load_be<std::uint32_t>(in() + 16), 16u);
  EXPECT_EQ(in()[20] & 0x0f, 1);  // deallocated
  EXPECT_EQ(load_be<std::uint64_t>(in() + 24), 16u);
  EXPECT_EQ(in()[36] & 0x0f, 0);  // mapped
}

TEST_F(LuTest, UnknownOpcodeAndReportLuns) {
  expect_sense(run({0xc7, 0, 0, 0, 0, 0}, {}, 0), SenseKey::illegal_request, asc::kInvalidOpcode);
  std::vector<std::uint8_t> rl{0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0};
  std::vector<std::byte> buf(256);
  auto r = report_luns(rl, {0, 1, 300}, buf);
  ASSERT_EQ(r.status, ScsiStatus::good);
  const auto* b = reinterpret_cast<const std::uint8_t*>(buf.data());
  EXPECT_EQ(load_be<std::uint32_t>(b), 24u);
  EXPECT_EQ(b[17], 1);
  EXPECT_EQ(b[24], 0x41);
  rl[9] = 0;
  rl[8] = 0;
  rl[9] = 8;
  EXPECT_EQ(report_luns(rl, {0}, buf).status, ScsiStatus::check_condition);
}

}  // namespace
}  // namespace duplex::scsi
