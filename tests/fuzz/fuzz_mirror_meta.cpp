// libFuzzer target: ReplicaMeta::open on damaged metadata files, then the bitmap and log
// operations on whatever it accepts. Input: parameters, a workload on a fresh file, byte
// mutations of the file, a flag to recompute every block's CRC after mutating (so field checks,
// not only checksums, are reached), then a workload on the reopened file.
// Invariants: no crash or sanitizer report; open either refuses or yields a record within the
// format's limits; dirty ranges and hot ranges lie inside the volume; a close() and reopen keeps
// every dirty bit.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "duplex/base/crc32c.h"
#include "duplex/mirror/meta_format.h"
#include "duplex/mirror/replica_meta.h"
#include "fake_disk.h"

using namespace duplex;
using namespace duplex::mirror;

namespace {

struct Input {
  const std::uint8_t* p;
  std::size_t n;
  std::uint8_t byte() {
    if (!n) return 0;
    --n;
    return *p++;
  }
  std::uint64_t u64(int bytes) {
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= std::uint64_t{byte()} << (8 * i);
    return v;
  }
};

void fix_crcs(test::FakeDisk& disk, const MetaOptions& o) {
  std::vector<std::byte> blk(format::kBlock);
  const std::uint64_t blocks = disk.size() / format::kBlock;
  for (std::uint64_t b = 0; b < blocks; ++b) {
    disk.peek(b * format::kBlock, blk);
    std::uint32_t crc;
    std::size_t at;
    if (b < 2) {
      at = offsetof(format::RecordBlock, crc);
      crc = crc32c(blk.data(), at);
    } else {
      at = b < 2 + o.al_blocks ? offsetof(format::AlHeader, crc) : offsetof(format::BitmapHeader, crc);
      std::memset(blk.data() + at, 0, 4);
      crc = crc32c(blk.data(), blk.size());
    }
    store_le(blk.data() + at, crc);
    disk.poke(b * format::kBlock, blk);
  }
}

// Writes in flight (pinned extents), released by op 8 or at the end of a phase.
std::vector<ReplicaMeta::WritePin> pins;

// Applies one workload op; returns false to stop.
bool step(Input& in, ReplicaMeta& m) {
  if (in.n == 0) return false;
  const std::uint64_t size = m.record().size;
  const std::uint8_t op = in.byte() % 10;
  const std::uint64_t off = in.u64(4) * 4096 % size + in.byte();
  const std::uint64_t len = in.u64(3) * 512 + 1;
  switch (op) {
    case 0: m.mark_dirty(off, len); break;
    case 1: m.clear_dirty(off, len); break;
    case 2:
      if (off < size) (void)sync_wait(m.begin_write(off, std::min(len, size - off)));
      break;
    case 3: (void)sync_wait(m.persist()); break;
    case 4: {
      auto r = m.next_dirty(off, len);
      if (r && (r->first < off || r->second == 0 || r->second > len || r->first + r->second > size))
        std::abort();
      break;
    }
    case 5: {
      MetaRecord r = m.record();
      r.generation = in.u64(2);
      r.state = static_cast<ReplicaState>(in.byte() % 3 + 1);
      (void)sync_wait(m.update(r));
      break;
    }
    case 6: (void)sync_wait(m.clear_activity_log()); break;
    case 7:
      if (off < size) {
        auto p = sync_wait(m.pin_write(off, std::min(len, size - off)));
        if (p) pins.push_back(std::move(*p));
      }
      break;
    case 8:
      if (!pins.empty()) pins.erase(pins.begin() + static_cast<std::ptrdiff_t>(len % pins.size()));
      break;
    default: return false;
  }
  if (m.dirty_bytes() > size) std::abort();
  return true;
}

std::vector<std::pair<std::uint64_t, std::uint64_t>> dirty_runs(const ReplicaMeta& m) {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> out;
  for (std::uint64_t at = 0;;) {
    auto r = m.next_dirty(at, ~std::uint64_t{0} >> 1);
    if (!r) return out;
    out.push_back(*r);
    at = r->first + r->second;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in{data, size};
  MetaRecord rec;
  rec.volume = Uuid{};
  rec.granularity = 4096u << (in.byte() % 9);
  rec.size = (in.u64(2) % 512 + 1) * (1 << 20) + in.u64(2);
  rec.node = "a";
  rec.peer = "b";
  MetaOptions o;
  o.al_extent = std::max<std::uint32_t>(rec.granularity, 1u << (16 + in.byte() % 7));
  o.al_capacity = in.byte() % 8 + 1;
  o.al_blocks = in.byte() % 4 + 2;
  test::FakeDisk disk(ReplicaMeta::required_bytes(rec.size, rec.granularity, o));
  {
    auto m = sync_wait(ReplicaMeta::create(&disk, rec, o));
    if (!m) std::abort();
    for (int i = 0; i < 16 && step(in, **m); ++i) {
    }
    pins.clear();
  }
  disk.power_loss(test::PowerLoss::RandomSubset, in.byte());
  for (int mutations = in.byte() % 16; mutations > 0; --mutations) {
    const std::uint64_t at = in.u64(3) % disk.size();
    const std::byte b{in.byte()};
    disk.poke(at, std::span(&b, 1));
  }
  if (in.byte() & 1) fix_crcs(disk, o);
  auto m = sync_wait(ReplicaMeta::open(&disk));
  if (!m) return 0;
  const MetaRecord& r = (*m)->record();
  if (r.granularity < 4096 || r.granularity > (1u << 20) || (r.granularity & (r.granularity - 1)))
    std::abort();
  for (auto [off, len] : (*m)->hot_ranges())
    if (len == 0 || off + len > r.size) std::abort();
  while (step(in, **m)) {
  }
  pins.clear();
  const auto before = dirty_runs(**m);
  if (!sync_wait((*m)->close())) return 0;
  m->reset();
  auto again = sync_wait(ReplicaMeta::open(&disk));
  if (!again || dirty_runs(**again) != before) std::abort();
  return 0;
}
