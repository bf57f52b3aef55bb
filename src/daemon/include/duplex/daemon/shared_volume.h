#pragma once
// A BlockVolume that forwards to a volume held by shared_ptr: the front-ends' entries own their
// volume by unique_ptr (wrapped in a MeteredVolume), while a MirrorVolume is shared with its link
// handlers (enable_shared_from_this). A retired entry keeps the target alive for the sessions that
// still use it.
#include <memory>

#include "duplex/volume/block_volume.h"

namespace duplex::daemon {

class SharedVolume final : public volume::BlockVolume {
 public:
  explicit SharedVolume(std::shared_ptr<volume::BlockVolume> v) : v_(std::move(v)) {}
  volume::BlockVolume* target() const { return v_.get(); }

  const std::string& name() const override { return v_->name(); }
  Uuid uuid() const override { return v_->uuid(); }
  std::uint64_t size() const override { return v_->size(); }
  bool read_only() const override { return v_->read_only(); }
  std::uint32_t preferred_block_size() const override { return v_->preferred_block_size(); }
  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override { return v_->read(offset, buf); }
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) override {
    return v_->write(offset, buf, fua);
  }
  Task<Status> flush() override { return v_->flush(); }
  Task<Status> trim(std::uint64_t offset, std::uint64_t length) override { return v_->trim(offset, length); }
  Task<Status> write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) override {
    return v_->write_zeroes(offset, length, no_unmap, fua);
  }
  Task<Result<volume::CompareOutcome>> compare_and_write(std::uint64_t offset,
                                                         std::span<const std::byte> expected,
                                                         std::span<const std::byte> data, bool fua) override {
    return v_->compare_and_write(offset, expected, data, fua);
  }
  bool attach_shared_state(std::weak_ptr<volume::SharedStateKeeper> k) override {
    return v_->attach_shared_state(std::move(k));
  }
  Task<Result<std::vector<std::byte>>> shared_change(std::vector<std::byte> request) override {
    return v_->shared_change(std::move(request));
  }
  Result<std::vector<volume::Extent>> block_status(std::uint64_t offset,
                                                   std::uint64_t length) const override {
    return v_->block_status(offset, length);
  }
  Result<std::vector<volume::Extent>> changed_since(const std::string& snapshot, std::uint64_t offset,
                                                    std::uint64_t length) const override {
    return v_->changed_since(snapshot, offset, length);
  }

 private:
  std::shared_ptr<volume::BlockVolume> v_;
};

}  // namespace duplex::daemon
