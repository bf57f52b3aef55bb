#pragma once
// What an iSCSI portal serves: targets (IQNs), each with its LUNs, its access list and its CHAP
// secrets. The daemon builds these from its volumes and configuration; tests build them by hand.
//
// Threading: a Target is immutable once the portal has started. Each LUN's LogicalUnit belongs to
// the event loop `Lun::loop` (its volume's) and is only called there; a session runs on the loop of
// its target (Target::loop) and hops to a LUN's loop for a command when the two differ.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/iscsi/chap.h"
#include "duplex/scsi/logical_unit.h"

namespace duplex::iscsi {

enum class Access : std::uint8_t { none, read_only, read_write };

struct Lun {
  std::uint64_t number = 0;         // 0..16383 (flat addressing above 255)
  scsi::LogicalUnit* lu = nullptr;  // owned by the daemon; outlives the portal
  int loop = 0;
};

struct Target {
  std::string name;   // IQN, lower case
  std::string alias;  // TargetAlias (optional)
  std::vector<Lun> luns;
  // Initiator IQN (lower case) -> access. Initiators not listed get default_access; `none`
  // refuses the login (status 0202) and hides the target from SendTargets.
  std::map<std::string, Access> acl;
  Access default_access = Access::read_write;
  std::optional<ChapCredentials> chap;  // required for every login to this target when set
  int loop = 0;

  Access access_for(std::string_view initiator) const;
  const Lun* lun(std::uint64_t number) const;
};

class TargetCatalogue {
 public:
  virtual ~TargetCatalogue() = default;
  virtual const Target* find(std::string_view iqn) const = 0;
  virtual std::vector<const Target*> targets() const = 0;
};

// Is `name` a valid iSCSI name (iqn./eui./naa. form, RFC 7143 §4.2.7, lower case)?
bool valid_iscsi_name(std::string_view name);
// "My_Volume" -> "my-volume": a volume name as the last component of an IQN.
std::string iqn_component(std::string_view name);

// LUN field of a BHS (SAM-5 single-level, peripheral or flat addressing) <-> LUN number.
std::uint64_t encode_lun(std::uint64_t number);
std::optional<std::uint64_t> decode_lun(std::uint64_t field);

}  // namespace duplex::iscsi
