#pragma once
// The `hello` / `hello_reply` payload: what each replica tells the other when the link comes up
// (JSON text inside a checksummed wire message; docs/mirror-formats.md). Lineage is checked on
// it: a replica of another volume (another uuid) is refused (P8). Sizes may differ: a volume
// grows one replica at a time, and the owner brings the smaller one up before it sends it
// anything (docs/mirror.md, "Growing a mirrored volume").
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/uuid.h"

namespace duplex::mirror {

struct Hello {
  Uuid volume;
  std::uint64_t size = 0;      // the size this replica serves (its metadata covers exactly this)
  std::uint64_t capacity = 0;  // what its local replica can hold (>= size; larger mid-grow)
  bool grows = false;          // it speaks the `grow` message (feature "grow"; older builds do not)
  bool al_hints = false;       // it takes `al_hint` messages (feature "al_hint")
  std::string node;
  std::uint64_t generation = 0;      // the generation this replica last held as a member
  std::uint64_t set_generation = 0;  // the newest in-sync set the sender knows (it may not be in it)
  std::string state;                 // ReplicaState text
  bool clean = true;                 // false: it crashed; its activity log below may differ
  std::vector<std::pair<std::uint64_t, std::uint64_t>> hot;  // activity-log ranges
  // This replica's own dirty bitmap as ranges: what it wrote that the other may lack (a deposed
  // owner's last unacknowledged writes). The owner copies these back over it. `diverged_all`:
  // too many ranges to list, treat the whole volume as different.
  std::vector<std::pair<std::uint64_t, std::uint64_t>> diverged;
  bool diverged_all = false;
  bool catch_up = false;  // sent by the owner: "I will resync you; forward your reads"
  // Version of the front-ends' shared state (SCSI reservations) this node holds: at link-up the
  // node with the newer one sends it to the other (0: none since this node started).
  std::uint64_t shared_version = 0;
};

std::string encode_hello(const Hello& h);
Result<Hello> decode_hello(std::string_view text);

}  // namespace duplex::mirror
