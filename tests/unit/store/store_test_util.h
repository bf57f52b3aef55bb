#pragma once
// Shared by the store tests: running tasks on the inline fake disk, unique data patterns, and a
// model of what each object must read back, per 4 KiB sector, including what a crash may leave.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/store/pool.h"
#include "fake_disk.h"

namespace duplex::test {

// FakeDisk completes inline, so a pool task never waits for anything: run it here and now.
template <typename T>
T run(Task<T> t) {
  return sync_wait(std::move(t));
}

// For setup steps whose failure makes the rest of a test meaningless: gtest reports the
// exception as a failure of the test, with the status.
struct SetupFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};
template <typename T>
T must(Result<T> r, std::string_view what = "operation") {
  if (!r) throw SetupFailed(fmt::format("{} failed: {}", what, r.status().to_string()));
  return std::move(r).value();
}
inline void must(Status st, std::string_view what = "operation") {
  if (!st) throw SetupFailed(fmt::format("{} failed: {}", what, st.to_string()));
}

inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Bytes no other write produces: a stamp per write, mixed with the virtual byte position, so a
// sector that shows data written elsewhere or earlier is recognised as such.
inline void fill_pattern(std::span<std::byte> out, std::uint64_t stamp, std::uint64_t virt_offset) {
  // One hash per 8-byte word of virtual position (byte k of the word is bits 8k..8k+7): cheap
  // enough for thousands of trials, and the same bytes whatever the write's alignment.
  // The word is a stamp-derived key xor a position term: distinct stamps never produce the same
  // word at the same position, and a word never repeats within one write.
  const std::uint64_t key = mix64(stamp);
  auto word = [&](std::uint64_t pos) { return key ^ ((pos >> 3) * 0x9E3779B97F4A7C15ULL); };
  std::size_t i = 0;
  while (i < out.size() && ((virt_offset + i) & 7) != 0) {
    const std::uint64_t pos = virt_offset + i;
    out[i++] = static_cast<std::byte>(word(pos) >> ((pos & 7) * 8));
  }
  for (; i + 8 <= out.size(); i += 8) {
    std::uint64_t h = word(virt_offset + i);
    for (int k = 0; k < 8; ++k) out[i + k] = static_cast<std::byte>(h >> (8 * k));
  }
  for (; i < out.size(); ++i) {
    const std::uint64_t pos = virt_offset + i;
    out[i] = static_cast<std::byte>(word(pos) >> ((pos & 7) * 8));
  }
}

inline std::vector<std::byte> pattern(std::size_t n, std::uint64_t stamp, std::uint64_t virt_offset = 0) {
  std::vector<std::byte> v(n);
  fill_pattern(v, stamp, virt_offset);
  return v;
}

inline bool all_zero(std::span<const std::byte> b) {
  static const std::byte kZero[4096] = {};
  std::size_t i = 0;
  for (; i + sizeof kZero <= b.size(); i += sizeof kZero)
    if (std::memcmp(b.data() + i, kZero, sizeof kZero) != 0) return false;
  return std::memcmp(b.data() + i, kZero, b.size() - i) == 0;
}

constexpr std::uint64_t kSec = 4096;

// The content of one object as the model knows it, one entry per 4 KiB sector.
struct SectorState {
  using Data = std::shared_ptr<const std::array<std::byte, kSec>>;  // nullptr: zeroes
  Data durable;
  std::vector<Data> pending;  // written since the last flush, oldest first

  const Data& current() const { return pending.empty() ? durable : pending.back(); }
  void make_durable() {
    if (!pending.empty()) {
      durable = pending.back();
      pending.clear();
    }
  }
  static bool equal(const Data& d, std::span<const std::byte> got) {
    return d ? std::memcmp(d->data(), got.data(), got.size()) == 0 : all_zero(got);
  }
  // After a crash: the durable content or one of the unflushed versions, nothing else.
  bool acceptable(std::span<const std::byte> got) const {
    if (equal(durable, got)) return true;
    for (const Data& d : pending)
      if (equal(d, got)) return true;
    return false;
  }
};

struct ModelObject {
  store::ObjectId id = 0;
  store::ObjectKind kind = store::ObjectKind::volume;
  std::string name;            // full name: "v1" or "v1@s3"
  store::ObjectId parent = 0;  // snapshot: its volume
  std::uint64_t size = 0;
  std::vector<SectorState> sectors;

  void resize(std::uint64_t bytes) {
    size = bytes;
    sectors.resize((bytes + kSec - 1) / kSec);
  }
  // Records a write (data == nullptr: zeroes) as a new unflushed version of every touched sector.
  void write(std::uint64_t offset, std::uint64_t length, const std::byte* data) {
    std::uint64_t done = 0;
    while (done < length) {
      const std::uint64_t pos = offset + done;
      const std::uint64_t s = pos / kSec, in = pos % kSec;
      const std::uint64_t n = std::min(kSec - in, length - done);
      auto block = std::make_shared<std::array<std::byte, kSec>>();
      if (const auto& cur = sectors[s].current())
        *block = *cur;
      else
        block->fill(std::byte{0});
      if (data)
        std::memcpy(block->data() + in, data + done, n);
      else
        std::memset(block->data() + in, 0, n);
      if (!data && all_zero(*block))
        sectors[s].pending.push_back(nullptr);
      else
        sectors[s].pending.push_back(std::move(block));
      done += n;
    }
  }
  // A completed FUA write: the newest version of each touched sector is durable.
  void make_durable(std::uint64_t offset, std::uint64_t length) {
    if (length == 0) return;
    for (std::uint64_t s = offset / kSec; s <= (offset + length - 1) / kSec; ++s) sectors[s].make_durable();
  }
  void make_durable() {
    for (auto& s : sectors) s.make_durable();
  }
  void current_bytes(std::uint64_t offset, std::span<std::byte> out) const {
    std::uint64_t done = 0;
    while (done < out.size()) {
      const std::uint64_t pos = offset + done;
      const std::uint64_t s = pos / kSec, in = pos % kSec;
      const std::uint64_t n = std::min<std::uint64_t>(kSec - in, out.size() - done);
      if (const auto& d = sectors[s].current())
        std::memcpy(out.data() + done, d->data() + in, n);
      else
        std::memset(out.data() + done, 0, n);
      done += n;
    }
  }
  // A frozen copy of the current content (what a snapshot or clone starts from).
  std::vector<SectorState> frozen() const {
    std::vector<SectorState> out(sectors.size());
    for (std::size_t i = 0; i < sectors.size(); ++i) out[i].durable = sectors[i].current();
    return out;
  }
};

// Reads the whole object from the pool and compares it with the model: exactly (the current
// content) or, after a crash, sector by sector against what a crash may leave. Returns "" when it
// matches, else a description of the first difference.
inline std::string compare_object(store::Pool& pool, const ModelObject& m, bool after_crash) {
  std::vector<std::byte> buf(m.size);
  Status st = run(pool.read(m.id, 0, buf));
  if (!st) return fmt::format("{} (id {}): read failed: {}", m.name, m.id, st.to_string());
  for (std::size_t s = 0; s < m.sectors.size(); ++s) {
    const std::uint64_t off = s * kSec;
    std::span<const std::byte> got(buf.data() + off, std::min<std::uint64_t>(kSec, m.size - off));
    const SectorState& want = m.sectors[s];
    const bool ok = after_crash ? want.acceptable(got) : SectorState::equal(want.current(), got);
    if (!ok) {
      return fmt::format(
          "{} (id {}): sector {} (byte {}) holds data {} (durable {}zero, {} unflushed versions)", m.name,
          m.id, s, off, all_zero(got) ? "of zeroes" : "never written there", want.durable ? "non-" : "",
          want.pending.size());
    }
  }
  return {};
}

}  // namespace duplex::test
