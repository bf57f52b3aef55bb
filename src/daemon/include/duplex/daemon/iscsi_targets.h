#pragma once
// Which iSCSI targets the daemon serves, decided from the configuration and the export list
// before any LogicalUnit exists (pure logic, unit-tested).
//
//   [[iscsi.target]] tables present -> exactly those; each LUN names an export ("vol", "vol@snap")
//   none, iscsi.listen set          -> one target per export, LUN 0:
//                                        vol      -> <base_iqn>:<iqn_component(vol)>
//                                        vol@snap -> <base_iqn>:<iqn_component(vol)>:<iqn_component(snap)>
// Two exports that map to the same IQN (names differing only in case or '_' vs '-') are an error
// naming both: silently serving one of them would hide the other.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/daemon/config.h"
#include "duplex/iscsi/chap.h"
#include "duplex/iscsi/target.h"
#include "duplex/scsi/logical_unit.h"

namespace duplex::daemon {

struct ExportView {  // what the planner needs to know about one export
  std::string name;  // "vol" or "vol@snap"
  bool read_only = false;
};

struct TargetPlan {
  std::string name;  // IQN, lower case
  std::string alias;
  std::vector<std::string> luns;  // export names: LUN i serves luns[i]
  iscsi::Access default_access = iscsi::Access::read_write;
  std::map<std::string, iscsi::Access> acl;
  std::optional<iscsi::ChapCredentials> chap;
  bool writable = false;  // LUN 0 is writable and someone may write (for the URIs duplexd prints)
};

// The IQN of the automatic target of an export.
std::string auto_target_name(const std::string& base_iqn, const std::string& export_name);

// Errors name the target and the export.
Result<std::vector<TargetPlan>> plan_iscsi_targets(const IscsiSection& cfg,
                                                   const std::vector<ExportView>& exports);

// A mirrored volume is one LU reached through each replica node (docs/multipath.md). Each node is
// its own target port group with one relative target port, both numbered by the node's rank among
// the volume's replicas sorted by name, from 1: stable across restarts, distinct per node, and the
// same numbers whichever node is asked. 0 when `node` is not a replica.
std::uint16_t replica_port(const std::vector<std::string>& replicas, const std::string& node);

// The groups of every replica as the in-sync set says: the owner (the first member in placement
// order, i.e. the preferred site's node while it is in the set) active/optimized and preferred,
// another member active/non-optimized, a node outside the set unavailable (it may not serve: its
// data may be stale). `cut_off` names a member that can reach neither its peer nor the witness
// (MirrorVolume::cut_off(), only ever this node's own view of itself): it is shown unavailable like
// a node outside the set, and the other member takes the optimized state, so hosts move their I/O
// to the node that can go on.
std::vector<scsi::TargetPortGroup> mirror_port_groups(const std::vector<std::string>& replicas,
                                                      const std::vector<std::string>& members,
                                                      const std::string& owner,
                                                      const std::string& cut_off = "");

}  // namespace duplex::daemon
