// Test helper for the duplex-fsck test: formats a small pool file with some history (a volume
// with data, a snapshot, a clone, an overwrite after the snapshot) and closes it cleanly.
// Usage: duplex-fsck-mkpool PATH [--no-close]   (--no-close leaves journal records to replay)
#include <fmt/format.h>

#include <cstring>
#include <string>
#include <vector>

#include "duplex/base/task.h"
#include "duplex/reactor/file_device.h"
#include "duplex/store/pool.h"

namespace {
int fail(const std::string& what, const duplex::Status& st) {
  fmt::print(stderr, "duplex-fsck-mkpool: {}: {}\n", what, st.to_string());
  return 1;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: duplex-fsck-mkpool PATH [--no-close]\n");
    return 2;
  }
  const bool no_close = argc > 2 && std::strcmp(argv[2], "--no-close") == 0;
  duplex::FileDeviceOptions dopts;
  dopts.create = true;
  dopts.create_size = 16 << 20;
  auto dev = duplex::FileDevice::open(argv[1], dopts);
  if (!dev) return fail("create", dev.status());
  duplex::store::PoolOptions popts;
  popts.name = "fsck-test";
  popts.cluster_size = 64 * 1024;
  auto pool = duplex::sync_wait(duplex::store::Pool::create(**dev, popts));
  if (!pool) return fail("format", pool.status());
  auto& p = **pool;
  auto vol = duplex::sync_wait(p.create_volume("vm1", 4 << 20));
  if (!vol) return fail("create_volume", vol.status());
  std::vector<std::byte> data(300 * 1024);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::byte>(i * 7 + 3);
  if (auto st = duplex::sync_wait(p.write(*vol, 12345, data)); !st) return fail("write", st);
  auto snap = duplex::sync_wait(p.snapshot(*vol, "daily"));
  if (!snap) return fail("snapshot", snap.status());
  auto clone = duplex::sync_wait(p.clone(*snap, "vm1-clone"));
  if (!clone) return fail("clone", clone.status());
  if (auto st = duplex::sync_wait(p.write(*vol, 0, std::span(data).first(70000))); !st)
    return fail("write", st);
  if (auto st = duplex::sync_wait(p.flush()); !st) return fail("flush", st);
  if (!no_close)
    if (auto st = duplex::sync_wait(p.close()); !st) return fail("close", st);
  return 0;
}
