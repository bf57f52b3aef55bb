// The C++ side of the fio ioengine: each fio request becomes a coroutine on the job's Ring; fio's
// getevents() turns into Ring::wait() until enough of them have finished.
#include "store_shim.h"

#include <sys/stat.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "duplex/base/buffer.h"
#include "duplex/reactor/uring.h"
#include "duplex/reactor/uring_device.h"
#include "duplex/store/pool.h"

using namespace duplex;

struct dpx_fio {
  std::unique_ptr<Ring> ring;
  std::unique_ptr<UringDevice> dev;
  std::unique_ptr<store::Pool> pool;
  store::ObjectId vol = 0;
  struct Done {
    void* cookie;
    int result;
  };
  std::deque<Done> done;
};

namespace {

int to_errno(const Status& s) {
  switch (s.code()) {
    case Errc::ok: return 0;
    case Errc::out_of_range:
    case Errc::invalid: return -EINVAL;
    case Errc::no_space: return -ENOSPC;
    case Errc::read_only: return -EROFS;
    default: return -EIO;
  }
}

template <typename T>
T run(Ring& ring, Task<T> t) {
  return sync_wait(std::move(t), [&] { ring.wait(); });
}

Task<Status> request(dpx_fio* h, int kind, std::uint64_t off, std::span<std::byte> b) {
  if (h->pool) {
    if (kind == DPX_FIO_READ) co_return co_await h->pool->read(h->vol, off, b);
    if (kind == DPX_FIO_WRITE) co_return co_await h->pool->write(h->vol, off, b);
    co_return co_await h->pool->flush();
  }
  if (kind == DPX_FIO_READ) co_return co_await h->dev->read(off, b);
  if (kind == DPX_FIO_WRITE) co_return co_await h->dev->write(off, b);
  co_return co_await h->dev->flush();
}

Task<Status> fill(dpx_fio* h, std::uint64_t size) {
  AlignedBuffer buf(1 << 20);
  std::memset(buf.data(), 0x5a, buf.size());
  for (std::uint64_t off = 0; off < size; off += buf.size()) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - off));
    DPX_CO_TRY(co_await request(h, DPX_FIO_WRITE, off, buf.span().first(n)));
  }
  co_return co_await request(h, DPX_FIO_FLUSH, 0, {});
}

}  // namespace

extern "C" dpx_fio* dpx_fio_open(const char* path, uint64_t size, int mode, unsigned cluster_kib,
                                 int fill_first, char* err, size_t errlen) {
  auto fail = [&](const std::string& m) -> dpx_fio* {
    std::snprintf(err, errlen, "%s", m.c_str());
    return nullptr;
  };
  auto h = std::make_unique<dpx_fio>();
  auto r = Ring::create(256);
  if (!r) return fail(r.status().to_string());
  h->ring = std::move(*r);
  struct stat st{};
  const bool exists = ::stat(path, &st) == 0;
  DeviceOptions o;
  o.create = !exists;
  o.create_size = mode == DPX_FIO_STORE ? size + size / 8 + (256ull << 20) : size;
  auto d = UringDevice::open(path, o, *h->ring);
  if (!d) return fail(d.status().to_string());
  h->dev = std::move(*d);
  if (mode == DPX_FIO_STORE) {
    if (exists) {
      auto p = run(*h->ring, store::Pool::open(*h->dev));
      if (!p) return fail(p.status().to_string());
      h->pool = std::move(*p);
      auto v = h->pool->find("fio");
      if (!v) return fail(v.status().to_string());
      h->vol = *v;
    } else {
      store::PoolOptions po;
      po.name = "fio";
      po.cluster_size = cluster_kib * 1024;
      auto p = run(*h->ring, store::Pool::create(*h->dev, po));
      if (!p) return fail(p.status().to_string());
      h->pool = std::move(*p);
      auto v = run(*h->ring, h->pool->create_volume("fio", size));
      if (!v) return fail(v.status().to_string());
      h->vol = *v;
    }
  } else if (h->dev->size() < size) {
    return fail(fmt::format("{} is {} bytes, smaller than size={}", path, h->dev->size(), size));
  }
  if (fill_first) {
    Status s = run(*h->ring, fill(h.get(), size));
    if (!s) return fail(s.to_string());
  }
  return h.release();
}

extern "C" void dpx_fio_queue(dpx_fio* h, int kind, uint64_t off, void* buf, size_t len, void* cookie) {
  spawn(request(h, kind, off, std::span<std::byte>(static_cast<std::byte*>(buf), len)),
        [h, cookie](Status s) { h->done.push_back({cookie, to_errno(s)}); });
}

extern "C" int dpx_fio_reap(dpx_fio* h, unsigned min, unsigned max, void** cookies, int* results) {
  h->ring->poll();
  while (h->done.size() < min && !h->ring->idle()) h->ring->wait();
  unsigned n = 0;
  while (n < max && !h->done.empty()) {
    cookies[n] = h->done.front().cookie;
    results[n] = h->done.front().result;
    h->done.pop_front();
    ++n;
  }
  return static_cast<int>(n);
}

extern "C" void dpx_fio_close(dpx_fio* h) {
  if (!h) return;
  while (!h->ring->idle()) h->ring->wait();
  if (h->pool) (void)run(*h->ring, h->pool->close());
  delete h;
}
