// duplexd's [iscsi] configuration, the target plan (names, LUNs, ACL, CHAP) and the APTPL state
// files, without sockets or pools.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "duplex/daemon/config.h"
#include "duplex/daemon/iscsi_targets.h"
#include "duplex/daemon/pr_store.h"

using namespace duplex;
using namespace duplex::daemon;

namespace {

// After the body, so top-level keys in it stay top-level.
constexpr const char* kTail = "\n[listen]\nnbd = \"127.0.0.1:10809\"\n";

Result<Config> parse(const std::string& body) { return parse_config(body + kTail, "f.toml"); }

std::string error_of(const std::string& body) {
  auto c = parse(body);
  EXPECT_FALSE(c) << body;
  return c ? std::string() : c.status().message();
}

#define EXPECT_ERROR(body, text)                                                              \
  do {                                                                                        \
    const std::string m_ = error_of(body);                                                    \
    EXPECT_NE(m_.find(text), std::string::npos) << "error: " << m_ << "\nexpected: " << text; \
    EXPECT_EQ(m_.find('\n'), std::string::npos) << m_;                                        \
    EXPECT_EQ(m_.rfind("f.toml: ", 0), 0u) << m_;                                             \
  } while (0)

}  // namespace

TEST(IscsiConfig, DefaultsWithoutSection) {
  auto c = parse("");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_TRUE(c->iscsi.listen.empty());
  EXPECT_EQ(c->iscsi.tpgt, 1);
  EXPECT_EQ(c->iscsi.base_iqn, "iqn.2026-11.io.duplex");
  EXPECT_EQ(c->state_dir, "/var/lib/duplex");
  EXPECT_FALSE(c->iscsi.discovery_chap);
}

TEST(IscsiConfig, FullExample) {
  auto c = parse(R"(
state_dir = "/tmp/duplex-state"
[iscsi]
listen = ["127.0.0.1:3260", "[::1]:3260"]
tpgt = 7
base_iqn = "iqn.2026-11.com.Example"
nop_interval = "2s"
nop_timeout = "10s"
login_timeout = "500ms"
queue_depth = 64
max_connections = 8
discovery_chap_user = "disco"
discovery_chap_secret = "discovery-secret-1"
[[iscsi.target]]
name = "iqn.2026-11.com.example:DB"
luns = ["db", "db@nightly"]
alias = "database"
default_access = "none"
chap_user = "host1"
chap_secret = "0123456789ab"
mutual_user = "array"
mutual_secret = "ba9876543210"
[[iscsi.target.acl]]
initiator = "iqn.1993-08.org.debian:01:AAA"
access = "read-write"
[[iscsi.target.acl]]
initiator = "iqn.1993-08.org.debian:01:bbb"
access = "read-only"
[[iscsi.target]]
name = "iqn.2026-11.com.example:logs"
luns = "logs"
)");
  ASSERT_TRUE(c) << c.status().message();
  const auto& is = c->iscsi;
  EXPECT_EQ(c->state_dir, "/tmp/duplex-state");
  EXPECT_EQ(is.listen.size(), 2u);
  EXPECT_EQ(is.tpgt, 7);
  EXPECT_EQ(is.base_iqn, "iqn.2026-11.com.example");  // names are compared lower case
  EXPECT_EQ(is.nop_interval.count(), 2000);
  EXPECT_EQ(is.nop_timeout.count(), 10000);
  EXPECT_EQ(is.login_timeout.count(), 500);
  EXPECT_EQ(is.queue_depth, 64u);
  EXPECT_EQ(is.max_connections, 8u);
  ASSERT_TRUE(is.discovery_chap);
  EXPECT_EQ(is.discovery_chap->user, "disco");
  ASSERT_EQ(is.targets.size(), 2u);
  const auto& t = is.targets[0];
  EXPECT_EQ(t.name, "iqn.2026-11.com.example:db");
  EXPECT_EQ(t.luns, (std::vector<std::string>{"db", "db@nightly"}));
  EXPECT_EQ(t.alias, "database");
  EXPECT_EQ(t.default_access, iscsi::Access::none);
  ASSERT_TRUE(t.chap);
  EXPECT_EQ(t.chap->user, "host1");
  EXPECT_EQ(t.chap->secret, "0123456789ab");
  EXPECT_EQ(t.chap->target_user, "array");
  EXPECT_EQ(t.chap->target_secret, "ba9876543210");
  ASSERT_EQ(t.acl.size(), 2u);
  EXPECT_EQ(t.acl[0].initiator, "iqn.1993-08.org.debian:01:aaa");
  EXPECT_EQ(t.acl[0].access, iscsi::Access::read_write);
  EXPECT_EQ(t.acl[1].access, iscsi::Access::read_only);
  EXPECT_EQ(is.targets[1].luns, (std::vector<std::string>{"logs"}));
  EXPECT_EQ(is.targets[1].default_access, iscsi::Access::read_write);
  EXPECT_FALSE(is.targets[1].chap);
}

TEST(IscsiConfig, ListenAsOneString) {
  auto c = parse("[iscsi]\nlisten = \"127.0.0.1:3260\"\n");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->iscsi.listen, (std::vector<std::string>{"127.0.0.1:3260"}));
  auto empty = parse("[iscsi]\nlisten = []\n");
  ASSERT_TRUE(empty) << empty.status().message();
  EXPECT_TRUE(empty->iscsi.listen.empty());
}

TEST(IscsiConfig, ErrorsAreOneLineNamingTheKey) {
  EXPECT_ERROR("[iscsi]\nlisen = [\"a:1\"]\n", "unknown key 'lisen' in [iscsi] (line 2)");
  EXPECT_ERROR("[iscsi]\nlisten = 3260\n", "iscsi.listen must be a list of strings");
  EXPECT_ERROR("[iscsi]\nlisten = [3260]\n", "iscsi.listen must be a list of strings");
  EXPECT_ERROR("[iscsi]\ntpgt = 0\n", "iscsi.tpgt must be 1..65535");
  EXPECT_ERROR("[iscsi]\ntpgt = 70000\n", "iscsi.tpgt must be 1..65535");
  EXPECT_ERROR("[iscsi]\nqueue_depth = 0\n", "iscsi.queue_depth must be 1..4096");
  EXPECT_ERROR("[iscsi]\nmax_connections = 0\n", "iscsi.max_connections must be 1..100000");
  EXPECT_ERROR("[iscsi]\nnop_timeout = \"0s\"\n", "iscsi.nop_timeout must be more than 0");
  EXPECT_ERROR("[iscsi]\nlogin_timeout = \"3 fortnights\"\n", "iscsi.login_timeout");
  EXPECT_ERROR("[iscsi]\nbase_iqn = \"duplex\"\n", "iscsi.base_iqn 'duplex' is not a valid iSCSI name");
  EXPECT_ERROR("[iscsi]\nbase_iqn = \"eui.0123456789abcdef\"\n", "must be an iqn. name");
  EXPECT_ERROR("[iscsi]\ndiscovery_chap_user = \"u\"\n",
               "discovery_chap_user and discovery_chap_secret go together");
  EXPECT_ERROR("[iscsi]\ndiscovery_chap_user = \"u\"\ndiscovery_chap_secret = \"short\"\n",
               "[iscsi]: CHAP: ");
  EXPECT_ERROR("state_dir = \"relative/dir\"\n", "state_dir must be an absolute path");
  EXPECT_ERROR("iscsi = 1\n", "[iscsi] must be a table");
  EXPECT_ERROR("[iscsi]\ntarget = 1\n", "iscsi.target must be written [[iscsi.target]]");
}

TEST(IscsiConfig, TargetErrors) {
  const std::string l = "[iscsi]\nlisten = [\"127.0.0.1:3260\"]\n";
  EXPECT_ERROR("[iscsi]\n[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\n",
               "[[iscsi.target]] is configured but iscsi.listen is empty");
  EXPECT_ERROR(l + "[[iscsi.target]]\nluns = [\"a\"]\n", "[[iscsi.target]] #1: name is missing");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"target-a\"\nluns = [\"a\"]\n",
               "[[iscsi.target]] #1.name 'target-a' is not a valid iSCSI name");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\n",
               "[[iscsi.target]] 'iqn.2026-11.io.x:a': luns is missing");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\", \"a\"]\n",
               "'a' is listed twice");
  EXPECT_ERROR(
      l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\n[[iscsi.target]]\nname = "
          "\"IQN.2026-11.io.x:A\"\nluns = [\"b\"]\n",
      "'iqn.2026-11.io.x:a': the name is used twice");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\nlun = [\"b\"]\n",
               "unknown key 'lun' in [[iscsi.target]] #1");
  EXPECT_ERROR(
      l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\ndefault_access = \"rw\"\n",
      "default_access 'rw': use \"read-write\", \"read-only\" or \"none\"");
  EXPECT_ERROR(
      l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\nchap_secret = \"0123456789ab\"\n",
      "chap_user and chap_secret go together");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\nchap_user = \"u\"\n"
                   "chap_secret = \"short\"\n",
               "'iqn.2026-11.io.x:a': CHAP: ");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\nchap_user = \"u\"\n"
                   "chap_secret = \"0123456789ab\"\nmutual_user = \"m\"\nmutual_secret = \"0123456789ab\"\n",
               "'iqn.2026-11.io.x:a': CHAP: ");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\nchap_user = \"u\"\n"
                   "chap_secret = \"0123456789ab\"\nmutual_user = \"m\"\n",
               "mutual_user and mutual_secret go together");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\n[[iscsi.target.acl]]\n"
                   "initiator = \"iqn.1993-08.org.debian:01:a\"\n",
               "acl #1: access is missing");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\n[[iscsi.target.acl]]\n"
                   "initiator = \"host1\"\naccess = \"read-only\"\n",
               "initiator 'host1' is not a valid iSCSI name");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\n[[iscsi.target.acl]]\n"
                   "initiator = \"iqn.1993-08.org.debian:01:a\"\naccess = \"none\"\n[[iscsi.target.acl]]\n"
                   "initiator = \"iqn.1993-08.org.debian:01:A\"\naccess = \"read-only\"\n",
               "initiator 'iqn.1993-08.org.debian:01:a' is listed twice");
  EXPECT_ERROR(l + "[[iscsi.target]]\nname = \"iqn.2026-11.io.x:a\"\nluns = [\"a\"]\n[[iscsi.target.acl]]\n"
                   "initiator = \"iqn.1993-08.org.debian:01:a\"\naccess = \"none\"\nwho = 1\n",
               "unknown key 'who'");
}

// --- the target plan ---------------------------------------------------------------------------

namespace {

IscsiSection listening() {
  IscsiSection s;
  s.listen = {"127.0.0.1:3260"};
  return s;
}

}  // namespace

TEST(IscsiTargets, NoListenNoTargets) {
  IscsiSection s;
  auto p = plan_iscsi_targets(s, {{"vol", false}});
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->empty());
}

TEST(IscsiTargets, OneTargetPerExport) {
  auto p =
      plan_iscsi_targets(listening(), {{"vol", false}, {"My_Disk", false}, {"vol@before-upgrade", true}});
  ASSERT_TRUE(p) << p.status().message();
  ASSERT_EQ(p->size(), 3u);
  EXPECT_EQ((*p)[0].name, "iqn.2026-11.io.duplex:vol");
  EXPECT_EQ((*p)[0].luns, (std::vector<std::string>{"vol"}));
  EXPECT_TRUE((*p)[0].writable);
  EXPECT_EQ((*p)[0].default_access, iscsi::Access::read_write);
  EXPECT_EQ((*p)[0].alias, "vol");
  EXPECT_EQ((*p)[1].name, "iqn.2026-11.io.duplex:" + iscsi::iqn_component("My_Disk"));
  EXPECT_TRUE(iscsi::valid_iscsi_name((*p)[1].name));
  EXPECT_EQ((*p)[2].name, "iqn.2026-11.io.duplex:vol:before-upgrade");
  EXPECT_EQ((*p)[2].luns, (std::vector<std::string>{"vol@before-upgrade"}));
  EXPECT_FALSE((*p)[2].writable);
  EXPECT_EQ(auto_target_name("iqn.2026-11.io.duplex", "vol@before-upgrade"),
            "iqn.2026-11.io.duplex:vol:before-upgrade");
}

TEST(IscsiTargets, TwoExportsOnOneNameIsAnError) {
  auto p = plan_iscsi_targets(listening(), {{"Disk", false}, {"disk", false}});
  ASSERT_FALSE(p);
  EXPECT_NE(
      p.status().message().find("exports 'Disk' and 'disk' both map to target iqn.2026-11.io.duplex:disk"),
      std::string::npos)
      << p.status().message();
}

TEST(IscsiTargets, OverlongNameIsAnError) {
  auto p = plan_iscsi_targets(listening(), {{std::string(120, 'a') + "@" + std::string(110, 'b'), true}});
  ASSERT_FALSE(p);
  EXPECT_NE(p.status().message().find("not a valid iSCSI name"), std::string::npos) << p.status().message();
}

TEST(IscsiTargets, ConfiguredTargets) {
  auto s = listening();
  IscsiTargetConfig t;
  t.name = "iqn.2026-11.io.x:db";
  t.luns = {"db", "db@snap"};
  t.default_access = iscsi::Access::none;
  t.acl = {{"iqn.1993-08.org.debian:01:a", iscsi::Access::read_write},
           {"iqn.1993-08.org.debian:01:b", iscsi::Access::read_only}};
  t.chap = iscsi::ChapCredentials{"u", "0123456789ab", std::nullopt, std::nullopt};
  s.targets.push_back(t);
  IscsiTargetConfig ro;
  ro.name = "iqn.2026-11.io.x:ro";
  ro.luns = {"db"};
  ro.default_access = iscsi::Access::read_only;
  s.targets.push_back(ro);
  auto p = plan_iscsi_targets(s, {{"db", false}, {"db@snap", true}, {"other", false}});
  ASSERT_TRUE(p) << p.status().message();
  ASSERT_EQ(p->size(), 2u);  // only what is configured: "other" gets no target
  const auto& a = (*p)[0];
  EXPECT_EQ(a.luns, (std::vector<std::string>{"db", "db@snap"}));
  EXPECT_EQ(a.acl.at("iqn.1993-08.org.debian:01:a"), iscsi::Access::read_write);
  EXPECT_EQ(a.acl.at("iqn.1993-08.org.debian:01:b"), iscsi::Access::read_only);
  EXPECT_EQ(a.default_access, iscsi::Access::none);
  ASSERT_TRUE(a.chap);
  EXPECT_TRUE(a.writable);         // an ACL entry may write
  EXPECT_FALSE((*p)[1].writable);  // nobody may write through it

  s.targets[0].luns = {"db", "nope"};
  auto bad = plan_iscsi_targets(s, {{"db", false}});
  ASSERT_FALSE(bad);
  EXPECT_NE(
      bad.status().message().find("[[iscsi.target]] 'iqn.2026-11.io.x:db': LUN 1 'nope' is not an export"),
      std::string::npos)
      << bad.status().message();
}

// --- APTPL state files --------------------------------------------------------------------------

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char t[] = "/tmp/duplex-pr-test.XXXXXX";
    path = ::mkdtemp(t);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

scsi::PrState sample() {
  scsi::PrState s;
  s.generation = 5;
  s.aptpl = true;
  s.registrations = {{{"iqn.1993-08.org.debian:01:a,i,0x23d000000001", 1}, 0x1122},
                     {{"iqn.1993-08.org.debian:01:b,i,0x23d000000002", 1}, 0x3344}};
  s.holder = s.registrations[0].nexus;
  s.type = scsi::PrType::write_exclusive_registrants_only;
  return s;
}

}  // namespace

TEST(PrStore, SaveLoadRemove) {
  TempDir d;
  PrStore st(d.path + "/state");
  ASSERT_TRUE(st.prepare());
  const Uuid id = Uuid::random();
  auto none = st.load(id);
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  ASSERT_TRUE(st.save(id, sample()));
  EXPECT_EQ(st.path(id), d.path + "/state/pr/" + id.to_string() + ".pr");
  EXPECT_TRUE(std::filesystem::exists(st.path(id)));
  EXPECT_FALSE(std::filesystem::exists(st.path(id) + ".tmp"));
  auto back = st.load(id);
  ASSERT_TRUE(back) << back.status().message();
  ASSERT_TRUE(*back);
  EXPECT_EQ((*back)->serialize(), sample().serialize());
  auto s2 = sample();
  s2.registrations.pop_back();
  ASSERT_TRUE(st.save(id, s2));  // replaces
  EXPECT_EQ((*st.load(id))->registrations.size(), 1u);
  ASSERT_TRUE(st.remove(id));
  EXPECT_FALSE(std::filesystem::exists(st.path(id)));
  EXPECT_TRUE(st.remove(id));  // absent is fine
}

TEST(PrStore, CorruptFileIsAnErrorNamingIt) {
  TempDir d;
  PrStore st(d.path);
  ASSERT_TRUE(st.prepare());
  const Uuid id = Uuid::random();
  ASSERT_TRUE(st.save(id, sample()));
  const auto p = st.path(id);
  {
    std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(12);
    f.put('\x7f');  // one byte of the state: the checksum no longer matches
  }
  auto r = st.load(id);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find(p), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("corrupt"), std::string::npos) << r.status().message();
  {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << "DP";
  }
  r = st.load(id);
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("corrupt"), std::string::npos);
}

TEST(PrStore, PrepareRefusesAFile) {
  TempDir d;
  {
    std::ofstream(d.path + "/pr") << "x";
  }
  PrStore st(d.path);
  auto s = st.prepare();
  ASSERT_FALSE(s);
  EXPECT_NE(s.message().find("not a directory"), std::string::npos) << s.message();
}

TEST(IscsiTargets, ReplicaPortIsTheRankByNameStableAndDistinct) {
  // Placement order (preferred site first) does not matter: both nodes number themselves alike.
  EXPECT_EQ(replica_port({"n2", "n1"}, "n1"), 1);
  EXPECT_EQ(replica_port({"n2", "n1"}, "n2"), 2);
  EXPECT_EQ(replica_port({"n1", "n2"}, "n2"), 2);
  EXPECT_EQ(replica_port({"n1", "n2"}, "n3"), 0);
}

TEST(IscsiTargets, MirrorPortGroupsFollowTheInSyncSet) {
  using scsi::AluaState;
  const std::vector<std::string> replicas{"b-node", "a-node"};  // b-node is the preferred site's
  auto both = mirror_port_groups(replicas, {"b-node", "a-node"}, "b-node");
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].id, 1);  // a-node
  EXPECT_EQ(both[0].state, AluaState::active_non_optimized);
  EXPECT_FALSE(both[0].preferred);
  EXPECT_EQ(both[0].relative_ports, std::vector<std::uint16_t>{1});
  EXPECT_EQ(both[1].id, 2);  // b-node, the owner
  EXPECT_EQ(both[1].state, AluaState::active_optimized);
  EXPECT_TRUE(both[1].preferred);
  // b-node fenced: a-node owns the set alone and is the optimized path, b-node unavailable.
  auto alone = mirror_port_groups(replicas, {"a-node"}, "a-node");
  EXPECT_EQ(alone[0].state, AluaState::active_optimized);
  EXPECT_TRUE(alone[0].preferred);
  EXPECT_EQ(alone[1].state, AluaState::unavailable);
  EXPECT_FALSE(alone[1].preferred);
  // No owner recorded: the first member in placement order.
  auto no_owner = mirror_port_groups(replicas, {"a-node", "b-node"}, "");
  EXPECT_EQ(no_owner[1].state, AluaState::active_optimized);
  EXPECT_EQ(no_owner[0].state, AluaState::active_non_optimized);
  // b-node (the owner) is cut off from its peer and the witness: its own port is unavailable and
  // it points hosts at a-node, which may go on.
  auto cut = mirror_port_groups(replicas, {"b-node", "a-node"}, "b-node", "b-node");
  EXPECT_EQ(cut[1].state, AluaState::unavailable);
  EXPECT_FALSE(cut[1].preferred);
  EXPECT_EQ(cut[0].state, AluaState::active_optimized);
  EXPECT_TRUE(cut[0].preferred);
  // The non-owner cut off: the owner keeps its optimized state.
  auto cut2 = mirror_port_groups(replicas, {"b-node", "a-node"}, "b-node", "a-node");
  EXPECT_EQ(cut2[0].state, AluaState::unavailable);
  EXPECT_EQ(cut2[1].state, AluaState::active_optimized);
}
