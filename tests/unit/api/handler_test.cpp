// api::Handler against the in-memory backend: routing, authentication, field errors, the Errc ->
// HTTP mapping, waiting (201 vs 202) and the JSON shapes of docs/api.md.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "duplex/api/handler.h"
#include "memory_backend.h"

using namespace duplex;
using nlohmann::json;

namespace {

constexpr const char* kToken = "s3cret-token";

class HandlerTest : public ::testing::Test {
 protected:
  test::MemoryBackend backend;
  api::Handler handler{backend, api::HandlerOptions{kToken}};

  api::Response call(std::string method, std::string path, std::string body = {},
                     std::map<std::string, std::string> query = {},
                     std::string auth = std::string("Bearer ") + kToken) {
    api::Request r{std::move(method), std::move(path), std::move(query), std::move(auth), std::move(body)};
    return handler.handle(r);
  }
  static json parse(const api::Response& r) { return json::parse(r.body); }
  // The error's code and field, checked against the status.
  static void expect_error(const api::Response& r, int status, const std::string& code,
                           const std::string& field = {}) {
    EXPECT_EQ(r.status, status) << r.body;
    const json j = json::parse(r.body, nullptr, false);
    ASSERT_TRUE(j.is_object()) << r.body;
    EXPECT_EQ(j["error"]["code"], code) << r.body;
    EXPECT_FALSE(j["error"]["message"].get<std::string>().empty());
    if (!field.empty()) {
      EXPECT_EQ(j["error"].value("field", ""), field) << r.body;
      EXPECT_NE(j["error"]["message"].get<std::string>().find(field), std::string::npos) << r.body;
    }
  }
};

}  // namespace

TEST_F(HandlerTest, TokenRequiredExceptHealthAndMetrics) {
  auto r = call("GET", "/v1/volumes", {}, {}, "");
  expect_error(r, 401, "unauthorized");
  EXPECT_EQ(r.headers.at(0).first, "WWW-Authenticate");
  expect_error(call("GET", "/v1/volumes", {}, {}, "Bearer wrong-token!"), 401, "unauthorized");
  expect_error(call("GET", "/v1/volumes", {}, {}, "Bearer s3cret-toke"), 401, "unauthorized");
  expect_error(call("GET", "/v1/volumes", {}, {}, "Bearer s3cret-token2"), 401, "unauthorized");
  expect_error(call("GET", "/v1/volumes", {}, {}, "Basic s3cret-token"), 401, "unauthorized");
  expect_error(call("POST", "/v1/volumes", R"({"name":"x","size":4096})", {}, ""), 401, "unauthorized");
  EXPECT_EQ(call("GET", "/v1/volumes", {}, {}, "bearer s3cret-token").status,
            200);  // the scheme is case-blind

  r = call("GET", "/v1/health", {}, {}, "");
  ASSERT_EQ(r.status, 200);
  const json h = parse(r);
  EXPECT_EQ(h["node"], "n1");
  EXPECT_EQ(h["site"], "a");
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["etcd"], true);
  EXPECT_EQ(h["lease"], true);
  EXPECT_EQ(call("GET", "/v1/health", {}, {{"probe", "lb"}}, "").status, 200);  // its query is ignored
  r = call("GET", "/metrics", {}, {}, "");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.body, backend.metrics_text);
}

TEST_F(HandlerTest, NoConfiguredTokenRefusesEverything) {
  api::Handler open{backend, api::HandlerOptions{}};
  api::Request r{"GET", "/v1/volumes", {}, "Bearer ", {}};
  EXPECT_EQ(open.handle(r).status, 401);
  r.path = "/v1/health";
  EXPECT_EQ(open.handle(r).status, 200);
}

TEST_F(HandlerTest, UnknownRoutesAndMethods) {
  expect_error(call("GET", "/v1/nope"), 404, "not_found");
  expect_error(call("GET", "/v2/volumes"), 404, "not_found");
  expect_error(call("GET", "/v1/volumes/"), 404, "not_found");
  expect_error(call("GET", ""), 404, "not_found");
  expect_error(call("GET", "v1/volumes"), 404, "not_found");
  expect_error(call("GET", "/v1/volumes/x/snapshots/s/extra"), 404, "not_found");
  auto r = call("DELETE", "/v1/volumes");
  expect_error(r, 405, "method_not_allowed");
  ASSERT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(r.headers[0].first, "Allow");
  EXPECT_EQ(r.headers[0].second, "GET, POST");
  expect_error(call("POST", "/v1/health"), 405, "method_not_allowed");
  expect_error(call("GET", "/v1/volumes/x/snapshots/s"), 405, "method_not_allowed");
  expect_error(call("BREW", "/v1/volumes/x"), 405, "method_not_allowed");
}

TEST_F(HandlerTest, CreateShowListAndDuplicate) {
  auto r = call("POST", "/v1/volumes", R"({"name":"demo","size":"1GiB","preferred_site":"a"})");
  ASSERT_EQ(r.status, 201) << r.body;
  json v = parse(r);
  EXPECT_EQ(v["name"], "demo");
  EXPECT_EQ(v["size"], 1073741824u);
  EXPECT_EQ(v["state"], "ready");
  EXPECT_EQ(v["preferred_site"], "a");
  for (const char* k : {"uuid", "generation", "replicas_wanted", "pool", "clone_of", "created", "reason",
                        "replicas", "snapshots", "export", "paths"})
    EXPECT_TRUE(v.contains(k)) << k;
  EXPECT_EQ(v["export"]["iqn"], "iqn.2026-11.io.duplex:demo");

  expect_error(call("POST", "/v1/volumes", R"({"name":"demo","size":4096})"), 409, "exists");

  r = call("GET", "/v1/volumes/demo");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r)["size"], 1073741824u);
  r = call("GET", "/v1/volumes");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(parse(r).size(), 1u);
  expect_error(call("GET", "/v1/volumes/other"), 404, "not_found");
  expect_error(call("GET", "/v1/volumes/bad$name"), 404, "not_found");
  expect_error(call("POST", "/v1/volumes", R"({"name":"big","size":"1T","replicas":3})"), 507, "no_space");
}

TEST_F(HandlerTest, FieldErrorsNameTheField) {
  expect_error(call("POST", "/v1/volumes", "{not json"), 400, "invalid");
  expect_error(call("POST", "/v1/volumes", "[1,2]"), 400, "invalid");
  expect_error(call("POST", "/v1/volumes", ""), 400, "invalid");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096,"colour":"red"})"), 400, "invalid",
               "colour");
  expect_error(call("POST", "/v1/volumes", R"({"size":4096})"), 400, "invalid", "name");
  expect_error(call("POST", "/v1/volumes", R"({"name":"-v","size":4096})"), 400, "invalid", "name");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v/x","size":4096})"), 400, "invalid", "name");
  expect_error(call("POST", "/v1/volumes", R"({"name":7,"size":4096})"), 400, "invalid", "name");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v"})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":"10 GiB"})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":"10XB"})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":-4096})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096.5})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":0})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":1000})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":"99999999999999999999"})"), 400, "invalid",
               "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":"20000000P"})"), 400, "invalid", "size");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096,"replicas":0})"), 400, "invalid",
               "replicas");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096,"replicas":"2"})"), 400, "invalid",
               "replicas");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096,"clone_of":"v"})"), 400, "invalid",
               "clone_of");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096,"pool":"a b"})"), 400, "invalid",
               "pool");
  expect_error(
      call("POST", "/v1/volumes", R"({"name":"v","size":4096,"preferred_site":""})", {{"wait", "maybe"}}),
      400, "invalid", "wait");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096})", {{"timeout", "-1"}}), 400,
               "invalid", "timeout");
  expect_error(call("POST", "/v1/volumes", R"({"name":"v","size":4096})", {{"timeout", "1e3x"}}), 400,
               "invalid", "timeout");
  expect_error(call("GET", "/v1/volumes", {}, {{"verbose", "1"}}), 400, "invalid", "verbose");
  // Nothing was created by any of these.
  EXPECT_EQ(parse(call("GET", "/v1/volumes")).size(), 0u);
}

TEST_F(HandlerTest, SizeStrings) {
  EXPECT_EQ(*api::parse_size("4096"), 4096u);
  EXPECT_EQ(*api::parse_size("10GiB"), 10ULL << 30);
  EXPECT_EQ(*api::parse_size("512MiB"), 512ULL << 20);
  EXPECT_EQ(*api::parse_size("512M"), 512ULL << 20);
  EXPECT_EQ(*api::parse_size("1T"), 1ULL << 40);
  EXPECT_EQ(*api::parse_size("1TB"), 1ULL << 40);
  EXPECT_EQ(*api::parse_size("4k"), 4096u);
  EXPECT_EQ(*api::parse_size("2P"), 2ULL << 50);
  EXPECT_EQ(*api::parse_size("4096B"), 4096u);
  EXPECT_EQ(*api::parse_size("16383P"), 16383ULL << 50);
  for (const char* bad :
       {"", "G", "1.5G", "1GiBB", "1 G", "-1", "1Gi B", "16384P", "18446744073709551616", "1Y"})
    EXPECT_FALSE(api::parse_size(bad)) << bad;
  auto r = call("POST", "/v1/volumes", R"({"name":"s","size":"512MiB"})");
  ASSERT_EQ(r.status, 201);
  EXPECT_EQ(parse(r)["size"], 512u << 20);
}

TEST_F(HandlerTest, GrowNeverShrinks) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"g","size":"1GiB"})").status, 201);
  expect_error(call("PATCH", "/v1/volumes/g", R"({"size":"512MiB"})"), 400, "invalid", "size");
  expect_error(call("PATCH", "/v1/volumes/g", R"({})"), 400, "invalid", "size");
  expect_error(call("PATCH", "/v1/volumes/g", R"({"size":"2GiB","name":"x"})"), 400, "invalid", "name");
  expect_error(call("PATCH", "/v1/volumes/nope", R"({"size":"2GiB"})"), 404, "not_found");
  auto r = call("PATCH", "/v1/volumes/g", R"({"size":"2GiB"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["size"], 2ULL << 30);
  const auto gen = parse(r)["generation"].get<std::int64_t>();
  expect_error(call("PATCH", "/v1/volumes/g", json{{"size", "3GiB"}, {"generation", gen - 1}}.dump()), 409,
               "conflict");
  EXPECT_EQ(call("PATCH", "/v1/volumes/g", json{{"size", "3GiB"}, {"generation", gen}}.dump()).status, 200);
}

TEST_F(HandlerTest, WaitAndTimeoutGive202) {
  backend.apply = false;  // no node applies anything
  auto r = call("POST", "/v1/volumes", R"({"name":"p","size":"1MiB"})", {{"timeout", "0.2"}});
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(parse(r)["state"], "creating");
  EXPECT_EQ(parse(r)["replicas"][0]["state"], "creating");
  backend.apply = true;
  r = call("POST", "/v1/volumes", R"({"name":"q","size":"1MiB"})", {{"wait", "false"}});
  EXPECT_EQ(r.status, 202);
  r = call("DELETE", "/v1/volumes/q", {}, {{"wait", "0"}});
  EXPECT_EQ(r.status, 202);
  EXPECT_EQ(parse(r)["state"], "deleting");
}

TEST_F(HandlerTest, DeleteLifecycle) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"d","size":"1MiB"})").status, 201);
  ASSERT_EQ(call("POST", "/v1/volumes/d/snapshots", R"({"name":"s1"})").status, 201);
  auto r = call("DELETE", "/v1/volumes/d");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r), (json{{"deleted", "d"}}));
  expect_error(call("GET", "/v1/volumes/d"), 404, "not_found");
  expect_error(call("GET", "/v1/volumes/d/snapshots"), 404, "not_found");
  expect_error(call("DELETE", "/v1/volumes/d"), 404, "not_found");
}

TEST_F(HandlerTest, Snapshots) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"v","size":"1MiB"})").status, 201);
  auto r = call("POST", "/v1/volumes/v/snapshots", R"({"name":"s1"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(parse(r)["volume"], "v");
  EXPECT_EQ(parse(r)["name"], "s1");
  EXPECT_EQ(parse(r)["state"], "ready");
  expect_error(call("POST", "/v1/volumes/v/snapshots", R"({"name":"s1"})"), 409, "exists");
  expect_error(call("POST", "/v1/volumes/v/snapshots", R"({"name":"a@b"})"), 400, "invalid", "name");
  expect_error(call("POST", "/v1/volumes/v/snapshots", R"({"snap":"s2"})"), 400, "invalid", "snap");
  expect_error(call("POST", "/v1/volumes/nope/snapshots", R"({"name":"s1"})"), 404, "not_found");
  r = call("GET", "/v1/volumes/v/snapshots");
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(parse(r).size(), 1u);
  // A clone from the snapshot takes its size unless a larger one is given.
  r = call("POST", "/v1/volumes", R"({"name":"c","clone_of":"v@s1"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(parse(r)["size"], 1u << 20);
  EXPECT_EQ(parse(r)["clone_of"], "v@s1");
  expect_error(call("POST", "/v1/volumes", R"({"name":"c2","clone_of":"v@nope"})"), 404, "not_found");
  r = call("DELETE", "/v1/volumes/v/snapshots/s1");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r), (json{{"deleted", "v@s1"}}));
  expect_error(call("DELETE", "/v1/volumes/v/snapshots/s1"), 404, "not_found");
  expect_error(call("DELETE", "/v1/volumes/v/snapshots/..bad"), 404, "not_found");
}

TEST_F(HandlerTest, ExportAndAcl) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"e","size":"1MiB"})").status, 201);
  auto r = call("GET", "/v1/volumes/e/export");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r), (json{{"volume", "e"},
                            {"nbd", true},
                            {"iscsi", true},
                            {"iqn", "iqn.2026-11.io.duplex:e"},
                            {"default_access", "read-write"},
                            {"acl", json::object()}}));
  r = call("PUT", "/v1/volumes/e/export", R"({"nbd":false,"default_access":"none"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["nbd"], false);
  EXPECT_EQ(parse(r)["iscsi"], true);
  EXPECT_EQ(parse(r)["default_access"], "none");
  expect_error(call("PUT", "/v1/volumes/e/export", R"({"nbd":"yes"})"), 400, "invalid", "nbd");
  expect_error(call("PUT", "/v1/volumes/e/export", R"({"default_access":"rw"})"), 400, "invalid",
               "default_access");

  const std::string host = "/v1/volumes/e/export/acl/iqn.1994-05.com.redhat:host1";
  r = call("PUT", host, R"({"access":"read-only"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["acl"], (json{{"iqn.1994-05.com.redhat:host1", "read-only"}}));
  expect_error(call("PUT", host, R"({})"), 400, "invalid", "access");
  expect_error(call("PUT", host, R"({"access":"all"})"), 400, "invalid", "access");
  expect_error(call("PUT", "/v1/volumes/e/export/acl/bad\x01name", R"({"access":"none"})"), 400, "invalid",
               "initiator");
  r = call("DELETE", host);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(parse(r)["acl"], json::object());
  expect_error(call("DELETE", host), 404, "not_found");
  expect_error(call("GET", "/v1/volumes/none/export"), 404, "not_found");
}

TEST_F(HandlerTest, BodyLimit) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"b","size":"1MiB"})").status, 201);
  std::string big = R"({"name":"x","pad":")" + std::string(64 * 1024, 'a') + "\"}";
  expect_error(call("POST", "/v1/volumes/b/snapshots", big), 413, "too_large");
}

TEST_F(HandlerTest, StatusNodesPools) {
  cluster::NodeRecord n;
  n.name = "n1";
  n.site = "a";
  n.address = "127.0.0.11";
  n.nbd = {"127.0.0.11:10809"};
  backend.node_list.push_back({n, true, std::nullopt});
  n.name = "n2";
  n.site = "b";
  backend.node_list.push_back({n, true, std::nullopt});
  backend.pool_list.push_back(cluster::PoolRecord{"n1", "p0", "u", 1 << 30, 1 << 29, 65536, 1});
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"v","size":"1MiB"})").status, 201);

  auto r = call("GET", "/v1/status");
  ASSERT_EQ(r.status, 200) << r.body;
  json s = parse(r);
  EXPECT_EQ(s["node"]["name"], "n1");
  EXPECT_EQ(s["cluster"]["nodes"], 2);
  EXPECT_EQ(s["cluster"]["alive"], 2);
  EXPECT_EQ(s["cluster"]["volumes"], 1);
  EXPECT_EQ(s["cluster"]["sites"], (json{"a", "b"}));
  EXPECT_EQ(s["volumes"][0]["name"], "v");
  EXPECT_EQ(s["volumes"][0]["replicas"][0]["node"], "n1");

  r = call("GET", "/v1/nodes");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r).size(), 2u);
  r = call("GET", "/v1/nodes/n2");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r)["site"], "b");
  EXPECT_EQ(parse(r)["nbd"], (json{"127.0.0.11:10809"}));
  expect_error(call("GET", "/v1/nodes/n3"), 404, "not_found");
  r = call("GET", "/v1/pools");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(parse(r)[0]["cluster_size"], 65536);
}

TEST_F(HandlerTest, HostileBytesNeverBreakTheAnswer) {
  // Invalid UTF-8 in a field that is echoed back: the answer is still valid JSON.
  auto r = call("POST", "/v1/volumes", std::string("{\"name\":\"\xff\xfe\",\"size\":4096}"));
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(json::parse(r.body, nullptr, false).is_discarded());
  r = call("GET", std::string("/v1/volumes/\xc3\x28"));
  EXPECT_EQ(r.status, 404);
  EXPECT_FALSE(json::parse(r.body, nullptr, false).is_discarded());
  r = call("POST", "/v1/volumes", std::string("{\"\xff\":1}"));
  EXPECT_EQ(r.status, 400);
  EXPECT_FALSE(json::parse(r.body, nullptr, false).is_discarded());
  r = call("POST", "/v1/volumes", std::string(1000, '['));
  EXPECT_EQ(r.status, 400);
}

namespace {

// A mirrored volume whose replicas reported as the nodes would.
cluster::ReplicaStatus report(const std::string& node, const std::string& state, std::int64_t generation) {
  cluster::ReplicaStatus s;
  s.volume = "m";
  s.node = node;
  s.state = state;
  s.generation = generation;
  return s;
}

}  // namespace

TEST_F(HandlerTest, VolumeShowsTheInSyncSetTheMirrorFieldsAndTheDecisions) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  auto& v = backend.stored("m");
  auto r1 = report("n1", "in-sync", 3);
  r1.role = "owner";
  r1.last_event = "peer n2 back: resync started";
  v.replicas[0].report = r1;
  auto r2 = report("n2", "resyncing", 3);
  r2.role = "peer";
  r2.resync_rate = 1048576;
  r2.resync_eta_seconds = 30;
  r2.resync_bytes_total = 4 << 20;
  r2.resync_bytes_done = 1 << 20;
  r2.verify_mismatches = 2;
  v.replicas[1].report = r2;
  ASSERT_TRUE(backend.change_insync(*v.insync, {"n1"}, "n1", "peer n2 lost", {}));
  const auto r = call("GET", "/v1/volumes/m");
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = parse(r);
  EXPECT_EQ(j["insync"]["generation"], 2);
  EXPECT_EQ(j["insync"]["members"], json::array({"n1"}));
  EXPECT_EQ(j["insync"]["owner"], "n1");
  EXPECT_EQ(j["insync"]["decided_by"], "n1");
  EXPECT_EQ(j["insync"]["reason"], "peer n2 lost");
  EXPECT_TRUE(j["insync"].contains("at"));
  const json& reps = j["replicas"];
  ASSERT_EQ(reps.size(), 2u);
  EXPECT_EQ(reps[0]["role"], "owner");
  EXPECT_EQ(reps[0]["member"], true);
  EXPECT_EQ(reps[0]["last_event"], "peer n2 back: resync started");
  EXPECT_EQ(reps[1]["member"], false);
  EXPECT_EQ(reps[1]["role"], "") << "the set's view, not n2's report (peer)";
  EXPECT_EQ(reps[1]["state"], "resyncing");
  EXPECT_EQ(reps[1]["resync_rate"], 1048576.0);
  EXPECT_EQ(reps[1]["resync_eta_seconds"], 30.0);
  EXPECT_EQ(reps[1]["resync_bytes_total"], 4u << 20);
  EXPECT_EQ(reps[1]["resync_bytes_done"], 1u << 20);
  EXPECT_EQ(reps[1]["verify_mismatches"], 2);
  ASSERT_EQ(j["decisions"].size(), 2u);
  EXPECT_EQ(j["decisions"][0]["generation"], 1);
  EXPECT_EQ(j["decisions"][0]["reason"], "created");
  EXPECT_EQ(j["decisions"][1]["generation"], 2);
  EXPECT_EQ(j["decisions"][1]["members"], json::array({"n1"}));
  EXPECT_EQ(j["decisions"][1]["may_lose"], json::array());
}

TEST_F(HandlerTest, VerifyAsksTheOwnerAndRefusesWhatCannotBeCompared) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"one","size":4096})").status, 201);
  auto r = call("POST", "/v1/volumes/m/verify", R"({"repair":true})");
  ASSERT_EQ(r.status, 202) << r.body;
  EXPECT_EQ(parse(r)["verify_request"], 1);
  EXPECT_EQ(parse(r)["repair"], true);
  EXPECT_EQ(call("POST", "/v1/volumes/m/verify", "{}").status, 202) << "repair is optional";
  ASSERT_EQ(backend.verify_requests.size(), 2u);
  EXPECT_EQ(backend.verify_requests[0], (std::pair<std::string, bool>{"m", true}));
  EXPECT_EQ(backend.verify_requests[1], (std::pair<std::string, bool>{"m", false}));
  expect_error(call("POST", "/v1/volumes/one/verify", "{}"), 400, "invalid");
  expect_error(call("POST", "/v1/volumes/m/verify", R"({"repair":"yes"})"), 400, "invalid", "repair");
  expect_error(call("POST", "/v1/volumes/m/verify", R"({"fix":true})"), 400, "invalid", "fix");
  expect_error(call("POST", "/v1/volumes/nope/verify", "{}"), 404, "not_found");
  expect_error(call("GET", "/v1/volumes/m/verify"), 405, "method_not_allowed");
  EXPECT_EQ(backend.verify_requests.size(), 2u) << "refusals ask nothing";
}

TEST_F(HandlerTest, PromoteRefusalsSayWhy) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  auto& v = backend.stored("m");
  const std::string path = "/v1/volumes/m/promote";
  // Rolling failure: n2 was removed at generation 2, then n1 (the only member) was lost.
  ASSERT_TRUE(backend.change_insync(*v.insync, {"n1"}, "n1", "peer n2 lost", {}));
  expect_error(call("POST", path, R"({"node":"n9","accept_data_loss":true})"), 400, "invalid", "node");
  expect_error(call("POST", path, R"({"node":"bad/name","accept_data_loss":true})"), 400, "invalid", "node");
  expect_error(call("POST", path, R"({"accept_data_loss":true})"), 400, "invalid", "node");
  expect_error(call("POST", path, R"({"node":"n2","accept_data_loss":"yes"})"), 400, "invalid",
               "accept_data_loss");
  expect_error(call("POST", path, R"({"node":"n2","force":true})"), 400, "invalid", "force");
  expect_error(call("POST", "/v1/volumes/nope/promote", R"({"node":"n2","accept_data_loss":true})"), 404,
               "not_found");
  expect_error(call("GET", path), 405, "method_not_allowed");
  // No report from n2: what it holds is unknown.
  expect_error(call("POST", path, R"({"node":"n2","accept_data_loss":true})"), 409, "conflict");
  // An inconsistent or failed replica is never promoted, flag or not.
  v.replicas[1].report = report("n2", "inconsistent", 1);
  auto r = call("POST", path, R"({"node":"n2","accept_data_loss":true})");
  expect_error(r, 409, "conflict");
  EXPECT_NE(parse(r)["error"]["message"].get<std::string>().find("never promoted"), std::string::npos);
  v.replicas[1].report = report("n2", "failed", 1);
  expect_error(call("POST", path, R"({"node":"n2","accept_data_loss":true})"), 409, "conflict");
  // The only member already.
  v.replicas[0].report = report("n1", "in-sync", 2);
  expect_error(call("POST", path, R"({"node":"n1","accept_data_loss":true})"), 409, "conflict");
  // Without the flag: 400 saying what would be lost and that the flag is required; nothing changes.
  v.replicas[1].report = report("n2", "outdated", 1);
  r = call("POST", path, R"({"node":"n2"})");
  expect_error(r, 400, "invalid", "accept_data_loss");
  const std::string msg = parse(r)["error"]["message"];
  EXPECT_NE(msg.find("writes acknowledged by n1 after generation 1"), std::string::npos) << msg;
  EXPECT_EQ(call("POST", path, R"({"node":"n2","accept_data_loss":false})").status, 400);
  EXPECT_EQ(v.insync->generation, 2);
  EXPECT_EQ(v.decisions.size(), 2u);
}

TEST_F(HandlerTest, PromoteWithTheFlagMakesTheNodeTheOnlyMemberAndLogsWhatMayBeLost) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  auto& v = backend.stored("m");
  ASSERT_TRUE(backend.change_insync(*v.insync, {"n1"}, "n1", "peer n2 lost", {}));
  v.replicas[0].report = report("n1", "failed", 2);
  v.replicas[1].report = report("n2", "outdated", 1);
  auto r = call("POST", "/v1/volumes/m/promote",
                R"({"node":"n2","accept_data_loss":true,"reason":"site a burnt down"})");
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = parse(r);
  EXPECT_EQ(j["insync"]["generation"], 3);
  EXPECT_EQ(j["insync"]["members"], json::array({"n2"}));
  EXPECT_EQ(j["insync"]["owner"], "n2");
  EXPECT_EQ(j["insync"]["decided_by"], "api");
  EXPECT_NE(j["insync"]["reason"].get<std::string>().find("site a burnt down"), std::string::npos);
  ASSERT_EQ(j["may_lose"].size(), 1u);
  EXPECT_NE(j["may_lose"][0].get<std::string>().find("writes acknowledged by n1 after generation 1"),
            std::string::npos);
  EXPECT_EQ(j["decisions"].back()["may_lose"], j["may_lose"]);
  // Done once: promoting again is a conflict.
  expect_error(call("POST", "/v1/volumes/m/promote", R"({"node":"n2","accept_data_loss":true})"), 409,
               "conflict");
}

TEST_F(HandlerTest, PromoteThatLosesTheRaceIsAConflict) {
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  auto& v = backend.stored("m");
  v.replicas[0].report = report("n1", "in-sync", 1);
  v.replicas[1].report = report("n2", "in-sync", 1);
  // n1's mirror removes n2 between the handler's read and its compare-and-swap.
  backend.before_change_insync = [&] {
    backend.before_change_insync = nullptr;
    ASSERT_TRUE(backend.change_insync(*v.insync, {"n1"}, "n1", "peer n2 lost", {}));
  };
  auto r = call("POST", "/v1/volumes/m/promote", R"({"node":"n2","accept_data_loss":true})");
  expect_error(r, 409, "conflict");
  EXPECT_EQ(v.insync->members, std::vector<std::string>{"n1"});
  EXPECT_EQ(v.insync->generation, 2);
}

namespace {
api::NodeView live_node(const std::string& name, const std::string& site) {
  api::NodeView n;
  n.rec.name = name;
  n.rec.site = site;
  n.alive = true;
  return n;
}
}  // namespace

TEST_F(HandlerTest, DrainRefusedWhileAVolumeWouldHaveNoInSyncReplica) {
  backend.node_list = {live_node("n1", "a"), live_node("n2", "b")};
  // A one-replica volume on n1: the refusal says that it is not mirrored.
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"solo","size":4096})").status, 201);
  auto r = call("POST", "/v1/nodes/n1/drain", R"({"reason":"upgrade"})");
  expect_error(r, 409, "conflict");
  EXPECT_NE(parse(r)["error"]["message"].get<std::string>().find("volume solo has a single replica"),
            std::string::npos)
      << r.body;
  ASSERT_EQ(call("DELETE", "/v1/volumes/solo").status, 200);
  // A mirror whose other replica is out of the set (n2 resyncing): draining n1 would leave none.
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  auto& v = backend.stored("m");
  ASSERT_TRUE(backend.change_insync(*v.insync, {"n1"}, "n1", "peer n2 lost", {}));
  v.replicas[0].report = report("n1", "in-sync", 2);
  v.replicas[0].report->link_up = true;
  r = call("POST", "/v1/nodes/n1/drain", "");
  expect_error(r, 409, "conflict");
  EXPECT_NE(parse(r)["error"]["message"].get<std::string>().find("on n2, is not in sync"), std::string::npos)
      << r.body;
  // Both in the set but the link down (n1's report), or n2 down: still refused.
  ASSERT_TRUE(backend.change_insync(*v.insync, {"n1", "n2"}, "n1", "resync of n2 complete", {}));
  v.replicas[0].report->link_up = false;
  expect_error(call("POST", "/v1/nodes/n1/drain", "{}"), 409, "conflict");
  v.replicas[0].report->link_up = true;
  backend.node_list[1].alive = false;
  r = call("POST", "/v1/nodes/n1/drain", "{}");
  expect_error(r, 409, "conflict");
  EXPECT_NE(parse(r)["error"]["message"].get<std::string>().find("n2, is down"), std::string::npos) << r.body;
  for (const auto& n : backend.node_list) EXPECT_FALSE(n.drain) << "nothing recorded";
  // Unknown nodes and bad bodies.
  expect_error(call("POST", "/v1/nodes/n9/drain", "{}"), 404, "not_found");
  expect_error(call("POST", "/v1/nodes/n1/drain", R"({"force":true})"), 400, "invalid", "force");
  expect_error(call("GET", "/v1/nodes/n1/drain"), 405, "method_not_allowed");
}

TEST_F(HandlerTest, DrainIsRecordedThenShowsDrainingUntilTheNodeLeftEverySetAndResumeEndsIt) {
  backend.node_list = {live_node("n1", "a"), live_node("n2", "b")};
  ASSERT_EQ(call("POST", "/v1/volumes", R"({"name":"m","size":4096,"replicas":2})").status, 201);
  auto& v = backend.stored("m");
  v.replicas[0].report = report("n1", "in-sync", 1);
  v.replicas[0].report->link_up = true;
  auto r = call("POST", "/v1/nodes/n1/drain", R"({"reason":"kernel upgrade"})");
  ASSERT_EQ(r.status, 200) << r.body;
  json j = parse(r);
  EXPECT_EQ(j["name"], "n1");
  EXPECT_EQ(j["drain"]["reason"], "drain of n1: kernel upgrade");
  EXPECT_EQ(j["drain"]["by"], "api");
  EXPECT_EQ(j["drain"]["state"], "draining");
  EXPECT_EQ(j["drain"]["in_sync"], json::array({"m"}));
  // n1's mirror stepped down: drained. The list shows it; n2 is not drained.
  ASSERT_TRUE(
      backend.change_insync(*v.insync, {"n2"}, "n1", "stepping down: drain of n1: kernel upgrade", {}));
  j = parse(call("GET", "/v1/nodes/n1"));
  EXPECT_EQ(j["drain"]["state"], "drained");
  EXPECT_EQ(j["drain"]["in_sync"], json::array());
  const json list = parse(call("GET", "/v1/nodes"));
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0]["drain"]["state"], "drained");
  EXPECT_TRUE(list[1]["drain"].is_null());
  // n2 cannot be drained now: it holds the only in-sync replica.
  expect_error(call("POST", "/v1/nodes/n2/drain", "{}"), 409, "conflict");
  // Draining again is harmless (n1 is out of every set already).
  EXPECT_EQ(call("POST", "/v1/nodes/n1/drain", "{}").status, 200);
  r = call("POST", "/v1/nodes/n1/resume", "");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(parse(r)["drain"].is_null());
  expect_error(call("POST", "/v1/nodes/n1/resume", "{}"), 404, "not_found");
}
