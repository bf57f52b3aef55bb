#pragma once
// An in-memory BlockDevice with a volatile write cache, power-loss simulation, fault injection and
// I/O counters: crash consistency is tested without hardware (cpp-anchors items 11 and 19).
//
// State is kept per 4 KiB sector: the durable content plus the versions written since the last
// flush, oldest first. Reads see the newest version. flush() makes every completed write durable.
// power_loss() forgets the cache: everything unflushed (DropAll) or, per sector, a seeded random
// choice among the durable content and each unflushed version (RandomSubset), so a multi-sector
// write can be torn at any sector boundary and a sector may keep an intermediate version, as a
// real disk with a write-back cache may do. A sector itself is never torn (4 KiB atomic writes).
//
// Sector contents are shared immutable blocks, so copying a disk (a pool template for thousands of
// crash trials) costs pointers, not bytes. Everything completes inline: coroutines never suspend.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/reactor/block_device.h"

namespace duplex::test {

enum class PowerLoss : std::uint8_t {
  DropAll,       // every unflushed write is lost
  RandomSubset,  // per sector: the durable content or one of its unflushed versions, seeded
};

struct IoCounters {
  std::uint64_t ops = 0;  // every call, failed or not
  std::uint64_t reads = 0;
  std::uint64_t writes = 0;
  std::uint64_t flushes = 0;
  std::uint64_t discards = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_written = 0;
  std::uint64_t failed = 0;
};

// One device write, for tests that classify writes by region (data cluster vs metadata).
struct WriteRecord {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

class FakeDisk final : public BlockDevice {
 public:
  static constexpr std::uint32_t kSector = 4096;

  explicit FakeDisk(std::uint64_t size, std::string name = "fake-disk");
  FakeDisk(const FakeDisk&) = default;  // copies contents, cache and faults (cheap: shared sectors)
  FakeDisk& operator=(const FakeDisk&) = default;

  std::uint64_t size() const override { return size_; }
  const std::string& name() const override { return name_; }
  Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) override;
  Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf) override;
  Task<Status> flush() override;
  // Contents become unspecified: modelled as an unflushed write of zeroes, or of a 0xDB fill with
  // set_discard_garbage(true) to catch code that relies on discard for zeroes.
  Task<Status> discard(std::uint64_t offset, std::uint64_t length) override;

  // --- power loss ---
  // Applies the loss and clears any crash trigger (the "machine" reboots). Counters are kept.
  void power_loss(PowerLoss mode, std::uint64_t seed = 0);
  // A copy holding only what is durable (as after power_loss(DropAll)), with no faults or counters.
  FakeDisk durable_copy() const;
  // A copy of the current view cut to `new_size` bytes (a truncated pool file).
  FakeDisk truncated_copy(std::uint64_t new_size) const;
  std::uint64_t unflushed_sectors() const { return pending_.size(); }

  // --- fault injection (n counts from the call, 1 = the next such operation) ---
  void fail_nth_read(std::uint64_t n) { fail_read_at_ = counters_.reads + n; }
  void fail_nth_write(std::uint64_t n) { fail_write_at_ = counters_.writes + n; }
  void fail_nth_flush(std::uint64_t n) { fail_flush_at_ = counters_.flushes + n; }
  // After `n` more operations (of any kind) have been served, every operation fails with io_error
  // and changes nothing: the power was cut at that instant. If the first failing operation is a
  // write, it is cached anyway (in flight at the cut: power_loss drops or tears it).
  // power_loss() ends the crash.
  void crash_after(std::uint64_t n) { crash_at_ = counters_.ops + n; }
  // True once the power is cut: the next operation fails.
  // Like crash_after, but the power goes right after the n-th flush from now has completed: the
  // cut lands between a commit's data flush and its metadata write, where ordering bugs live.
  void crash_after_flushes(std::uint64_t n) { crash_flush_at_ = counters_.flushes + n; }
  bool crashed() const { return crash_at_ != kNever && counters_.ops >= crash_at_; }
  void clear_faults();
  void set_discard_garbage(bool on) { discard_garbage_ = on; }
  // Refuse every write (a device opened read-only): tests that a read-only open writes nothing.
  void set_read_only(bool on) { read_only_ = on; }

  // --- counters ---
  const IoCounters& counters() const { return counters_; }
  void reset_counters();
  // Successful writes since the last reset_counters(), when recording is on.
  void record_writes(bool on) { record_writes_ = on; }
  const std::vector<WriteRecord>& write_log() const { return write_log_; }

  // --- raw access for tests (not counted, ignores faults) ---
  // The current view (what read() returns).
  void peek(std::uint64_t offset, std::span<std::byte> buf) const;
  // Overwrites bytes in the durable content and in every cached version: on-disk corruption.
  void poke(std::uint64_t offset, std::span<const std::byte> bytes);
  // Byte-equality of the current views.
  bool same_content(const FakeDisk& other) const;

 private:
  using Block = std::vector<std::byte>;           // exactly kSector bytes
  using BlockPtr = std::shared_ptr<const Block>;  // nullptr: all zeroes
  static constexpr std::uint64_t kNever = ~std::uint64_t{0};

  const BlockPtr& current(std::uint64_t sector) const;
  Status check_range(const char* what, std::uint64_t offset, std::uint64_t length) const;
  // Returns an error if the operation must fail (crash or injected fault); counts it.
  Status admit(const char* what, std::uint64_t offset, std::uint64_t& kind_counter, std::uint64_t fail_at);
  // Writes `bytes` (or a fill byte when bytes is empty) as a new unflushed version of each sector.
  void apply(std::uint64_t offset, std::uint64_t length, std::span<const std::byte> bytes, std::byte fill);

  std::uint64_t size_;
  std::string name_;
  std::vector<BlockPtr> durable_;
  std::unordered_map<std::uint64_t, std::vector<BlockPtr>> pending_;
  IoCounters counters_;
  std::uint64_t fail_read_at_ = kNever;
  std::uint64_t fail_write_at_ = kNever;
  std::uint64_t fail_flush_at_ = kNever;
  std::uint64_t crash_at_ = kNever;
  std::uint64_t crash_flush_at_ = kNever;
  bool discard_garbage_ = false;
  bool read_only_ = false;
  bool record_writes_ = false;
  std::vector<WriteRecord> write_log_;
};

}  // namespace duplex::test
