// libFuzzer target: the SCSI command decoder and every command behind it. Input: a CDB (first
// byte's low 5 bits pick its length from 6 to 16 plus 0..15 garbage bytes), then Data-Out bytes;
// the Data-In buffer size comes from the input too. Runs against a real store pool on an
// in-memory disk. Invariants: no crash, answers fit their buffers, sense keys are SPC values,
// and the pool stays consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "duplex/scsi/logical_unit.h"
#include "duplex/store/pool.h"
#include "duplex/volume/local_volume.h"
#include "fake_disk.h"

using namespace duplex;

namespace {
struct World {
  test::FakeDisk disk{8 << 20};
  std::unique_ptr<store::Pool> pool;
  std::unique_ptr<volume::LocalVolume> vol;
  std::unique_ptr<scsi::LogicalUnit> lu;
  scsi::Nexus nexus{"iqn.fuzz,i,0x1", 1};
  std::uint64_t runs = 0;
  World() {
    store::PoolOptions po;
    po.cluster_size = 4096;
    auto created = sync_wait(store::Pool::create(disk, po));
    if (!created) std::abort();
    pool = std::move(created).value();
    auto made = sync_wait(pool->create_volume("lun", 1 << 20));
    if (!made) std::abort();
    const store::ObjectId id = *made;
    vol = std::make_unique<volume::LocalVolume>(*pool, id, "lun");
    scsi::LuConfig cfg;
    cfg.serial = "fuzz";
    lu = std::make_unique<scsi::LogicalUnit>(*vol, cfg);
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World* w = new World;
  if (size < 3) return 0;
  const std::size_t cdb_len = std::min<std::size_t>(6 + (data[0] & 0x0f), size - 2);
  const std::size_t in_len = static_cast<std::size_t>(data[1]) * 64;
  std::vector<std::uint8_t> cdb(data + 2, data + 2 + cdb_len);
  std::vector<std::byte> out(reinterpret_cast<const std::byte*>(data + 2 + cdb_len),
                             reinterpret_cast<const std::byte*>(data + size));
  std::vector<std::byte> in(in_len);
  scsi::Command c{cdb, out, in, &w->nexus};
  auto r = sync_wait(w->lu->execute(c));
  if (r.data_in_length > in.size() || r.data_out_used > out.size()) std::abort();
  if (r.status == scsi::ScsiStatus::check_condition) {
    const auto k = static_cast<unsigned>(r.sense.key);
    if (k > 0x0f) std::abort();
  }
  // The fake disk keeps every unflushed version of a sector (for power-cut tests): flush now and
  // then so that a long run of writes without SYNCHRONIZE CACHE does not grow without bound.
  if (++w->runs % 64 == 0 && !sync_wait(w->pool->flush()).ok()) std::abort();
  if (w->runs % 4096 == 0 && !w->pool->check().ok()) std::abort();
  return 0;
}
