// The metadata file itself: a small file of buffered I/O, through the loop's io_uring
// (UringDevice without O_DIRECT) or inline (FileDevice).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "duplex/mirror/replica_meta.h"
#include "duplex/reactor/file_device.h"
#include "duplex/reactor/uring_device.h"

namespace duplex::mirror {

namespace {

// A created file survives a crash only once its directory entry is durable.
Status sync_parent_dir(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return Status::error(Errc::io_error, "cannot open directory {}: {}", dir, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Status::error(Errc::io_error, "cannot sync directory {}: {}", dir, std::strerror(err));
  return Status::ok();
}

// The file under a device from open_meta_file, for what io_uring does not do (ftruncate).
FileDevice* file_of(BlockDevice& dev) {
  if (auto* u = dynamic_cast<UringDevice*>(&dev)) return &u->file();
  return dynamic_cast<FileDevice*>(&dev);
}

}  // namespace

Task<Result<std::unique_ptr<BlockDevice>>> open_meta_file(std::string path, std::uint64_t size, bool create,
                                                          Ring* ring) {
  DeviceOptions o;
  o.create = create;
  o.create_size = size;
  o.direct = false;  // 4 KiB blocks written once each per update: the page cache costs nothing here
  o.use_uring = ring != nullptr;
  auto dev = open_block_device(path, o, ring);
  if (!dev) co_return dev.status();
  if (create) {
    DPX_CO_TRY(co_await (*dev)->flush());
    DPX_CO_TRY(sync_parent_dir(path));
  } else {
    // Grown for a grown volume: the new tail reads as zeroes (invalid bitmap blocks) until
    // resize() writes it, and the record does not cover it before that.
    DPX_CO_TRY(grow_meta_file(**dev, size));
  }
  co_return std::move(*dev);
}

Status grow_meta_file(BlockDevice& dev, std::uint64_t size) {
  if (dev.size() >= size) return Status::ok();
  FileDevice* file = file_of(dev);
  if (!file)
    return Status::error(Errc::unsupported, "{}: mirror metadata of {} bytes cannot grow to {}", dev.name(),
                         dev.size(), size);
  return file->extend(size);
}

}  // namespace duplex::mirror
