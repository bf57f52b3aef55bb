#pragma once
// A BlockVolume served from an object (volume or snapshot) of a local store pool.
#include <string>

#include "duplex/store/pool.h"
#include "duplex/volume/block_volume.h"

namespace duplex::volume {

class LocalVolume final : public BlockVolume {
 public:
  // `read_only` forces a read-only export of a writable volume (e.g. a backup proxy's view).
  LocalVolume(store::Pool& pool, store::ObjectId id, std::string export_name, bool read_only = false);

  const std::string& name() const override { return name_; }
  Uuid uuid() const override;
  std::uint64_t size() const override;
  bool read_only() const override { return read_only_; }
  std::uint32_t preferred_block_size() const override;
  store::ObjectId object() const { return id_; }

  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) override;
  Task<Status> flush() override;
  Task<Status> trim(std::uint64_t offset, std::uint64_t length) override;
  Task<Status> write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) override;
  Result<std::vector<Extent>> block_status(std::uint64_t offset, std::uint64_t length) const override;
  std::uint64_t placement(std::uint64_t offset) const override { return pool_.placement(id_, offset); }
  Result<std::vector<Extent>> changed_since(const std::string& snapshot, std::uint64_t offset,
                                            std::uint64_t length) const override;

 private:
  store::Pool& pool_;
  store::ObjectId id_;
  std::string name_;
  bool read_only_;
};

}  // namespace duplex::volume
