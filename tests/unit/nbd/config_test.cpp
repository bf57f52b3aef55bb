// duplexd configuration parsing (lives with the NBD tests: the daemon is the NBD front-end's host).
#include <gtest/gtest.h>

#include "duplex/daemon/config.h"

using namespace duplex;
using namespace duplex::daemon;

TEST(DaemonConfig, FullExample) {
  auto c = parse_config(R"(
[node]
name = "n1"
site = "b"
[daemon]
loops = 2
[listen]
nbd = ["127.0.0.11:10809", "[::1]:10809"]
[[pool]]
name = "p1"
path = "/var/tmp/p1.pool"
create_size = "20GiB"
cluster_size = "128KiB"
[[volume]]
name = "demo"
size = 1073741824
[nbd]
default_export = "demo"
handshake_timeout = "5s"
[tls]
psk = "/etc/duplex/keys.psk"
require = true
[limits]
max_connections = 16
)",
                        "test.toml");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->node_name, "n1");
  EXPECT_EQ(c->site, "b");
  EXPECT_EQ(c->loops, 2);
  EXPECT_EQ(c->nbd_listen.size(), 2u);
  EXPECT_EQ(c->pools.at(0).create_size, 20ULL << 30);
  EXPECT_EQ(c->pools.at(0).cluster_size, 128u * 1024);
  EXPECT_EQ(c->volumes.at(0).pool, "p1");
  EXPECT_EQ(c->volumes.at(0).size, 1ULL << 30);
  EXPECT_EQ(c->handshake_timeout.count(), 5000);
  EXPECT_TRUE(c->tls && c->tls->require);
  EXPECT_EQ(c->max_connections, 16u);
}

TEST(DaemonConfig, ErrorsNameTheKeyAndLine) {
  auto bad = [](const char* text) {
    auto c = parse_config(text, "f.toml");
    EXPECT_FALSE(c);
    return c ? std::string() : c.status().message();
  };
  EXPECT_NE(bad("[listen]\nnbd = \"127.0.0.1:1\"\n[node]\nnmae = \"x\"\n")
                .find("unknown key 'nmae' in [node] (line 4)"),
            std::string::npos);
  EXPECT_NE(bad("[listen]\nnbd = \"127.0.0.1:1\"\nfoo = 1\n").find("unknown key 'foo'"), std::string::npos);
  EXPECT_NE(bad("[node]\nname = \"x\"\n").find("no front-end"), std::string::npos);
  // [cluster]: etcd URLs and a lease TTL in range.
  auto clustered = parse_config(
      "[listen]\nnbd = \"127.0.0.1:1\"\n[cluster]\netcd = [\"http://127.0.0.1:2379\"]\nlease_ttl = \"5s\"\n",
      "c.toml");
  ASSERT_TRUE(clustered) << clustered.status().to_string();
  EXPECT_EQ(clustered->etcd.size(), 1u);
  EXPECT_EQ(clustered->lease_ttl, std::chrono::seconds(5));
  EXPECT_NE(
      bad("[listen]\nnbd = \"127.0.0.1:1\"\n[cluster]\netcd = \"127.0.0.1:2379\"\n").find("not an http"),
      std::string::npos);
  EXPECT_NE(
      bad("[listen]\nnbd = \"127.0.0.1:1\"\n[cluster]\nlease_ttl = \"1s\"\n").find("between 2s and 300s"),
      std::string::npos);
  // iSCSI alone is a valid node.
  auto iscsi_only = parse_config("[iscsi]\nlisten = [\"127.0.0.1:3260\"]\n", "iscsi.toml");
  ASSERT_TRUE(iscsi_only) << iscsi_only.status().to_string();
  EXPECT_TRUE(iscsi_only->nbd_listen.empty());
  EXPECT_NE(
      bad("[listen]\nnbd = \"a:1\"\n[[pool]]\nname = \"p\"\npath = \"/x\"\ncreate_size = \"3 parsecs\"\n")
          .find("unknown unit"),
      std::string::npos);
  EXPECT_NE(bad("[listen]\nnbd = \"a:1\"\n[[volume]]\npool = \"nope\"\nname = \"v\"\nsize = \"1GiB\"\n")
                .find("pool 'nope' is not configured"),
            std::string::npos);
  EXPECT_NE(bad("[listen]\nnbd = \"a:1\"\n[tls]\ncert = \"c\"\nkey = \"k\"\npsk = \"p\"\n").find("not both"),
            std::string::npos);
  EXPECT_NE(bad("[listen\n").find("line 1"), std::string::npos);
}

TEST(DaemonConfig, Sizes) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("64KiB"), 65536u);
  EXPECT_EQ(*parse_size("1TiB"), 1ULL << 40);
  EXPECT_EQ(*parse_size("2GB"), 2000000000u);
  EXPECT_FALSE(parse_size("x"));
  EXPECT_FALSE(parse_size("99999999999999999999TiB"));
  EXPECT_EQ(parse_duration("250ms")->count(), 250);
  EXPECT_EQ(parse_duration("2m")->count(), 120000);
}
