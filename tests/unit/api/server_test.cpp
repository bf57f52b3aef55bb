// api::Server: a real HTTP round trip with httplib::Client on 127.0.0.1, port 0.
#include <gtest/gtest.h>
#include <httplib.h>
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "duplex/api/server.h"
#include "memory_backend.h"

using namespace duplex;
using nlohmann::json;

TEST(ApiServer, RoundTripOnLoopback) {
  test::MemoryBackend backend;
  api::Server server(backend, api::ServerOptions{"127.0.0.1:0", "tok", "", "", 2});
  ASSERT_TRUE(server.start());
  const std::string ep = server.endpoint();
  ASSERT_EQ(ep.rfind("127.0.0.1:", 0), 0u) << ep;
  EXPECT_NE(ep, "127.0.0.1:0");

  httplib::Client c("http://" + ep);
  auto r = c.Get("/v1/health");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["status"], "ok");

  r = c.Get("/v1/volumes");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->get_header_value("WWW-Authenticate"), "Bearer");

  const httplib::Headers auth = {{"Authorization", "Bearer tok"}};
  r = c.Post("/v1/volumes?timeout=5", auth, R"({"name":"rt","size":"64MiB"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 201) << r->body;
  EXPECT_EQ(json::parse(r->body)["size"], 64u << 20);

  r = c.Post("/v1/volumes?wait=false", auth, R"({"name":"rt2","size":"64MiB"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 202);

  r = c.Get("/v1/volumes", auth);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  EXPECT_EQ(json::parse(r->body).size(), 2u);

  // A path with a percent-encoded ':' reaches the ACL route decoded.
  r = c.Put("/v1/volumes/rt/export/acl/iqn.1994-05.com.redhat%3Ahost1", auth, R"({"access":"read-only"})",
            "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["acl"]["iqn.1994-05.com.redhat:host1"], "read-only");

  r = c.Patch("/v1/volumes/rt", auth, R"({"size":"1MiB"})", "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["field"], "size");

  r = c.Delete("/v1/volumes", auth);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->get_header_value("Allow"), "GET, POST");

  r = c.Post("/v1/volumes/rt/snapshots", auth, std::string(100 * 1024, ' '), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(json::parse(r->body)["error"]["code"], "too_large");

  r = c.Get("/metrics");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, backend.metrics_text);

  r = c.Delete("/v1/volumes/rt", auth);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  server.stop();
  EXPECT_FALSE(c.Get("/v1/health"));  // nothing listens any more
}

TEST(ApiServer, StartErrorsAreStatuses) {
  test::MemoryBackend backend;
  api::Server a(backend, api::ServerOptions{"127.0.0.1:0", "t", "", "", 1});
  ASSERT_TRUE(a.start());
  // The same port again: taken.
  api::Server b(backend, api::ServerOptions{a.endpoint(), "t", "", "", 1});
  const Status st = b.start();
  EXPECT_EQ(st.code(), Errc::unavailable) << st.to_string();
  api::Server c(backend, api::ServerOptions{"nonsense", "t", "", "", 1});
  EXPECT_EQ(c.start().code(), Errc::invalid);
  api::Server d(backend, api::ServerOptions{"127.0.0.1:99999", "t", "", "", 1});
  EXPECT_EQ(d.start().code(), Errc::invalid);
  api::Server e(backend,
                api::ServerOptions{"127.0.0.1:0", "t", "/nonexistent/cert.pem", "/nonexistent/key.pem", 1});
  EXPECT_EQ(e.start().code(), Errc::invalid);
  api::Server f(backend, api::ServerOptions{"127.0.0.1:0", "t", "/nonexistent/cert.pem", "", 1});
  EXPECT_EQ(f.start().code(), Errc::invalid);
}

// HTTPS with tls_cert/tls_key (Debian's cpp-httplib is built with CPPHTTPLIB_OPENSSL_SUPPORT): a
// self-signed certificate made by the openssl tool for 127.0.0.1.
TEST(ApiServer, HttpsWithACertificate) {
  char tmpl[] = "/tmp/duplex-api-tls-XXXXXX";
  const std::string dir = ::mkdtemp(tmpl);
  const std::string cert = dir + "/cert.pem", key = dir + "/key.pem";
  const std::string cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -keyout " +
                          key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  test::MemoryBackend backend;
  api::Server server(backend, api::ServerOptions{"127.0.0.1:0", "tok", cert, key, 1});
  ASSERT_TRUE(server.start());
  EXPECT_TRUE(server.tls());
  httplib::SSLClient c("127.0.0.1", std::stoi(server.endpoint().substr(server.endpoint().rfind(':') + 1)));
  c.enable_server_certificate_verification(false);
  auto r = c.Get("/v1/volumes", httplib::Headers{{"Authorization", "Bearer tok"}});
  ASSERT_TRUE(r) << httplib::to_string(r.error());
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "[]\n");
  // Plain HTTP to the HTTPS port gets no answer.
  httplib::Client plain("http://" + server.endpoint());
  plain.set_read_timeout(2, 0);
  auto p = plain.Get("/v1/health");
  EXPECT_TRUE(!p || p->status != 200);
  server.stop();
  std::filesystem::remove_all(dir);
}
