#pragma once
// What the NBD server needs to know about the exports it may serve. The daemon implements
// ExportCatalogue over its pools; tests implement it over in-memory volumes.
//
// Threading: lookup()/list() are called from the loop that runs a connection's handshake and
// return copies (ExportInfo); volume() is called on the export's own loop (ExportInfo::loop) and
// the BlockVolume it returns is used only there.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/volume/block_volume.h"

namespace duplex::nbd {

struct ExportInfo {
  std::string name;  // canonical: "vol" or "vol@snap"
  std::string description;
  std::uint64_t size = 0;
  bool read_only = false;
  std::uint32_t min_block = 1;
  std::uint32_t preferred_block = 4096;
  std::uint32_t max_block = 32 * 1024 * 1024;
  // Snapshots X for which "x-duplex:changed-since:X" is offered (older states of this volume).
  std::vector<std::string> snapshots;
  int loop = 0;  // index of the event loop that owns the volume
};

class ExportCatalogue {
 public:
  virtual ~ExportCatalogue() = default;
  // "" is the default export (if any).
  virtual std::optional<ExportInfo> lookup(std::string_view name) const = 0;
  virtual std::vector<ExportInfo> list() const = 0;
  // The volume behind a canonical export name; call only on the export's loop.
  virtual volume::BlockVolume* volume(const std::string& canonical_name) = 0;
};

}  // namespace duplex::nbd
