#pragma once
// A BlockVolume decorator that forwards every call to the volume it owns and records the
// operation (count, bytes, error, latency) into a VolumeStats shared with the metrics renderer.
// Its cost per I/O is two steady_clock reads and a few relaxed atomic adds; the only allocation is
// the coroutine frame the Task interface implies.
#include <memory>

#include "duplex/volume/block_volume.h"
#include "duplex/volume/volume_stats.h"

namespace duplex::volume {

class MeteredVolume final : public BlockVolume {
 public:
  MeteredVolume(std::unique_ptr<BlockVolume> inner, std::shared_ptr<VolumeStats> stats);

  BlockVolume& inner() { return *inner_; }
  const BlockVolume& inner() const { return *inner_; }
  const std::shared_ptr<VolumeStats>& stats() const { return stats_; }

  const std::string& name() const override { return inner_->name(); }
  Uuid uuid() const override { return inner_->uuid(); }
  std::uint64_t size() const override { return inner_->size(); }
  bool read_only() const override { return inner_->read_only(); }
  std::uint32_t preferred_block_size() const override { return inner_->preferred_block_size(); }

  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) override;
  Task<Status> flush() override;
  Task<Status> trim(std::uint64_t offset, std::uint64_t length) override;
  Task<Status> write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) override;
  bool attach_shared_state(std::weak_ptr<SharedStateKeeper> k) override {
    return inner_->attach_shared_state(std::move(k));
  }
  Task<Result<std::vector<std::byte>>> shared_change(std::vector<std::byte> request) override {
    return inner_->shared_change(std::move(request));
  }
  // Counted as a write of the range (whether or not it matched).
  Task<Result<CompareOutcome>> compare_and_write(std::uint64_t offset, std::span<const std::byte> expected,
                                                 std::span<const std::byte> data, bool fua) override;
  Result<std::vector<Extent>> block_status(std::uint64_t offset, std::uint64_t length) const override {
    return inner_->block_status(offset, length);
  }
  std::uint64_t placement(std::uint64_t offset) const override { return inner_->placement(offset); }
  Result<std::vector<Extent>> changed_since(const std::string& snapshot, std::uint64_t offset,
                                            std::uint64_t length) const override {
    return inner_->changed_since(snapshot, offset, length);
  }

 private:
  std::unique_ptr<BlockVolume> inner_;
  std::shared_ptr<VolumeStats> stats_;
};

}  // namespace duplex::volume
