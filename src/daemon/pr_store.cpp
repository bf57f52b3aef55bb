#include "duplex/daemon/pr_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "duplex/base/crc32c.h"

namespace duplex::daemon {

namespace {

Status sys_error(const std::string& what, const std::string& path) {
  return Status::error(Errc::io_error, "{} {}: {}", what, path, std::strerror(errno));
}

Status mkdir_p(const std::string& dir) {
  if (dir.empty()) return Status::ok();
  struct stat st{};
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::ok();
    return Status::error(Errc::invalid, "{} exists and is not a directory", dir);
  }
  if (const auto slash = dir.rfind('/'); slash != std::string::npos && slash > 0)
    DPX_TRY(mkdir_p(dir.substr(0, slash)));
  if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) return sys_error("cannot create", dir);
  return Status::ok();
}

Status write_all(int fd, const std::vector<std::uint8_t>& b, const std::string& path) {
  std::size_t off = 0;
  while (off < b.size()) {
    const ssize_t n = ::write(fd, b.data() + off, b.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return sys_error("cannot write", path);
    off += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Status fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return sys_error("cannot open", dir);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return sys_error("cannot fsync", dir);
  return Status::ok();
}

}  // namespace

Status PrStore::prepare() const { return mkdir_p(dir_); }

std::string PrStore::path(const Uuid& lu) const { return dir_ + "/" + lu.to_string() + ".pr"; }

Result<std::optional<scsi::PrState>> PrStore::load(const Uuid& lu) const {
  const std::string p = path(lu);
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::optional<scsi::PrState>{};
    return sys_error("cannot open", p);
  }
  std::vector<std::uint8_t> b;
  std::uint8_t buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const Status st = sys_error("cannot read", p);
      ::close(fd);
      return st;
    }
    if (n == 0) break;
    b.insert(b.end(), buf, buf + n);
    if (b.size() > (16u << 20)) {
      ::close(fd);
      return Status::error(Errc::corrupt, "persistent reservation state {} is corrupt (larger than 16 MiB)",
                           p);
    }
  }
  ::close(fd);
  if (b.size() < 4)
    return Status::error(Errc::corrupt, "persistent reservation state {} is corrupt ({} bytes)", p, b.size());
  const std::size_t body = b.size() - 4;
  const std::uint32_t want =
      static_cast<std::uint32_t>(b[body]) | static_cast<std::uint32_t>(b[body + 1]) << 8 |
      static_cast<std::uint32_t>(b[body + 2]) << 16 | static_cast<std::uint32_t>(b[body + 3]) << 24;
  if (crc32c(b.data(), body) != want)
    return Status::error(Errc::corrupt, "persistent reservation state {} is corrupt (checksum mismatch)", p);
  auto s = scsi::PrState::deserialize(std::span<const std::uint8_t>(b.data(), body));
  if (!s) return Status::error(Errc::corrupt, "persistent reservation state {} is corrupt (bad format)", p);
  return s;
}

Status PrStore::save(const Uuid& lu, const scsi::PrState& s) const {
  const std::string p = path(lu), tmp = p + ".tmp";
  std::vector<std::uint8_t> b = s.serialize();
  const std::uint32_t crc = crc32c(b.data(), b.size());
  for (int i = 0; i < 4; ++i) b.push_back(static_cast<std::uint8_t>(crc >> (8 * i)));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
  if (fd < 0) return sys_error("cannot create", tmp);
  Status st = write_all(fd, b, tmp);
  if (st && ::fsync(fd) != 0) st = sys_error("cannot fsync", tmp);
  ::close(fd);
  if (st && ::rename(tmp.c_str(), p.c_str()) != 0) st = sys_error("cannot rename to", p);
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  return fsync_dir(dir_);
}

Status PrStore::remove(const Uuid& lu) const {
  const std::string p = path(lu);
  if (::unlink(p.c_str()) != 0) {
    if (errno == ENOENT) return Status::ok();
    return sys_error("cannot remove", p);
  }
  return fsync_dir(dir_);
}

}  // namespace duplex::daemon
