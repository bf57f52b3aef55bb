// CatalogueArbiter, the mirror engine's Arbiter over the in-sync set in etcd (real etcd): read()
// gives the set with the owner first in placement order; change() is a compare-and-swap on the
// generation (a stale expectation is conflict and writes nothing), logged as a decision by this
// node; a record of another uuid is not_found; without etcd the answer is unavailable. Every
// answer resumes the awaiting coroutine on the volume's loop, never on the etcd worker thread.
#include "duplex/daemon/catalogue_arbiter.h"

#include <gtest/gtest.h>

#include "etcd_cluster.h"

namespace duplex::daemon {
namespace {

using namespace std::chrono_literals;
constexpr std::uint64_t kGiB = 1ULL << 30;

class CatalogueArbiterTest : public ::testing::Test {
 protected:
  test::EtcdCluster etcd{1};
  cluster::EtcdOptions eo;
  std::unique_ptr<cluster::Etcd> e;
  std::unique_ptr<cluster::Catalogue> cat;
  EventLoop loop{0};
  cluster::VolumeRecord v;

  void SetUp() override {
    eo.endpoints = etcd.endpoints();
    eo.timeout = 1000ms;
    e = std::make_unique<cluster::Etcd>(eo);
    cat = std::make_unique<cluster::Catalogue>(*e);
    for (const auto& [node, site] : {std::pair{"n1", "s1"}, std::pair{"n2", "s2"}}) {
      ASSERT_TRUE(e->put(std::string(cluster::kRoot) + "nodes/" + node,
                         std::string(R"({"site":")") + site + R"(","pid":1})"));
      cluster::PoolRecord p;
      p.node = node;
      p.name = "p1";
      p.uuid = std::string("u-") + node;
      p.size = 100 * kGiB;
      p.free = 50 * kGiB;
      p.cluster_size = 65536;
      ASSERT_TRUE(cat->report_pool(p));
    }
    cluster::VolumeSpec s;
    s.name = "m";
    s.size = kGiB;
    s.replicas = 2;
    s.preferred_site = "s1";
    auto r = cat->create_volume(s);
    ASSERT_TRUE(r) << r.status().to_string();
    v = *r;
    ASSERT_EQ(v.replicas, (std::vector<std::string>{"n1", "n2"}));
  }

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
};

TEST_F(CatalogueArbiterTest, ReadsAndCompareAndSwapsTheSetOnTheVolumesLoop) {
  auto arb = std::make_shared<CatalogueArbiter>(eo, "m", v.uuid, "n1", &loop);
  run([&]() -> Task<void> {
    auto s = co_await arb->read();
    EXPECT_TRUE(loop.in_loop_thread()) << "resumed on the volume's loop";
    EXPECT_TRUE(s.is_ok()) << s.status().to_string();
    if (!s.is_ok()) co_return;
    EXPECT_EQ(s->generation, 1u);
    EXPECT_EQ(s->members, (std::vector<std::string>{"n1", "n2"}));
    EXPECT_EQ(s->owner, "n1");

    // Arguments named first: a braced temporary inside co_await trips GCC 12.
    std::vector<std::string> n1{"n1"}, n2{"n2"}, n2n1{"n2", "n1"};
    std::string why = "n2 unreachable", why2 = "n1 unreachable", why3 = "resync complete";
    auto alone = co_await arb->change(1, n1, why);
    EXPECT_TRUE(loop.in_loop_thread());
    EXPECT_TRUE(alone.is_ok()) << alone.status().to_string();
    if (!alone.is_ok()) co_return;
    EXPECT_EQ(alone->generation, 2u);
    EXPECT_EQ(alone->members, std::vector<std::string>{"n1"});
    EXPECT_EQ(alone->owner, "n1");

    // A decision based on generation 1 lost: nothing is written.
    auto stale = co_await arb->change(1, n2, why2);
    EXPECT_FALSE(stale.is_ok());
    EXPECT_EQ(stale.status().code(), Errc::conflict) << stale.status().to_string();

    // Members come back in placement order, the owner first.
    auto both = co_await arb->change(2, n2n1, why3);
    EXPECT_TRUE(both.is_ok()) << both.status().to_string();
    if (!both.is_ok()) co_return;
    EXPECT_EQ(both->generation, 3u);
    EXPECT_EQ(both->members, (std::vector<std::string>{"n1", "n2"}));
    EXPECT_EQ(both->owner, "n1");
  });
  auto ds = cat->decisions("m");
  ASSERT_TRUE(ds);
  ASSERT_EQ(ds->size(), 3u);
  EXPECT_EQ((*ds)[1].decided_by, "n1");
  EXPECT_EQ((*ds)[1].reason, "n2 unreachable");
  EXPECT_EQ((*ds)[1].members, std::vector<std::string>{"n1"});
}

TEST_F(CatalogueArbiterTest, AnotherVolumesSetIsNotFound) {
  auto arb = std::make_shared<CatalogueArbiter>(eo, "m", "7f1f3a52-1c4e-4d0a-9a57-0c2f7d1e5b11", "n1", &loop);
  run([&]() -> Task<void> {
    auto s = co_await arb->read();
    EXPECT_EQ(s.status().code(), Errc::not_found) << s.status().to_string();
    std::vector<std::string> n1{"n1"};
    std::string why = "x";
    auto c = co_await arb->change(1, n1, why);
    EXPECT_EQ(c.status().code(), Errc::not_found) << c.status().to_string();
  });
  EXPECT_EQ(cat->insync("m")->generation, 1) << "nothing was decided for a replica of another volume";
}

TEST_F(CatalogueArbiterTest, WithoutEtcdTheAnswerIsUnavailable) {
  auto arb = std::make_shared<CatalogueArbiter>(eo, "m", v.uuid, "n1", &loop);
  etcd.kill(0);
  run([&]() -> Task<void> {
    auto s = co_await arb->read();
    EXPECT_EQ(s.status().code(), Errc::unavailable) << s.status().to_string();
    std::vector<std::string> n1{"n1"};
    std::string why = "n2 unreachable";
    auto c = co_await arb->change(1, n1, why);
    EXPECT_EQ(c.status().code(), Errc::unavailable) << c.status().to_string();
  });
}

}  // namespace
}  // namespace duplex::daemon
