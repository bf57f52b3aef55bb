#include "duplex/daemon/iscsi_targets.h"

#include <algorithm>

#include <fmt/format.h>

namespace duplex::daemon {

namespace {

constexpr std::size_t kMaxIscsiName = 223;  // RFC 7143 §4.2.7.1 (bytes, UTF-8)

bool has_writer(const TargetPlan& t) {
  if (t.default_access == iscsi::Access::read_write) return true;
  for (const auto& [_, a] : t.acl)
    if (a == iscsi::Access::read_write) return true;
  return false;
}

}  // namespace

std::string auto_target_name(const std::string& base_iqn, const std::string& export_name) {
  const auto at = export_name.find('@');
  if (at == std::string::npos) return fmt::format("{}:{}", base_iqn, iscsi::iqn_component(export_name));
  return fmt::format("{}:{}:{}", base_iqn, iscsi::iqn_component(export_name.substr(0, at)),
                     iscsi::iqn_component(export_name.substr(at + 1)));
}

Result<std::vector<TargetPlan>> plan_iscsi_targets(const IscsiSection& cfg,
                                                   const std::vector<ExportView>& exports) {
  std::vector<TargetPlan> out;
  if (cfg.listen.empty()) return out;
  auto find = [&](const std::string& name) -> const ExportView* {
    for (const auto& e : exports)
      if (e.name == name) return &e;
    return nullptr;
  };

  if (cfg.targets.empty()) {
    std::map<std::string, std::string> by_iqn;  // IQN -> export
    for (const auto& e : exports) {
      TargetPlan t;
      t.name = auto_target_name(cfg.base_iqn, e.name);
      if (auto [it, fresh] = by_iqn.emplace(t.name, e.name); !fresh)
        return Status::error(Errc::exists,
                             "iSCSI: exports '{}' and '{}' both map to target {} (rename one, or list the "
                             "targets in [[iscsi.target]])",
                             it->second, e.name, t.name);
      if (t.name.size() > kMaxIscsiName || !iscsi::valid_iscsi_name(t.name))
        return Status::error(Errc::invalid,
                             "iSCSI: export '{}' gives the target name {}, which is not a valid iSCSI name "
                             "(at most {} bytes; list the targets in [[iscsi.target]] instead)",
                             e.name, t.name, kMaxIscsiName);
      t.alias = e.name;
      t.luns = {e.name};
      t.writable = !e.read_only;
      out.push_back(std::move(t));
    }
    return out;
  }

  for (const auto& tc : cfg.targets) {
    TargetPlan t;
    t.name = tc.name;
    t.alias = tc.alias;
    t.default_access = tc.default_access;
    t.chap = tc.chap;
    for (const auto& a : tc.acl) t.acl[a.initiator] = a.access;
    for (std::size_t i = 0; i < tc.luns.size(); ++i) {
      const auto* e = find(tc.luns[i]);
      if (!e)
        return Status::error(Errc::not_found, "[[iscsi.target]] '{}': LUN {} '{}' is not an export", tc.name,
                             i, tc.luns[i]);
      t.luns.push_back(e->name);
      if (i == 0) t.writable = !e->read_only;
    }
    t.writable = t.writable && has_writer(t);
    out.push_back(std::move(t));
  }
  return out;
}

std::uint16_t replica_port(const std::vector<std::string>& replicas, const std::string& node) {
  std::vector<std::string> sorted = replicas;
  std::sort(sorted.begin(), sorted.end());
  const auto it = std::find(sorted.begin(), sorted.end(), node);
  return it == sorted.end() ? 0 : static_cast<std::uint16_t>(it - sorted.begin() + 1);
}

std::vector<scsi::TargetPortGroup> mirror_port_groups(const std::vector<std::string>& replicas,
                                                      const std::vector<std::string>& all_members,
                                                      const std::string& owner, const std::string& cut_off) {
  std::vector<std::string> members;
  for (const auto& m : all_members)
    if (m != cut_off) members.push_back(m);
  std::string first = owner;
  if (first.empty() || std::find(members.begin(), members.end(), first) == members.end()) {
    first.clear();
    for (const auto& r : replicas)
      if (first.empty() && std::find(members.begin(), members.end(), r) != members.end()) first = r;
  }
  std::vector<std::string> sorted = replicas;
  std::sort(sorted.begin(), sorted.end());
  std::vector<scsi::TargetPortGroup> out;
  for (const auto& r : sorted) {
    const auto port = replica_port(replicas, r);
    scsi::TargetPortGroup g{port, scsi::AluaState::unavailable, false, {port}};
    if (r == first) {
      g.state = scsi::AluaState::active_optimized;
      g.preferred = true;
    } else if (std::find(members.begin(), members.end(), r) != members.end()) {
      g.state = scsi::AluaState::active_non_optimized;
    }
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace duplex::daemon
