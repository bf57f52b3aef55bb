#pragma once
// The mirror engine's only view of the arbitration authority (the in-sync set in etcd,
// docs/mirror.md "Arbitration"). The daemon implements it over cluster::Catalogue; the calls are
// blocking etcd round trips there, so the implementation runs them off the event loop and
// resumes the awaiting coroutine on the volume's loop.
#include <cstdint>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex::mirror {

struct InSyncSet {
  std::uint64_t generation = 0;
  std::vector<std::string> members;
  std::string owner;  // the member that orders writes
  bool has(const std::string& node) const {
    for (const auto& m : members)
      if (m == node) return true;
    return false;
  }
};

class Arbiter {
 public:
  virtual ~Arbiter() = default;
  // The current set. Errc::unavailable without a quorum.
  virtual Task<Result<InSyncSet>> read() = 0;
  // Compare-and-swap: replaces the set only if its generation is still `expected_generation`.
  // Errc::conflict when someone else changed it first (nothing written); unavailable without a
  // quorum (nothing decided, or not confirmed: re-read before assuming either).
  virtual Task<Result<InSyncSet>> change(std::uint64_t expected_generation, std::vector<std::string> members,
                                         std::string reason) = 0;
};

}  // namespace duplex::mirror
