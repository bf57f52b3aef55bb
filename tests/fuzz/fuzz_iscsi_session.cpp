// libFuzzer target: a whole iSCSI connection. Each input is sent, over loopback TCP, to a real
// Portal serving one LUN: byte 0 bit 0 chooses whether a valid login comes first (so the rest
// reaches the full feature phase) and bit 1 whether header/data digests are negotiated; the rest
// is the byte stream. The connection is then half-closed and drained. Invariants besides the
// sanitizers: the portal never crashes, every connection ends (none is left behind), the pool
// stays consistent, and a fresh session still logs in afterwards.
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "duplex/iscsi/pdu.h"
#include "duplex/iscsi/portal.h"
#include "duplex/iscsi/text.h"
#include "duplex/scsi/logical_unit.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

using namespace duplex;
using namespace duplex::iscsi;

namespace {
constexpr const char* kTarget = "iqn.2026-11.io.duplex.fuzz:lun";

class OneTarget final : public TargetCatalogue {
 public:
  const Target* find(std::string_view iqn) const override { return iqn == t.name ? &t : nullptr; }
  std::vector<const Target*> targets() const override { return {&t}; }
  Target t;
};

struct World {
  test::FakeDisk disk{16 << 20};
  std::unique_ptr<store::Pool> pool;
  std::unique_ptr<volume::LocalVolume> vol;
  std::unique_ptr<scsi::LogicalUnit> lu;
  OneTarget cat;
  LoopGroup loops{1};
  std::unique_ptr<Portal> portal;
  std::uint16_t port = 0;
  pthread_t thread{};

  World() {
    store::PoolOptions po;
    po.cluster_size = 4096;
    auto p = sync_wait(store::Pool::create(disk, po));
    if (!p) std::abort();
    pool = std::move(*p);
    auto id = sync_wait(pool->create_volume("lun", 4 << 20));
    if (!id) std::abort();
    vol = std::make_unique<volume::LocalVolume>(*pool, *id, "lun");
    scsi::LuConfig cfg;
    cfg.serial = "fuzz";
    lu = std::make_unique<scsi::LogicalUnit>(*vol, cfg);
    cat.t.name = kTarget;
    cat.t.luns.push_back(Lun{0, lu.get(), 0});
    PortalConfig pc;
    pc.listen = {"127.0.0.1:0"};
    pc.login_timeout = std::chrono::milliseconds(2000);
    pc.nop_interval = std::chrono::milliseconds(0);
    portal = std::make_unique<Portal>(loops, cat, pc);
    if (!portal->start().ok()) std::abort();
    const auto ep = portal->endpoints().at(0);
    port = static_cast<std::uint16_t>(std::stoi(ep.substr(ep.rfind(':') + 1)));
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, std::size_t{512} << 20);  // ASan: no tail calls in coroutines
    pthread_create(
        &thread, &attr,
        [](void* w) -> void* {
          static_cast<World*>(w)->loops.at(0).run();
          return nullptr;
        },
        this);
    pthread_attr_destroy(&attr);
  }

  int connect_socket() const {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(0x7f000001);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      // Interrupted by libFuzzer's SIGALRM: the connection goes on; wait for it to complete.
      if (errno != EINTR) std::abort();
      pollfd p{fd, POLLOUT, 0};
      while (::poll(&p, 1, 3000) < 0 && errno == EINTR) {
      }
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) std::abort();
    }
    timeval tv{3, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
  }
};

// libFuzzer's -timeout uses SIGALRM: socket calls are retried when a signal interrupts them.
ssize_t recv_retry(int fd, void* p, std::size_t n) {
  for (;;) {
    const ssize_t r = ::recv(fd, p, n, 0);
    if (r >= 0 || errno != EINTR) return r;
  }
}

bool write_all(int fd, const std::uint8_t* p, std::size_t n) {
  while (n) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

// A login straight to full feature phase; true when the target accepted it.
bool login(int fd, bool digests) {
  BhsBuilder b(Opcode::login_request);
  b.byte(0, 0x43).flags(0x80 | (1 << 2) | 3).copy(8, std::array<std::uint8_t, 6>{0x80, 0, 0, 0, 0, 9}).itt(1);
  const char* d = digests ? "CRC32C" : "None";
  const auto text = encode_text({{"InitiatorName", "iqn.2026-11.io.duplex.fuzz:init"},
                                 {"TargetName", kTarget},
                                 {"HeaderDigest", d},
                                 {"DataDigest", d},
                                 {"InitialR2T", "No"},
                                 {"ImmediateData", "Yes"}});
  b.data_segment_length(static_cast<std::uint32_t>(text.size()));
  std::vector<std::uint8_t> pdu(b.bytes().begin(), b.bytes().end());
  pdu.insert(pdu.end(), text.begin(), text.end());
  pdu.resize(kBhsSize + padded(static_cast<std::uint32_t>(text.size())));
  if (!write_all(fd, pdu.data(), pdu.size())) return false;
  std::array<std::uint8_t, kBhsSize> resp{};
  std::size_t got = 0;
  while (got < resp.size()) {
    const ssize_t r = recv_retry(fd, resp.data() + got, resp.size() - got);
    if (r <= 0) {
      std::fprintf(stderr, "fuzz_iscsi_session: login answer: recv %zd errno %d after %zu bytes\n", r, errno,
                   got);
      return false;
    }
    got += static_cast<std::size_t>(r);
  }
  const Bhs h(resp);
  if (h.opcode() != Opcode::login_response || h.byte(36) != 0)
    std::fprintf(stderr, "fuzz_iscsi_session: login answer opcode %#x status %02x%02x\n", h.raw_opcode(),
                 h.byte(36), h.byte(37));
  std::vector<std::uint8_t> rest(padded(h.data_segment_length()));
  got = 0;
  while (got < rest.size()) {
    const ssize_t r = recv_retry(fd, rest.data() + got, rest.size() - got);
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return h.opcode() == Opcode::login_response && h.byte(36) == 0;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World* w = new World;
  static std::uint64_t runs = 0;
  if (size < 1) return 0;
  const int fd = w->connect_socket();
  if ((data[0] & 1) && !login(fd, data[0] & 2)) {  // a valid login must always work
    std::fprintf(stderr, "fuzz_iscsi_session: a valid login was refused (connections=%u sessions=%u)\n",
                 w->portal->connections(), w->portal->sessions());
    std::abort();
  }
  write_all(fd, data + 1, size - 1);
  ::shutdown(fd, SHUT_WR);
  std::array<std::uint8_t, 65536> sink{};
  while (recv_retry(fd, sink.data(), sink.size()) > 0) {
  }
  ::close(fd);
  // Every connection ends once its initiator has gone.
  for (int i = 0; w->portal->connections() > 0; ++i) {
    if (i > 3000) {
      std::fprintf(stderr, "fuzz_iscsi_session: %u connection(s) still open 3 s after the initiator left\n",
                   w->portal->connections());
      std::abort();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  // Flush now and then (the fake disk keeps every unflushed version); check the pool less often.
  if (++runs % 64 == 0) {
    std::atomic<bool> done{false};
    bool ok = false;
    const bool check = runs % 1024 == 0;
    w->loops.at(0).post([&] {
      spawn([](World* world, bool check_too, bool* result, std::atomic<bool>* finished) -> Task<void> {
        const Status flushed = co_await world->pool->flush();
        if (!flushed)
          std::fprintf(stderr, "fuzz_iscsi_session: pool flush failed: %s\n", flushed.to_string().c_str());
        bool consistent = true;
        if (flushed && check_too) {
          const auto report = world->pool->check();
          for (const auto& e : report.errors)
            std::fprintf(stderr, "fuzz_iscsi_session: pool check: %s\n", e.c_str());
          consistent = report.ok();
        }
        *result = flushed && consistent;
        finished->store(true);
      }(w, check, &ok, &done));
    });
    while (!done) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!ok) std::abort();
  }
  return 0;
}
