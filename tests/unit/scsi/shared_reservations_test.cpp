// One reservation state for an LU served by two nodes (docs/multipath.md "Persistent
// reservations"), without the mirror: a volume wrapper plays the mirror's part, running every
// change on the "owner" LU (port 1) and installing the result on the other (port 2) before the
// answer, as MirrorVolume does. Checked here: changes through either LU are seen through both; the
// unit attentions a change owes land on the LU that has the nexus; a LUN reset reaches both; a
// state blob that does not parse changes nothing; PREEMPT AND ABORT and LUN RESET abort commands
// held by sessions of the other "node" and are answered only once those have ended.
#include <gtest/gtest.h>

#include <memory>
#include <optional>

#include "duplex/base/async.h"
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
        auto other = r_.keepers[i].lock();
        Status st = other->import_state(owner->export_state(true), true);
        if (!st.is_ok()) co_return st;
        co_await other->settle();  // the peer answers the push once its aborts are over
      }
    co_await owner->settle();
    co_return answer;
  }

 private:
  volume::BlockVolume& v_;
  Router& r_;
};

// A session holding `held` commands for an LU: aborting them takes until release() (they are
// still executing in the volume until then).
class HoldingMember final : public TaskSetMember {
 public:
  HoldingMember(Nexus n, std::size_t held) : n_(std::move(n)), held_(held) {}
  const Nexus& nexus() const override { return n_; }
  Task<std::size_t> abort_tasks(const LogicalUnit* /*lu*/) override {
    ++asked;
    while (!released_) co_await gate_.wait();
    const std::size_t n = held_;
    held_ = 0;
    co_return n;
  }
  void release() {
    released_ = true;
    gate_.notify_all();
  }
  int asked = 0;

 private:
  Nexus n_;
  std::size_t held_;
  bool released_ = false;
  WaitQueue gate_;
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

// Host A (port 1) has two commands executing when host B preempts and aborts it through port 2:
// both are aborted on port 1's "node", B's PREEMPT AND ABORT is answered only after they ended,
// and A hears 2A/05 then 2F/00 (TAS=0: it got no status for them). Host C on port 1 loses nothing.
TEST_F(SharedPrTest, PreemptAndAbortEndsThePreemptedCommandsOnTheOtherNodeFirst) {
  EXPECT_FALSE(ua(0, "iqn.a").has_value());
  EXPECT_FALSE(ua(0, "iqn.c").has_value());
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
  ASSERT_EQ(pr_out(0, "iqn.a", 0, 0, 0xA).status, ScsiStatus::good);
  ASSERT_EQ(pr_out(1, "iqn.b", 0, 0, 0xB).status, ScsiStatus::good);
  ASSERT_EQ(pr_out(0, "iqn.a", 1, 0xA, 0, 5).status, ScsiStatus::good);  // WE - registrants only
  auto a = std::make_shared<HoldingMember>(Nexus{"iqn.a,i,0x1", 1}, 2);
  auto c = std::make_shared<HoldingMember>(Nexus{"iqn.c,i,0x1", 1}, 1);
  auto b = std::make_shared<HoldingMember>(Nexus{"iqn.b,i,0x1", 2}, 0);
  lus_[0]->join_task_set(a);
  lus_[0]->join_task_set(c);
  lus_[1]->join_task_set(b);

  std::vector<std::byte> params(24);
  store_be<std::uint64_t>(reinterpret_cast<std::uint8_t*>(params.data()), 0xB);
  store_be<std::uint64_t>(reinterpret_cast<std::uint8_t*>(params.data()) + 8, 0xA);
  const std::vector<std::uint8_t> cdb{0x5f, 5, 3, 0, 0, 0, 0, 0, 24, 0};  // PREEMPT AND ABORT, EA
  const Nexus bn{"iqn.b,i,0x1", 2};
  std::optional<CommandResult> done;
  spawn(lus_[1]->execute(Command{cdb, params, {}, &bn}), [&](CommandResult r) { done = r; });
  EXPECT_EQ(a->asked, 1) << "A's session on port 1 is asked to abort";
  EXPECT_EQ(c->asked, 0) << "C was not preempted";
  EXPECT_EQ(b->asked, 0) << "the preempting nexus keeps its commands";
  EXPECT_FALSE(done.has_value()) << "answered while A's aborted commands still run";
  a->release();
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->status, ScsiStatus::good);
  EXPECT_EQ(ua(0, "iqn.a"), (Asc{0x2a, 0x05}));
  EXPECT_EQ(ua(0, "iqn.a"), asc::kCommandsClearedByAnotherInitiator);
  EXPECT_FALSE(ua(0, "iqn.a").has_value());
  EXPECT_FALSE(ua(0, "iqn.c").has_value());
  EXPECT_EQ(keys(1), std::vector<std::uint64_t>{0xB});
}

// The other way round: the change is made through the owner's port and the preempted nexus is on
// port 2, where the installed state aborts its commands before the owner answers.
TEST_F(SharedPrTest, PreemptAndAbortThroughTheOwnerEndsCommandsWhereTheStateIsInstalled) {
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
  ASSERT_EQ(pr_out(0, "iqn.a", 0, 0, 0xA).status, ScsiStatus::good);
  ASSERT_EQ(pr_out(1, "iqn.b", 0, 0, 0xB).status, ScsiStatus::good);
  auto b = std::make_shared<HoldingMember>(Nexus{"iqn.b,i,0x1", 2}, 1);
  lus_[1]->join_task_set(b);
  std::vector<std::byte> params(24);
  store_be<std::uint64_t>(reinterpret_cast<std::uint8_t*>(params.data()), 0xA);
  store_be<std::uint64_t>(reinterpret_cast<std::uint8_t*>(params.data()) + 8, 0xB);
  const std::vector<std::uint8_t> cdb{0x5f, 5, 1, 0, 0, 0, 0, 0, 24, 0};  // PREEMPT AND ABORT, WE
  const Nexus an{"iqn.a,i,0x1", 1};
  std::optional<CommandResult> done;
  spawn(lus_[0]->execute(Command{cdb, params, {}, &an}), [&](CommandResult r) { done = r; });
  EXPECT_EQ(b->asked, 1);
  EXPECT_FALSE(done.has_value());
  b->release();
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(done->status, ScsiStatus::good);
  EXPECT_EQ(ua(1, "iqn.b"), (Asc{0x2a, 0x05}));
  EXPECT_EQ(ua(1, "iqn.b"), asc::kCommandsClearedByAnotherInitiator);
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
}

// A LUN RESET through port 2 aborts the commands of every session on both "nodes" and completes
// once they have all ended; every nexus hears 29/03 and nothing else.
TEST_F(SharedPrTest, LunResetEndsEveryCommandOnBothNodesFirst) {
  EXPECT_FALSE(ua(0, "iqn.a").has_value());
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
  auto a = std::make_shared<HoldingMember>(Nexus{"iqn.a,i,0x1", 1}, 3);
  auto b = std::make_shared<HoldingMember>(Nexus{"iqn.b,i,0x1", 2}, 1);
  lus_[0]->join_task_set(a);
  lus_[1]->join_task_set(b);
  bool done = false;
  spawn(lus_[1]->reset_everywhere(), [&] { done = true; });
  EXPECT_EQ(a->asked, 1);
  EXPECT_EQ(b->asked, 1);
  b->release();
  EXPECT_FALSE(done) << "completed while a command on the other node still runs";
  a->release();
  EXPECT_TRUE(done);
  EXPECT_EQ(ua(0, "iqn.a"), asc::kLunReset);
  EXPECT_FALSE(ua(0, "iqn.a").has_value());
  EXPECT_EQ(ua(1, "iqn.b"), asc::kLunReset);
  EXPECT_FALSE(ua(1, "iqn.b").has_value());
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
