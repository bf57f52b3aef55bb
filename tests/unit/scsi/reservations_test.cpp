#include "duplex/scsi/reservations.h"

#include <gtest/gtest.h>

#include <memory>

#include "duplex/base/endian.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

namespace duplex::scsi {
namespace {

// A session that holds no command for the LU: notes that the LU asked it to abort.
class NotingMember final : public TaskSetMember {
 public:
  NotingMember(Nexus n, std::vector<std::string>& log) : n_(std::move(n)), log_(log) {}
  const Nexus& nexus() const override { return n_; }
  Task<std::size_t> abort_tasks(const LogicalUnit* /*lu*/) override {
    log_.push_back(n_.initiator_port);
    co_return 0;
  }

 private:
  Nexus n_;
  std::vector<std::string>& log_;
};

class PrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::PoolOptions po;
    po.cluster_size = 4096;
    pool_ = std::move(sync_wait(store::Pool::create(disk_, po))).value();
    id_ = sync_wait(pool_->create_volume("lun0", 4 << 20)).value();
    vol_ = std::make_unique<volume::LocalVolume>(*pool_, id_, "lun0");
    lu_ = std::make_unique<LogicalUnit>(*vol_, LuConfig{});
    for (const Nexus* n : {&a_, &b_, &c_}) {
      members_.push_back(std::make_shared<NotingMember>(*n, aborted_));
      lu_->join_task_set(members_.back());
    }
    lu_->set_persist_hook([this](const PrState& s) -> Status {
      if (fail_persist_) return Status::error(Errc::io_error, "disk full");
      saved_ = s.serialize();
      return Status::ok();
    });
  }

  CommandResult cmd(const Nexus& n, std::vector<std::uint8_t> cdb, std::vector<std::byte> out = {},
                    std::size_t in = 0) {
    in_.assign(in, std::byte{0});
    out_ = std::move(out);
    return sync_wait(lu_->execute(Command{cdb, out_, in_, &n}));
  }
  CommandResult pr_out(const Nexus& n, std::uint8_t action, std::uint8_t type, std::uint64_t key,
                       std::uint64_t sa_key, std::uint8_t flags = 0) {
    std::vector<std::byte> p(24, std::byte{0});
    store_be<std::uint64_t>(p.data(), key);
    store_be<std::uint64_t>(p.data() + 8, sa_key);
    p[20] = static_cast<std::byte>(flags);
    return cmd(n, {0x5f, action, type, 0, 0, 0, 0, 0, 24, 0}, p);
  }
  std::vector<std::uint64_t> read_keys(const Nexus& n) {
    auto r = cmd(n, {0x5e, 0, 0, 0, 0, 0, 0, 1, 0, 0}, {}, 256);
    EXPECT_EQ(r.status, ScsiStatus::good);
    const auto* b = reinterpret_cast<const std::uint8_t*>(in_.data());
    std::vector<std::uint64_t> keys;
    for (std::uint32_t i = 0; i < load_be<std::uint32_t>(b + 4) / 8; ++i)
      keys.push_back(load_be<std::uint64_t>(b + 8 + 8 * i));
    return keys;
  }
  ScsiStatus write_as(const Nexus& n) {
    return cmd(n, {0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0}, std::vector<std::byte>(512)).status;
  }
  ScsiStatus read_as(const Nexus& n) { return cmd(n, {0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0}, {}, 512).status; }
  void clear_ua(const Nexus& n) {
    while (cmd(n, {0, 0, 0, 0, 0, 0}).status == ScsiStatus::check_condition) {
    }
  }

  test::FakeDisk disk_{32 << 20};
  std::unique_ptr<store::Pool> pool_;
  store::ObjectId id_ = 0;
  std::unique_ptr<volume::LocalVolume> vol_;
  std::unique_ptr<LogicalUnit> lu_;
  std::vector<std::byte> in_, out_;
  std::vector<std::string> aborted_;
  std::vector<std::shared_ptr<NotingMember>> members_;
  std::vector<std::uint8_t> saved_;
  bool fail_persist_ = false;
  const Nexus a_{"iqn.a,i,0x1", 1}, b_{"iqn.b,i,0x1", 1}, c_{"iqn.c,i,0x1", 2};
};

TEST_F(PrTest, RegisterReserveAndConflicts) {
  EXPECT_EQ(pr_out(a_, 0, 0, 0, 0xa).status, ScsiStatus::good);
  EXPECT_EQ(pr_out(b_, 0, 0, 0, 0xb).status, ScsiStatus::good);
  EXPECT_EQ(read_keys(a_), (std::vector<std::uint64_t>{0xa, 0xb}));
  EXPECT_EQ(pr_out(b_, 0, 0, 0x99, 0xc).status, ScsiStatus::reservation_conflict) << "wrong key";
  EXPECT_EQ(pr_out(c_, 1, 1, 0, 0).status, ScsiStatus::reservation_conflict) << "unregistered cannot reserve";
  ASSERT_EQ(pr_out(a_, 1, 0x01, 0xa, 0).status, ScsiStatus::good);  // write exclusive
  EXPECT_EQ(write_as(a_), ScsiStatus::good);
  EXPECT_EQ(write_as(b_), ScsiStatus::reservation_conflict);
  EXPECT_EQ(read_as(b_), ScsiStatus::good);
  EXPECT_EQ(pr_out(b_, 1, 0x01, 0xb, 0).status, ScsiStatus::reservation_conflict);
  EXPECT_EQ(pr_out(a_, 1, 0x01, 0xa, 0).status, ScsiStatus::good) << "re-reserving the same type is fine";
  EXPECT_EQ(pr_out(a_, 2, 0x03, 0xa, 0).status, ScsiStatus::check_condition) << "release with the wrong type";
  EXPECT_EQ(pr_out(a_, 2, 0x01, 0xa, 0).status, ScsiStatus::good);
  EXPECT_EQ(write_as(b_), ScsiStatus::good);
}

TEST_F(PrTest, ExclusiveAccessRegistrantsOnlyLetsRegistrantsIn) {
  pr_out(a_, 0, 0, 0, 0xa);
  pr_out(b_, 0, 0, 0, 0xb);
  ASSERT_EQ(pr_out(a_, 1, 0x06, 0xa, 0).status, ScsiStatus::good);
  EXPECT_EQ(write_as(b_), ScsiStatus::good);
  EXPECT_EQ(read_as(c_), ScsiStatus::reservation_conflict);
  EXPECT_EQ(cmd(c_, {0x12, 0, 0, 0, 36, 0}, {}, 36).status, ScsiStatus::good) << "INQUIRY is always allowed";
  // The holder unregisters: a registrants-only reservation goes with it and the others hear so.
  EXPECT_EQ(pr_out(a_, 0, 0, 0xa, 0).status, ScsiStatus::good);
  EXPECT_EQ(read_as(c_), ScsiStatus::good);
  auto r = cmd(b_, {0, 0, 0, 0, 0, 0});
  EXPECT_EQ(r.sense.code, (Asc{0x2a, 0x04}));
}

TEST_F(PrTest, AllRegistrantsEveryRegistrantHolds) {
  pr_out(a_, 0, 0, 0, 0xa);
  pr_out(b_, 0, 0, 0, 0xb);
  ASSERT_EQ(pr_out(a_, 1, 0x08, 0xa, 0).status, ScsiStatus::good);
  EXPECT_EQ(write_as(b_), ScsiStatus::good);
  EXPECT_EQ(read_as(c_), ScsiStatus::reservation_conflict);
  ASSERT_EQ(cmd(a_, {0x5e, 1, 0, 0, 0, 0, 0, 0, 64, 0}, {}, 64).status, ScsiStatus::good);
  const auto* d = reinterpret_cast<const std::uint8_t*>(in_.data());
  EXPECT_EQ(load_be<std::uint32_t>(d + 4), 16u);
  EXPECT_EQ(load_be<std::uint64_t>(d + 8), 0u) << "the all-registrants key reads as zero";
  EXPECT_EQ(d[21] & 0x0f, 0x08);
  // The reservation lasts while any registrant remains.
  pr_out(a_, 0, 0, 0xa, 0);
  EXPECT_EQ(read_as(c_), ScsiStatus::reservation_conflict);
  pr_out(b_, 0, 0, 0xb, 0);
  EXPECT_EQ(read_as(c_), ScsiStatus::good);
}

TEST_F(PrTest, LunResetAbortsTheCommandsOfEverySession) {
  sync_wait(lu_->reset_everywhere());
  EXPECT_EQ(aborted_, (std::vector<std::string>{"iqn.a,i,0x1", "iqn.b,i,0x1", "iqn.c,i,0x1"}));
}

TEST_F(PrTest, PreemptAndAbortTakesOverAndAbortsTheLoser) {
  pr_out(a_, 0, 0, 0, 0xa);
  pr_out(b_, 0, 0, 0, 0xb);
  ASSERT_EQ(pr_out(a_, 1, 0x01, 0xa, 0).status, ScsiStatus::good);
  // Host B decides host A is dead: it preempts A's key and takes an exclusive-access reservation.
  ASSERT_EQ(pr_out(b_, 5, 0x03, 0xb, 0xa).status, ScsiStatus::good);
  EXPECT_EQ(aborted_, std::vector<std::string>{"iqn.a,i,0x1"});
  EXPECT_EQ(read_keys(b_), std::vector<std::uint64_t>{0xb});
  EXPECT_EQ(write_as(b_), ScsiStatus::good);
  auto r = cmd(a_, {0, 0, 0, 0, 0, 0});
  EXPECT_EQ(r.sense.code, (Asc{0x2a, 0x05})) << "A hears its registration was preempted";
  EXPECT_EQ(read_as(a_), ScsiStatus::reservation_conflict);
  EXPECT_EQ(pr_out(a_, 0, 0, 0xa, 0xa2).status, ScsiStatus::reservation_conflict) << "A's old key is gone";
  EXPECT_EQ(pr_out(a_, 6, 0, 0, 0xa2).status, ScsiStatus::good) << "REGISTER AND IGNORE EXISTING KEY";
}

TEST_F(PrTest, ClearRemovesEverything) {
  pr_out(a_, 0, 0, 0, 0xa);
  pr_out(b_, 0, 0, 0, 0xb);
  pr_out(a_, 1, 0x03, 0xa, 0);
  EXPECT_EQ(pr_out(b_, 3, 0, 0xb, 0).status, ScsiStatus::good);
  EXPECT_TRUE(read_keys(b_).empty());
  EXPECT_EQ(write_as(c_), ScsiStatus::good);
  EXPECT_EQ(cmd(a_, {0, 0, 0, 0, 0, 0}).sense.code, (Asc{0x2a, 0x03}));
}

TEST_F(PrTest, RegisterAndMoveHandsTheReservationOver) {
  pr_out(a_, 0, 0, 0, 0xa);
  pr_out(a_, 1, 0x01, 0xa, 0);
  std::string name = "iqn.b,i,0x1";
  name.push_back('\0');
  while (name.size() % 4) name.push_back('\0');
  std::vector<std::byte> p(24 + 4 + name.size(), std::byte{0});
  store_be<std::uint64_t>(p.data(), 0xa);
  store_be<std::uint64_t>(p.data() + 8, 0xbb);
  store_be<std::uint16_t>(p.data() + 18, 1);
  store_be<std::uint32_t>(p.data() + 20, static_cast<std::uint32_t>(4 + name.size()));
  p[24] = std::byte{0x45};
  store_be<std::uint16_t>(p.data() + 26, static_cast<std::uint16_t>(name.size()));
  std::memcpy(p.data() + 28, name.data(), name.size());
  std::vector<std::uint8_t> cdb{0x5f, 7, 0x01, 0, 0, 0, 0, 0, static_cast<std::uint8_t>(p.size()), 0};
  ASSERT_EQ(cmd(a_, cdb, p).status, ScsiStatus::good);
  EXPECT_EQ(write_as(b_), ScsiStatus::good);
  EXPECT_EQ(write_as(a_), ScsiStatus::reservation_conflict);
}

TEST_F(PrTest, AptplStateSurvivesThroughTheHook) {
  pr_out(a_, 0, 0, 0, 0xa, 0x01);
  pr_out(a_, 1, 0x05, 0xa, 0);
  ASSERT_FALSE(saved_.empty());
  auto restored = PrState::deserialize(saved_);
  ASSERT_TRUE(restored);
  EXPECT_TRUE(restored->aptpl);
  ASSERT_TRUE(restored->holder);
  EXPECT_EQ(restored->holder->initiator_port, "iqn.a,i,0x1");
  // A new LU (a restart) restored from it enforces the same reservation.
  LogicalUnit again(*vol_, LuConfig{});
  again.reservations().restore(*restored);
  std::vector<std::byte> data(512);
  std::vector<std::uint8_t> w{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0};
  std::vector<std::byte> none;
  EXPECT_EQ(sync_wait(again.execute(Command{w, data, none, &b_})).status, ScsiStatus::reservation_conflict);
  EXPECT_FALSE(PrState::deserialize(std::vector<std::uint8_t>{'D', 'P', 'R', '1', 0}));
  ASSERT_EQ(cmd(a_, {0x5e, 2, 0, 0, 0, 0, 0, 0, 8, 0}, {}, 8).status, ScsiStatus::good);
  EXPECT_EQ(reinterpret_cast<const std::uint8_t*>(in_.data())[3] & 0x01, 0x01) << "PTPL_A";
}

// When the state cannot be saved, the initiator must not be told the change happened: the
// command fails (HARDWARE ERROR) and the reservation is as before.
TEST_F(PrTest, AFailedSaveUndoesTheChangeAndFailsTheCommand) {
  pr_out(a_, 0, 0, 0, 0xa, 0x01);  // registered with APTPL
  fail_persist_ = true;
  const auto r = pr_out(a_, 1, 0x05, 0xa, 0);  // RESERVE
  ASSERT_EQ(r.status, ScsiStatus::check_condition);
  EXPECT_EQ(r.sense.key, SenseKey::hardware_error);
  EXPECT_FALSE(lu_->reservations().state().holder);
  EXPECT_EQ(write_as(b_), ScsiStatus::good);  // no reservation took effect
  fail_persist_ = false;
  EXPECT_EQ(pr_out(a_, 1, 0x05, 0xa, 0).status, ScsiStatus::good);
  EXPECT_TRUE(lu_->reservations().state().holder);
}

TEST_F(PrTest, BadParametersAreIllegalRequests) {
  std::vector<std::byte> p(24);
  EXPECT_EQ(cmd(a_, {0x5f, 0, 0, 0, 0, 0, 0, 0, 20, 0}, p).sense.code, asc::kParameterListLengthError);
  pr_out(a_, 0, 0, 0, 0xa);
  EXPECT_EQ(pr_out(a_, 1, 0x02, 0xa, 0).sense.code, asc::kInvalidFieldInCdb) << "type 2 does not exist";
  EXPECT_EQ(pr_out(a_, 0, 0, 0xa, 0xb, 0x08).sense.code, asc::kInvalidFieldInParameterList) << "SPEC_I_PT";
  EXPECT_EQ(pr_out(a_, 0, 0, 0xa, 0xb, 0x04).sense.code, asc::kInvalidFieldInParameterList) << "ALL_TG_PT";
  EXPECT_EQ(cmd(a_, {0x5e, 9, 0, 0, 0, 0, 0, 0, 8, 0}, {}, 8).sense.code, asc::kInvalidFieldInCdb);
}

TEST_F(PrTest, ReadOnlyMappingRefusesReservationChanges) {
  volume::LocalVolume ro(*pool_, id_, "lun0", true);
  LogicalUnit lu(ro, LuConfig{});
  std::vector<std::byte> p(24);
  store_be<std::uint64_t>(p.data() + 8, 0x1);
  std::vector<std::uint8_t> reg{0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0};
  std::vector<std::byte> none;
  auto r = sync_wait(lu.execute(Command{reg, p, none, &a_}));
  ASSERT_EQ(r.status, ScsiStatus::check_condition);
  EXPECT_EQ(r.sense.key, SenseKey::data_protect);
}

}  // namespace
}  // namespace duplex::scsi
