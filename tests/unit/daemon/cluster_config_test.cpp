// duplexd's [cluster] address and [api] section: defaults, validation naming the key, and the
// token file (required with listen, never empty).
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "duplex/daemon/config.h"
#include "test_certs.h"

using namespace duplex;
using namespace duplex::daemon;

namespace {

std::string error_of(const std::string& text) {
  auto c = parse_config(text, "f.toml");
  EXPECT_FALSE(c) << text;
  return c ? std::string() : c.status().message();
}

struct TokenFile {
  std::string path;
  explicit TokenFile(const std::string& content) {
    static int n = 0;
    path = "/tmp/duplex-token-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
    std::ofstream(path) << content;
  }
  ~TokenFile() { std::filesystem::remove(path); }
};

}  // namespace

TEST(ClusterConfig, AddressDefaultsToTheFirstListenHost) {
  auto c =
      parse_config("[listen]\nnbd = \"127.0.0.12:10809\"\n[iscsi]\nlisten = [\"127.0.0.13:3260\"]\n", "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->address, "127.0.0.12");
  c = parse_config("[iscsi]\nlisten = [\"127.0.0.13:3260\"]\n", "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->address, "127.0.0.13");
  c = parse_config("[listen]\nnbd = \"127.0.0.12:1\"\n[cluster]\naddress = \"127.0.0.20\"\n", "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->address, "127.0.0.20");
  EXPECT_TRUE(c->api.listen.empty());
  EXPECT_NE(error_of("[listen]\nnbd = \"127.0.0.12:1\"\n[cluster]\naddress = \"127.0.0.20:99\"\n")
                .find("cluster.address"),
            std::string::npos);
  EXPECT_NE(
      error_of("[listen]\nnbd = \"127.0.0.12:1\"\n[cluster]\nadress = \"x\"\n").find("unknown key 'adress'"),
      std::string::npos);
}

TEST(ClusterConfig, ApiNeedsAReadableNonEmptyToken) {
  const std::string head = "[listen]\nnbd = \"127.0.0.12:1\"\n[api]\nlisten = \"127.0.0.11:7480\"\n";
  TokenFile tok("s3cret\n");
  auto c = parse_config(head + "token_file = \"" + tok.path + "\"\n", "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->api.listen, "127.0.0.11:7480");
  EXPECT_EQ(c->api.token, "s3cret");
  EXPECT_EQ(c->api.token_file, tok.path);
  EXPECT_NE(error_of(head).find("token_file is required"), std::string::npos);
  EXPECT_NE(error_of(head + "token_file = \"/nonexistent/tok\"\n").find("cannot be read"), std::string::npos);
  TokenFile empty(" \n");
  EXPECT_NE(error_of(head + "token_file = \"" + empty.path + "\"\n").find("is empty"), std::string::npos);
  EXPECT_NE(error_of(head + "token_file = \"" + tok.path + "\"\ntls_cert = \"c.pem\"\n").find("go together"),
            std::string::npos);
  c = parse_config(head + "token_file = \"" + tok.path + "\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
                   "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->api.tls_key, "k.pem");
  EXPECT_NE(error_of("[listen]\nnbd = \"127.0.0.12:1\"\n[api]\nlisten = \"7480\"\n").find("api.listen"),
            std::string::npos);
  EXPECT_NE(error_of("[listen]\nnbd = \"127.0.0.12:1\"\n[api]\ntoken = \"x\"\n").find("unknown key 'token'"),
            std::string::npos);
}

TEST(ClusterConfig, MirrorTimings) {
  auto c = parse_config(
      "[listen]\nnbd = \"127.0.0.11:10809\"\n"
      "[mirror]\nping_interval = \"200ms\"\nlink_timeout = \"1s\"\nfreeze_timeout = \"8s\"\n"
      "tiebreak_delay = \"1s\"\nlease = \"500ms\"\nresync_rate_max = \"200MiB\"\nresync_depth = 8\n",
      "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->mirror.ping_interval, std::chrono::milliseconds(200));
  EXPECT_EQ(c->mirror.link_timeout, std::chrono::milliseconds(1000));
  EXPECT_EQ(c->mirror.freeze_timeout, std::chrono::milliseconds(8000));
  EXPECT_EQ(c->mirror.lease, std::chrono::milliseconds(500));
  EXPECT_EQ(c->mirror.replicate_timeout, std::chrono::milliseconds(3000)) << "default kept";
  EXPECT_EQ(c->mirror.resync_rate_max, 200ULL << 20);
  EXPECT_EQ(c->mirror.resync_depth, 8U);
  EXPECT_NE(error_of("[mirror]\nresync_depth = 0\n").find("resync_depth must be 1..1024"), std::string::npos);
  EXPECT_NE(error_of("[mirror]\nresync_depth = 5000\n").find("resync_depth"), std::string::npos);
  EXPECT_NE(error_of("[mirror]\nping_interval = \"2s\"\nlink_timeout = \"3s\"\n").find("ping_interval"),
            std::string::npos);
  EXPECT_NE(error_of("[mirror]\nfreeze_timeout = \"2s\"\n").find("freeze_timeout"), std::string::npos);
  EXPECT_NE(error_of("[mirror]\nlease = \"1ms\"\n").find("mirror.lease"), std::string::npos);
  EXPECT_NE(error_of("[mirror]\nspeed = 1\n").find("speed"), std::string::npos);
}

TEST(ClusterConfig, MirrorTls) {
  const auto certs = duplex::testing::TestCerts::make();
  ASSERT_TRUE(certs.ok) << "openssl could not make the test certificates";
  const std::string nbd = "[listen]\nnbd = \"127.0.0.11:10809\"\n";
  auto c = parse_config(nbd, "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_FALSE(c->mirror.tls) << "off by default";
  c = parse_config(nbd + "[mirror]\ntls = \"on\"\ntls_cert = \"" + certs.n1_cert + "\"\ntls_key = \"" +
                       certs.n1_key + "\"\ntls_ca = \"" + certs.ca + "\"\ntls_check_name = true\n",
                   "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_TRUE(c->mirror.tls);
  EXPECT_TRUE(c->mirror.tls_check_name);
  EXPECT_EQ(mirror_tls_options(c->mirror).cert, certs.n1_cert);
  c = parse_config(nbd + "[mirror]\ntls = \"on\"\ntls_psk = \"" + certs.psk + "\"\n", "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->mirror.tls_psk, certs.psk);
  EXPECT_NE(error_of("[mirror]\ntls = \"yes\"\n").find("mirror.tls"), std::string::npos);
  EXPECT_NE(error_of("[mirror]\ntls = \"on\"\n").find("tls_cert, tls_key and tls_ca"), std::string::npos);
  EXPECT_NE(error_of("[mirror]\ntls_psk = \"" + certs.psk + "\"\n").find("tls is not"), std::string::npos);
  EXPECT_NE(
      error_of("[mirror]\ntls = \"on\"\ntls_psk = \"" + certs.psk + "\"\ntls_ca = \"" + certs.ca + "\"\n")
          .find("not both"),
      std::string::npos);
  // Files are loaded at start: a key that is not the certificate's is named.
  EXPECT_NE(error_of("[mirror]\ntls = \"on\"\ntls_cert = \"" + certs.n1_cert + "\"\ntls_key = \"" +
                     certs.n2_key + "\"\ntls_ca = \"" + certs.ca + "\"\n")
                .find(certs.n2_key),
            std::string::npos);
  EXPECT_NE(error_of("[mirror]\ntls = \"on\"\ntls_psk = \"/nonexistent/psk\"\n").find("/nonexistent/psk"),
            std::string::npos);
  certs.remove();
}

TEST(ClusterConfig, MirrorListenAndAdvertise) {
  auto c = parse_config(
      "[listen]\nnbd = \"127.0.0.11:10809\"\n"
      "[cluster]\netcd = \"http://127.0.0.1:2379\"\nmirror_listen = \"127.0.0.11:7789\"\n"
      "mirror_advertise = \"127.0.0.1:17789\"\n",
      "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->mirror_listen, "127.0.0.11:7789");
  EXPECT_EQ(c->mirror_advertise, "127.0.0.1:17789");
  c = parse_config("[listen]\nnbd = \"127.0.0.11:10809\"\n[cluster]\netcd = \"http://127.0.0.1:2379\"\n",
                   "f");
  ASSERT_TRUE(c) << c.status().to_string();
  EXPECT_EQ(c->mirror_listen, "") << "no mirror port unless configured";
  EXPECT_NE(error_of("[cluster]\nmirror_listen = \"127.0.0.11\"\n").find("cluster.mirror_listen"),
            std::string::npos);
  EXPECT_NE(error_of("[cluster]\nmirror_advertise = \"nowhere\"\n").find("cluster.mirror_advertise"),
            std::string::npos);
}
