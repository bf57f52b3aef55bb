#include "duplex/daemon/config.h"

#include <cctype>
#include <charconv>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "duplex/iscsi/chap.h"
#include "duplex/iscsi/target.h"
#include "duplex/reactor/listen.h"
#include "duplex/reactor/tls.h"

namespace duplex::daemon {

Result<std::uint64_t> parse_size(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p == s.data()) return Status::error(Errc::invalid, "'{}' is not a size", s);
  std::string_view unit(p, static_cast<std::size_t>(s.data() + s.size() - p));
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  std::uint64_t mul = 1;
  if (unit.empty() || unit == "B")
    mul = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k")
    mul = 1ULL << 10;
  else if (unit == "M" || unit == "MiB")
    mul = 1ULL << 20;
  else if (unit == "G" || unit == "GiB")
    mul = 1ULL << 30;
  else if (unit == "T" || unit == "TiB")
    mul = 1ULL << 40;
  else if (unit == "KB")
    mul = 1000;
  else if (unit == "MB")
    mul = std::uint64_t{1000} * 1000;
  else if (unit == "GB")
    mul = 1000ULL * 1000 * 1000;
  else if (unit == "TB")
    mul = 1000ULL * 1000 * 1000 * 1000;
  else
    return Status::error(Errc::invalid, "'{}': unknown unit '{}' (use KiB, MiB, GiB, TiB)", s, unit);
  if (v > UINT64_MAX / mul) return Status::error(Errc::invalid, "'{}' is too large", s);
  return v * mul;
}

Result<std::chrono::milliseconds> parse_duration(std::string_view s) {
  std::uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || p == s.data()) return Status::error(Errc::invalid, "'{}' is not a duration", s);
  std::string_view unit(p, static_cast<std::size_t>(s.data() + s.size() - p));
  if (unit == "ms") return std::chrono::milliseconds(v);
  if (unit == "s" || unit.empty()) return std::chrono::milliseconds(v * 1000);
  if (unit == "m") return std::chrono::milliseconds(v * 60000);
  return Status::error(Errc::invalid, "'{}': unknown unit '{}' (use ms, s, m)", s, unit);
}

namespace {

struct Ctx {
  std::string source;
  Status err;
  template <typename... A>
  void fail(fmt::format_string<A...> f, A&&... a) {
    if (err.is_ok()) err = Status(Errc::invalid, source + ": " + fmt::format(f, std::forward<A>(a)...));
  }
};

std::string where(const toml::node& n) {
  const auto& s = n.source();
  return s.begin.line ? fmt::format(" (line {})", s.begin.line) : "";
}

void check_keys(Ctx& c, const toml::table& t, const std::string& sect,
                std::initializer_list<std::string_view> keys) {
  for (const auto& [k, v] : t) {
    bool ok = false;
    for (auto a : keys) ok |= k.str() == a;
    if (!ok) c.fail("unknown key '{}' in {}{}", k.str(), sect, where(v));
  }
}

const toml::table* sub_table(Ctx& c, const toml::table& root, std::string_view name) {
  auto* n = root.get(name);
  if (!n) return nullptr;
  if (!n->is_table()) {
    c.fail("[{}] must be a table", name);
    return nullptr;
  }
  return n->as_table();
}

std::optional<std::string> get_str(Ctx& c, const toml::table& t, std::string_view key,
                                   const std::string& sect) {
  auto* n = t.get(key);
  if (!n) return std::nullopt;
  if (!n->is_string()) {
    c.fail("{}.{} must be a string{}", sect, key, where(*n));
    return std::nullopt;
  }
  return n->as_string()->get();
}

std::optional<bool> get_bool(Ctx& c, const toml::table& t, std::string_view key, const std::string& sect) {
  auto* n = t.get(key);
  if (!n) return std::nullopt;
  if (!n->is_boolean()) {
    c.fail("{}.{} must be true or false{}", sect, key, where(*n));
    return std::nullopt;
  }
  return n->as_boolean()->get();
}

std::optional<std::int64_t> get_int(Ctx& c, const toml::table& t, std::string_view key,
                                    const std::string& sect) {
  auto* n = t.get(key);
  if (!n) return std::nullopt;
  if (!n->is_integer()) {
    c.fail("{}.{} must be an integer{}", sect, key, where(*n));
    return std::nullopt;
  }
  return n->as_integer()->get();
}

// A size is a string with a unit ("20GiB") or an integer number of bytes.
std::optional<std::uint64_t> get_size(Ctx& c, const toml::table& t, std::string_view key,
                                      const std::string& sect) {
  auto* n = t.get(key);
  if (!n) return std::nullopt;
  if (n->is_integer() && n->as_integer()->get() >= 0)
    return static_cast<std::uint64_t>(n->as_integer()->get());
  if (n->is_string()) {
    auto r = parse_size(n->as_string()->get());
    if (r) return *r;
    c.fail("{}.{}: {}{}", sect, key, r.status().message(), where(*n));
    return std::nullopt;
  }
  c.fail("{}.{} must be a size like \"20GiB\"{}", sect, key, where(*n));
  return std::nullopt;
}

std::optional<std::chrono::milliseconds> get_duration(Ctx& c, const toml::table& t, std::string_view key,
                                                      const std::string& sect) {
  auto* n = t.get(key);
  if (!n) return std::nullopt;
  if (n->is_string()) {
    auto r = parse_duration(n->as_string()->get());
    if (r) return *r;
    c.fail("{}.{}: {}{}", sect, key, r.status().message(), where(*n));
    return std::nullopt;
  }
  c.fail("{}.{} must be a duration like \"30s\"{}", sect, key, where(*n));
  return std::nullopt;
}

// An array of tables ([[pool]]); a single table is accepted too.
// `full` is the name as written in the file ("iscsi.target"), for the error.
std::vector<const toml::table*> table_array(Ctx& c, const toml::table& root, std::string_view name,
                                            std::string_view full = {}) {
  std::vector<const toml::table*> out;
  auto* n = root.get(name);
  if (!n) return out;
  if (full.empty()) full = name;
  if (n->is_table()) {
    out.push_back(n->as_table());
  } else if (n->is_array_of_tables()) {
    for (auto& e : *n->as_array()) out.push_back(e.as_table());
  } else {
    c.fail("{} must be written [[{}]]", full, full);
  }
  return out;
}

// A string or a list of strings ("host:port" or ["a:1", "b:2"]).
std::vector<std::string> get_str_list(Ctx& c, const toml::table& t, std::string_view key,
                                      const std::string& sect, std::string_view example) {
  std::vector<std::string> out;
  auto* n = t.get(key);
  if (!n) return out;
  if (n->is_string()) {
    out.push_back(n->as_string()->get());
  } else if (n->is_array()) {
    for (auto& e : *n->as_array()) {
      if (!e.is_string()) {
        c.fail("{}.{} must be a list of strings like {}{}", sect, key, example, where(e));
        return out;
      }
      out.push_back(e.as_string()->get());
    }
  } else {
    c.fail("{}.{} must be a list of strings like {}{}", sect, key, example, where(*n));
  }
  return out;
}

std::string lower(std::string s) {
  for (auto& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

std::optional<iscsi::Access> get_access(Ctx& c, const toml::table& t, std::string_view key,
                                        const std::string& sect) {
  auto v = get_str(c, t, key, sect);
  if (!v) return std::nullopt;
  if (*v == "read-write") return iscsi::Access::read_write;
  if (*v == "read-only") return iscsi::Access::read_only;
  if (*v == "none") return iscsi::Access::none;
  c.fail("{}.{} '{}': use \"read-write\", \"read-only\" or \"none\"{}", sect, key, *v, where(*t.get(key)));
  return std::nullopt;
}

// An iSCSI name (RFC 3720 §3.2.6.3.1: names compare after lower-casing, so they are stored so).
std::string get_iqn(Ctx& c, const toml::table& t, std::string_view key, const std::string& sect) {
  auto v = get_str(c, t, key, sect);
  if (!v) return {};
  std::string name = lower(*v);
  if (!iscsi::valid_iscsi_name(name))
    c.fail(
        "{}.{} '{}' is not a valid iSCSI name (iqn.YYYY-MM.reversed.domain[:anything], eui.<16 hex> or "
        "naa.<hex>){}",
        sect, key, *v, where(*t.get(key)));
  return name;
}

// CHAP credentials from `user`/`secret` and optionally `muser`/`msecret` (mutual CHAP).
std::optional<iscsi::ChapCredentials> get_chap(Ctx& c, const toml::table& t, const std::string& sect,
                                               std::string_view user_key, std::string_view secret_key,
                                               std::string_view muser_key = {},
                                               std::string_view msecret_key = {}) {
  auto user = get_str(c, t, user_key, sect);
  auto secret = get_str(c, t, secret_key, sect);
  std::optional<std::string> muser, msecret;
  if (!muser_key.empty()) {
    muser = get_str(c, t, muser_key, sect);
    msecret = get_str(c, t, msecret_key, sect);
  }
  if (!user && !secret && !muser && !msecret) return std::nullopt;
  if (!user || !secret || user->empty()) {
    c.fail("{}: {} and {} go together (CHAP needs both)", sect, user_key, secret_key);
    return std::nullopt;
  }
  if (muser.has_value() != msecret.has_value() || (muser && muser->empty())) {
    c.fail("{}: {} and {} go together (mutual CHAP needs both)", sect, muser_key, msecret_key);
    return std::nullopt;
  }
  iscsi::ChapCredentials cr;
  cr.user = *user;
  cr.secret = *secret;
  cr.target_user = muser;
  cr.target_secret = msecret;
  if (auto st = iscsi::ChapTarget::validate(cr); !st) {
    c.fail("{}: CHAP: {}", sect, st.message());
    return std::nullopt;
  }
  return cr;
}

void parse_iscsi(Ctx& c, const toml::table& t, IscsiSection& is) {
  const std::string sect = "iscsi";
  check_keys(c, t, "[iscsi]",
             {"listen", "tpgt", "base_iqn", "nop_interval", "nop_timeout", "login_timeout", "queue_depth",
              "max_connections", "discovery_chap_user", "discovery_chap_secret", "target"});
  is.listen = get_str_list(c, t, "listen", sect, "[\"127.0.0.1:3260\"]");
  for (const auto& l : is.listen)
    if (l.empty()) c.fail("iscsi.listen: an empty address");
  if (auto v = get_int(c, t, "tpgt", sect)) {
    if (*v < 1 || *v > 65535) c.fail("iscsi.tpgt must be 1..65535");
    is.tpgt = static_cast<std::uint16_t>(*v);
  }
  if (t.get("base_iqn")) {
    is.base_iqn = get_iqn(c, t, "base_iqn", sect);
    if (is.base_iqn.starts_with("eui.") || is.base_iqn.starts_with("naa."))
      c.fail("iscsi.base_iqn '{}' must be an iqn. name (targets are named <base_iqn>:<volume>)", is.base_iqn);
  }
  if (auto v = get_duration(c, t, "nop_interval", sect)) is.nop_interval = *v;
  if (auto v = get_duration(c, t, "nop_timeout", sect)) {
    if (v->count() == 0) c.fail("iscsi.nop_timeout must be more than 0");
    is.nop_timeout = *v;
  }
  if (auto v = get_duration(c, t, "login_timeout", sect)) {
    if (v->count() == 0) c.fail("iscsi.login_timeout must be more than 0");
    is.login_timeout = *v;
  }
  if (auto v = get_int(c, t, "queue_depth", sect)) {
    if (*v < 1 || *v > 4096) c.fail("iscsi.queue_depth must be 1..4096");
    is.queue_depth = static_cast<std::uint32_t>(*v);
  }
  if (auto v = get_int(c, t, "max_connections", sect)) {
    if (*v < 1 || *v > 100000) c.fail("iscsi.max_connections must be 1..100000");
    is.max_connections = static_cast<unsigned>(*v);
  }
  is.discovery_chap = get_chap(c, t, "[iscsi]", "discovery_chap_user", "discovery_chap_secret");

  std::set<std::string> names;
  for (auto* tt : table_array(c, t, "target", "iscsi.target")) {
    IscsiTargetConfig tc;
    std::string ts = fmt::format("[[iscsi.target]] #{}", is.targets.size() + 1);
    check_keys(c, *tt, ts,
               {"name", "luns", "alias", "default_access", "chap_user", "chap_secret", "mutual_user",
                "mutual_secret", "acl"});
    if (!tt->get("name")) c.fail("{}: name is missing (the target's IQN)", ts);
    tc.name = get_iqn(c, *tt, "name", ts);
    if (!tc.name.empty()) ts = fmt::format("[[iscsi.target]] '{}'", tc.name);
    if (!tc.name.empty() && !names.insert(tc.name).second) c.fail("{}: the name is used twice", ts);
    tc.luns = get_str_list(c, *tt, "luns", ts, "[\"vol\", \"vol@snap\"]");
    if (tc.luns.empty()) c.fail("{}: luns is missing (e.g. luns = [\"vol\"])", ts);
    if (tc.luns.size() > 16384) c.fail("{}: more than 16384 LUNs", ts);
    std::set<std::string> seen;
    for (const auto& l : tc.luns) {
      if (l.empty()) c.fail("{}: luns: an empty export name", ts);
      if (!seen.insert(l).second) c.fail("{}: luns: '{}' is listed twice", ts, l);
    }
    if (auto v = get_str(c, *tt, "alias", ts)) tc.alias = *v;
    if (auto v = get_access(c, *tt, "default_access", ts)) tc.default_access = *v;
    tc.chap = get_chap(c, *tt, ts, "chap_user", "chap_secret", "mutual_user", "mutual_secret");
    std::set<std::string> inits;
    for (auto* at : table_array(c, *tt, "acl", "iscsi.target.acl")) {
      const std::string as = fmt::format("{} acl #{}", ts, tc.acl.size() + 1);
      check_keys(c, *at, as, {"initiator", "access"});
      IscsiAclConfig a;
      if (!at->get("initiator")) c.fail("{}: initiator is missing (the initiator's IQN)", as);
      a.initiator = get_iqn(c, *at, "initiator", as);
      if (!at->get("access")) c.fail("{}: access is missing (read-write, read-only or none)", as);
      if (auto v = get_access(c, *at, "access", as)) a.access = *v;
      if (!a.initiator.empty() && !inits.insert(a.initiator).second)
        c.fail("{}: initiator '{}' is listed twice", ts, a.initiator);
      tc.acl.push_back(std::move(a));
    }
    is.targets.push_back(std::move(tc));
  }
  if (!is.targets.empty() && is.listen.empty())
    c.fail("[[iscsi.target]] is configured but iscsi.listen is empty (e.g. listen = [\"127.0.0.1:3260\"])");
}

bool valid_name(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  for (char ch : s)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')) return false;
  return true;
}

// "127.0.0.1:10809" -> "127.0.0.1"; "[::1]:10809" -> "::1".
std::string host_of(const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  std::string h = colon == std::string::npos ? endpoint : endpoint.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  return h;
}

void parse_api(Ctx& c, const toml::table& t, ApiSection& api) {
  check_keys(c, t, "[api]", {"listen", "token_file", "tls_cert", "tls_key"});
  if (auto v = get_str(c, t, "listen", "api")) {
    const auto colon = v->rfind(':');
    if (colon == std::string::npos || colon == 0 || colon + 1 == v->size())
      c.fail("api.listen '{}' must be \"host:port\" like \"127.0.0.11:7480\"", *v);
    else
      api.listen = *v;
  }
  if (auto v = get_str(c, t, "token_file", "api")) api.token_file = *v;
  if (auto v = get_str(c, t, "tls_cert", "api")) api.tls_cert = *v;
  if (auto v = get_str(c, t, "tls_key", "api")) api.tls_key = *v;
  if (api.tls_cert.empty() != api.tls_key.empty()) c.fail("[api]: tls_cert and tls_key go together");
  if (api.listen.empty()) return;
  // No anonymous control plane: a listener without a token would let anyone delete volumes.
  if (api.token_file.empty()) {
    c.fail("[api]: token_file is required with listen (a file holding the bearer token)");
    return;
  }
  std::ifstream in(api.token_file);
  if (!in) {
    c.fail("api.token_file '{}' cannot be read", api.token_file);
    return;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  std::string tok = ss.str();
  while (!tok.empty() && std::isspace(static_cast<unsigned char>(tok.back()))) tok.pop_back();
  if (tok.empty()) c.fail("api.token_file '{}' is empty", api.token_file);
  api.token = tok;
}

void parse_mirror_tls(Ctx& c, const toml::table& t, Config::MirrorSection& m) {
  if (auto v = get_str(c, t, "tls", "mirror")) {
    if (*v != "on" && *v != "off")
      c.fail("mirror.tls must be \"on\" or \"off\", not \"{}\"", *v);
    else
      m.tls = *v == "on";
  }
  for (auto [key, field] : {std::pair{"tls_cert", &m.tls_cert}, std::pair{"tls_key", &m.tls_key},
                            std::pair{"tls_ca", &m.tls_ca}, std::pair{"tls_psk", &m.tls_psk}})
    if (auto v = get_str(c, t, key, "mirror")) *field = *v;
  if (auto v = get_bool(c, t, "tls_check_name", "mirror")) m.tls_check_name = *v;
  const bool certs = !m.tls_cert.empty() || !m.tls_key.empty() || !m.tls_ca.empty();
  if (!m.tls) {
    if (certs || !m.tls_psk.empty())
      c.fail("[mirror]: tls_cert/tls_key/tls_ca/tls_psk are set but tls is not \"on\"");
    return;
  }
  if (certs && !m.tls_psk.empty()) {
    c.fail("[mirror]: tls_psk or tls_cert+tls_key+tls_ca, not both");
    return;
  }
  if (!m.tls_psk.empty() && m.tls_check_name)
    c.fail("[mirror]: tls_check_name needs certificates, not tls_psk");
  if (m.tls_psk.empty() && (m.tls_cert.empty() || m.tls_key.empty() || m.tls_ca.empty())) {
    c.fail("[mirror]: tls = \"on\" needs tls_cert, tls_key and tls_ca (mutual TLS) or tls_psk");
    return;
  }
  // Loaded once here so that an unreadable file or a key that does not match its certificate
  // stops the daemon at start, not at the first link.
  if (auto ctx = TlsContext::make(mirror_tls_options(m)); !ctx)
    c.fail("[mirror]: {}", ctx.status().message());
}

}  // namespace

TlsOptions mirror_tls_options(const Config::MirrorSection& m) {
  TlsOptions o;
  o.cert = m.tls_cert;
  o.key = m.tls_key;
  o.ca = m.tls_ca;
  o.psk = m.tls_psk;
  return o;
}

Result<Config> parse_config(std::string_view text, const std::string& source) {
  Ctx c{source, {}};
  Config cfg;
  cfg.file = source;
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    return Status::error(Errc::invalid, "{}: line {}: {}", source, e.source().begin.line, e.description());
  }
  check_keys(c, root, "the top level",
             {"node", "daemon", "listen", "nbd", "pool", "volume", "export", "memory_export", "tls", "limits",
              "iscsi", "state_dir", "cluster", "api", "mirror"});
  if (auto* n = root.get("state_dir")) {
    if (!n->is_string() || n->as_string()->get().empty() || n->as_string()->get().front() != '/')
      c.fail("state_dir must be an absolute path like \"/var/lib/duplex\"{}", where(*n));
    else
      cfg.state_dir = n->as_string()->get();
  }
  if (auto* t = sub_table(c, root, "node")) {
    check_keys(c, *t, "[node]", {"name", "site"});
    if (auto v = get_str(c, *t, "name", "node")) cfg.node_name = *v;
    if (auto v = get_str(c, *t, "site", "node")) cfg.site = *v;
  }
  if (auto* t = sub_table(c, root, "daemon")) {
    check_keys(c, *t, "[daemon]", {"loops", "log_level"});
    if (auto v = get_int(c, *t, "loops", "daemon")) {
      if (*v < 0 || *v > 256) c.fail("daemon.loops must be 0..256");
      cfg.loops = static_cast<int>(*v);
    }
    if (auto v = get_str(c, *t, "log_level", "daemon")) {
      if (*v != "trace" && *v != "debug" && *v != "info" && *v != "warn" && *v != "error")
        c.fail("daemon.log_level '{}': use trace, debug, info, warn or error", *v);
      cfg.log_level = *v;
    }
  }
  if (auto* t = sub_table(c, root, "listen")) {
    check_keys(c, *t, "[listen]", {"nbd"});
    if (auto* n = t->get("nbd")) {
      if (n->is_string()) {
        cfg.nbd_listen.push_back(n->as_string()->get());
      } else if (n->is_array()) {
        for (auto& e : *n->as_array()) {
          if (!e.is_string())
            c.fail("listen.nbd must be a string or a list of strings");
          else
            cfg.nbd_listen.push_back(e.as_string()->get());
        }
      } else {
        c.fail("listen.nbd must be \"host:port\" or a list of them");
      }
    }
  }
  if (auto* t = sub_table(c, root, "cluster")) {
    check_keys(c, *t, "[cluster]", {"etcd", "lease_ttl", "address", "mirror_listen", "mirror_advertise"});
    if (auto v = get_str(c, *t, "mirror_listen", "cluster")) {
      // Checked here so that a typo is one line at start, not a failed listen later.
      if (auto ep = parse_endpoint(*v); !ep)
        c.fail("cluster.mirror_listen '{}': {}", *v, ep.status().message());
      else
        cfg.mirror_listen = *v;
    }
    if (auto v = get_str(c, *t, "mirror_advertise", "cluster")) {
      if (auto ep = parse_endpoint(*v); !ep)
        c.fail("cluster.mirror_advertise '{}': {}", *v, ep.status().message());
      else
        cfg.mirror_advertise = *v;
    }
    if (auto v = get_str(c, *t, "address", "cluster")) {
      if (v->empty() || v->find_first_of(" /:") != std::string::npos)
        c.fail("cluster.address '{}' must be a host name or IPv4 address without a port", *v);
      else
        cfg.address = *v;
    }
    if (auto* n = t->get("etcd")) {
      auto add = [&](const toml::node& e) {
        const std::string v = e.is_string() ? e.as_string()->get() : std::string();
        if (!v.starts_with("http://") && !v.starts_with("https://"))
          c.fail("cluster.etcd: '{}' is not an http:// or https:// URL{}", v, where(e));
        else
          cfg.etcd.push_back(v);
      };
      if (n->is_array()) {
        for (auto& e : *n->as_array()) add(e);
      } else {
        add(*n);
      }
    }
    if (auto v = get_duration(c, *t, "lease_ttl", "cluster")) {
      if (*v < std::chrono::seconds(2) || *v > std::chrono::seconds(300))
        c.fail("cluster.lease_ttl must be between 2s and 300s");
      else
        cfg.lease_ttl = *v;
    }
  }
  if (auto* t = sub_table(c, root, "mirror")) {
    check_keys(c, *t, "[mirror]",
               {"ping_interval", "link_timeout", "replicate_timeout", "freeze_timeout", "tiebreak_delay",
                "lease", "resync_rate_max", "resync_rate_min", "resync_depth", "tls", "tls_cert", "tls_key",
                "tls_ca", "tls_psk", "tls_check_name"});
    auto& m = cfg.mirror;
    for (auto [key, field] :
         {std::pair{"ping_interval", &m.ping_interval}, std::pair{"link_timeout", &m.link_timeout},
          std::pair{"replicate_timeout", &m.replicate_timeout},
          std::pair{"freeze_timeout", &m.freeze_timeout}, std::pair{"tiebreak_delay", &m.tiebreak_delay},
          std::pair{"lease", &m.lease}}) {
      if (auto v = get_duration(c, *t, key, "mirror")) {
        if (*v < std::chrono::milliseconds(50) || *v > std::chrono::hours(1))
          c.fail("mirror.{} must be between 50ms and 1h", key);
        else
          *field = *v;
      }
    }
    if (auto v = get_size(c, *t, "resync_rate_max", "mirror")) m.resync_rate_max = *v;
    if (auto v = get_size(c, *t, "resync_rate_min", "mirror")) m.resync_rate_min = *v;
    if (auto v = get_int(c, *t, "resync_depth", "mirror")) {
      if (*v < 1 || *v > 1024)
        c.fail("mirror.resync_depth must be 1..1024");
      else
        m.resync_depth = static_cast<std::uint32_t>(*v);
    }
    // A link must be able to miss a ping without going down, and the non-preferred site must get
    // to its decision before its writes time out.
    if (m.ping_interval * 2 > m.link_timeout)
      c.fail("mirror.ping_interval must be at most half of link_timeout");
    if (m.freeze_timeout < m.tiebreak_delay + m.link_timeout)
      c.fail("mirror.freeze_timeout must be at least tiebreak_delay + link_timeout");
    if (m.resync_rate_max != 0 && m.resync_rate_min > m.resync_rate_max)
      c.fail("mirror.resync_rate_min must not exceed resync_rate_max");
    parse_mirror_tls(c, *t, m);
  }
  if (auto* t = sub_table(c, root, "nbd")) {
    check_keys(c, *t, "[nbd]", {"default_export", "handshake_timeout", "stop_grace"});
    if (auto v = get_str(c, *t, "default_export", "nbd")) cfg.default_export = *v;
    if (auto v = get_duration(c, *t, "handshake_timeout", "nbd")) cfg.handshake_timeout = *v;
    if (auto v = get_duration(c, *t, "stop_grace", "nbd")) cfg.stop_grace = *v;
  }
  if (auto* t = sub_table(c, root, "limits")) {
    check_keys(c, *t, "[limits]",
               {"max_connections", "max_inflight_per_connection", "max_inflight_bytes_per_connection"});
    if (auto v = get_size(c, *t, "max_inflight_bytes_per_connection", "limits")) {
      if (*v < (1ULL << 20) || *v > (4ULL << 30))
        c.fail("limits.max_inflight_bytes_per_connection must be 1MiB..4GiB");
      cfg.max_inflight_bytes = *v;
    }
    if (auto v = get_int(c, *t, "max_connections", "limits")) {
      if (*v < 1 || *v > 100000) c.fail("limits.max_connections must be 1..100000");
      cfg.max_connections = static_cast<unsigned>(*v);
    }
    if (auto v = get_int(c, *t, "max_inflight_per_connection", "limits")) {
      if (*v < 1 || *v > 4096) c.fail("limits.max_inflight_per_connection must be 1..4096");
      cfg.max_inflight = static_cast<unsigned>(*v);
    }
  }
  std::set<std::string> pool_names;
  for (auto* t : table_array(c, root, "pool")) {
    const std::string sect = fmt::format("[[pool]] #{}", cfg.pools.size() + 1);
    check_keys(c, *t, sect, {"name", "path", "create_size", "cluster_size", "io", "direct"});
    PoolConfig p;
    if (auto v = get_str(c, *t, "name", sect)) p.name = *v;
    if (auto v = get_str(c, *t, "path", sect)) p.path = *v;
    if (auto v = get_size(c, *t, "create_size", sect)) p.create_size = *v;
    if (auto v = get_size(c, *t, "cluster_size", sect)) p.cluster_size = static_cast<std::uint32_t>(*v);
    if (auto v = get_str(c, *t, "io", sect)) {
      if (*v != "auto" && *v != "uring" && *v != "sync")
        c.fail("{}: io '{}': use auto, uring or sync", sect, *v);
      p.io = *v;
    }
    if (auto v = get_bool(c, *t, "direct", sect)) p.direct = *v;
    if (!valid_name(p.name)) c.fail("{}: name '{}' is missing or not [A-Za-z0-9._-]+", sect, p.name);
    if (p.path.empty()) c.fail("pool {}: path is missing", p.name);
    if (!pool_names.insert(p.name).second) c.fail("pool name '{}' is used twice", p.name);
    cfg.pools.push_back(std::move(p));
  }
  for (auto* t : table_array(c, root, "volume")) {
    const std::string sect = fmt::format("[[volume]] #{}", cfg.volumes.size() + 1);
    check_keys(c, *t, sect, {"pool", "name", "size"});
    VolumeConfig v;
    if (auto s = get_str(c, *t, "pool", sect)) v.pool = *s;
    if (auto s = get_str(c, *t, "name", sect)) v.name = *s;
    if (auto s = get_size(c, *t, "size", sect)) v.size = *s;
    if (v.pool.empty() && cfg.pools.size() == 1) v.pool = cfg.pools[0].name;
    if (!pool_names.count(v.pool)) c.fail("{}: pool '{}' is not configured", sect, v.pool);
    if (!valid_name(v.name)) c.fail("{}: name '{}' is missing or not [A-Za-z0-9._-]+", sect, v.name);
    if (v.size == 0) c.fail("volume {}: size is missing", v.name);
    cfg.volumes.push_back(std::move(v));
  }
  for (auto* t : table_array(c, root, "export")) {
    const std::string sect = fmt::format("[[export]] #{}", cfg.exports.size() + 1);
    check_keys(c, *t, sect, {"name", "read_only", "description"});
    ExportConfig e;
    if (auto s = get_str(c, *t, "name", sect)) e.name = *s;
    if (auto b = get_bool(c, *t, "read_only", sect)) e.read_only = *b;
    if (auto s = get_str(c, *t, "description", sect)) e.description = *s;
    if (e.name.empty()) c.fail("{}: name is missing", sect);
    cfg.exports.push_back(std::move(e));
  }
  for (auto* t : table_array(c, root, "memory_export")) {
    const std::string sect = fmt::format("[[memory_export]] #{}", cfg.memory_exports.size() + 1);
    check_keys(c, *t, sect, {"name", "size"});
    MemoryExportConfig m;
    if (auto s = get_str(c, *t, "name", sect)) m.name = *s;
    if (auto s = get_size(c, *t, "size", sect)) m.size = *s;
    if (!valid_name(m.name)) c.fail("{}: name '{}' is missing or invalid", sect, m.name);
    if (m.size == 0 || m.size > (64ULL << 30))
      c.fail("memory export {}: size must be 1 byte .. 64GiB", m.name);
    cfg.memory_exports.push_back(std::move(m));
  }
  if (auto* t = sub_table(c, root, "tls")) {
    check_keys(c, *t, "[tls]", {"cert", "key", "ca", "psk", "require"});
    TlsSection s;
    if (auto v = get_str(c, *t, "cert", "tls")) s.cert = *v;
    if (auto v = get_str(c, *t, "key", "tls")) s.key = *v;
    if (auto v = get_str(c, *t, "ca", "tls")) s.ca = *v;
    if (auto v = get_str(c, *t, "psk", "tls")) s.psk = *v;
    if (auto v = get_bool(c, *t, "require", "tls")) s.require = *v;
    if (s.cert.empty() != s.key.empty()) c.fail("[tls]: cert and key go together");
    if (s.cert.empty() && s.psk.empty()) c.fail("[tls]: set cert+key, or psk");
    // GnuTLS PSK clients (libnbd, qemu) fail against a server that also offers a certificate.
    if (!s.cert.empty() && !s.psk.empty()) c.fail("[tls]: use either cert+key or psk, not both");
    cfg.tls = s;
  }
  if (auto* t = sub_table(c, root, "iscsi")) parse_iscsi(c, *t, cfg.iscsi);
  if (auto* t = sub_table(c, root, "api")) parse_api(c, *t, cfg.api);
  if (cfg.address.empty()) {
    const auto& first = !cfg.nbd_listen.empty() ? cfg.nbd_listen : cfg.iscsi.listen;
    if (!first.empty()) cfg.address = host_of(first.front());
  }
  if (cfg.nbd_listen.empty() && cfg.iscsi.listen.empty())
    c.fail("no front-end: set listen.nbd (e.g. nbd = \"127.0.0.1:10809\") and/or iscsi.listen");
  if (!c.err.is_ok()) return c.err;
  return cfg;
}

Result<Config> load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::error(Errc::not_found, "config {}: cannot be read", path);
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace duplex::daemon
