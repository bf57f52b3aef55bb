#include "duplex/volume/block_volume.h"

#include <algorithm>

#include "duplex/base/buffer.h"

namespace duplex::volume {

Task<Result<CompareOutcome>> BlockVolume::compare_and_write(std::uint64_t offset,
                                                            std::span<const std::byte> expected,
                                                            std::span<const std::byte> data, bool fua) {
  if (expected.size() != data.size())
    co_return Status::error(Errc::invalid, "compare and write: {} bytes to compare, {} to write",
                            expected.size(), data.size());
  AlignedBuffer current(expected.size());
  if (Status st = co_await read(offset, current.span()); !st.is_ok()) co_return st;
  const auto diff = std::mismatch(expected.begin(), expected.end(), current.span().begin());
  if (diff.first != expected.end())
    co_return CompareOutcome{false, static_cast<std::uint64_t>(diff.first - expected.begin())};
  if (Status st = co_await write(offset, data, fua); !st.is_ok()) co_return st;
  co_return CompareOutcome{};
}

Task<void> SharedStateKeeper::settle() { co_return; }

// Both by value in the interface: a mirror keeps the keeper and moves the request into its
// message to the owner; this default uses neither.
bool BlockVolume::attach_shared_state(
    std::weak_ptr<SharedStateKeeper> /*k*/) {  // NOLINT(performance-unnecessary-value-param)
  return false;
}
Task<Result<std::vector<std::byte>>> BlockVolume::shared_change(std::vector<std::byte> /*request*/) {
  co_return Status::error(Errc::unsupported, "volume {} does not order shared state", name());
}

}  // namespace duplex::volume
