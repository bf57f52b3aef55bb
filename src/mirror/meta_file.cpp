// The metadata file itself: a small file, so plain pread/pwrite/fdatasync (FileDevice) serve it.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "duplex/mirror/replica_meta.h"
#include "duplex/reactor/file_device.h"

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

}  // namespace

Task<Result<std::unique_ptr<BlockDevice>>> open_meta_file(std::string path, std::uint64_t size, bool create) {
  FileDeviceOptions o;
  o.create = create;
  o.create_size = size;
  auto dev = FileDevice::open(path, o);
  if (!dev) co_return dev.status();
  if (create) {
    DPX_CO_TRY((*dev)->sync());
    DPX_CO_TRY(sync_parent_dir(path));
  } else {
    // Grown for a grown volume: the new tail reads as zeroes (invalid bitmap blocks) until
    // resize() writes it, and the record does not cover it before that.
    DPX_CO_TRY((*dev)->extend(size));
  }
  co_return std::unique_ptr<BlockDevice>(std::move(*dev));
}

Status grow_meta_file(BlockDevice& dev, std::uint64_t size) {
  if (dev.size() >= size) return Status::ok();
  auto* file = dynamic_cast<FileDevice*>(&dev);
  if (!file)
    return Status::error(Errc::unsupported, "{}: mirror metadata of {} bytes cannot grow to {}", dev.name(),
                         dev.size(), size);
  return file->extend(size);
}

}  // namespace duplex::mirror
