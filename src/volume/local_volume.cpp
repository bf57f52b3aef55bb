#include "duplex/volume/local_volume.h"

namespace duplex::volume {

namespace {
std::vector<Extent> convert(const std::vector<store::Extent>& in) {
  std::vector<Extent> out;
  out.reserve(in.size());
  for (const auto& e : in) out.push_back({e.offset, e.length, e.allocated, e.zero});
  return out;
}
}  // namespace

LocalVolume::LocalVolume(store::Pool& pool, store::ObjectId id, std::string export_name, bool read_only)
    : pool_(pool), id_(id), name_(std::move(export_name)) {
  const auto st = pool_.stat(id_);
  read_only_ = read_only || !st || st->kind == store::ObjectKind::snapshot;
}

Uuid LocalVolume::uuid() const { return pool_.uuid_of(id_); }

std::uint64_t LocalVolume::size() const { return pool_.size_of(id_); }

std::uint32_t LocalVolume::preferred_block_size() const {
  // 4 KiB: the sector the store never tears; larger clusters are an allocation detail.
  return 4096;
}

Task<Status> LocalVolume::read(std::uint64_t offset, std::span<std::byte> buf) {
  return pool_.read(id_, offset, buf);
}

Task<Status> LocalVolume::write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) {
  if (read_only_)
    return [](std::string n) -> Task<Status> {
      co_return Status::error(Errc::read_only, "volume {} is exported read-only", n);
    }(name_);
  return pool_.write(id_, offset, buf, fua);
}

Task<Status> LocalVolume::flush() { return pool_.flush(); }

Task<Status> LocalVolume::trim(std::uint64_t offset, std::uint64_t length) {
  if (read_only_)
    return [](std::string n) -> Task<Status> {
      co_return Status::error(Errc::read_only, "volume {} is exported read-only", n);
    }(name_);
  return pool_.trim(id_, offset, length);
}

Task<Status> LocalVolume::write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) {
  if (read_only_)
    return [](std::string n) -> Task<Status> {
      co_return Status::error(Errc::read_only, "volume {} is exported read-only", n);
    }(name_);
  return pool_.write_zeroes(id_, offset, length, no_unmap, fua);
}

Result<std::vector<Extent>> LocalVolume::block_status(std::uint64_t offset, std::uint64_t length) const {
  auto r = pool_.block_status(id_, offset, length);
  if (!r) return r.status();
  return convert(*r);
}

Result<std::vector<Extent>> LocalVolume::changed_since(const std::string& snapshot, std::uint64_t offset,
                                                       std::uint64_t length) const {
  auto self = pool_.stat(id_);
  if (!self) return self.status();
  // A bare snapshot name is looked up under this volume (or under the origin of a snapshot export).
  std::string full = snapshot;
  if (snapshot.find('@') == std::string::npos) {
    std::string vol = self->name;
    if (self->kind == store::ObjectKind::snapshot) {
      auto origin = pool_.stat(self->origin);
      if (!origin) return origin.status();
      vol = origin->name;
    }
    full = vol + "@" + snapshot;
  }
  auto from = pool_.find(full);
  if (!from) return from.status();
  auto r = pool_.changed(*from, id_, offset, length);
  if (!r) return r.status();
  return convert(*r);
}

}  // namespace duplex::volume
