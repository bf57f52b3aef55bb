// The iSCSI portal end to end on loopback: libiscsi's own tools (iscsi-ls, iscsi-inq,
// iscsi-readcapacity16, iscsi-test-cu) as initiators, and hand-made PDUs for what a well-behaved
// initiator never sends. The target runs on a real event loop over a store pool on a fake disk.
#include "duplex/iscsi/portal.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "duplex/base/endian.h"
#include "duplex/iscsi/pdu.h"
#include "duplex/iscsi/text.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

namespace duplex::iscsi {
namespace {

constexpr const char* kRw = "iqn.2026-11.io.duplex.test:rw";
constexpr const char* kChap = "iqn.2026-11.io.duplex.test:chap";
constexpr const char* kInit = "iqn.2026-11.io.duplex.test:init";
constexpr const char* kInitRo = "iqn.2026-11.io.duplex.test:backup";
constexpr const char* kInitNone = "iqn.2026-11.io.duplex.test:stranger";
constexpr std::uint64_t kVolBytes = 64 << 20;

class Catalogue final : public TargetCatalogue {
 public:
  const Target* find(std::string_view iqn) const override {
    for (const auto& t : targets_)
      if (t.name == iqn) return &t;
    return nullptr;
  }
  std::vector<const Target*> targets() const override {
    std::vector<const Target*> v;
    for (const auto& t : targets_) v.push_back(&t);
    return v;
  }
  std::vector<Target> targets_;
};

// Forwards to a volume; while armed, a write at kGateLba waits until open() (posted to the loop)
// lets it go: a command that stays executing for as long as a test needs.
class GatedVolume final : public volume::BlockVolume {
 public:
  static constexpr std::uint32_t kGateLba = 4000;
  explicit GatedVolume(volume::BlockVolume& v) : v_(v) {}
  void arm() { armed_ = true; }  // any thread, before the write is sent
  void open() {                  // on the loop
    armed_ = false;
    gate_.notify_all();
  }
  int waiting() const { return waiting_.load(); }

  const std::string& name() const override { return v_.name(); }
  Uuid uuid() const override { return v_.uuid(); }
  std::uint64_t size() const override { return v_.size(); }
  bool read_only() const override { return v_.read_only(); }
  std::uint32_t preferred_block_size() const override { return v_.preferred_block_size(); }
  Task<Status> read(std::uint64_t o, std::span<std::byte> b) override { return v_.read(o, b); }
  Task<Status> write(std::uint64_t o, std::span<const std::byte> b, bool fua) override {
    if (o == std::uint64_t{kGateLba} * 512) {
      ++waiting_;
      while (armed_) co_await gate_.wait();
      --waiting_;
    }
    co_return co_await v_.write(o, b, fua);
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

 private:
  volume::BlockVolume& v_;
  std::atomic<bool> armed_{false};
  std::atomic<int> waiting_{0};
  WaitQueue gate_;
};

std::string run(const std::string& cmd, int* rc) {
  std::string out;
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) {
    *rc = -1;
    return out;
  }
  std::array<char, 4096> buf{};
  while (std::fgets(buf.data(), buf.size(), p)) out += buf.data();
  const int st = ::pclose(p);
  *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

class PortalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    disk_ = std::make_unique<test::FakeDisk>(kVolBytes * 2);
    store::PoolOptions po;
    po.cluster_size = 4096;
    auto p = sync_wait(store::Pool::create(*disk_, po));
    ASSERT_TRUE(p) << p.status().to_string();
    pool_ = std::move(*p);
    auto id = sync_wait(pool_->create_volume("lun0", kVolBytes));
    ASSERT_TRUE(id);
    vol_ = std::make_unique<volume::LocalVolume>(*pool_, *id, "lun0");
    gated_ = std::make_unique<GatedVolume>(*vol_);
    scsi::LuConfig cfg;
    cfg.serial = "0123456789abcdef0123456789abcdef";
    cfg.target_port_name = std::string(kRw) + ",t,0x0001";
    lu_ = std::make_unique<scsi::LogicalUnit>(*gated_, cfg);

    Target rw;
    rw.name = kRw;
    rw.luns.push_back(Lun{0, lu_.get(), 0});
    rw.acl[kInitRo] = Access::read_only;
    rw.acl[kInitNone] = Access::none;
    Target chap = rw;
    chap.name = kChap;
    chap.acl.clear();
    chap.chap = ChapCredentials{"alice", "a-secret-of-16b!", std::nullopt, std::nullopt};
    cat_.targets_ = {rw, chap};

    loops_ = std::make_unique<LoopGroup>(1);
    PortalConfig pc;
    pc.listen = {"127.0.0.1:0"};
    pc.nop_interval = std::chrono::milliseconds(200);
    pc.nop_timeout = std::chrono::milliseconds(1500);
    portal_ = std::make_unique<Portal>(*loops_, cat_, pc);
    ASSERT_TRUE(portal_->start().ok());
    port_ = portal_->endpoints().at(0).substr(std::string("127.0.0.1:").size());
    // The loop thread gets a large stack: under ASan, coroutine symmetric transfer is not a tail
    // call and a chain of completions nests (docs/architecture.md, coding rules).
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, std::size_t{512} << 20);
    ASSERT_EQ(pthread_create(
                  &thread_, &attr,
                  [](void* self) -> void* {
                    static_cast<PortalTest*>(self)->loops_->at(0).run();
                    return nullptr;
                  },
                  this),
              0);
    pthread_attr_destroy(&attr);
  }

  void TearDown() override {
    if (!loops_) return;
    std::atomic<bool> stopped{false};
    loops_->at(0).post([&] {
      spawn([](Portal* p, std::atomic<bool>* done) -> Task<void> {
        co_await p->stop();
        done->store(true);
      }(portal_.get(), &stopped));
    });
    for (int i = 0; i < 1000 && !stopped; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    loops_->at(0).stop();
    pthread_join(thread_, nullptr);
    EXPECT_TRUE(stopped.load());
    EXPECT_EQ(portal_->connections(), 0u);
    portal_.reset();
  }

  std::string url(const char* target, int lun = 0) const {
    return "iscsi://127.0.0.1:" + port_ + "/" + target + "/" + std::to_string(lun);
  }

  // A raw connection logged in to `target` (or a discovery session) with the given keys.
  int connect_raw() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(std::stoi(port_)));
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return -1;
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }
  static void send_pdu(int fd, const std::array<std::uint8_t, kBhsSize>& bhs,
                       const std::vector<std::uint8_t>& data = {}) {
    std::vector<std::uint8_t> b(bhs.begin(), bhs.end());
    b.insert(b.end(), data.begin(), data.end());
    b.resize(b.size() + (padded(static_cast<std::uint32_t>(data.size())) - data.size()));
    ASSERT_EQ(::write(fd, b.data(), b.size()), static_cast<ssize_t>(b.size()));
  }
  // Reads one PDU; false on timeout or close.
  static bool recv_pdu(int fd, Bhs* h, std::vector<std::uint8_t>* data) {
    std::array<std::uint8_t, kBhsSize> raw{};
    auto read_all = [fd](void* p, std::size_t n) {
      auto* c = static_cast<std::uint8_t*>(p);
      while (n) {
        const ssize_t r = ::read(fd, c, n);
        if (r <= 0) return false;
        c += r;
        n -= static_cast<std::size_t>(r);
      }
      return true;
    };
    if (!read_all(raw.data(), raw.size())) return false;
    *h = Bhs(raw);
    data->assign(padded(h->data_segment_length()), 0);
    if (!data->empty() && !read_all(data->data(), data->size())) return false;
    data->resize(h->data_segment_length());
    return true;
  }
  // Like recv_pdu, skipping the target's NOP-In pings (they come every nop_interval).
  static bool recv_answer(int fd, Bhs* h, std::vector<std::uint8_t>* data) {
    while (recv_pdu(fd, h, data))
      if (h->opcode() != Opcode::nop_in || h->itt() != kReservedTag) return true;
    return false;
  }
  // Logs in (normal session to kRw, no digests, ImmediateData/InitialR2T defaults) and returns
  // the socket in full feature phase; *cmd_sn/*stat_sn continue the numbering.
  int login(std::uint32_t* cmd_sn, const char* initiator = kInit, bool digests = false) {
    const int fd = connect_raw();
    BhsBuilder b(Opcode::login_request);
    b.flags(0x80 | (1 << 2) | 3)
        .byte(0, 0x43)
        .copy(8, std::array<std::uint8_t, 6>{0x80, 0, 0, 0, 0, 1})
        .itt(1)
        .u32(24, 1)
        .u32(28, 0);
    auto data = encode_text({{"InitiatorName", initiator},
                             {"TargetName", kRw},
                             {"SessionType", "Normal"},
                             {"HeaderDigest", digests ? "CRC32C" : "None"},
                             {"DataDigest", digests ? "CRC32C" : "None"}});
    b.data_segment_length(static_cast<std::uint32_t>(data.size()));
    send_pdu(fd, b.bytes(), data);
    Bhs h;
    std::vector<std::uint8_t> d;
    if (!recv_pdu(fd, &h, &d) || h.opcode() != Opcode::login_response || h.byte(36) != 0) {
      ::close(fd);
      return -1;
    }
    *cmd_sn = 1;
    return fd;
  }

  // Sends a SCSI command (F bit; W with `data` as immediate data, or with no data at all so that
  // the target must ask for it by R2T; R with `read_len`).
  static void send_cmd(int fd, std::uint32_t* sn, std::uint32_t itt, const std::vector<std::uint8_t>& cdb,
                       const std::vector<std::uint8_t>& data = {}, std::uint32_t write_len = 0,
                       std::uint32_t read_len = 0) {
    BhsBuilder b(Opcode::scsi_command);
    const std::uint32_t edtl = write_len ? write_len : read_len;
    b.flags(static_cast<std::uint8_t>(0x80 | (write_len ? 0x20 : 0) | (read_len ? 0x40 : 0) | 0x01))
        .itt(itt)
        .u32(Bhs::kEdtl, edtl)
        .u32(24, (*sn)++)
        .data_segment_length(static_cast<std::uint32_t>(data.size()));
    std::array<std::uint8_t, 16> c{};
    std::copy(cdb.begin(), cdb.end(), c.begin());
    b.copy(32, c);
    send_pdu(fd, b.bytes(), data);
  }
  static std::vector<std::uint8_t> write10_cdb(std::uint32_t lba) {
    std::vector<std::uint8_t> c{0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0};
    store_be<std::uint32_t>(c.data() + 2, lba);
    return c;
  }
  static std::vector<std::uint8_t> pr_params(std::uint64_t key, std::uint64_t sa_key) {
    std::vector<std::uint8_t> p(24, 0);
    store_be<std::uint64_t>(p.data(), key);
    store_be<std::uint64_t>(p.data() + 8, sa_key);
    return p;
  }
  // The next answer (not a ping) within `ms`; false if none came.
  static bool answer_within(int fd, int ms, Bhs* h, std::vector<std::uint8_t>* d) {
    timeval tv{ms / 1000, (ms % 1000) * 1000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const bool got = recv_answer(fd, h, d);
    timeval back{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &back, sizeof back);
    return got;
  }
  // Runs one command and returns its SCSI Response (status byte 3, sense in the data), after
  // checking that no other task's answer came first.
  static Bhs command(int fd, std::uint32_t* sn, std::uint32_t itt, const std::vector<std::uint8_t>& cdb,
                     const std::vector<std::uint8_t>& data = {}, std::vector<std::uint8_t>* sense = nullptr) {
    send_cmd(fd, sn, itt, cdb, data, static_cast<std::uint32_t>(data.size()));
    Bhs h;
    std::vector<std::uint8_t> d;
    EXPECT_TRUE(recv_answer(fd, &h, &d));
    EXPECT_EQ(h.opcode(), Opcode::scsi_response);
    EXPECT_EQ(h.itt(), itt) << "an answer for another task";
    if (sense) *sense = d;
    return h;
  }
  // The unit attention TEST UNIT READY reports (asc, ascq), or (0, 0) for GOOD.
  static std::pair<int, int> tur_ua(int fd, std::uint32_t* sn, std::uint32_t itt) {
    std::vector<std::uint8_t> sense;
    const Bhs h = command(fd, sn, itt, {0, 0, 0, 0, 0, 0}, {}, &sense);
    if (h.byte(3) != 0x02 || sense.size() < 2 + 14) return {0, 0};
    return {sense[2 + 12], sense[2 + 13]};
  }
  // Until the write at kGateLba is held in the volume (it is executing).
  void wait_until_gated() const {
    for (int i = 0; i < 400 && gated_->waiting() == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  void open_gate() {
    loops_->at(0).post([g = gated_.get()] { g->open(); });
  }

  std::unique_ptr<test::FakeDisk> disk_;
  std::unique_ptr<store::Pool> pool_;
  std::unique_ptr<volume::LocalVolume> vol_;
  std::unique_ptr<GatedVolume> gated_;
  std::unique_ptr<scsi::LogicalUnit> lu_;
  Catalogue cat_;
  std::unique_ptr<LoopGroup> loops_;
  std::unique_ptr<Portal> portal_;
  pthread_t thread_{};
  std::string port_;
};

TEST_F(PortalTest, DiscoveryListsTargetsPerAcl) {
  int rc = 0;
  std::string out = run("iscsi-ls -i " + std::string(kInit) + " iscsi://127.0.0.1:" + port_, &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(kRw), std::string::npos) << out;
  EXPECT_NE(out.find(kChap), std::string::npos) << out;
  // An initiator with no access does not even learn the target exists.
  out = run("iscsi-ls -i " + std::string(kInitNone) + " iscsi://127.0.0.1:" + port_, &rc);
  EXPECT_EQ(out.find(kRw), std::string::npos) << out;
}

TEST_F(PortalTest, InquiryAndCapacityThroughLibiscsi) {
  int rc = 0;
  std::string out = run("iscsi-inq -i " + std::string(kInit) + " " + url(kRw), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("DUPLEX"), std::string::npos) << out;
  out = run("iscsi-inq -e 1 -c 128 -i " + std::string(kInit) + " " + url(kRw), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("0123456789abcdef"), std::string::npos) << out;
  // VPD 0x83 names the target port the command came through, whichever target maps the LU.
  out = run("iscsi-inq -e 1 -c 131 -i " + std::string(kInit) + " " + url(kRw), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(std::string(kRw) + ",t,0x0001"), std::string::npos) << out;
  out = run("iscsi-inq -e 1 -c 131 -i " + std::string(kInit) +
                " iscsi://alice%a-secret-of-16b!@127.0.0.1:" + port_ + "/" + kChap + "/0",
            &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(std::string(kChap) + ",t,0x0001"), std::string::npos) << out;
  out = run("iscsi-readcapacity16 -i " + std::string(kInit) + " " + url(kRw), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find(std::to_string(kVolBytes)), std::string::npos) << out;
}

TEST_F(PortalTest, AclRefusesStrangersAndChapGuardsItsTarget) {
  int rc = 0;
  std::string out = run("iscsi-inq -i " + std::string(kInitNone) + " " + url(kRw), &rc);
  EXPECT_NE(rc, 0) << out;
  out = run("iscsi-inq -i " + std::string(kInit) + " " + url(kChap), &rc);
  EXPECT_NE(rc, 0) << out;
  out = run("iscsi-inq -i " + std::string(kInit) + " iscsi://alice%wrong-secret-000@127.0.0.1:" + port_ +
                "/" + kChap + "/0",
            &rc);
  EXPECT_NE(rc, 0) << out;
  out = run("iscsi-inq -i " + std::string(kInit) + " iscsi://alice%a-secret-of-16b!@127.0.0.1:" + port_ +
                "/" + kChap + "/0",
            &rc);
  EXPECT_EQ(rc, 0) << out;
}

TEST_F(PortalTest, ConformanceSubsetPasses) {
  int rc = 0;
  // DUPLEX_CU_TESTS widens the selection (e.g. ALL) when run by hand; CI runs the whole suite
  // against duplexd in tests/system.
  const char* sel = std::getenv("DUPLEX_CU_TESTS");
  const std::string tests =
      sel ? sel
          : "SCSI.Read10,SCSI.Write10,SCSI.Inquiry,SCSI.ReadCapacity16,SCSI.TestUnitReady,"
            "SCSI.Unmap,SCSI.CompareAndWrite,iSCSI.iSCSIcmdsn";
  const std::string out =
      run(std::string("iscsi-test-cu ") + (std::getenv("DUPLEX_CU_VERBOSE") ? "-V " : "") + "-d -S -i " +
              std::string(kInit) + " -I " + kInit + "-2 -t '" + tests + "' " + url(kRw),
          &rc);
  if (sel) std::printf("%s\n", out.c_str());  // the whole report when run by hand
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(out.find("FAILED"), std::string::npos) << out;
}

TEST_F(PortalTest, PingIsEchoedAndBadOpcodeRejected) {
  std::uint32_t sn = 0;
  const int fd = login(&sn);
  ASSERT_GE(fd, 0);
  // NOP-Out ping with data: the NOP-In carries the same ITT and bytes.
  BhsBuilder nop(Opcode::nop_out);
  nop.flags(0x80).itt(7).u32(20, kReservedTag).u32(24, sn).data_segment_length(5);
  send_pdu(fd, nop.bytes(), {'h', 'e', 'l', 'l', 'o'});
  Bhs h;
  std::vector<std::uint8_t> d;
  ASSERT_TRUE(recv_answer(fd, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::nop_in);
  EXPECT_EQ(h.itt(), 7u);
  EXPECT_EQ(std::string(d.begin(), d.end()), "hello");
  EXPECT_EQ(h.u32(Bhs::kExpCmdSn), sn + 1);
  ++sn;
  // A target-only opcode from the initiator: Reject with the offending header.
  BhsBuilder bad(Opcode::data_in);
  bad.flags(0x80).itt(8);
  send_pdu(fd, bad.bytes());
  ASSERT_TRUE(recv_answer(fd, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::reject);
  ASSERT_EQ(d.size(), kBhsSize);
  EXPECT_EQ(d[0] & 0x3f, static_cast<int>(Opcode::data_in));
  ::close(fd);
}

// A connection that breaks framing is closed; a session beside it does not notice.
TEST_F(PortalTest, MalformedPduClosesOnlyItsConnection) {
  std::uint32_t sn_a = 0, sn_b = 0;
  const int a = login(&sn_a);
  const int b = login(&sn_b, kInitRo);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  // A data segment far beyond the MaxRecvDataSegmentLength we declared: Reject, then close.
  BhsBuilder huge(Opcode::nop_out);
  huge.flags(0x80).itt(3).u32(20, kReservedTag).u32(24, sn_b).data_segment_length(0xffffff);
  send_pdu(b, huge.bytes());
  Bhs h;
  std::vector<std::uint8_t> d;
  ASSERT_TRUE(recv_answer(b, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::reject);
  EXPECT_FALSE(recv_answer(b, &h, &d));  // closed
  ::close(b);
  // The other session still answers.
  BhsBuilder nop(Opcode::nop_out);
  nop.flags(0x80).itt(4).u32(20, kReservedTag).u32(24, sn_a);
  send_pdu(a, nop.bytes());
  ASSERT_TRUE(recv_answer(a, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::nop_in);
  EXPECT_EQ(h.itt(), 4u);
  ::close(a);
}

// A second login with the same initiator name and ISID replaces the first session (RFC 7143
// §6.3.5): the old connection is closed, the new one works.
TEST_F(PortalTest, SameIsidReinstatesTheSession) {
  std::uint32_t sn_old = 0, sn_new = 0;
  const int old_fd = login(&sn_old);
  ASSERT_GE(old_fd, 0);
  const int new_fd = login(&sn_new);
  ASSERT_GE(new_fd, 0);
  Bhs h;
  std::vector<std::uint8_t> d;
  EXPECT_FALSE(recv_answer(old_fd, &h, &d));  // closed by the reinstatement
  BhsBuilder nop(Opcode::nop_out);
  nop.flags(0x80).itt(5).u32(20, kReservedTag).u32(24, sn_new);
  send_pdu(new_fd, nop.bytes());
  ASSERT_TRUE(recv_answer(new_fd, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::nop_in);
  EXPECT_EQ(portal_->sessions(), 1u);
  ::close(old_fd);
  ::close(new_fd);
}

// Digests by hand (libiscsi offers none): a good data digest is accepted, a damaged one gets
// Reject (data digest error) and the connection goes on; a damaged header digest ends the
// connection (its framing cannot be trusted).
TEST_F(PortalTest, DigestsAreCheckedAndAnswered) {
  std::uint32_t sn = 0;
  const int fd = login(&sn, kInit, true);
  ASSERT_GE(fd, 0);
  auto send_digested = [&](std::uint32_t itt, const std::string& payload, bool damage,
                           bool damage_header = false) {
    BhsBuilder b(Opcode::nop_out);
    b.flags(0x80)
        .itt(itt)
        .u32(20, kReservedTag)
        .u32(24, sn)
        .data_segment_length(static_cast<std::uint32_t>(payload.size()));
    std::vector<std::uint8_t> w(b.bytes().begin(), b.bytes().end());
    auto hd = digest(b.bytes());
    if (damage_header) hd[3] ^= 0x01;
    w.insert(w.end(), hd.begin(), hd.end());
    std::vector<std::uint8_t> data(payload.begin(), payload.end());
    data.resize(padded(static_cast<std::uint32_t>(data.size())));
    auto dd = digest(data);
    if (damage) dd[0] ^= 0xff;
    w.insert(w.end(), data.begin(), data.end());
    w.insert(w.end(), dd.begin(), dd.end());
    ASSERT_EQ(::write(fd, w.data(), w.size()), static_cast<ssize_t>(w.size()));
  };
  // Replies carry digests too: header + digest, then data + pad + digest.
  auto recv_digested = [&](Bhs* h, std::string* payload) {
    auto read_all = [&](std::uint8_t* p, std::size_t n) {
      while (n) {
        const ssize_t r = ::read(fd, p, n);
        if (r <= 0) return false;
        p += r;
        n -= static_cast<std::size_t>(r);
      }
      return true;
    };
    for (;;) {
      std::array<std::uint8_t, kBhsSize + 4> raw{};
      if (!read_all(raw.data(), raw.size())) return false;
      *h = Bhs(std::span<const std::uint8_t, kBhsSize>(raw.data(), kBhsSize));
      const auto want = digest({raw.data(), kBhsSize});
      if (!std::equal(want.begin(), want.end(), raw.begin() + kBhsSize)) return false;
      const std::uint32_t n = h->data_segment_length();
      std::vector<std::uint8_t> rest(n ? padded(n) + 4 : 0);
      if (!read_all(rest.data(), rest.size())) return false;
      payload->assign(rest.begin(), rest.begin() + n);
      if (h->opcode() != Opcode::nop_in || h->itt() != kReservedTag) return true;
    }
  };
  Bhs h;
  std::string p;
  send_digested(1, "digest", false);
  ASSERT_TRUE(recv_digested(&h, &p));
  EXPECT_EQ(h.opcode(), Opcode::nop_in);
  EXPECT_EQ(p, "digest");
  ++sn;
  send_digested(2, "damaged", true);
  ASSERT_TRUE(recv_digested(&h, &p));
  EXPECT_EQ(h.opcode(), Opcode::reject);
  EXPECT_EQ(h.byte(2), static_cast<int>(RejectReason::data_digest_error));
  send_digested(3, "again", false);
  ASSERT_TRUE(recv_digested(&h, &p));
  EXPECT_EQ(h.opcode(), Opcode::nop_in);
  EXPECT_EQ(h.itt(), 3u);
  ++sn;
  send_digested(4, "header", false, true);
  EXPECT_FALSE(recv_digested(&h, &p));  // closed
  ::close(fd);
}

TEST_F(PortalTest, CommandOutsideTheWindowIsIgnored) {
  std::uint32_t sn = 0;
  const int fd = login(&sn);
  ASSERT_GE(fd, 0);
  // TEST UNIT READY with a CmdSN far beyond MaxCmdSN: silently dropped.
  BhsBuilder tur(Opcode::scsi_command);
  tur.flags(0x80).itt(1).u32(24, sn + 100000);
  send_pdu(fd, tur.bytes());
  // The next in-window command is answered (and the dropped one never is).
  BhsBuilder tur2(Opcode::scsi_command);
  tur2.flags(0x80).itt(2).u32(24, sn);
  send_pdu(fd, tur2.bytes());
  Bhs h;
  std::vector<std::uint8_t> d;
  ASSERT_TRUE(recv_answer(fd, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::scsi_response);
  EXPECT_EQ(h.itt(), 2u);
  ::close(fd);
}

TEST_F(PortalTest, SilentInitiatorIsDisconnected) {
  std::uint32_t sn = 0;
  const int fd = login(&sn);
  ASSERT_GE(fd, 0);
  // Never answer the target's NOP-In: after nop_timeout the target closes the connection.
  Bhs h;
  std::vector<std::uint8_t> d;
  int pings = 0;
  const auto start = std::chrono::steady_clock::now();
  while (recv_pdu(fd, &h, &d)) {
    if (h.opcode() == Opcode::nop_in && h.itt() == kReservedTag) ++pings;
  }
  EXPECT_GE(pings, 1);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ::close(fd);
}

}  // namespace
}  // namespace duplex::iscsi

namespace duplex::iscsi {
namespace {

constexpr const char* kInit2 = "iqn.2026-11.io.duplex.test:other";

// Host A has one write executing (held in the volume) and one waiting for its Data-Out when host
// B, in another session, preempts and aborts A's registration. B is answered only once A's write
// has ended; A gets no answer for either write (TAS=0), its late Data-Out is dropped, and it hears
// REGISTRATIONS PREEMPTED then COMMANDS CLEARED BY ANOTHER INITIATOR.
TEST_F(PortalTest, PreemptAndAbortEndsThePreemptedSessionsCommandsBeforeItsAnswer) {
  std::uint32_t sn_a = 0, sn_b = 0;
  const int a = login(&sn_a);
  const int b = login(&sn_b, kInit2);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(command(a, &sn_a, 1, {0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0}, pr_params(0, 0xA)).byte(3), 0);
  EXPECT_EQ(command(b, &sn_b, 1, {0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0}, pr_params(0, 0xB)).byte(3), 0);
  EXPECT_EQ(command(a, &sn_a, 2, {0x5f, 1, 5, 0, 0, 0, 0, 0, 24, 0}, pr_params(0xA, 0)).byte(3), 0);

  gated_->arm();
  send_cmd(a, &sn_a, 3, write10_cdb(GatedVolume::kGateLba), std::vector<std::uint8_t>(512, 0xAA), 512);
  send_cmd(a, &sn_a, 4, write10_cdb(8), {}, 512);  // no data: wants an R2T
  Bhs h;
  std::vector<std::uint8_t> d;
  ASSERT_TRUE(recv_answer(a, &h, &d));
  ASSERT_EQ(h.opcode(), Opcode::r2t);
  const std::uint32_t ttt = h.u32(20);
  wait_until_gated();
  ASSERT_EQ(gated_->waiting(), 1) << "A's first write is executing";

  send_cmd(b, &sn_b, 2, {0x5f, 5, 3, 0, 0, 0, 0, 0, 24, 0}, pr_params(0xB, 0xA), 24);
  EXPECT_FALSE(answer_within(b, 300, &h, &d)) << "PREEMPT AND ABORT answered while A's write still runs";
  open_gate();
  ASSERT_TRUE(answer_within(b, 5000, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::scsi_response);
  EXPECT_EQ(h.itt(), 2u);
  EXPECT_EQ(h.byte(3), 0) << "PREEMPT AND ABORT status";

  // A's Data-Out for the aborted write is dropped quietly; neither write is ever answered.
  BhsBuilder dout(Opcode::data_out);
  dout.flags(0x80)
      .itt(4)
      .u32(20, ttt)
      .u32(Bhs::kDataSn, 0)
      .u32(Bhs::kBufferOffset, 0)
      .data_segment_length(512);
  send_pdu(a, dout.bytes(), std::vector<std::uint8_t>(512, 0xA4));
  EXPECT_EQ(tur_ua(a, &sn_a, 5), std::make_pair(0x2a, 0x05));
  EXPECT_EQ(tur_ua(a, &sn_a, 6), std::make_pair(0x2f, 0x00));
  EXPECT_EQ(tur_ua(a, &sn_a, 7), std::make_pair(0, 0));
  EXPECT_FALSE(answer_within(a, 300, &h, &d)) << "an aborted command was answered";
  ::close(a);
  ::close(b);
}

// A LUN RESET from another session aborts this session's executing write too: the reset is
// answered once the write has ended, the write never is, and its session hears 29/03.
TEST_F(PortalTest, LunResetFromAnotherSessionEndsItsCommandsBeforeItsAnswer) {
  std::uint32_t sn_a = 0, sn_b = 0;
  const int a = login(&sn_a);
  const int b = login(&sn_b, kInit2);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  EXPECT_EQ(tur_ua(a, &sn_a, 1), std::make_pair(0, 0));
  EXPECT_EQ(tur_ua(b, &sn_b, 1), std::make_pair(0, 0));
  gated_->arm();
  send_cmd(a, &sn_a, 2, write10_cdb(GatedVolume::kGateLba), std::vector<std::uint8_t>(512, 0xAA), 512);
  wait_until_gated();
  ASSERT_EQ(gated_->waiting(), 1);

  BhsBuilder tmf(Opcode::task_management);
  tmf.flags(0x80 | 5).itt(9).u32(20, kReservedTag).u32(24, sn_b);  // LOGICAL UNIT RESET, LUN 0
  send_pdu(b, tmf.bytes());
  Bhs h;
  std::vector<std::uint8_t> d;
  EXPECT_FALSE(answer_within(b, 300, &h, &d)) << "LUN RESET answered while A's write still runs";
  open_gate();
  ASSERT_TRUE(answer_within(b, 5000, &h, &d));
  EXPECT_EQ(h.opcode(), Opcode::task_management_response);
  EXPECT_EQ(h.byte(2), 0) << "function complete";
  EXPECT_EQ(tur_ua(a, &sn_a, 3), std::make_pair(0x29, 0x03));
  EXPECT_EQ(tur_ua(a, &sn_a, 4), std::make_pair(0, 0));
  EXPECT_FALSE(answer_within(a, 300, &h, &d)) << "the aborted write was answered";
  ::close(a);
  ::close(b);
}

}  // namespace
}  // namespace duplex::iscsi
