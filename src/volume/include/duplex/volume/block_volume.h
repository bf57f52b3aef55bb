#pragma once
// The block I/O interface every front-end (NBD, iSCSI/SCSI, later NVMe-oF) calls. A local volume
// implements it over the store; the mirror implements it over replicas. Front-ends know nothing
// else about where the data lives.
//
// Semantics (the front-ends rely on them):
// - read/write take any byte offset/length within size(); out of range -> Errc::out_of_range.
// - A write is visible to every later read through any front-end once it completes; it is
//   durable after a flush() that started after it completed, or at once when fua is set.
// - flush() covers every write completed before it started, on every connection (multi-conn safe).
// - trim/write_zeroes: the range reads as zeroes afterwards (LBPRZ).
// - read_only volumes (snapshots, read-only exports) refuse modifications with Errc::read_only.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/base/uuid.h"

namespace duplex::volume {

struct Extent {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool allocated = false;  // block status: backed by data; changed(): differs
  bool zero = false;       // reads as zeroes
};

// What COMPARE AND WRITE found: the range held the expected bytes and now holds the new ones
// (`matched`), or the offset from the start of the range of the first byte that differed
// (nothing was written).
struct CompareOutcome {
  bool matched = true;
  std::uint64_t miscompare_at = 0;
};

// Front-end state that must be one for every node serving the volume (SCSI persistent
// reservations), kept by the front-end. The volume decides where a change runs: here, or on the
// node that orders the volume's writes, with the result installed on the other node before the
// change completes (docs/multipath.md "Persistent reservations").
class SharedStateKeeper {
 public:
  virtual ~SharedStateKeeper() = default;
  // Runs one change here, on the node that orders changes (one at a time); returns the answer for
  // the caller. `changed`: the state or the events for other nodes moved.
  virtual std::vector<std::byte> apply_change(std::span<const std::byte> request, bool& changed) = 0;
  // The state as one blob; with the events of the last change (what another node must raise for
  // its own initiators) when `with_events`.
  virtual std::vector<std::byte> export_state(bool with_events) const = 0;
  // Replaces the state with the ordering node's and, with `raise_events`, raises the events of
  // its change that are meant for this node.
  virtual Status import_state(std::span<const std::byte> blob, bool raise_events) = 0;
  // Completes once the work the last changes started on this node is over: a PREEMPT AND ABORT
  // or a LOGICAL UNIT RESET aborts commands in flight, and the change may be answered only when
  // none of them can still touch the volume. The volume awaits it after apply_change (on the
  // ordering node) and after import_state with events (on the other), before the change is
  // answered. It must not wait for anything the volume does under its order of changes.
  virtual Task<void> settle();
};

class BlockVolume {
 public:
  virtual ~BlockVolume() = default;
  virtual const std::string& name() const = 0;
  virtual Uuid uuid() const = 0;
  virtual std::uint64_t size() const = 0;
  virtual bool read_only() const = 0;
  // Preferred I/O granularity (allocation unit); the minimum is always 512.
  virtual std::uint32_t preferred_block_size() const = 0;

  virtual Task<Status> read(std::uint64_t offset, std::span<std::byte> buf) = 0;
  virtual Task<Status> write(std::uint64_t offset, std::span<const std::byte> buf, bool fua) = 0;
  virtual Task<Status> flush() = 0;
  virtual Task<Status> trim(std::uint64_t offset, std::uint64_t length) = 0;
  virtual Task<Status> write_zeroes(std::uint64_t offset, std::uint64_t length, bool no_unmap, bool fua) = 0;
  virtual Result<std::vector<Extent>> block_status(std::uint64_t offset, std::uint64_t length) const = 0;
  // A sort key for I/O order: where `offset` lies on the underlying device (store::Pool::placement).
  // Only for ordering; a volume that does not know says `offset` (its own order).
  virtual std::uint64_t placement(std::uint64_t offset) const { return offset; }
  // COMPARE AND WRITE (SBC-3 5.2): if [offset, offset + expected.size()) holds `expected`, write
  // `data` (the same size) over it. A mirrored volume makes the pair atomic against every write
  // through every node (the owner compares and writes under its range lock). This default reads,
  // compares and writes: atomic only if the caller holds off overlapping writes itself (the SCSI
  // LU's range lock does on one node). Wrappers must forward it, or they lose that atomicity.
  virtual Task<Result<CompareOutcome>> compare_and_write(std::uint64_t offset,
                                                         std::span<const std::byte> expected,
                                                         std::span<const std::byte> data, bool fua);
  // Where the keeper's changes run. The default (a volume on one node) keeps nothing and returns
  // false: the keeper applies its changes itself. A mirror returns true and runs shared_change on
  // its owner. Held weakly: a keeper that is gone (its LU destroyed) is simply not called.
  virtual bool attach_shared_state(std::weak_ptr<SharedStateKeeper> k);
  virtual Task<Result<std::vector<std::byte>>> shared_change(std::vector<std::byte> request);
  // Regions that may differ from the named snapshot of this volume ("vol@snap" or "snap").
  virtual Result<std::vector<Extent>> changed_since(const std::string& snapshot, std::uint64_t offset,
                                                    std::uint64_t length) const = 0;
};

}  // namespace duplex::volume
