#pragma once
// An ExportCatalogue over MemVolumes: "vol" (writable, with snapshot "s1") and "ro" (read-only).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "duplex/daemon/mem_volume.h"
#include "duplex/nbd/export.h"

namespace duplex::nbd::testing {

class TestCatalogue final : public ExportCatalogue {
 public:
  explicit TestCatalogue(std::uint64_t size = 1 << 20) {
    vols_.push_back(std::make_unique<daemon::MemVolume>("vol", size));
    vols_.back()->snapshot("s1");
    vols_.push_back(std::make_unique<daemon::MemVolume>("ro", size, true));
  }
  std::optional<ExportInfo> lookup(std::string_view name) const override {
    if (name.empty()) name = "vol";
    for (const auto& v : vols_) {
      if (v->name() != name) continue;
      ExportInfo e;
      e.name = v->name();
      e.description = "test volume";
      e.size = v->size();
      e.read_only = v->read_only();
      e.snapshots = v->snapshots();
      return e;
    }
    return std::nullopt;
  }
  std::vector<ExportInfo> list() const override {
    std::vector<ExportInfo> out;
    for (const auto& v : vols_) out.push_back(*lookup(v->name()));
    return out;
  }
  volume::BlockVolume* volume(const std::string& name) override {
    for (auto& v : vols_)
      if (v->name() == name) return v.get();
    return nullptr;
  }
  daemon::MemVolume& vol() { return *vols_[0]; }

 private:
  std::vector<std::unique_ptr<daemon::MemVolume>> vols_;
};

// Client-side byte builders.
struct Wire {
  std::vector<std::byte> b;
  template <typename T>
  Wire& be(T v) {
    unsigned char x[sizeof(T)];
    store_be<T>(x, v);
    for (auto c : x) b.push_back(std::byte{c});
    return *this;
  }
  Wire& str(std::string_view s) {
    for (char c : s) b.push_back(static_cast<std::byte>(c));
    return *this;
  }
  Wire& opt(std::uint32_t o, const std::vector<std::byte>& data = {}) {
    be<std::uint64_t>(kIHaveOpt).be<std::uint32_t>(o).be<std::uint32_t>(
        static_cast<std::uint32_t>(data.size()));
    b.insert(b.end(), data.begin(), data.end());
    return *this;
  }
  Wire& req(std::uint16_t type, std::uint16_t flags, std::uint64_t cookie, std::uint64_t off,
            std::uint32_t len) {
    return be<std::uint32_t>(kRequestMagic).be(flags).be(type).be(cookie).be(off).be(len);
  }
};

// client flags + STRUCTURED_REPLY + SET_META_CONTEXT(base:allocation, changed-since:s1) + GO "vol"
inline Wire standard_handshake(bool structured = true, std::string_view export_name = "vol") {
  Wire w;
  w.be<std::uint32_t>(kClientFixedNewstyle | kClientNoZeroes);
  if (structured) {
    w.opt(kOptStructuredReply);
    Wire m;
    m.be<std::uint32_t>(static_cast<std::uint32_t>(export_name.size())).str(export_name).be<std::uint32_t>(2);
    m.be<std::uint32_t>(15).str("base:allocation");
    m.be<std::uint32_t>(25).str("x-duplex:changed-since:s1");
    w.opt(kOptSetMetaContext, m.b);
  }
  Wire g;
  g.be<std::uint32_t>(static_cast<std::uint32_t>(export_name.size()))
      .str(export_name)
      .be<std::uint16_t>(1)
      .be<std::uint16_t>(kInfoBlockSize);
  w.opt(kOptGo, g.b);
  return w;
}

}  // namespace duplex::nbd::testing
