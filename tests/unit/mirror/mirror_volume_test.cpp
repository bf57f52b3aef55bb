// Two MirrorVolumes (nodes n1 and n2) in one process, each over its own pool on a fake disk,
// linked over loopback TCP, arbitrated by an in-memory compare-and-swap set (the daemon's real
// arbiter is etcd: the system tests use it). What is checked is the contract of docs/mirror.md:
// writes through either node are on both replicas before the ack, in one order; a lost link
// removes the peer by CAS before the next ack and the loser fences itself; without a decision no
// write is acknowledged; the returning replica gets exactly the dirty regions back.
#include <gtest/gtest.h>

#include <asio/ip/tcp.hpp>
#include <cstring>
#include <random>

#include "duplex/mirror/meta_format.h"
#include "duplex/mirror/mirror_volume.h"
#include "duplex/mirror/wire.h"
#include "duplex/reactor/listen.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

namespace duplex::mirror {
namespace {

using std::chrono::milliseconds;
using test::FakeDisk;
constexpr std::uint64_t kSize = 16u << 20;
// What the grow tests grow to: past the first bitmap block (32640 bits of 4 KiB, 127.5 MiB), so
// the metadata gains a block. The pools are thin: only what is written takes room.
constexpr std::uint64_t kGrown = 160u << 20;

// The metadata device of a node, over its fake disk: holds every flush while `hold` is set (a
// slow metadata disk, to catch a grow between its steps), holds the flush of a record write while
// `hold_record` says so (to catch a change of the in-sync set before its record is durable), and
// fails them once the node lost power.
class GateDevice final : public BlockDevice {
 public:
  GateDevice(FakeDisk* disk, EventLoop* loop) : disk_(disk), loop_(loop) {}
  std::uint64_t size() const override { return disk_->size(); }
  const std::string& name() const override { return disk_->name(); }
  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override {
    return disk_->read(offset, buf);
  }
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf) override {
    record_written_ = offset < format::kAlOffset;
    return disk_->write(offset, buf);
  }
  Task<Status> flush() override {
    ++held;
    const bool record = std::exchange(record_written_, false);
    while (((hold || (record && hold_record && hold_record())) && !dead))
      co_await sleep_for(loop_, milliseconds(5));
    --held;
    if (dead) co_return Status::error(Errc::io_error, "{}: the node lost power (test)", name());
    co_return co_await disk_->flush();
  }
  Task<Status> discard(std::uint64_t offset, std::uint64_t length) override {
    return disk_->discard(offset, length);
  }
  bool hold = false;
  std::function<bool()> hold_record;
  bool dead = false;
  int held = 0;  // flushes waiting now

 private:
  bool record_written_ = false;  // the last write was a record slot: the next flush makes it durable
  FakeDisk* disk_;
  EventLoop* loop_;
};

// The in-sync set with etcd's semantics: a change applies only on the expected generation; the
// owner is the first member in placement order; `available = false` is a lost quorum.
class MemArbiter final : public Arbiter {
 public:
  explicit MemArbiter(std::vector<std::string> placement) : placement_(std::move(placement)) {
    set_.generation = 1;
    set_.members = placement_;
    set_.owner = placement_.front();
  }
  Task<Result<InSyncSet>> read() override {
    if (!available) co_return Status::error(Errc::unavailable, "no quorum (test)");
    co_return set_;
  }
  Task<Result<InSyncSet>> change(std::uint64_t expected, std::vector<std::string> members,
                                 std::string reason) override {
    if (!available) co_return Status::error(Errc::unavailable, "no quorum (test)");
    if (expected != set_.generation)
      co_return Status::error(Errc::conflict, "generation is {}", set_.generation);
    set_.generation++;
    set_.members.clear();
    for (const auto& p : placement_)
      if (std::find(members.begin(), members.end(), p) != members.end()) set_.members.push_back(p);
    set_.owner = set_.members.front();
    reasons.push_back(std::move(reason));
    co_return set_;
  }
  // An operator's promote (POST .../promote with accept_data_loss): no generation check.
  void force(std::vector<std::string> members) {
    set_.generation++;
    set_.members = std::move(members);
    set_.owner = set_.members.front();
  }
  InSyncSet set() const { return set_; }
  bool available = true;
  std::vector<std::string> reasons;

 private:
  std::vector<std::string> placement_;
  InSyncSet set_;
};

struct Node {
  std::string name;
  std::unique_ptr<FakeDisk> disk;
  std::unique_ptr<FakeDisk> meta_disk;
  std::unique_ptr<GateDevice> meta_gate;  // over meta_disk: what the metadata is written through
  std::unique_ptr<store::Pool> pool;
  store::ObjectId id = 0;
  std::shared_ptr<MirrorVolume> vol;
};

class MirrorTest : public ::testing::Test {
 protected:
  EventLoop loop{0};
  std::shared_ptr<MemArbiter> arb = std::make_shared<MemArbiter>(std::vector<std::string>{"n1", "n2"});
  Node n[2];
  std::unique_ptr<asio::ip::tcp::acceptor> acceptor;
  std::uint16_t port = 0;
  bool cut = false;                   // the listener refuses connections (link cut)
  std::uint64_t resync_rate_max = 0;  // for the nodes (re)started from now on
  Uuid uuid = *Uuid::parse("7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11");

  template <typename F>
  void run(F body) {
    bool done = false;
    spawn(body(), [&] {
      done = true;
      loop.stop();
    });
    if (!done) loop.run();
    ASSERT_TRUE(done);
  }

  Task<void> accept_loop() {
    while (acceptor && acceptor->is_open()) {
      asio::ip::tcp::socket sock(loop.context());
      auto ec = co_await asio_op_void([this, &sock](auto h) { acceptor->async_accept(sock, std::move(h)); });
      if (ec) co_return;
      auto s = std::make_unique<TcpStream>(std::move(sock));
      if (cut) continue;  // dropped: the dialer sees the connection close
      std::array<std::byte, wire::kHeaderSize> hb{};
      if (!(co_await s->read_exact(hb.data(), hb.size())).is_ok()) continue;
      auto h = wire::decode(std::span<const std::byte, wire::kHeaderSize>(hb));
      if (!h.is_ok()) continue;
      Message m{*h, Payload(h->payload_len)};
      if (!(co_await s->read_exact(m.payload.data(), m.payload.size())).is_ok()) continue;
      if (n[1].vol) n[1].vol->accept(std::move(s), std::move(m));  // none while n2 is down
    }
  }

  MirrorOptions options(int i) {
    MirrorOptions o;
    o.node = i == 0 ? "n1" : "n2";
    o.peer = i == 0 ? "n2" : "n1";
    o.dial = i == 0;
    o.link.ping_interval = milliseconds(50);
    o.link.timeout = milliseconds(400);
    o.replicate_timeout = milliseconds(400);
    o.freeze_timeout = milliseconds(800);
    o.tiebreak_delay = milliseconds(300);
    o.lease = milliseconds(200);
    o.connect_retry = milliseconds(50);
    o.persist_period = milliseconds(200);
    o.resync_chunk = 256 * 1024;
    o.resync_rate_max = resync_rate_max;
    return o;
  }

  PeerLocator locator(int i) {
    if (i != 0) return {};  // n1 dials, n2 accepts
    return [this]() -> std::optional<PeerAddress> { return PeerAddress{"127.0.0.1", port}; };
  }

  Task<void> make_node(int i) {
    Node& x = n[i];
    x.name = i == 0 ? "n1" : "n2";
    x.disk = std::make_unique<FakeDisk>(64u << 20, x.name + "-pool");
    store::PoolOptions po;  // named: a braced temporary inside co_await trips GCC 12 (docs/architecture.md)
    po.name = x.name;
    auto pool = co_await store::Pool::create(*x.disk, po);
    EXPECT_TRUE(pool.is_ok()) << pool.status().message();
    x.pool = std::move(*pool);
    auto id = co_await x.pool->create_volume("v", kSize, uuid);
    EXPECT_TRUE(id.is_ok());
    x.id = *id;
    MetaRecord rec;
    rec.volume = uuid;
    rec.size = kSize;
    rec.generation = 1;
    rec.node = x.name;
    rec.peer = i == 0 ? "n2" : "n1";
    // Room for a grow: the daemon lengthens the metadata file before it grows (grow_meta_file).
    x.meta_disk = std::make_unique<FakeDisk>(ReplicaMeta::required_bytes(kGrown, 4096), x.name + "-meta");
    x.meta_gate = std::make_unique<GateDevice>(x.meta_disk.get(), &loop);
    auto meta = co_await ReplicaMeta::create(x.meta_gate.get(), rec);
    EXPECT_TRUE(meta.is_ok()) << meta.status().message();
    auto local = std::make_unique<volume::LocalVolume>(*x.pool, x.id, "v");
    x.vol = std::make_shared<MirrorVolume>(&loop, std::move(local), std::move(*meta), arb, locator(i),
                                           options(i));
  }

  // Node i goes down and comes back. With `power_cut`, its disks keep only what was durable at
  // this instant (the old instance is stopped so its link closes, as a dead node's would, and a
  // new one starts on the copies); without, it is a clean stop and restart.
  Task<void> restart(int i, bool power_cut, std::function<Task<void>()> while_down) {
    Node& x = n[i];
    std::unique_ptr<FakeDisk> pool_disk, meta_disk;
    if (power_cut) {
      pool_disk = std::make_unique<FakeDisk>(x.disk->durable_copy());
      meta_disk = std::make_unique<FakeDisk>(x.meta_disk->durable_copy());
      x.meta_gate->dead = true;  // what the old instance still writes is lost with it
    }
    (void)co_await x.vol->stop();
    x.vol.reset();
    if (x.pool && !power_cut) (void)co_await x.pool->close();
    x.pool.reset();
    co_await while_down();
    if (power_cut) {
      x.disk = std::move(pool_disk);
      x.meta_disk = std::move(meta_disk);
    }
    auto pool = co_await store::Pool::open(*x.disk);
    EXPECT_TRUE(pool.is_ok()) << pool.status().message();
    x.pool = std::move(*pool);
    // The old gate goes with the old instance (stopped above); the new one has nothing held.
    x.meta_gate = std::make_unique<GateDevice>(x.meta_disk.get(), &loop);
    auto meta = co_await ReplicaMeta::open(x.meta_gate.get());
    EXPECT_TRUE(meta.is_ok()) << meta.status().message();
    EXPECT_EQ((*meta)->recovered_from_crash(), power_cut);
    MirrorOptions o = options(i);
    o.crashed = (*meta)->recovered_from_crash();
    auto local = std::make_unique<volume::LocalVolume>(*x.pool, x.id, "v");
    x.vol = std::make_shared<MirrorVolume>(&loop, std::move(local), std::move(*meta), arb, locator(i), o);
    EXPECT_TRUE((co_await x.vol->start()).is_ok());
  }

  void SetUp() override {
    auto a = listen_on(loop.context(), "127.0.0.1:0", "mirror test");
    ASSERT_TRUE(a.is_ok());
    acceptor = std::move(*a);
    port = acceptor->local_endpoint().port();
    run([this]() -> Task<void> {
      co_await make_node(0);
      co_await make_node(1);
      EXPECT_TRUE((co_await n[1].vol->start()).is_ok());
      EXPECT_TRUE((co_await n[0].vol->start()).is_ok());
    });
    spawn(accept_loop());
  }
  void TearDown() override {
    run([this]() -> Task<void> {
      for (auto& x : n)
        if (x.vol) (void)co_await x.vol->stop();
    });
    acceptor->close();
    // Let the accept loop and closed channels finish on the loop.
    run([this]() -> Task<void> { co_await sleep_for(&loop, milliseconds(50)); });
  }

  Task<bool> wait_until(std::function<bool()> cond, milliseconds limit = milliseconds(5000)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!cond()) {
      if (std::chrono::steady_clock::now() > until) co_return false;
      co_await sleep_for(&loop, milliseconds(10));
    }
    co_return true;
  }
  Task<std::vector<std::byte>> replica(int i, std::uint64_t off, std::uint64_t len) {
    std::vector<std::byte> b(len);
    EXPECT_TRUE((co_await n[i].pool->read(n[i].id, off, b)).is_ok());
    co_return b;
  }
  // The two replicas hold the same bytes in [0, len), compared 2 MiB at a time with the loop let
  // go between pieces: the fake disks answer inline, and a long stall of the loop would starve
  // the links' heartbeats (they time out after 400 ms here).
  Task<bool> replicas_equal(std::uint64_t len) {
    for (std::uint64_t off = 0; off < len; off += 2u << 20) {
      const std::uint64_t n = std::min<std::uint64_t>(2u << 20, len - off);
      const auto a = co_await replica(0, off, n);
      const auto b = co_await replica(1, off, n);
      if (a != b) co_return false;
      co_await sleep_for(&loop, milliseconds(1));
    }
    co_return true;
  }
  static std::vector<std::byte> pattern(std::uint64_t len, int seed) {
    std::vector<std::byte> b(len);
    for (std::uint64_t i = 0; i < len; ++i)
      b[i] = static_cast<std::byte>((i * 7 + static_cast<unsigned>(seed)) & 0xff);
    return b;
  }
};

TEST_F(MirrorTest, WritesThroughEitherNodeReachBothReplicasBeforeTheAck) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto a = pattern(64 * 1024, 1), b = pattern(8192, 2);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());
    Status fw = co_await n[1].vol->write(1u << 20, b, true);  // forwarded to the owner
    EXPECT_TRUE(fw.is_ok()) << fw.message();
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(co_await replica(i, 0, a.size()), a) << "replica " << i;
      EXPECT_EQ(co_await replica(i, 1u << 20, b.size()), b) << "replica " << i;
    }
    std::vector<std::byte> back(8192);
    EXPECT_TRUE((co_await n[1].vol->read(1u << 20, back)).is_ok());
    EXPECT_EQ(back, b);
    EXPECT_TRUE((co_await n[1].vol->flush()).is_ok());
    EXPECT_TRUE((co_await n[0].vol->write_zeroes(0, 4096, false, false)).is_ok());
    EXPECT_EQ(co_await replica(1, 0, 4096), std::vector<std::byte>(4096));
    EXPECT_EQ(arb->set().generation, 1u) << "no decision while both are up";
  });
}

TEST_F(MirrorTest, OverlappingWritesThroughBothNodesLeaveIdenticalReplicas) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    // 400 writes to 16 overlapping 8 KiB slots in the first 64 KiB, half through each node, all in
    // flight at once.
    std::vector<Task<Status>> ws;
    std::vector<std::vector<std::byte>> bufs;
    std::mt19937 rng(7);
    for (int k = 0; k < 400; ++k) bufs.push_back(pattern(8192, k));
    for (int k = 0; k < 400; ++k) {
      const std::uint64_t off = (rng() % 16) * 4096;
      ws.push_back(n[k % 2].vol->write(off, bufs[static_cast<std::size_t>(k)], false));
    }
    EXPECT_TRUE((co_await when_all(std::move(ws))).is_ok());
    EXPECT_EQ(co_await replica(0, 0, 128 * 1024), co_await replica(1, 0, 128 * 1024));
  });
}

// COMPARE AND WRITE through both nodes (VMware ATS on a shared lock block): two clients, one per
// node, each read the lock record, and swap in the next count with its own tag. Each count must
// be won by exactly one client, every win must be in the final count, and the replicas equal.
TEST_F(MirrorTest, CompareAndWriteIsAtomicAcrossBothNodes) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    constexpr std::uint64_t kBlock = 4096, kLba = 3 * kBlock;
    auto record = [](std::uint64_t count, int tag) {
      std::vector<std::byte> b(kBlock);
      std::memcpy(b.data(), &count, sizeof count);
      b[8] = static_cast<std::byte>(tag);
      return b;
    };
    EXPECT_TRUE((co_await n[0].vol->write(kLba, record(0, 0), false)).is_ok());
    std::vector<std::uint64_t> wins[2];
    int miscompares[2] = {0, 0};
    std::mt19937 rng(11);
    auto client = [&](int i) -> Task<Status> {
      std::vector<std::byte> cur(kBlock);
      for (int round = 0; round < 150; ++round) {
        if (Status st = co_await n[i].vol->read(kLba, cur); !st.is_ok()) co_return st;
        // Both clients often hold the same record at once and race for it; random pauses let
        // either one be first.
        co_await sleep_for(&loop, milliseconds(rng() % 3));
        std::uint64_t count = 0;
        std::memcpy(&count, cur.data(), sizeof count);
        auto next = record(count + 1, i + 1);
        auto r = co_await n[i].vol->compare_and_write(kLba, cur, next, false);
        if (!r.is_ok()) co_return r.status();
        if (r->matched) {
          wins[i].push_back(count + 1);
        } else {
          ++miscompares[i];
          EXPECT_LT(r->miscompare_at, 9u) << "only the count and the tag differ";
        }
      }
      co_return Status::ok();
    };
    std::vector<Task<Status>> both;
    both.push_back(client(0));
    both.push_back(client(1));
    Status st = co_await when_all(std::move(both));
    EXPECT_TRUE(st.is_ok()) << st.message();
    std::vector<std::uint64_t> all = wins[0];
    all.insert(all.end(), wins[1].begin(), wins[1].end());
    std::sort(all.begin(), all.end());
    const auto final_rec = co_await replica(0, kLba, kBlock);
    std::uint64_t final_count = 0;
    std::memcpy(&final_count, final_rec.data(), sizeof final_count);
    EXPECT_EQ(all.size(), final_count) << "every win is one step of the count, none lost";
    for (std::size_t k = 0; k < all.size(); ++k) EXPECT_EQ(all[k], k + 1) << "count won twice or skipped";
    EXPECT_GT(miscompares[0] + miscompares[1], 0) << "the clients never raced: the test proves nothing";
    EXPECT_FALSE(wins[0].empty());
    EXPECT_FALSE(wins[1].empty());
    EXPECT_EQ(co_await replica(1, kLba, kBlock), final_rec);

    // A miscompare through the node that forwards: the offset of the first differing byte, and
    // nothing written.
    auto wrong = final_rec;
    wrong[100] ^= std::byte{1};
    auto r = co_await n[1].vol->compare_and_write(kLba, wrong, record(0, 9), false);
    EXPECT_TRUE(r.is_ok());
    if (r.is_ok()) {
      EXPECT_FALSE(r->matched);
      EXPECT_EQ(r->miscompare_at, 100u);
    }
    EXPECT_EQ(co_await replica(0, kLba, kBlock), final_rec);
    EXPECT_EQ(co_await replica(1, kLba, kBlock), final_rec);
  });
}

// NBD multi-conn across nodes (docs/nbd.md): a client may write through one node's export and
// flush through the other's. The flush must make that write durable on both replicas: a power cut
// of both disks right after it keeps the write on each.
TEST_F(MirrorTest, AFlushThroughOneNodeMakesWritesThroughTheOtherDurableOnBoth) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    // What a power cut keeps of replica i at offset off, read from a copy of its durable bytes.
    auto durable = [this](int i, std::uint64_t off, std::uint64_t len) -> Task<std::vector<std::byte>> {
      FakeDisk copy(n[i].disk->durable_copy());
      auto pool = co_await store::Pool::open(copy);
      std::vector<std::byte> b(len);
      EXPECT_TRUE(pool.is_ok()) << pool.status().message();
      if (pool.is_ok()) {
        EXPECT_TRUE((co_await (*pool)->read(n[i].id, off, b)).is_ok());
      }
      co_return b;
    };
    const auto a = pattern(64 * 1024, 21), b = pattern(64 * 1024, 22);
    EXPECT_TRUE((co_await n[1].vol->write(2u << 20, a, false)).is_ok());  // through n2, ordered by n1
    EXPECT_NE(co_await durable(0, 2u << 20, a.size()), a)
        << "not durable before a flush: the test proves nothing";
    EXPECT_TRUE((co_await n[0].vol->flush()).is_ok());  // through n1
    EXPECT_EQ(co_await durable(0, 2u << 20, a.size()), a) << "n1's replica";
    EXPECT_EQ(co_await durable(1, 2u << 20, a.size()), a) << "n2's replica";
    // And the other way round: written through the owner, flushed through the other node.
    EXPECT_TRUE((co_await n[0].vol->write(3u << 20, b, false)).is_ok());
    EXPECT_TRUE((co_await n[1].vol->flush()).is_ok());
    EXPECT_EQ(co_await durable(0, 3u << 20, b.size()), b) << "n1's replica";
    EXPECT_EQ(co_await durable(1, 3u << 20, b.size()), b) << "n2's replica";
  });
}

// A front-end's shared state as the mirror sees it: opaque bytes. This keeper appends each
// request to its text and answers with the text; events are a suffix only the exporter adds.
class TextKeeper final : public volume::SharedStateKeeper {
 public:
  std::vector<std::byte> apply_change(std::span<const std::byte> request, bool& changed) override {
    text.append(reinterpret_cast<const char*>(request.data()), request.size());
    changed = !request.empty();
    ++applied;
    return std::vector<std::byte>(as_bytes(std::span(text)).begin(), as_bytes(std::span(text)).end());
  }
  std::vector<std::byte> export_state(bool with_events) const override {
    std::string out = text + (with_events ? "|events" : "");
    return std::vector<std::byte>(as_bytes(std::span(out)).begin(), as_bytes(std::span(out)).end());
  }
  Status import_state(std::span<const std::byte> blob, bool raise_events) override {
    std::string in(reinterpret_cast<const char*>(blob.data()), blob.size());
    const bool had_events = in.ends_with("|events");
    if (had_events) in.resize(in.size() - 7);
    text = in;
    ++imported;
    if (had_events && raise_events) ++raised;
    return Status::ok();
  }
  // As an LU whose aborted commands still run: done only once released.
  Task<void> settle() override {
    while (hold) co_await gate.wait();
    ++settled;
  }
  void release() {
    hold = false;
    gate.notify_all();
  }
  std::string text;
  int applied = 0, imported = 0, raised = 0, settled = 0;
  bool hold = false;
  WaitQueue gate;
};

std::vector<std::byte> bytes_of(std::string_view s) {
  return std::vector<std::byte>(as_bytes(std::span(s)).begin(), as_bytes(std::span(s)).end());
}

// Shared state (SCSI reservations): a change through either node runs on the owner, in one order,
// and is on the peer before the call returns; a node that was away gets the newer state at link-up.
TEST_F(MirrorTest, SharedStateChangesRunOnTheOwnerAndReachThePeerBeforeTheAnswer) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto k1p = std::make_shared<TextKeeper>(), k2p = std::make_shared<TextKeeper>();
    TextKeeper &k1 = *k1p, &k2 = *k2p;
    EXPECT_TRUE(n[0].vol->attach_shared_state(k1p));
    EXPECT_TRUE(n[1].vol->attach_shared_state(k2p));
    auto a = co_await n[0].vol->shared_change(bytes_of("a"));
    EXPECT_TRUE(a.is_ok()) << a.status().message();
    EXPECT_EQ(k2.text, "a") << "installed on the peer before the answer";
    EXPECT_EQ(k2.raised, 1);
    auto b = co_await n[1].vol->shared_change(bytes_of("b"));  // forwarded to the owner
    EXPECT_TRUE(b.is_ok()) << b.status().message();
    if (b.is_ok()) {
      EXPECT_EQ(*b, bytes_of("ab")) << "the owner's answer comes back";
    }
    EXPECT_EQ(k1.applied, 2);
    EXPECT_EQ(k2.applied, 0) << "the non-owner never applies a change itself";
    EXPECT_EQ(k1.text, "ab");
    EXPECT_EQ(k2.text, "ab");
    // Concurrent changes through both nodes: one order, the same on both.
    std::vector<Task<Result<std::vector<std::byte>>>> many;
    for (int i = 0; i < 20; ++i)
      many.push_back(n[i % 2].vol->shared_change(bytes_of(std::string(1, char('c' + i)))));
    for (auto& t : many) EXPECT_TRUE((co_await std::move(t)).is_ok());
    EXPECT_EQ(k1.text.size(), 22u);
    EXPECT_EQ(k1.text, k2.text);

    // n2 restarts: its keeper starts empty (a new LU), and gets the state from n1 at link-up.
    k2p.reset();  // the LU goes with the node: the volume holds it weakly
    auto k2bp = std::make_shared<TextKeeper>();
    TextKeeper& k2b = *k2bp;
    co_await restart(1, false, []() -> Task<void> { co_return; });
    EXPECT_TRUE(n[1].vol->attach_shared_state(k2bp));
    EXPECT_TRUE(co_await wait_until([&] { return k2b.text == k1.text; }))
        << "n2 after its restart holds '" << k2b.text << "'";
    EXPECT_EQ(k2b.raised, 0) << "old events are not raised again";
  });
}

// A change that aborted commands (PREEMPT AND ABORT, LUN RESET) is answered only once both nodes
// have settled: the peer before it answers the owner's push, the owner before it answers.
TEST_F(MirrorTest, SharedStateChangesAreAnsweredOnceBothNodesSettled) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto k1 = std::make_shared<TextKeeper>(), k2 = std::make_shared<TextKeeper>();
    EXPECT_TRUE(n[0].vol->attach_shared_state(k1));
    EXPECT_TRUE(n[1].vol->attach_shared_state(k2));
    k1->hold = k2->hold = true;
    bool done = false;
    spawn(n[1].vol->shared_change(bytes_of("x")), [&](const Result<std::vector<std::byte>>& r) {
      EXPECT_TRUE(r.is_ok()) << r.status().message();
      done = true;
    });
    EXPECT_TRUE(co_await wait_until([&] { return k2->text == "x"; })) << "installed on the peer";
    co_await sleep_for(&loop, milliseconds(100));
    EXPECT_FALSE(done) << "answered while the peer's aborts run";
    k2->release();
    EXPECT_TRUE(co_await wait_until([&] { return k2->settled == 1; }));
    co_await sleep_for(&loop, milliseconds(100));
    EXPECT_FALSE(done) << "answered while the owner's aborts run";
    EXPECT_EQ(k1->settled, 0);
    k1->release();
    EXPECT_TRUE(co_await wait_until([&] { return done; }));
    EXPECT_EQ(k1->settled, 1);
    EXPECT_EQ(arb->set().members.size(), 2u) << "a slow settle is no link failure";
  });
}

// While the owner waits for a change's aborts, the order of changes is free: the next change
// goes through (a resync's rejoin, which holds the range lock an aborted write waits for, needs
// that order too, so waiting under it could deadlock).
TEST_F(MirrorTest, TheOwnersSettleDoesNotHoldUpTheNextChange) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto k1 = std::make_shared<TextKeeper>(), k2 = std::make_shared<TextKeeper>();
    EXPECT_TRUE(n[0].vol->attach_shared_state(k1));
    EXPECT_TRUE(n[1].vol->attach_shared_state(k2));
    k1->hold = true;
    int done = 0;
    auto count = [&](const Result<std::vector<std::byte>>& r) {
      EXPECT_TRUE(r.is_ok()) << r.status().message();
      ++done;
    };
    spawn(n[0].vol->shared_change(bytes_of("x")), count);
    EXPECT_TRUE(co_await wait_until([&] { return k2->text == "x"; }));
    spawn(n[0].vol->shared_change(bytes_of("y")), count);
    EXPECT_TRUE(co_await wait_until([&] { return k1->applied == 2 && k2->text == "xy"; }))
        << "the second change waited for the first one's settle";
    EXPECT_EQ(done, 0);
    k1->release();
    EXPECT_TRUE(co_await wait_until([&] { return done == 2; }));
  });
}

TEST_F(MirrorTest, LinkCutOwnerRemovesPeerByCasAndPeerFencesThenResyncCopiesOnlyDirty) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto base = pattern(1u << 20, 3);
    EXPECT_TRUE((co_await n[0].vol->write(0, base, false)).is_ok());
    cut = true;
    n[0].vol->disconnect("test: link cut");
    // The owner's next write: freeze, CAS {n1}, ack.
    auto a = pattern(65536, 4);
    EXPECT_TRUE((co_await n[0].vol->write(4u << 20, a, false)).is_ok());
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    EXPECT_EQ(arb->set().generation, 2u);
    // n2 cannot reach the owner: it tries its own CAS after the tie-break delay, loses, fences.
    auto b = pattern(4096, 5);
    EXPECT_FALSE((co_await n[1].vol->write(8u << 20, b, false)).is_ok());
    std::vector<std::byte> back(4096);
    EXPECT_FALSE((co_await n[1].vol->read(4u << 20, back)).is_ok()) << "an outdated replica never serves";
    EXPECT_EQ(n[1].vol->status().state, "outdated");
    EXPECT_EQ(co_await replica(1, 8u << 20, 4096), std::vector<std::byte>(4096))
        << "the fenced write changed nothing";
    EXPECT_EQ(n[0].vol->status().dirty_bytes, 65536u);
    // Heal: n1 dials again, resyncs 64 KiB, adds n2 back.
    cut = false;
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_EQ(arb->set().generation, 3u);
    EXPECT_EQ(n[0].vol->status().resync_done, 65536u) << "only the dirty region is copied";
    EXPECT_EQ(co_await replica(1, 4u << 20, a.size()), a);
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_TRUE((co_await n[1].vol->read(4u << 20, back)).is_ok());
    EXPECT_TRUE((co_await n[1].vol->write(8u << 20, b, false)).is_ok());
    EXPECT_EQ(co_await replica(0, 8u << 20, 4096), b);
  });
}

// The resync copies in the order the regions lie on the source's disk, not in volume order:
// writes during an outage at descending volume offsets were allocated in write order on n1, and
// the target (which allocates in arrival order) ends with them in that same order.
TEST_F(MirrorTest, AResyncCopiesInTheOrderTheDataLiesOnTheSourceDisk) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    cut = true;
    n[0].vol->disconnect("test: link cut");
    std::vector<std::uint64_t> offs;
    for (std::uint64_t mib = 6; mib >= 1; --mib) offs.push_back(mib << 20);
    for (std::size_t i = 0; i < offs.size(); ++i)
      EXPECT_TRUE(
          (co_await n[0].vol->write(offs[i], pattern(65536, 70 + static_cast<int>(i)), false)).is_ok());
    for (std::size_t i = 1; i < offs.size(); ++i)
      EXPECT_LT(n[0].pool->placement(n[0].id, offs[i - 1]), n[0].pool->placement(n[0].id, offs[i]))
          << "n1 allocated in write order";
    cut = false;
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_EQ(n[0].vol->status().resync_done, offs.size() * 65536);
    for (std::size_t i = 0; i < offs.size(); ++i)
      EXPECT_EQ(co_await replica(1, offs[i], 65536), pattern(65536, 70 + static_cast<int>(i)));
    for (std::size_t i = 1; i < offs.size(); ++i)
      EXPECT_LT(n[1].pool->placement(n[1].id, offs[i - 1]), n[1].pool->placement(n[1].id, offs[i]))
          << "copied in n1's disk order (volume order would reverse it), at " << (offs[i] >> 20) << " MiB";
  });
}

TEST_F(MirrorTest, WithoutQuorumAndWithoutPeerNoWriteIsAcknowledged) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().link_up; }));
    cut = true;
    arb->available = false;
    n[0].vol->disconnect("test: isolated");
    auto a = pattern(4096, 6);
    const auto t0 = std::chrono::steady_clock::now();
    Status st = co_await n[0].vol->write(0, a, false);
    EXPECT_FALSE(st.is_ok());
    EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(800)) << "frozen for freeze_timeout first";
    EXPECT_EQ(arb->set().generation, 1u);
    // Three writes at once: those queued behind the first decision fail with it, all within the
    // bound (one decision of 800 ms, not one after the other).
    std::vector<Task<Status>> writes;
    std::vector<Status> results(3);
    const auto t1 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i)
      writes.push_back([](MirrorVolume* v, std::uint64_t off, std::vector<std::byte> d,
                          Status* out) -> Task<Status> {
        *out = co_await v->write(off, d, false);
        co_return Status::ok();
      }(n[0].vol.get(), 65536u * static_cast<unsigned>(i + 1), pattern(4096, 60 + i),
                                       &results[static_cast<std::size_t>(i)]));
    EXPECT_TRUE((co_await when_all(std::move(writes))).is_ok());
    for (const auto& r : results) EXPECT_FALSE(r.is_ok());
    EXPECT_LT(std::chrono::steady_clock::now() - t1, milliseconds(1600))
        << "one freeze for all, not one each";
    EXPECT_EQ(arb->set().generation, 1u);
    arb->available = true;
    cut = false;
  });
}

// Isolated (neither the peer nor the arbiter): after one bounded freeze the node is cut off. Its
// I/O then fails at once with a path error (Errc::unavailable: SCSI NOT READY, port unavailable,
// so hosts retry on the other node) instead of freezing again per command; it keeps probing the
// arbiter on its own and makes the decision it could not make once the arbiter answers.
TEST_F(MirrorTest, ACutOffNodeFailsFastWithAPathErrorAndDecidesOnceTheArbiterAnswers) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().link_up; }));
    cut = true;
    arb->available = false;
    n[0].vol->disconnect("test: isolated");
    auto a = pattern(4096, 7);
    const auto t0 = std::chrono::steady_clock::now();
    Status st = co_await n[0].vol->write(0, a, false);
    EXPECT_EQ(st.code(), Errc::unavailable) << st.to_string();
    EXPECT_GE(std::chrono::steady_clock::now() - t0, milliseconds(800)) << "frozen for freeze_timeout first";
    EXPECT_TRUE(n[0].vol->cut_off());
    EXPECT_TRUE(n[0].vol->status().cut_off);
    EXPECT_NE(n[0].vol->status().last_event.find("cut_off"), std::string::npos)
        << n[0].vol->status().last_event;
    // Cut off: the next write and a read fail at once, with the same path error.
    const auto t1 = std::chrono::steady_clock::now();
    st = co_await n[0].vol->write(65536, a, false);
    EXPECT_EQ(st.code(), Errc::unavailable) << st.to_string();
    std::vector<std::byte> back(4096);
    st = co_await n[0].vol->read(0, back);
    EXPECT_EQ(st.code(), Errc::unavailable) << st.to_string();
    st = co_await n[0].vol->flush();
    EXPECT_EQ(st.code(), Errc::unavailable) << st.to_string();
    EXPECT_LT(std::chrono::steady_clock::now() - t1, milliseconds(400)) << "no second freeze";
    EXPECT_EQ(arb->set().generation, 1u) << "nothing decided without the arbiter";
    // The arbiter answers again (the link is still cut): the node decides by itself, without any
    // I/O reaching it (its ports say unavailable), and serves again.
    arb->available = true;
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members == std::vector<std::string>{"n1"}; }));
    EXPECT_TRUE(co_await wait_until([this] { return !n[0].vol->cut_off(); }));
    st = co_await n[0].vol->write(0, a, false);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    st = co_await n[0].vol->read(0, back);
    EXPECT_TRUE(st.is_ok()) << st.to_string();
    EXPECT_EQ(back, a);
    // The link heals: n2 is resynced and comes back; nothing is cut off any more.
    cut = false;
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }, milliseconds(8000)));
    EXPECT_FALSE(n[0].vol->cut_off());
    EXPECT_EQ(co_await replica(1, 0, 4096), a);
  });
}

TEST_F(MirrorTest, ANonOwnerRemovedWhileItWaitsOutTheTieBreakDoesNotTakeTheVolume) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    cut = true;
    n[1].vol->disconnect("test: link lost");
    // n2 loses the owner and waits out the tie-break; meanwhile n1 removes n2 (its CAS) and the
    // link comes back: n2 learns generation 2 from n1's hello before its own CAS.
    Status flushed;
    std::vector<Task<Status>> both;
    both.push_back([](MirrorVolume* v, Status* out) -> Task<Status> {
      *out = co_await v->flush();
      co_return Status::ok();
    }(n[1].vol.get(), &flushed));
    both.push_back([](auto* t) -> Task<Status> {
      co_await sleep_for(&t->loop, milliseconds(20));
      std::vector<std::string> owner_alone{"n1"};
      auto changed = co_await t->arb->change(1, std::move(owner_alone), "n1: replicate to n2 failed (test)");
      EXPECT_TRUE(changed.is_ok());
      Status reloaded = co_await t->n[0].vol->reload("test: watch");
      EXPECT_TRUE(reloaded.is_ok()) << reloaded.message();
      t->cut = false;
      co_return Status::ok();
    }(this));
    EXPECT_TRUE((co_await when_all(std::move(both))).is_ok());
    EXPECT_FALSE(flushed.is_ok()) << "n2 was removed while it waited";
    // n1 may have resynced n2 and added it back meanwhile (nothing differs); n2 never decides.
    co_await sleep_for(&loop, milliseconds(400));
    EXPECT_TRUE(arb->set().has("n1"));
    EXPECT_EQ(arb->set().owner, "n1");
    for (const auto& why : arb->reasons) EXPECT_FALSE(why.starts_with("n2:")) << "n2 decided: " << why;
  });
}

TEST_F(MirrorTest, AFailedDiskOnTheOwnerHandsOverAndTheNodeGoesOnServingThroughThePeer) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto a = pattern(65536, 7), b = pattern(8192, 8);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());
    n[0].disk->crash_after(0);  // n1's pool disk is dead: every operation fails from now on
    Status st = co_await n[0].vol->write(1u << 20, b, false);
    EXPECT_TRUE(st.is_ok()) << "the peer has it and now orders alone: " << st.message();
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n2"});
    EXPECT_EQ(n[0].vol->status().state, "failed") << "persisted inconsistent, reported as failed";
    // n2, owner now, learns the set (the daemon's etcd watch). It must not "resync" n1 from its
    // bitmap (nothing: n2 missed no write) and add the failed replica back as the owner again.
    EXPECT_TRUE((co_await n[1].vol->reload("test: watch")).is_ok());
    const auto readded = milliseconds(500);
    EXPECT_FALSE(co_await wait_until([this] { return arb->set().members.size() == 2; }, readded))
        << "the failed replica was added back: " << arb->reasons.back();
    EXPECT_EQ(n[0].vol->status().state, "failed");
    EXPECT_EQ(co_await replica(1, 1u << 20, b.size()), b);
    // n1 keeps serving its initiators: reads and writes go to n2.
    std::vector<std::byte> back(a.size());
    st = co_await n[0].vol->read(0, back);
    EXPECT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(back, a);
    auto c = pattern(4096, 9);
    st = co_await n[0].vol->write(2u << 20, c, true);
    EXPECT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(co_await replica(1, 2u << 20, c.size()), c);
    EXPECT_TRUE((co_await n[0].vol->flush()).is_ok());
  });
}

TEST_F(MirrorTest, AFailedDiskOnThePeerTakesItOutAndItGoesOnServingThroughTheOwner) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto a = pattern(65536, 30), b = pattern(8192, 31);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());
    n[1].disk->crash_after(0);  // n2's pool disk is dead
    Status st = co_await n[0].vol->write(1u << 20, b, false);
    EXPECT_TRUE(st.is_ok()) << "n1 has it and n2 left the set: " << st.message();
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    EXPECT_TRUE(arb->reasons.back().starts_with("n2: local replica failed")) << arb->reasons.back();
    EXPECT_EQ(n[1].vol->status().state, "failed");
    // n2 serves its initiators through n1, and n1 does not try to resync it (that would fail on
    // n2's disk and drop the link n2 forwards over).
    auto c = pattern(4096, 32);
    st = co_await n[1].vol->write(2u << 20, c, true);
    EXPECT_TRUE(st.is_ok()) << st.message();
    std::vector<std::byte> back(a.size());
    st = co_await n[1].vol->read(0, back);
    EXPECT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(back, a);
    co_await sleep_for(&loop, milliseconds(500));
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    EXPECT_TRUE(n[1].vol->status().link_up);
    EXPECT_EQ(co_await replica(0, 2u << 20, c.size()), c);
    // n2's store is not written again before a restart: n1 replicates nothing to it (and n2
    // would refuse), neither data nor activity-log updates.
    const auto data_ops = n[1].disk->counters().ops;
    const auto meta_writes = n[1].meta_disk->counters().writes;
    for (int i = 0; i < 8; ++i) {
      st = co_await n[0].vol->write((4u << 20) + i * 65536u, pattern(65536, 40 + i), false);
      EXPECT_TRUE(st.is_ok()) << st.message();
    }
    EXPECT_EQ(n[1].disk->counters().ops, data_ops);
    EXPECT_EQ(n[1].meta_disk->counters().writes, meta_writes);
    EXPECT_TRUE(n[1].vol->status().link_up);
  });
}

TEST_F(MirrorTest, ADeposedOwnerIsFencedAndItsUnacknowledgedWriteIsCopiedOverOnHeal) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto base = pattern(65536, 10);
    EXPECT_TRUE((co_await n[0].vol->write(0, base, false)).is_ok());
    cut = true;
    n[0].vol->disconnect("test: link cut");
    // n2 writes first: after the tie-break delay it removes n1 by CAS and orders alone.
    auto y = pattern(4096, 11);
    Status st = co_await n[1].vol->write(3u << 20, y, false);
    EXPECT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n2"});
    // n1 still believes it is the owner: its write lands on its own disk, cannot be replicated,
    // its CAS loses, and it is NOT acknowledged.
    auto x = pattern(4096, 12);
    EXPECT_FALSE((co_await n[0].vol->write(0, x, false)).is_ok());
    EXPECT_EQ(n[0].vol->status().state, "outdated");
    EXPECT_EQ(co_await replica(0, 0, 4096), x) << "the stray write is on n1's disk";
    // Heal: n2 copies back its own write and n1's stray range, then both are in sync again.
    cut = false;
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(0, 0, 65536), base) << "the unacknowledged write is undone";
    EXPECT_EQ(co_await replica(0, 3u << 20, 4096), y);
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
  });
}

TEST_F(MirrorTest, AnOutdatedReplicaRefusesUntilAnOperatorPromotesIt) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    cut = true;
    n[0].vol->disconnect("test: n2 down for maintenance");
    auto a = pattern(8192, 13);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());  // n1 removes n2
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    (void)co_await n[0].vol->stop();  // then n1's site is lost
    // n2 learns the set and refuses: its data may be stale.
    EXPECT_TRUE((co_await n[1].vol->reload("test: watch")).is_ok());
    EXPECT_EQ(n[1].vol->status().state, "outdated");
    std::vector<std::byte> back(4096);
    EXPECT_FALSE((co_await n[1].vol->read(0, back)).is_ok());
    EXPECT_FALSE((co_await n[1].vol->write(0, back, false)).is_ok());
    // The operator accepts the loss: promote n2 alone.
    arb->force({"n2"});
    EXPECT_TRUE((co_await n[1].vol->reload("test: promote")).is_ok());
    EXPECT_EQ(n[1].vol->status().state, "in-sync");
    EXPECT_EQ(n[1].vol->status().role, "owner");
    auto b = pattern(4096, 14);
    EXPECT_TRUE((co_await n[1].vol->write(0, b, false)).is_ok());
    EXPECT_TRUE((co_await n[1].vol->read(0, back)).is_ok());
    EXPECT_EQ(back, b);
  });
}

TEST_F(MirrorTest, APeerThatLostPowerGetsItsActivityLogAndTheMissedWritesBackNotEverything) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    // Acknowledged but never flushed: on n2 these sit in its disk's volatile cache only.
    auto a = pattern(65536, 15);
    for (std::uint64_t off = 0; off < (1u << 20); off += a.size())
      EXPECT_TRUE((co_await n[0].vol->write(off, a, false)).is_ok());
    auto b = pattern(8192, 16);
    co_await restart(1, true, [&]() -> Task<void> {
      // While n2 is down, n1 removes it and goes on alone.
      EXPECT_TRUE((co_await n[0].vol->write(12u << 20, b, false)).is_ok());
      EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    });
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
    const auto copied = n[0].vol->status().resync_done;
    EXPECT_GE(copied, (1u << 20) + b.size()) << "the activity log's extents and the missed write";
    EXPECT_LT(copied, kSize) << "not a full resync";
  });
}

TEST_F(MirrorTest, OnlineVerifyFindsADifferingBlockAndRepairsItWhileWritesGoOn) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto a = pattern(1u << 20, 17);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());
    auto clean = co_await n[0].vol->verify(false);
    EXPECT_TRUE(clean.is_ok()) << clean.status().message();
    EXPECT_EQ(clean->checked, kSize);
    EXPECT_EQ(clean->mismatched, 0u);
    // Bit rot on n2, behind the mirror's back.
    auto rot = pattern(4096, 18);
    EXPECT_TRUE((co_await n[1].pool->write(n[1].id, 5u << 20, rot)).is_ok());
    // Writes through both nodes go on during the verify.
    auto w = pattern(4096, 19);
    std::vector<Task<Status>> io;
    for (int k = 0; k < 40; ++k)
      io.push_back(n[k % 2].vol->write(static_cast<std::uint64_t>(k) * 65536, w, false));
    auto found = co_await n[0].vol->verify(true);
    EXPECT_TRUE((co_await when_all(std::move(io))).is_ok());
    EXPECT_TRUE(found.is_ok()) << found.status().message();
    EXPECT_EQ(found->mismatched, 4096u);
    EXPECT_EQ(found->repaired, 4096u);
    EXPECT_EQ(found->ranges, (std::vector<std::pair<std::uint64_t, std::uint64_t>>{
                                 {std::uint64_t{5} << 20, std::uint64_t{4096}}}));
    EXPECT_EQ(n[0].vol->status().verify_mismatches, 4096u);
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
    auto again = co_await n[0].vol->verify(false);
    EXPECT_TRUE(again.is_ok());
    EXPECT_EQ(again->mismatched, 0u);
    EXPECT_FALSE((co_await n[1].vol->verify(false)).is_ok()) << "verify runs on the owner";
  });
}

TEST_F(MirrorTest, ADrainedNodeStepsDownWithoutAnOutageAndReturnsWithoutAFullResync) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto a = pattern(1u << 20, 20);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());
    // Drain n1, the owner: n2 orders from now on; n1's initiators are still served through it.
    Status st = co_await n[0].vol->step_down("test: maintenance of n1");
    EXPECT_TRUE(st.is_ok()) << st.message();
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n2"});
    EXPECT_EQ(n[0].vol->status().state, "outdated");
    auto b = pattern(8192, 21);
    st = co_await n[0].vol->write(2u << 20, b, false);
    EXPECT_TRUE(st.is_ok()) << "forwarded to the new owner: " << st.message();
    std::vector<std::byte> back(a.size());
    EXPECT_TRUE((co_await n[0].vol->read(0, back)).is_ok());
    EXPECT_EQ(back, a);
    auto c = pattern(4096, 22);
    co_await restart(0, false, [&]() -> Task<void> {
      EXPECT_TRUE((co_await n[1].vol->write(6u << 20, c, false)).is_ok());  // n1 is away
    });
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
    // n2 may resync n1 twice (once while n1 is drained but still linked, once after its return):
    // each copies only what n1 missed, never the volume.
    EXPECT_LE(n[1].vol->status().resync_done, b.size() + c.size()) << "only what n1 missed";
    EXPECT_GT(n[1].vol->status().resync_done, 0u);
  });
}

// The set that hands the ownership back to a returning node names the peer a member: the new
// owner replicates to it from its first write on, also while its own record of the change is
// still being written (its metadata disk is slow). A write in that window once found the link
// "absent" and took the peer out of the set.
TEST_F(MirrorTest, OwnershipThatMovesHereOrdersWritesToThePeerBeforeItsRecordIsDurable) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto a = pattern(1u << 20, 50);
    EXPECT_TRUE((co_await n[0].vol->write(0, a, false)).is_ok());
    Status st = co_await n[0].vol->step_down("test: maintenance of n1");
    EXPECT_TRUE(st.is_ok()) << st.message();
    // From here, n1's next record is the one that makes it a member and the owner again (n2
    // resyncs it and adds it back; the placement puts n1 first): held until released below.
    n[0].meta_gate->hold_record = [this] { return arb->set().members.size() == 2; };
    EXPECT_TRUE((co_await n[1].vol->reload("test: the daemon's watch")).is_ok());
    EXPECT_TRUE(co_await wait_until([this] { return n[0].meta_gate->held > 0; }));
    EXPECT_EQ(arb->set().owner, "n1");
    const auto generation = arb->set().generation;
    // A write through n1 now: n1 orders it (the extent is in its activity log already).
    auto b = pattern(8192, 51);
    bool written = false;
    Status wst;
    spawn([](MirrorVolume* v, std::vector<std::byte> d, Status* out, bool* fin) -> Task<void> {
      *out = co_await v->write(4096, d, false);
      *fin = true;
    }(n[0].vol.get(), b, &wst, &written));
    co_await sleep_for(&loop, milliseconds(300));
    EXPECT_EQ(arb->set().members, (std::vector<std::string>{"n1", "n2"})) << "the peer stays in the set";
    EXPECT_TRUE(written) << "ordered, on both replicas and acknowledged while the record is written";
    EXPECT_EQ(n[0].meta_gate->held, 1);
    n[0].meta_gate->hold_record = nullptr;  // released
    EXPECT_TRUE(co_await wait_until([&] { return written; }));
    EXPECT_TRUE(wst.is_ok()) << wst.message();
    EXPECT_EQ(arb->set().generation, generation) << "no decision was needed";
    EXPECT_EQ(n[0].vol->status().role, "owner");
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().state == "in-sync"; }))
        << "once its record is written";
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
  });
}

// An owner about to log a cold range tells the peer first (al_hint), and the peer logs it at the
// same time: its log covers the range while the owner's own log update is still being flushed,
// rather than only once the replicate arrives after it.
TEST_F(MirrorTest, ThePeerLogsAColdRangeWhileTheOwnerLogsIt) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    constexpr std::uint64_t kOff = 12u << 20;
    // Whether node i's durable activity log covers `off` (what a crash there would resync).
    auto logged = [this](int i, std::uint64_t off) -> Task<bool> {
      FakeDisk copy = n[i].meta_disk->durable_copy();
      auto m = co_await ReplicaMeta::open(&copy);
      EXPECT_TRUE(m.is_ok()) << m.status().message();
      if (!m.is_ok()) co_return false;
      for (const auto& [at, len] : (*m)->hot_ranges())
        if (at <= off && off - at < len) co_return true;
      co_return false;
    };
    EXPECT_FALSE(co_await logged(1, kOff));
    n[0].meta_gate->hold = true;
    auto b = pattern(4096, 60);
    bool written = false;
    Status wst;
    spawn([](MirrorVolume* v, std::vector<std::byte> d, Status* out, bool* fin) -> Task<void> {
      *out = co_await v->write(kOff, d, false);
      *fin = true;
    }(n[0].vol.get(), b, &wst, &written));
    EXPECT_TRUE(co_await wait_until([this] { return n[0].meta_gate->held > 0; }));
    bool peer_logged = false;
    for (int i = 0; i < 100 && !peer_logged; ++i) {
      peer_logged = co_await logged(1, kOff);
      if (!peer_logged) co_await sleep_for(&loop, milliseconds(10));
    }
    EXPECT_TRUE(peer_logged) << "the peer's log covers the range while the owner's update is held";
    EXPECT_FALSE(written) << "not acknowledged before the owner's log covers it";
    n[0].meta_gate->hold = false;
    EXPECT_TRUE(co_await wait_until([&] { return written; }));
    EXPECT_TRUE(wst.is_ok()) << wst.message();
    EXPECT_TRUE(co_await logged(0, kOff));
    EXPECT_EQ(co_await replica(0, kOff, 4096), b);
    EXPECT_EQ(co_await replica(1, kOff, 4096), b);
  });
}

TEST_F(MirrorTest, AHeldPeerIsKeptCurrentButOutOfTheSetUntilReleased) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    // n1 drained (its daemon holds it out on n2, then n1 steps down).
    n[1].vol->hold_peer(true);
    Status st = co_await n[0].vol->step_down("test: drain of n1");
    EXPECT_TRUE(st.is_ok()) << st.message();
    auto a = pattern(8192, 31);
    EXPECT_TRUE((co_await n[0].vol->write(1u << 20, a, false)).is_ok()) << "forwarded to n2";
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().role == "owner"; }));
    co_await sleep_for(&loop, milliseconds(300));
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n2"}) << "not added back while held";
    auto b = pattern(4096, 32);
    co_await restart(0, false, [&]() -> Task<void> {
      EXPECT_TRUE((co_await n[1].vol->write(5u << 20, b, false)).is_ok());  // n1 is away
    });
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().link_up; }));
    co_await sleep_for(&loop, milliseconds(300));
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n2"}) << "still held after n1's return";
    n[1].vol->hold_peer(false);
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
    EXPECT_LE(n[1].vol->status().resync_done, b.size()) << "only what n1 missed while down";
  });
}

TEST_F(MirrorTest, ADrainedNonOwnerRejoinsWhenReleasedWithoutARestart) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    // n2 drained: n1 keeps the order, n2 steps down but stays linked and keeps forwarding.
    n[0].vol->hold_peer(true);
    Status st = co_await n[1].vol->step_down("test: drain of n2");
    EXPECT_TRUE(st.is_ok()) << st.message();
    EXPECT_TRUE((co_await n[0].vol->reload("test: the daemon's watch")).is_ok());
    auto a = pattern(8192, 41);
    EXPECT_TRUE((co_await n[1].vol->write(3u << 20, a, false)).is_ok()) << "forwarded to n1";
    co_await sleep_for(&loop, milliseconds(300));
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    n[0].vol->hold_peer(false);
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
  });
}

TEST_F(MirrorTest, APeerThatLostPowerWhileStillAMemberServesNothingStale) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    // Acknowledged, never flushed: n2's disk loses them at the power cut. n1 writes nothing while
    // n2 is down, so n2 comes back still a member of the set.
    auto a = pattern(65536, 23);
    EXPECT_TRUE((co_await n[0].vol->write(1u << 20, a, false)).is_ok());
    co_await restart(1, true, []() -> Task<void> { co_return; });
    // n2 left the set at its start rather than serve what it may have lost.
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    EXPECT_NE(n[1].vol->status().state, "in-sync");
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().link_up; }));
    std::vector<std::byte> back(a.size());
    Status st = co_await n[1].vol->read(1u << 20, back);
    if (st.is_ok()) {
      EXPECT_EQ(back, a) << "a read through n2 returns the acknowledged data or fails";
    }
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_TRUE((co_await n[1].vol->read(1u << 20, back)).is_ok());
    EXPECT_EQ(back, a);
    EXPECT_EQ(co_await replica(0, 0, kSize), co_await replica(1, 0, kSize));
  });
}

// --- growing a mirrored volume (docs/mirror.md "Growing a mirrored volume") ---------------------

// Both nodes up and linked, writes through both going on. The owner waits for the peer to hold
// the new size (its pool object grows when its node applies the catalogue) and evicts nobody
// meanwhile; then the peer grows first and the owner commits under its lock of the whole volume.
// A write past the old end through the peer, while the owner's own metadata is still being
// written, waits for the commit instead of failing or landing on one replica only.
TEST_F(MirrorTest, AGrowUnderWritesThroughBothNodesCommitsOnBothWithoutADecision) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    bool writing = true;
    int written = 0;
    Status writers_failed;
    auto writer = [&](int i) -> Task<Status> {
      std::mt19937 rng(static_cast<unsigned>(100 + i));
      // `writing` is cleared by the test body while this coroutine is suspended; read it through
      // a call so the compiler does not take the loop for one that never ends.
      const auto still_writing = [&] { return writing; };
      for (int k = 0; still_writing(); ++k) {
        const std::uint64_t off = (rng() % (kSize / 65536)) * 65536;
        if (Status st = co_await n[i].vol->write(off, pattern(16384, k + 1000 * i), false); !st.is_ok()) {
          writers_failed = st;
          co_return st;
        }
        ++written;
        co_await sleep_for(&loop, milliseconds(2));
      }
      co_return Status::ok();
    };
    std::vector<Task<Status>> writers;
    writers.push_back(writer(0));
    writers.push_back(writer(1));
    auto body = [&]() -> Task<Status> {
      // The owner's node applied the catalogue first: its replica can hold the new size.
      EXPECT_TRUE((co_await n[0].pool->grow(n[0].id, kGrown)).is_ok());
      EXPECT_TRUE(n[0].vol->grow(kGrown).is_ok());
      EXPECT_TRUE(co_await wait_until([this] { return !n[0].vol->status().grow.empty(); }));
      co_await sleep_for(&loop, milliseconds(300));
      EXPECT_EQ(n[0].vol->size(), kSize) << "not before the peer can hold it";
      EXPECT_EQ(n[1].vol->size(), kSize);
      EXPECT_NE(n[0].vol->status().grow.find("n2"), std::string::npos) << n[0].vol->status().grow;
      EXPECT_EQ(n[0].vol->status().grow_target, kGrown);
      auto past = pattern(8192, 7);
      EXPECT_EQ((co_await n[0].vol->write(kSize, past, false)).code(), Errc::out_of_range);
      EXPECT_EQ((co_await n[1].vol->write(kSize, past, false)).code(), Errc::out_of_range);
      // Then the peer's node: the owner's next attempt grows n2 first, then itself. Its own
      // metadata is slow this time, so the window between the two is open for a while.
      n[0].meta_gate->hold = true;
      EXPECT_TRUE((co_await n[1].pool->grow(n[1].id, kGrown)).is_ok());
      EXPECT_TRUE(n[1].vol->grow(kGrown).is_ok());
      EXPECT_TRUE(
          co_await wait_until([this] { return n[1].vol->size() == kGrown && n[0].meta_gate->held > 0; }));
      EXPECT_EQ(n[0].vol->size(), kSize) << "the owner commits after the peer";
      Status through_peer = Status::error(Errc::busy, "not done");
      bool done = false;
      spawn([](MirrorVolume* v, std::vector<std::byte> d, Status* out, bool* fin) -> Task<void> {
        *out = co_await v->write(kSize + (1u << 20), d, false);
        *fin = true;
      }(n[1].vol.get(), past, &through_peer, &done));
      co_await sleep_for(&loop, milliseconds(200));
      EXPECT_FALSE(done) << "a write past the old end waits for the owner's commit: "
                         << through_peer.message();
      n[0].meta_gate->hold = false;
      EXPECT_TRUE(co_await wait_until([&] { return done; }));
      EXPECT_TRUE(through_peer.is_ok()) << through_peer.message();
      EXPECT_EQ(n[0].vol->size(), kGrown);
      EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().grow.empty(); }));
      co_await sleep_for(&loop, milliseconds(100));
      writing = false;
      co_return Status::ok();
    };
    writers.push_back(body());
    EXPECT_TRUE((co_await when_all(std::move(writers))).is_ok()) << writers_failed.message();
    EXPECT_GT(written, 20) << "the writers hardly ran: the test proves nothing";
    EXPECT_EQ(arb->set().generation, 1u)
        << "a grow decides nothing: " << (arb->reasons.empty() ? "" : arb->reasons[0]);
    // Past the old end, through both nodes, read back through both; the last block too (it lies
    // in the metadata's second bitmap block).
    auto a = pattern(65536, 8), b = pattern(8192, 9);
    EXPECT_TRUE((co_await n[0].vol->write(kSize + (4u << 20), a, false)).is_ok());
    EXPECT_TRUE((co_await n[1].vol->write(kGrown - b.size(), b, true)).is_ok());
    for (int i = 0; i < 2; ++i) {
      std::vector<std::byte> back(a.size());
      EXPECT_TRUE((co_await n[i].vol->read(kSize + (4u << 20), back)).is_ok());
      EXPECT_EQ(back, a) << "through node " << i;
      back.resize(b.size());
      EXPECT_TRUE((co_await n[i].vol->read(kGrown - b.size(), back)).is_ok());
      EXPECT_EQ(back, b) << "through node " << i;
    }
    EXPECT_TRUE(co_await replicas_equal(kGrown));
    EXPECT_EQ(n[0].vol->status().dirty_bytes, 0u);
  });
}

// The peer is down when the grow is asked for: the owner removes it from the set (as a write
// would) and grows alone. The returning replica is refused nothing but gets nothing either until
// it holds the new size; then only what it missed is copied, the new region included.
TEST_F(MirrorTest, APeerAwayDuringAGrowGrowsBeforeItsResyncWhichCoversTheNewRegion) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto base = pattern(1u << 20, 10);
    EXPECT_TRUE((co_await n[0].vol->write(0, base, false)).is_ok());
    auto a = pattern(65536, 11), b = pattern(8192, 12), c = pattern(4096, 13);
    co_await restart(1, false, [&]() -> Task<void> {
      EXPECT_TRUE((co_await n[0].pool->grow(n[0].id, kGrown)).is_ok());
      EXPECT_TRUE(n[0].vol->grow(kGrown).is_ok());
      EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->size() == kGrown; }));
      EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
      EXPECT_NE(arb->reasons.back().find("grow"), std::string::npos) << arb->reasons.back();
      EXPECT_TRUE((co_await n[0].vol->write(kSize + (2u << 20), a, false)).is_ok());  // the new region
      EXPECT_TRUE((co_await n[0].vol->write(kGrown - b.size(), b, false)).is_ok());   // its last block
      EXPECT_TRUE((co_await n[0].vol->write(4u << 20, c, false)).is_ok());            // the old region
    });
    // n2 is back with its replica and metadata at the old size: the lineage holds (same uuid), but
    // the owner does not resync it before it can hold the new size.
    EXPECT_EQ(n[1].vol->size(), kSize);
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().link_up; }));
    EXPECT_TRUE(co_await wait_until([this] {
      return n[0].vol->status().last_event.find("waits for the sizes") != std::string::npos;
    })) << n[0].vol->status().last_event;
    co_await sleep_for(&loop, milliseconds(300));
    EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    EXPECT_EQ(n[0].vol->status().resync_done, 0u) << "nothing copied to a replica that cannot hold it";
    std::vector<std::byte> back(b.size());
    Status fwd = co_await n[1].vol->read(kSize - b.size(), back);  // n2 still serves, through n1
    EXPECT_TRUE(fwd.is_ok()) << fwd.message();
    // Its node applies the catalogue: the replica grows, and the resync follows.
    EXPECT_TRUE((co_await n[1].pool->grow(n[1].id, kGrown)).is_ok());
    EXPECT_TRUE(n[1].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_EQ(n[1].vol->size(), kGrown);
    EXPECT_EQ(n[0].vol->status().resync_done, a.size() + b.size() + c.size())
        << "exactly what n2 missed, past the old end included; not a full resync";
    back.resize(a.size());
    Status rd = co_await n[1].vol->read(kSize + (2u << 20), back);
    EXPECT_TRUE(rd.is_ok()) << rd.message();
    EXPECT_EQ(back, a);
    EXPECT_TRUE(co_await replicas_equal(kGrown));
    // And a later outage: the dirty map covers the new region for the next resync too.
    cut = true;
    n[0].vol->disconnect("test: link cut after the grow");
    auto d = pattern(4096, 14);
    EXPECT_TRUE((co_await n[0].vol->write(kGrown - 4096, d, false)).is_ok());
    EXPECT_EQ(n[0].vol->status().dirty_bytes, d.size());
    cut = false;
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(1, kGrown - 4096, 4096), d);
    EXPECT_TRUE(co_await replicas_equal(kGrown));
  });
}

// A grow while the owner resyncs its peer: the peer that is catching up takes every write, so it
// grows first like a member; the resync goes on and adds it back without starting over.
TEST_F(MirrorTest, AGrowDuringAResyncGrowsTheCatchingUpPeerAndTheResyncGoesOn) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    resync_rate_max = 2u << 20;  // n1 restarted with it: a resync of 4 MiB takes about 2 s
    co_await restart(0, false, []() -> Task<void> { co_return; });
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto big = pattern(1u << 20, 15);
    co_await restart(1, false, [&]() -> Task<void> {
      for (std::uint64_t off = 0; off < (4u << 20); off += big.size())
        EXPECT_TRUE((co_await n[0].vol->write(off, big, false)).is_ok());
    });
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().state == "resyncing"; }));
    EXPECT_TRUE((co_await n[0].pool->grow(n[0].id, kGrown)).is_ok());
    EXPECT_TRUE((co_await n[1].pool->grow(n[1].id, kGrown)).is_ok());
    EXPECT_TRUE(n[1].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(n[0].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->size() == kGrown; }));
    EXPECT_EQ(n[1].vol->size(), kGrown) << "the catching-up peer grew first";
    EXPECT_EQ(n[0].vol->status().state, "resyncing") << "the grow did not wait for the resync";
    auto e = pattern(16384, 16);
    EXPECT_TRUE((co_await n[0].vol->write(kGrown - e.size(), e, false)).is_ok());  // replicated at once
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_LE(n[0].vol->status().resync_done, 4u << 20) << "the resync did not start over";
    EXPECT_TRUE(co_await replicas_equal(kGrown));
  });
}

// The owner loses power in the middle of its grow: the peer took the new size, the owner's own
// metadata record was not written yet. It comes back at the old size (its metadata is
// consistent: the record either names the new size with the bitmap covering it, or the old),
// leaves the set as any crashed replica does, and the peer - owner now, serving the new size -
// grows it before its resync. No acknowledged write is lost; the replicas end identical.
TEST_F(MirrorTest, AnOwnerThatLosesPowerMidGrowComesBackAtTheOldSizeAndConverges) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    auto base = pattern(65536, 17);
    EXPECT_TRUE((co_await n[0].vol->write(0, base, false)).is_ok());
    EXPECT_TRUE((co_await n[0].vol->flush()).is_ok());
    EXPECT_TRUE((co_await n[0].pool->grow(n[0].id, kGrown)).is_ok());
    EXPECT_TRUE((co_await n[1].pool->grow(n[1].id, kGrown)).is_ok());
    n[0].meta_gate->hold = true;
    EXPECT_TRUE(n[1].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(n[0].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(
        co_await wait_until([this] { return n[1].vol->size() == kGrown && n[0].meta_gate->held > 0; }));
    auto a = pattern(8192, 18);
    co_await restart(0, true, [&]() -> Task<void> {
      // n2 goes on alone (it removes n1 by compare-and-swap) at the size it took.
      Status st = co_await n[1].vol->write(kGrown - a.size(), a, false);
      EXPECT_TRUE(st.is_ok()) << st.message();
      EXPECT_EQ(arb->set().members, std::vector<std::string>{"n2"});
    });
    EXPECT_EQ(n[0].vol->size(), kSize) << "the record with the new size was never durable";
    // Its daemon asks for the catalogue's size again after a start (make_mirror_on_loop).
    EXPECT_TRUE(n[0].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().state == "in-sync"; }));
    EXPECT_EQ(n[0].vol->size(), kGrown);
    EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->status().grow.empty(); }))
        << "converged to its target: " << n[0].vol->status().grow;
    EXPECT_EQ(n[0].vol->status().grow_target, 0u);
    EXPECT_EQ(co_await replica(0, kGrown - a.size(), a.size()), a);
    EXPECT_EQ(co_await replica(0, 0, base.size()), base);
    EXPECT_TRUE(co_await replicas_equal(kGrown));
    EXPECT_LT(n[1].vol->status().resync_done, kSize) << "not a full resync";
  });
}

// The peer loses power right after it took the new size (its record is durable) and before the
// owner's own commit ends: it comes back serving the new size, leaves the set as any crashed
// replica does, and the owner, which commits meanwhile, resyncs its activity log. A write past the
// old end acknowledged while the peer is away is on both replicas afterwards.
TEST_F(MirrorTest, APeerThatLosesPowerMidGrowComesBackAtTheNewSizeAndIsResynced) {
  run([this]() -> Task<void> {
    EXPECT_TRUE(
        co_await wait_until([this] { return n[0].vol->status().link_up && n[1].vol->status().link_up; }));
    EXPECT_TRUE((co_await n[0].pool->grow(n[0].id, kGrown)).is_ok());
    EXPECT_TRUE((co_await n[1].pool->grow(n[1].id, kGrown)).is_ok());
    n[0].meta_gate->hold = true;  // the owner's commit stays between its two steps
    EXPECT_TRUE(n[1].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(n[0].vol->grow(kGrown).is_ok());
    EXPECT_TRUE(
        co_await wait_until([this] { return n[1].vol->size() == kGrown && n[0].meta_gate->held > 0; }));
    auto a = pattern(16384, 19);
    co_await restart(1, true, [&]() -> Task<void> {
      n[0].meta_gate->hold = false;
      EXPECT_TRUE(co_await wait_until([this] { return n[0].vol->size() == kGrown; }));
      Status st = co_await n[0].vol->write(kGrown - a.size(), a, false);  // n2 leaves the set first
      EXPECT_TRUE(st.is_ok()) << st.message();
      EXPECT_EQ(arb->set().members, std::vector<std::string>{"n1"});
    });
    EXPECT_EQ(n[1].vol->size(), kGrown) << "its record with the new size was durable before it answered";
    EXPECT_TRUE(co_await wait_until([this] { return arb->set().members.size() == 2; }));
    EXPECT_TRUE(co_await wait_until([this] { return n[1].vol->status().state == "in-sync"; }));
    EXPECT_EQ(co_await replica(1, kGrown - a.size(), a.size()), a);
    EXPECT_LT(n[0].vol->status().resync_done, kSize) << "not a full resync";
    EXPECT_TRUE(co_await replicas_equal(kGrown));
  });
}

// Lineage: the hello's uuid decides; a size that differs is a grow in progress, not another volume.
TEST(MirrorHello, CarriesCapacityAndFeaturesAndRefusesNonsense) {
  Hello h;
  h.volume = *Uuid::parse("7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11");
  h.size = 16u << 20;
  h.capacity = 32u << 20;
  h.grows = true;
  h.al_hints = true;
  h.node = "n1";
  h.state = "in-sync";
  auto back = decode_hello(encode_hello(h));
  EXPECT_TRUE(back.is_ok()) << back.status().message();
  if (back.is_ok()) {
    EXPECT_EQ(back->capacity, h.capacity);
    EXPECT_TRUE(back->grows);
    EXPECT_TRUE(back->al_hints);
  }
  // Features it does not know are ignored; each known one is read on its own.
  auto some = decode_hello(
      R"({"volume": "7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11", "size": 4096, "node": "n2", "generation": 1,
          "state": "in-sync", "features": ["al_hint", "teleport", 7]})");
  EXPECT_TRUE(some.is_ok()) << some.status().message();
  if (some.is_ok()) {
    EXPECT_TRUE(some->al_hints);
    EXPECT_FALSE(some->grows);
  }
  // An older peer's hello: no capacity, no features.
  auto old = decode_hello(
      R"({"volume": "7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11", "size": 4096, "node": "n2", "generation": 1,
          "state": "in-sync"})");
  EXPECT_TRUE(old.is_ok());
  if (old.is_ok()) {
    EXPECT_EQ(old->capacity, 4096u);
    EXPECT_FALSE(old->grows);
    EXPECT_FALSE(old->al_hints);
  }
  EXPECT_FALSE(decode_hello(R"({"volume": "7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11", "size": 0, "node": "n2",
                                "generation": 1, "state": "in-sync"})")
                   .is_ok());
  EXPECT_FALSE(decode_hello(R"({"volume": "7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11", "size": 8192,
                                "capacity": 4096, "node": "n2", "generation": 1, "state": "in-sync"})")
                   .is_ok());
}

}  // namespace
}  // namespace duplex::mirror
