#pragma once
// An in-memory Transport for unit tests and fuzzers: reads come from a byte string (in chunks of
// `chunk` bytes, to exercise every buffering boundary), writes are appended to out. Everything
// completes inline, so a whole session runs synchronously under sync_wait().
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "duplex/nbd/transport.h"

namespace duplex::nbd::testing {

class MemTransport final : public Transport {
 public:
  MemTransport(std::vector<std::byte> in, std::size_t chunk = 1 << 20)
      : in_(std::move(in)), chunk_(chunk ? chunk : 1) {}

  Task<Result<std::size_t>> read_some(std::span<std::byte> buf) override {
    if (closed_) co_return Status::error(Errc::shutdown, "closed");
    const std::size_t n = std::min({buf.size(), in_.size() - pos_, chunk_});
    if (n) std::memcpy(buf.data(), in_.data() + pos_, n);
    pos_ += n;
    co_return n;
  }
  Task<Status> write_all(std::span<const ConstBuf> bufs) override {
    if (closed_) co_return Status::error(Errc::shutdown, "closed");
    for (const auto& b : bufs) {
      const auto* p = static_cast<const std::byte*>(b.data);
      out.insert(out.end(), p, p + b.size);
    }
    co_return Status::ok();
  }
  bool tls_capable() const override { return false; }
  bool tls_active() const override { return false; }
  Task<Status> start_tls() override { co_return Status::error(Errc::unsupported, "no TLS in memory"); }
  void close() override { closed_ = true; }
  const std::string& peer() const override { return peer_; }

  std::vector<std::byte> out;

 private:
  std::vector<std::byte> in_;
  std::size_t pos_ = 0;
  std::size_t chunk_;
  bool closed_ = false;
  std::string peer_ = "memory";
};

}  // namespace duplex::nbd::testing
