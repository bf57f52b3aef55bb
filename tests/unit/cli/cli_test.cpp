// duplexctl's pieces without a cluster: sizes, tables, error lines, endpoint resolution, the HTTP
// client and the 202 wait loop against a real HTTP server on loopback, and detached processes.
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gtest/gtest.h>
#include <httplib.h>

#include "duplex/cli/client.h"
#include "duplex/cli/commands.h"
#include "duplex/cli/endpoints.h"
#include "duplex/cli/process.h"
#include "duplex/cli/progress.h"
#include "duplex/cli/render.h"
#include "duplex/cli/units.h"

namespace duplex::cli {
namespace {

using nlohmann::json;

TEST(CliUnits, ParsesSizes) {
  EXPECT_EQ(*parse_size("4096"), 4096u);
  EXPECT_EQ(*parse_size("10GiB"), 10ull << 30);
  EXPECT_EQ(*parse_size("512m"), 512ull << 20);
  EXPECT_EQ(*parse_size("1T"), 1ull << 40);
  EXPECT_EQ(*parse_size("1.5GiB"), 3ull << 29);
  EXPECT_EQ(*parse_size("2GB"), 2000000000u);
  for (const char* bad : {"", "GiB", "1Q", "1.2.3G", "0.3B", "-1G", "99999999PiB"}) {
    auto r = parse_size(bad);
    EXPECT_FALSE(r) << bad;
    if (!r) {
      EXPECT_EQ(r.status().code(), Errc::invalid);
    }
  }
}

TEST(CliUnits, FormatsSizes) {
  EXPECT_EQ(format_size(0), "0 B");
  EXPECT_EQ(format_size(1023), "1023 B");
  EXPECT_EQ(format_size(1ull << 30), "1 GiB");
  EXPECT_EQ(format_size(3ull << 29), "1.5 GiB");
  EXPECT_EQ(format_size(20ull << 30), "20 GiB");
  EXPECT_EQ(format_size(512ull << 20), "512 MiB");
}

TEST(CliRender, TableAlignsColumns) {
  Table t({"NAME", "SIZE"});
  t.add({"demo", "1 GiB"});
  t.add({"a-much-longer-name", "20 GiB"});
  EXPECT_EQ(t.str(), "NAME                SIZE\ndemo                1 GiB\na-much-longer-name  20 GiB\n");
}

const json kVolume = json::parse(R"({"name": "demo", "uuid": "u", "size": 1073741824, "state": "ready",
  "generation": 3, "replicas_wanted": 2, "preferred_site": "a", "pool": "p0", "clone_of": "",
  "replicas": [{"node": "n1", "site": "a", "alive": true, "state": "in-sync", "generation": 3,
                "allocated_bytes": 65536, "dirty_bytes": 0, "resync_progress": 1.0, "error": ""},
               {"node": "n2", "site": "b", "alive": true, "state": "resyncing", "generation": 2,
                "allocated_bytes": 0, "dirty_bytes": 1048576, "resync_progress": 0.4, "error": ""}],
  "snapshots": [{"volume": "demo", "name": "s1", "state": "ready", "created": "t",
                 "nbd": "nbd://127.0.0.11:10809/demo@s1"}],
  "export": {"volume": "demo", "nbd": true, "iscsi": true, "default_access": "read-write", "acl": {}},
  "paths": [{"node": "n1", "nbd": "nbd://127.0.0.11:10809/demo",
             "iscsi": "iscsi://127.0.0.11:3260/iqn.2026-11.io.duplex:demo/0"}]})");

TEST(CliRender, VolumeShowsReplicasSnapshotsAndPaths) {
  const std::string out = render_volume(kVolume);
  EXPECT_NE(out.find("1/2 in-sync"), std::string::npos) << out;
  EXPECT_NE(out.find("owner:          n1"), std::string::npos) << out;
  EXPECT_NE(out.find("resyncing"), std::string::npos) << out;
  EXPECT_NE(out.find("40%"), std::string::npos) << out;
  EXPECT_NE(out.find("1 MiB"), std::string::npos) << out;  // n2's dirty bytes
  EXPECT_NE(out.find("demo@s1"), std::string::npos) << out;
  EXPECT_NE(out.find("nbd://127.0.0.11:10809/demo"), std::string::npos) << out;
  std::string state;
  // A resync is not part of a create or grow: the change is applied, the state line shows it.
  EXPECT_TRUE(volume_applied(kVolume, 0, state));
  EXPECT_EQ(state, "ready, resync 40%");
  EXPECT_FALSE(volume_applied(kVolume, 2ull << 30, state));  // a grow to 2 GiB not there yet
  EXPECT_EQ(state, "ready, resync 40%, growing");
}

// A mirrored volume mid-grow: the record says 2 GiB, n2 has not committed it. The grow is not
// applied until every replica serves the new size, and both the wait line and `volume show` say
// what it waits for.
TEST(CliRender, AGrowIsAppliedOnlyWhenEveryReplicaServesTheNewSize) {
  json v = json::parse(R"({"name": "m", "size": 2147483648, "state": "ready", "replicas_wanted": 2,
    "replicas": [{"node": "n1", "state": "in-sync", "size": 2147483648, "grow": ""},
                 {"node": "n2", "state": "in-sync", "size": 1073741824,
                  "grow": "waiting for n2 to grow its replica"}]})");
  std::string state;
  EXPECT_FALSE(volume_applied(v, 2ull << 30, state));
  EXPECT_EQ(state, "ready, growing (n2: waiting for n2 to grow its replica)");
  const std::string out = render_volume(v);
  EXPECT_NE(
      out.find("n2: serves 1 GiB of 2 GiB: grow not committed yet (waiting for n2 to grow its replica)"),
      std::string::npos)
      << out;
  EXPECT_EQ(out.find("n1: serves"), std::string::npos) << out;
  v["replicas"][1]["size"] = 2147483648;
  v["replicas"][1]["grow"] = "";
  EXPECT_TRUE(volume_applied(v, 2ull << 30, state));
  EXPECT_EQ(state, "ready");
  EXPECT_TRUE(volume_applied(v, 0, state)) << "no grow asked";
}

TEST(CliRender, WrongTypesDoNotThrow) {
  const json odd = json::parse(R"({"name": 7, "size": "big", "replicas": {"x": 1}, "paths": "none"})");
  EXPECT_NO_THROW(render_volume(odd));
  EXPECT_NO_THROW(render_volumes(json::array({odd, 3, "x"})));
  EXPECT_NO_THROW(render_nodes(json("not a list")));
  EXPECT_NO_THROW(render_status(json(nullptr)));
}

const json kMirrored = json::parse(R"({"name": "m", "size": 1073741824, "state": "ready",
  "generation": 3, "replicas_wanted": 2, "preferred_site": "a",
  "replicas": [{"node": "n1", "site": "a", "alive": true, "state": "in-sync", "generation": 3,
                "role": "owner", "dirty_bytes": 3145728, "member": true,
                "last_event": "peer n2 back: resyncing 3 MiB"},
               {"node": "n2", "site": "b", "alive": true, "state": "resyncing", "generation": 3,
                "role": "peer", "member": false, "resync_progress": 0.25, "resync_rate": 1048576,
                "resync_eta_seconds": 3, "resync_bytes_total": 4194304, "resync_bytes_done": 1048576,
                "verify_mismatches": 8192, "verify_state": "done", "verify_repaired": 4096}],
  "insync": {"generation": 7, "members": ["n1"], "owner": "n1", "decided_by": "n1",
             "reason": "peer n2 lost: link timeout", "at": "2026-11-24T10:00:00Z"},
  "decisions": [{"generation": 1, "members": ["n1", "n2"], "decided_by": "api", "reason": "created"},
                {"generation": 2, "members": ["n1"], "decided_by": "n1", "reason": "r2"},
                {"generation": 3, "members": ["n1", "n2"], "decided_by": "n1", "reason": "r3"},
                {"generation": 4, "members": ["n2"], "decided_by": "api", "reason": "promote: drill",
                 "may_lose": ["writes acknowledged by n1 after generation 3"]},
                {"generation": 5, "members": ["n1", "n2"], "decided_by": "n2", "reason": "r5"},
                {"generation": 6, "members": ["n1", "n2"], "decided_by": "n1", "reason": "r6"},
                {"generation": 7, "members": ["n1"], "decided_by": "n1", "reason": "peer n2 lost: link timeout"}]})");

// The rolling failure (docs/mirror.md): n2 returns outdated while n1, the only in-sync replica,
// is down. volume show says why n2 refuses and what the override costs.
TEST(CliRender, AnOutdatedReplicaSaysWhyItRefusesAndWhatThePromoteWouldLose) {
  const json v = json::parse(R"({"name": "m", "size": 1048576, "state": "ready", "generation": 1,
    "replicas": [{"node": "n1", "site": "a", "alive": false, "state": "in-sync", "insync_generation": 5,
                  "role": "owner", "member": true},
                 {"node": "n2", "site": "b", "alive": true, "state": "outdated", "insync_generation": 4,
                  "role": "", "member": false}],
    "insync": {"generation": 5, "members": ["n1"], "owner": "n1"}})");
  const std::string out = render_volume(v);
  EXPECT_NE(
      out.find(
          "n2 serves nothing: out of the in-sync set (generation 5; last in it at generation 4; "
          "outdated); the only in-sync replica is n1, unreachable; to serve from n2 anyway: duplexctl "
          "volume promote m --node n2 --accept-data-loss (loses what n1 acknowledged after generation 4)"),
      std::string::npos)
      << out;
  EXPECT_EQ(out.find("n1 serves nothing"), std::string::npos) << out;
}

TEST(CliRender, MirroredVolumeShowsTheSetResyncProgressAndTheLastFiveDecisions) {
  const std::string out = render_volume(kMirrored);
  EXPECT_NE(out.find("in-sync set: generation 7, members n1, owner n1"), std::string::npos) << out;
  EXPECT_NE(out.find("owner:          n1"), std::string::npos) << out;
  EXPECT_NE(out.find("3 MiB"), std::string::npos) << out;  // n1's dirty bytes, in human units
  EXPECT_NE(out.find("n2 resync [#####...............] 25% 1 MiB of 4 MiB, 1 MiB/s, ETA 3.0s"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("8 KiB differ, 4 KiB repaired"), std::string::npos) << out;
  EXPECT_NE(out.find("n1: peer n2 back: resyncing 3 MiB"), std::string::npos) << out;
  // The last five decisions, oldest first; the first two are left out.
  EXPECT_EQ(out.find("  created\n"), std::string::npos) << out;
  EXPECT_EQ(out.find(" r2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("r3"), std::string::npos) << out;
  EXPECT_NE(out.find("promote: drill (may lose: writes acknowledged by n1 after generation 3)"),
            std::string::npos)
      << out;
  EXPECT_LT(out.find("r3"), out.find("r6"));
  // A replica row: node, site, alive, role, in set, state.
  EXPECT_NE(out.find("n2    b     yes    peer   no      resyncing"), std::string::npos) << out;
  EXPECT_EQ(progress_bar(1.5, 4), "[####] 100%");
  EXPECT_EQ(progress_bar(-1, 4), "[....] 0%");
  // n2 is out of the set while n1, which holds the data, is alive: it is being resynced.
  EXPECT_NE(out.find("n2 serves nothing: out of the in-sync set (generation 7; resyncing); the only "
                     "in-sync replica is n1, resyncing it"),
            std::string::npos)
      << out;
  // Odd types in the new fields do not throw either.
  EXPECT_NO_THROW(render_volume(json::parse(R"({"insync": [1], "decisions": {"a": 1},
      "replicas": [{"resync_rate": "fast", "state": "resyncing", "verify_mismatches": -1}]})")));
}

TEST(CliClient, ErrorLineNamesMessageStatusAndCode) {
  Reply r;
  r.status = 404;
  r.body = json::parse(R"({"error": {"code": "not_found", "message": "volume 'x' does not exist"}})");
  Status s = api_error(r);
  EXPECT_EQ(s.code(), Errc::not_found);
  EXPECT_EQ(s.message(), "volume 'x' does not exist (404 not_found)");
  Reply html;
  html.status = 502;
  html.text = "<html>\nbad gateway</html>";
  EXPECT_EQ(api_error(html).message(), "<html> bad gateway</html> (HTTP 502)");
  EXPECT_EQ(escape_segment("iqn.1994-05.com.redhat:h1"), "iqn.1994-05.com.redhat%3Ah1");
}

// A real HTTP server on loopback standing in for one node's API.
class FakeApi {
 public:
  FakeApi() {
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ~FakeApi() {
    server_.stop();
    thread_.join();
  }
  FakeApi(const FakeApi&) = delete;
  FakeApi& operator=(const FakeApi&) = delete;
  httplib::Server& server() { return server_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

TEST(CliClient, SendsTokenSkipsUnreachableNodesAndWaitsFor202) {
  FakeApi api;
  std::atomic<int> polls{0};
  std::string auth;
  api.server().Post("/v1/volumes", [&](const httplib::Request& req, httplib::Response& res) {
    auth = req.get_header_value("Authorization");
    json body = json::parse(req.body);
    res.status = 202;
    res.set_content(json{{"name", body["name"]}, {"state", "creating"}}.dump(), "application/json");
  });
  api.server().Get("/v1/volumes/v1", [&](const httplib::Request&, httplib::Response& res) {
    const int n = ++polls;
    json v = {{"name", "v1"},
              {"size", 4096},
              {"state", n < 3 ? "creating" : "ready"},
              {"replicas", json::array({{{"node", "n1"}, {"state", n < 3 ? "creating" : "in-sync"}}})}};
    res.set_content(v.dump(), "application/json");
  });
  // The first node listed is not there: the client goes on to the next.
  ApiClient client(Endpoint{{"http://127.0.0.1:1", api.url()}, "s3cret"}, std::chrono::seconds(5));
  json body = {{"name", "v1"}, {"size", 4096}};
  auto r = client.call("POST", "/v1/volumes", &body);
  ASSERT_TRUE(r) << r.status().to_string();
  EXPECT_EQ(r->status, 202);
  EXPECT_EQ(r->from, api.url());
  EXPECT_EQ(auth, "Bearer s3cret");
  WaitFor w{"volume 'v1'", "/v1/volumes/v1", false,
            [](const json& v, std::string& state) { return volume_applied(v, 0, state); }};
  auto done = wait_for(client, w, 10);
  ASSERT_TRUE(done) << done.status().to_string();
  EXPECT_EQ((*done)["state"], "ready");
  EXPECT_GE(polls.load(), 3);

  // A wait that never completes ends with a timeout, not a hang.
  WaitFor never{"volume 'v1'", "/v1/volumes/v1", false, [](const json&, std::string& state) {
                  state = "stuck";
                  return false;
                }};
  auto timed_out = wait_for(client, never, 1);
  ASSERT_FALSE(timed_out);
  EXPECT_NE(timed_out.status().message().find("timed out"), std::string::npos);
}

// duplexctl's command line against a fake API: what it sends and how it ends.
Status run_cli(const std::vector<std::string>& args, const std::string& api) {
  Globals g;
  g.api = api;
  g.token = "t";
  Action action;
  CLI::App app{"test"};
  app.fallthrough();
  add_api_commands(app, g, action);
  std::vector<const char*> argv{"duplexctl"};
  for (const auto& a : args) argv.push_back(a.c_str());
  app.parse(static_cast<int>(argv.size()), argv.data());
  return action ? action() : Status::error(Errc::invalid, "no action");
}

TEST(CliCommands, PromoteWithoutTheFlagFailsWithTheApisMessageAndWithItPromotes) {
  FakeApi api;
  std::vector<json> bodies;
  api.server().Post("/v1/volumes/m/promote", [&](const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body);
    bodies.push_back(body);
    if (!body.value("accept_data_loss", false)) {
      res.status = 400;
      res.set_content(json{{"error",
                            {{"code", "invalid"},
                             {"field", "accept_data_loss"},
                             {"message",
                              "may be lost: writes acknowledged by n1 after generation 3. Repeat with "
                              "\"accept_data_loss\": true"}}}}
                          .dump(),
                      "application/json");
      return;
    }
    res.set_content(json{{"name", "m"},
                         {"insync", {{"generation", 8}, {"members", {"n2"}}, {"owner", "n2"}}},
                         {"may_lose", {"writes acknowledged by n1 after generation 3"}}}
                        .dump(),
                    "application/json");
  });
  Status s = run_cli({"volume", "promote", "m", "--node", "n2"}, api.url());
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("writes acknowledged by n1 after generation 3"), std::string::npos)
      << s.to_string();
  EXPECT_NE(s.message().find("400"), std::string::npos) << s.to_string();
  ASSERT_EQ(bodies.size(), 1u);
  EXPECT_EQ(bodies[0], (json{{"node", "n2"}, {"accept_data_loss", false}}));

  s = run_cli({"volume", "promote", "m", "--node", "n2", "--accept-data-loss", "--reason", "site a lost"},
              api.url());
  ASSERT_TRUE(s) << s.to_string();
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[1], (json{{"node", "n2"}, {"accept_data_loss", true}, {"reason", "site a lost"}}));
  // --node is required: a usage error before any request.
  EXPECT_THROW((void)run_cli({"volume", "promote", "m"}, api.url()), CLI::ParseError);
  EXPECT_EQ(bodies.size(), 2u);
}

TEST(CliCommands, CreateSendsReplicasTwoAndRefusesThree) {
  FakeApi api;
  json sent;
  api.server().Post("/v1/volumes", [&](const httplib::Request& req, httplib::Response& res) {
    sent = json::parse(req.body);
    res.status = 201;
    res.set_content(json{{"name", "m"}, {"size", 4096}, {"state", "ready"}}.dump(), "application/json");
  });
  ASSERT_TRUE(
      run_cli({"volume", "create", "m", "--size", "4096", "--replicas", "2", "--site", "a"}, api.url()));
  EXPECT_EQ(sent["replicas"], 2);
  EXPECT_EQ(sent["preferred_site"], "a");
  EXPECT_THROW((void)run_cli({"volume", "create", "m", "--size", "4096", "--replicas", "3"}, api.url()),
               CLI::ParseError);
}

// `volume grow V SIZE` and `volume grow V --size SIZE` send the same PATCH; no size, or both, is
// a usage error before any request.
TEST(CliCommands, GrowTakesTheSizeAsAnArgumentOrAnOption) {
  FakeApi api;
  std::vector<json> sent;
  api.server().Patch("/v1/volumes/m", [&](const httplib::Request& req, httplib::Response& res) {
    sent.push_back(json::parse(req.body));
    res.set_content(json{{"name", "m"}, {"size", 67108864}, {"state", "ready"}}.dump(), "application/json");
  });
  ASSERT_TRUE(run_cli({"volume", "grow", "m", "64MiB"}, api.url()));
  ASSERT_TRUE(run_cli({"volume", "grow", "m", "--size", "64MiB"}, api.url()));
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0], (json{{"size", 67108864}}));
  EXPECT_EQ(sent[1], sent[0]);
  EXPECT_THROW((void)run_cli({"volume", "grow", "m"}, api.url()), CLI::ParseError);
  EXPECT_THROW((void)run_cli({"volume", "grow", "m", "64MiB", "--size", "96MiB"}, api.url()),
               CLI::ParseError);
  EXPECT_EQ(sent.size(), 2u);
}

TEST(CliRender, NodesShowTheirDrain) {
  const json nodes = json::parse(R"([
    {"name": "n1", "site": "a", "alive": false,
     "drain": {"reason": "drain of n1: kernel upgrade", "by": "api", "at": "2026-11-25T04:00:00Z",
               "state": "drained", "in_sync": []}},
    {"name": "n2", "site": "b", "alive": true, "drain": null}])");
  const std::string t = render_nodes(nodes);
  EXPECT_NE(t.find("DRAIN"), std::string::npos) << t;
  EXPECT_NE(t.find("no     drained"), std::string::npos) << t;
  EXPECT_NE(t.find("yes    -"), std::string::npos) << t;
  json draining = nodes[0];
  draining["drain"]["state"] = "draining";
  draining["drain"]["in_sync"] = json::array({"m", "v"});
  const std::string one = render_node(draining);
  EXPECT_NE(
      one.find(
          "draining (still in sync: m, v) since 2026-11-25T04:00:00Z by api: drain of n1: kernel upgrade"),
      std::string::npos)
      << one;
  EXPECT_NE(render_node(nodes[1]).find("drain:          -"), std::string::npos) << render_node(nodes[1]);
}

TEST(CliCommands, DrainWaitsUntilDrainedAndResumeSendsNoReason) {
  FakeApi api;
  std::vector<json> bodies;
  int polls = 0;
  auto drain = [](const std::string& state) {
    return json{{"name", "n1"},
                {"alive", true},
                {"drain",
                 {{"reason", "drain of n1: upgrade"},
                  {"by", "api"},
                  {"at", "2026-11-25T04:00:00Z"},
                  {"state", state},
                  {"in_sync", state == "drained" ? json::array() : json::array({"m"})}}}};
  };
  api.server().Post("/v1/nodes/n1/drain", [&](const httplib::Request& req, httplib::Response& res) {
    bodies.push_back(json::parse(req.body));
    res.set_content(drain("draining").dump(), "application/json");
  });
  api.server().Get("/v1/nodes/n1", [&](const httplib::Request&, httplib::Response& res) {
    ++polls;
    res.set_content(drain(polls < 2 ? "draining" : "drained").dump(), "application/json");
  });
  api.server().Post("/v1/nodes/n1/resume", [&](const httplib::Request& req, httplib::Response& res) {
    bodies.push_back(json::parse(req.body));
    res.set_content(json{{"name", "n1"}, {"alive", true}, {"drain", nullptr}}.dump(), "application/json");
  });
  ASSERT_TRUE(run_cli({"node", "drain", "n1", "--reason", "upgrade"}, api.url()));
  EXPECT_EQ(polls, 0) << "without --wait the answer is enough";
  ASSERT_TRUE(run_cli({"node", "drain", "n1", "--reason", "upgrade", "--wait"}, api.url()));
  EXPECT_EQ(polls, 2) << "polled until drained";
  ASSERT_TRUE(run_cli({"node", "resume", "n1"}, api.url()));
  ASSERT_EQ(bodies.size(), 3u);
  EXPECT_EQ(bodies[0], (json{{"reason", "upgrade"}}));
  EXPECT_EQ(bodies[2], json::object());
}

TEST(CliClient, NoNodeReachableIsOneClearError) {
  ApiClient client(Endpoint{{"http://127.0.0.1:1"}, ""}, std::chrono::seconds(1));
  auto r = client.get("/v1/volumes");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), Errc::unavailable);
  EXPECT_NE(r.status().message().find("http://127.0.0.1:1"), std::string::npos);
}

TEST(CliEndpoints, DirGivesApisAndTokenAndFlagsWin) {
  const std::string dir = testing::TempDir() + "duplexctl-endpoints-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(write_file_atomic(dir + "/endpoints.json",
                                R"({"token": "t1", "nodes": [{"api": "http://127.0.0.11:7480"},
                                    {"api": "http://127.0.0.12:7480"}]})"));
  Globals g;
  g.dir = dir;
  auto ep = resolve_endpoint(g);
  ASSERT_TRUE(ep);
  EXPECT_EQ(ep->apis, (std::vector<std::string>{"http://127.0.0.11:7480", "http://127.0.0.12:7480"}));
  EXPECT_EQ(ep->token, "t1");
  g.api = "http://127.0.0.99:7480";
  g.token = "t2";
  ep = resolve_endpoint(g);
  ASSERT_TRUE(ep);
  EXPECT_EQ(ep->apis, std::vector<std::string>{"http://127.0.0.99:7480"});
  EXPECT_EQ(ep->token, "t2");
  g.dir = dir + "/missing";
  EXPECT_FALSE(resolve_endpoint(g));
  std::filesystem::remove_all(dir);
}

TEST(CliProcess, SpawnsDetachedAndStopsByPidAndArgv) {
  const std::string log = testing::TempDir() + "duplexctl-proc-" + std::to_string(::getpid()) + ".log";
  const std::vector<std::string> argv = {"/bin/sleep", "300.25"};
  auto pid = spawn_detached(argv, log);
  ASSERT_TRUE(pid) << pid.status().to_string();
  EXPECT_TRUE(running_as(*pid, argv));
  EXPECT_FALSE(running_as(*pid, {"/bin/sleep", "1"}));  // same pid, other argv: not ours
  EXPECT_EQ(::getsid(*pid), *pid);                      // its own session
  auto found = find_by_argv(argv);
  EXPECT_NE(std::find(found.begin(), found.end(), *pid), found.end());
  auto report = stop_processes({{"sleeper", *pid, argv}}, std::chrono::seconds(5));
  ASSERT_EQ(report.size(), 1u);
  EXPECT_EQ(report[0], "sleeper: stopped (pid " + std::to_string(*pid) + ")");
  EXPECT_FALSE(running_as(*pid, argv));

  auto missing = spawn_detached({"/nonexistent/duplexd"}, log);
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("No such file"), std::string::npos);
  std::filesystem::remove(log);
}

TEST(CliProcess, PortFreeSeesAListener) {
  httplib::Server s;
  const int port = s.bind_to_any_port("127.0.0.1");
  EXPECT_FALSE(port_free("127.0.0.1", static_cast<unsigned>(port)));
  s.stop();
}

}  // namespace
}  // namespace duplex::cli
