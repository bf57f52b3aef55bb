#pragma once
// Journal records: encoding on the live path, block packing, and decoding for replay.
// A record is applied in memory first and appended here; it reaches the device at the next
// flush, after the data it points to is durable (see pool_impl.h, "commit").
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "catalogue.h"
#include "duplex/base/buffer.h"
#include "duplex/base/status.h"
#include "duplex/store/format.h"

namespace duplex::store {

class JournalRecords {
 public:
  void add_create_volume(ObjectId id, std::uint64_t size, std::uint64_t created, const Uuid& uuid,
                         const std::string& name);
  void add_remove(ObjectId id);
  void add_grow(ObjectId id, std::uint64_t size);
  void add_snapshot(ObjectId volume, ObjectId snap, std::uint64_t epoch, std::uint64_t created,
                    const Uuid& uuid, const std::string& name);
  void add_clone(ObjectId snap, ObjectId volume, std::uint64_t epoch, std::uint64_t created, const Uuid& uuid,
                 const std::string& name);
  // Consecutive mappings (next virtual and physical cluster, same birth) extend one run record.
  void add_map(ObjectId volume, std::uint64_t vc, std::uint64_t pc, std::uint64_t birth);

  bool empty() const { return records_.empty(); }
  std::size_t count() const { return records_.size(); }
  // Packs into 4 KiB journal blocks of generation `gen`, numbered from `first_seq`.
  AlignedBuffer pack(std::uint64_t gen, std::uint64_t first_seq) const;
  std::uint64_t blocks_needed() const;

 private:
  void append(format::RecordType t, const std::vector<std::byte>& body);
  std::vector<std::vector<std::byte>> records_;  // each: header + body
  bool last_is_map_ = false;
};

// Outcome of reading one journal block during replay.
enum class BlockState { valid, end, torn };
BlockState check_journal_block(std::span<const std::byte> block, std::uint64_t gen, std::uint64_t seq);

// Applies every record of a valid block to `cat`. Returns the number of records applied.
Result<std::uint64_t> replay_journal_block(std::span<const std::byte> block, Catalogue& cat,
                                           std::uint64_t seq);

}  // namespace duplex::store
