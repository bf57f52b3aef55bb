#pragma once
// Persistent-reservation state that must survive a restart (APTPL, SPC-4 §5.13.5): one file per
// logical unit, `<state_dir>/pr/<volume-uuid>.pr`.
//
// File: the bytes of scsi::PrState::serialize() ("DPR1"...) followed by their CRC32C, 4 bytes
// little-endian. Written atomically (temp file, fsync, rename, fsync of the directory), so a
// crash leaves the old file or the new one. A file that does not check out is a startup error:
// registrations a host relies on are never dropped silently.
#include <optional>
#include <string>

#include "duplex/base/status.h"
#include "duplex/base/uuid.h"
#include "duplex/scsi/reservations.h"

namespace duplex::daemon {

class PrStore {
 public:
  explicit PrStore(std::string state_dir) : dir_(std::move(state_dir) + "/pr") {}

  // Creates <state_dir>/pr (and state_dir) if missing.
  Status prepare() const;
  std::string path(const Uuid& lu) const;
  // nullopt: no file. An error names the file and what is wrong with it.
  Result<std::optional<scsi::PrState>> load(const Uuid& lu) const;
  Status save(const Uuid& lu, const scsi::PrState& s) const;
  Status remove(const Uuid& lu) const;  // absent already is fine

 private:
  std::string dir_;
};

}  // namespace duplex::daemon
