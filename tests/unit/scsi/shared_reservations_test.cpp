// One reservation state for an LU served by two nodes (docs/multipath.md "Persistent
// reservations"), without the mirror: a volume wrapper plays the mirror's part, running every
// change on the "owner" LU (port 1) and installing the result on the other (port 2) before the
// answer, as MirrorVolume does. Checked here: changes through either LU are seen through both; the
// unit attentions a change owes land on the LU that has the nexus; a LUN reset reaches both; a
// state blob that does not parse changes nothing.
#include <gtest/gtest.h>

#include <memory>

#include "duplex/base/endian.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/scsi/reservations.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

namespace duplex::scsi {
namespace {

// Forwards I/O to the shared local volume; shared state changes run on `owner` and are installed
// on every other keeper attached to the same router.
struct Router {
  std::vector<std::weak_ptr<volume::SharedStateKeeper>> keepers;  // [0] is the owner
};

class RoutedVolume final : public volume::BlockVolume {
 public:
  RoutedVolume(volume::BlockVolume& v, Router& r) : v_(v), r_(r) {}
  const std::string& name() const override { return v_.name(); }
  Uuid uuid() const override { return v_.uuid(); }
  std::uint64_t size() const override { return v_.size(); }
  bool read_only() const override { return false; }
  std::uint32_t preferred_block_size() const override { return v_.preferred_block_size(); }
  Task<Status> read(std::uint64_t o, std::span<std::byte> b) override { return v_.read(o, b); }
  Task<Status> write(std::uint64_t o, std::span<const std::byte> b, bool fua) override {
    return v_.write(o, b, fua);
  }
  Task<Status> flush() override { return v_.flush(); }
  Task<Status> trim(std::uint64_t o, std::uint64_t l) override { return v_.trim(o, l); }
  Task<Status> write_zeroes(std::uint64_t o, std::uint64_t l, bool nu, bool fua) override {
    return v_.write_zeroes(o, l, nu, fua);
  }
  Result<std::vector<volume::Extent>> block_status(std::uint64_t o, std::uint64_t l) const override {
    return v_.block_status(o, l);
  }
  Result<std::vector<volume::Extent>> changed_since(const std::string& s, std::uint64_t o,
                                                    std::uint64_t l) const override {
    return v_.changed_since(s, o, l);
  }
  bool attach_shared_state(std::weak_ptr<volume::SharedStateKeeper> k) override {
    r_.keepers.push_back(std::move(k));
    return true;
  }
  Task<Result<std::vector<std::byte>>> shared_change(std::vector<std::byte> request) override {
    bool changed = false;
    auto owner = r_.keepers.at(0).lock();
    auto answer = owner->apply_change(request, changed);
    if (changed)
      for (std::size_t i = 1; i < r_.keepers.size(); ++i) {
        Status st = r_.keepers[i].lock()->import_state(owner->export_state(true), true);
        if (!st.is_ok()) co_return st;
      }
    co_return answer;
  }

 private:
  volume::BlockVolume& v_;
  Router& r_;
};

class SharedPrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_ = std::make_unique<test::FakeDisk>(32 << 20);
    store::PoolOptions po;
    po.cluster_size = 4096;
    auto p = sync_wait(store::Pool::create(*disk_, po));
    ASSERT_TRUE(p);
    pool_ = std::move(*p);
    auto id = sync_wait(pool_->create_volume("lun0", 8 << 20));
    ASSERT_TRUE(id);
    local_ = std::make_unique<volume::LocalVolume>(*pool_, *id, "lun0");
    for (int i = 0; i < 2; ++i) {
      vols_[i] = std::make_unique<RoutedVolume>(*local_, router_);
      LuConfig cfg;
      cfg.serial = "0123456789abcdef";
      cfg.relative_port = static_cast<std::uint16_t>(i + 1);
      cfg.tpg_id = static_cast<std::uint16_t>(i + 1);
      lus_[i] = std::make_unique<LogicalUnit>(*vols_[i], cfg);
    }
  }

  // Runs a command through LU `lu` (0: port 1, the owner; 1: port 2) for initiator `who`.
  CommandResult run(int lu, const std::string& who, std::vector<std::uint8_t> cdb,
                    std::vector<std::byte> out = {}, std::size_t in_len = 0) {
    in_.assign(in_len, std::byte{0});
    out_ = std::move(out);
    nexus_ = Nexus{who + ",i,0x1", static_cast<std::uint16_t>(lu + 1)};
    Command c{cdb, out_, in_, &nexus_};
    return sync_wait(lus_[lu]->execute(c));
  }
  CommandResult pr_out(int lu, const std::string& who, std::uint8_t action, std::uint64_t key,
                       std::uint64_t sa_key, std::uint8_t type = 0) {
    std::vector<std::byte> p(24);
    store_be<std::uint64_t>(reinterpret_cast<std::uint8_t*>(p.data()), key);
    store_be<std::uint64_t>(reinterpret_cast<std::uint8_t*>(p.data()) + 8, sa_key);
    return run(lu, who, {0x5f, action, type, 0, 0, 0, 0, 0, 24, 0}, p);
  }
  std::vector<std::uint64_t> keys(int lu) {
    auto r = run(lu, "iqn.reader", {0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0}, {}, 4096);
    EXPECT_EQ(r.status, ScsiStatus::good);
    std::vector<std::uint64_t> k;
    const auto* d = reinterpret_cast<const std::uint8_t*>(in_.data());
    for (std::uint32_t i = 0; i < load_be<std::uint32_t>(d + 4); i += 8)
      k.push_back(load_be<std::uint64_t>(d + 8 + i));
    return k;
  }
  // The unit attention TEST UNIT READY reports to `who` through `lu`, or none.
  std::optional<Asc> ua(int lu, const std::string& who) {
    auto r = run(lu, who, {0, 0, 0, 0, 0, 0});
    if (r.status == ScsiStatus::check_condition && r.sense.key == SenseKey::unit_attention)
      return r.sense.code;
    return std::nullopt;
  }
  std::vector<std::uint8_t> write10() { return {0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0}; }

  std::unique_ptr<test::FakeDisk> disk_;
  std::unique_ptr<store::Pool> pool_;
  std::unique_ptr<volume::LocalVolume> local_;
  Router router_;
  std::unique_ptr<RoutedVolume> vols_[2];
  std::unique_ptr<LogicalUnit> lus_[2];
  std::vector<std::byte> in_, out_;
  Nexus nexus_;
};

TEST_F(SharedPrTest, ChangesThroughEitherPortAreEnforcedThroughBoth) {
  // Seen by both LUs first, so their unit attention queues exist.
  EXPECT_FALSE(ua(0, "iqn.a").has_value());
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
  EXPECT_EQ(pr_out(1, "iqn.b", 0, 0, 0xB).status, ScsiStatus::good);  // REGISTER through port 2
  EXPECT_EQ(keys(0), std::vector<std::uint64_t>{0xB});
  EXPECT_EQ(pr_out(0, "iqn.a", 0, 0, 0xA).status, ScsiStatus::good);
  EXPECT_EQ(keys(1), (std::vector<std::uint64_t>{0xB, 0xA}));
  EXPECT_EQ(pr_out(0, "iqn.a", 1, 0xA, 0, 1).status, ScsiStatus::good);  // RESERVE WE through port 1
  EXPECT_EQ(run(1, "iqn.b", write10(), std::vector<std::byte>(512)).status, ScsiStatus::reservation_conflict);
  EXPECT_EQ(run(0, "iqn.a", write10(), std::vector<std::byte>(512)).status, ScsiStatus::good);
  // B preempts A through port 2: A (on port 1) hears 2A/05, B hears nothing.
  EXPECT_EQ(pr_out(1, "iqn.b", 4, 0xB, 0xA, 1).status, ScsiStatus::good);
  auto a = ua(0, "iqn.a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, (Asc{0x2a, 0x05}));
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
  EXPECT_EQ(run(0, "iqn.a", write10(), std::vector<std::byte>(512)).status, ScsiStatus::reservation_conflict);
  EXPECT_EQ(run(1, "iqn.b", write10(), std::vector<std::byte>(512)).status, ScsiStatus::good);
  EXPECT_EQ(lus_[0]->reservations().state().serialize(), lus_[1]->reservations().state().serialize());
}

TEST_F(SharedPrTest, LunResetReachesTheOtherPortAndKeepsReservations) {
  EXPECT_FALSE(ua(0, "iqn.a").has_value());
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
  EXPECT_EQ(pr_out(1, "iqn.b", 0, 0, 0xB).status, ScsiStatus::good);
  sync_wait(lus_[1]->reset_everywhere());
  auto a = ua(0, "iqn.a");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(*a, asc::kLunReset);
  EXPECT_EQ(keys(0), std::vector<std::uint64_t>{0xB});
}

TEST_F(SharedPrTest, AStateBlobThatDoesNotParseChangesNothing) {
  EXPECT_EQ(pr_out(0, "iqn.a", 0, 0, 0xA).status, ScsiStatus::good);
  const auto good = lus_[0]->export_state(true);
  const auto before = lus_[1]->reservations().state().serialize();
  for (std::size_t cut = 0; cut < good.size(); ++cut) {
    std::vector<std::byte> b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(cut));
    EXPECT_FALSE(lus_[1]->import_state(b, true).is_ok()) << "truncated at " << cut;
  }
  auto flipped = good;
  flipped[0] ^= std::byte{1};
  EXPECT_FALSE(lus_[1]->import_state(flipped, true).is_ok());
  EXPECT_EQ(lus_[1]->reservations().state().serialize(), before);
  bool changed = true;
  const auto answer = lus_[0]->apply_change(std::vector<std::byte>(7, std::byte{0x44}), changed);
  EXPECT_FALSE(changed);
  EXPECT_FALSE(answer.empty());
}

}  // namespace
}  // namespace duplex::scsi
