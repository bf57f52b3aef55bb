#include "journal.h"

#include <cstring>

#include "duplex/base/crc32c.h"
#include "duplex/base/endian.h"

namespace duplex::store {

namespace {
using format::RecordType;

class Writer {
 public:
  template <typename T>
  Writer& u(T v) {
    std::byte b[sizeof(T)];
    store_le<T>(b, v);
    out.insert(out.end(), b, b + sizeof(T));
    return *this;
  }
  Writer& uuid(const Uuid& id) {
    const auto* p = reinterpret_cast<const std::byte*>(id.bytes.data());
    out.insert(out.end(), p, p + 16);
    return *this;
  }
  Writer& str(const std::string& s) {
    u<std::uint16_t>(static_cast<std::uint16_t>(s.size()));
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    out.insert(out.end(), p, p + s.size());
    return *this;
  }
  std::vector<std::byte> out;
};

class Reader {
 public:
  explicit Reader(std::span<const std::byte> in) : in_(in) {}
  template <typename T>
  bool u(T& v) {
    if (in_.size() - pos_ < sizeof(T)) return false;
    v = load_le<T>(in_.data() + pos_);
    pos_ += sizeof(T);
    return true;
  }
  bool uuid(Uuid& id) {
    if (in_.size() - pos_ < 16) return false;
    std::memcpy(id.bytes.data(), in_.data() + pos_, 16);
    pos_ += 16;
    return true;
  }
  bool str(std::string& s) {
    std::uint16_t n;
    if (!u(n) || in_.size() - pos_ < n) return false;
    s.assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  std::size_t pos_ = 0;
};
}  // namespace

void JournalRecords::append(RecordType t, const std::vector<std::byte>& body) {
  std::vector<std::byte> rec(sizeof(format::RecordHeader) + body.size());
  format::RecordHeader h{};
  h.type = static_cast<std::uint16_t>(t);
  h.length = static_cast<std::uint16_t>(body.size());
  std::memcpy(rec.data(), &h, sizeof h);
  std::memcpy(rec.data() + sizeof h, body.data(), body.size());
  records_.push_back(std::move(rec));
  last_is_map_ = t == RecordType::map_run;
}

void JournalRecords::add_create_volume(ObjectId id, std::uint64_t size, std::uint64_t created,
                                       const Uuid& uuid, const std::string& name) {
  Writer w;
  w.u<std::uint64_t>(id).u<std::uint64_t>(size).u<std::uint64_t>(created).uuid(uuid).str(name);
  append(RecordType::create_volume, w.out);
}

void JournalRecords::add_remove(ObjectId id) {
  Writer w;
  w.u<std::uint64_t>(id);
  append(RecordType::remove, w.out);
}

void JournalRecords::add_grow(ObjectId id, std::uint64_t size) {
  Writer w;
  w.u<std::uint64_t>(id).u<std::uint64_t>(size);
  append(RecordType::grow, w.out);
}

void JournalRecords::add_snapshot(ObjectId volume, ObjectId snap, std::uint64_t epoch, std::uint64_t created,
                                  const Uuid& uuid, const std::string& name) {
  Writer w;
  w.u<std::uint64_t>(volume)
      .u<std::uint64_t>(snap)
      .u<std::uint64_t>(epoch)
      .u<std::uint64_t>(created)
      .uuid(uuid)
      .str(name);
  append(RecordType::snapshot, w.out);
}

void JournalRecords::add_clone(ObjectId snap, ObjectId volume, std::uint64_t epoch, std::uint64_t created,
                               const Uuid& uuid, const std::string& name) {
  Writer w;
  w.u<std::uint64_t>(snap)
      .u<std::uint64_t>(volume)
      .u<std::uint64_t>(epoch)
      .u<std::uint64_t>(created)
      .uuid(uuid)
      .str(name);
  append(RecordType::clone, w.out);
}

void JournalRecords::add_map(ObjectId volume, std::uint64_t vc, std::uint64_t pc, std::uint64_t birth) {
  if (last_is_map_) {
    auto& rec = records_.back();
    format::MapRunRecord r;
    std::memcpy(&r, rec.data() + sizeof(format::RecordHeader), sizeof r);
    const std::uint64_t count = r.count;
    const bool same = static_cast<std::uint64_t>(r.volume) == volume &&
                      static_cast<std::uint64_t>(r.birth) == birth &&
                      static_cast<std::uint64_t>(r.vcluster) + count == vc &&
                      (pc == kNone ? static_cast<std::uint64_t>(r.pcluster) == kNone
                                   : static_cast<std::uint64_t>(r.pcluster) != kNone &&
                                         static_cast<std::uint64_t>(r.pcluster) + count == pc);
    if (same && count < 0xffff'ffff) {
      r.count = count + 1;
      std::memcpy(rec.data() + sizeof(format::RecordHeader), &r, sizeof r);
      return;
    }
  }
  format::MapRunRecord r{};
  r.volume = volume;
  r.vcluster = vc;
  r.pcluster = pc;
  r.count = 1;
  r.birth = birth;
  std::vector<std::byte> body(sizeof r);
  std::memcpy(body.data(), &r, sizeof r);
  append(RecordType::map_run, body);
}

std::uint64_t JournalRecords::blocks_needed() const {
  std::uint64_t blocks = 0, used = format::kJournalPayload;
  for (const auto& r : records_) {
    if (used + r.size() > format::kJournalPayload) {
      ++blocks;
      used = 0;
    }
    used += r.size();
  }
  return blocks;
}

AlignedBuffer JournalRecords::pack(std::uint64_t gen, std::uint64_t first_seq) const {
  const std::uint64_t n = blocks_needed();
  AlignedBuffer buf(n * format::kBlock);
  std::size_t rec = 0;
  for (std::uint64_t b = 0; b < n; ++b) {
    std::byte* blk = buf.data() + b * format::kBlock;
    std::size_t used = 0;
    std::uint16_t count = 0;
    while (rec < records_.size() && used + records_[rec].size() <= format::kJournalPayload) {
      std::memcpy(blk + sizeof(format::JournalHeader) + used, records_[rec].data(), records_[rec].size());
      used += records_[rec].size();
      ++count;
      ++rec;
    }
    format::JournalHeader h{};
    h.magic = format::kJournalMagic;
    h.version = static_cast<std::uint16_t>(format::kVersion);
    h.records = count;
    h.journal_gen = gen;
    h.seq = first_seq + b;
    h.payload_bytes = static_cast<std::uint32_t>(used);
    h.crc = 0;
    std::memcpy(blk, &h, sizeof h);
    h.crc = crc32c(blk, format::kBlock);
    std::memcpy(blk, &h, sizeof h);
  }
  return buf;
}

BlockState check_journal_block(std::span<const std::byte> block, std::uint64_t gen, std::uint64_t seq) {
  format::JournalHeader h;
  std::memcpy(&h, block.data(), sizeof h);
  if (h.magic != format::kJournalMagic || h.journal_gen != gen || h.seq != seq) return BlockState::end;
  std::byte copy[format::kBlock];
  std::memcpy(copy, block.data(), format::kBlock);
  std::memset(copy + offsetof(format::JournalHeader, crc), 0, 4);
  if (crc32c(copy, format::kBlock) != h.crc || h.version != format::kVersion ||
      h.payload_bytes > format::kJournalPayload)
    return BlockState::torn;
  return BlockState::valid;
}

Result<std::uint64_t> replay_journal_block(std::span<const std::byte> block, Catalogue& cat,
                                           std::uint64_t seq) {
  format::JournalHeader h;
  std::memcpy(&h, block.data(), sizeof h);
  auto payload = block.subspan(sizeof h, h.payload_bytes);
  std::size_t pos = 0;
  std::uint64_t applied = 0;
  auto bad = [&](const std::string& why) {
    return Status::error(Errc::corrupt, "pool {}: journal block {} (offset {}): {}", cat.pool_name(), seq,
                         format::kJournalOffset + seq * format::kBlock, why);
  };
  for (std::uint16_t i = 0; i < h.records; ++i) {
    if (payload.size() - pos < sizeof(format::RecordHeader)) return bad("record header truncated");
    format::RecordHeader rh;
    std::memcpy(&rh, payload.data() + pos, sizeof rh);
    pos += sizeof rh;
    if (payload.size() - pos < rh.length) return bad("record body truncated");
    Reader r(payload.subspan(pos, rh.length));
    pos += rh.length;
    Status st;
    switch (static_cast<RecordType>(static_cast<std::uint16_t>(rh.type))) {
      case RecordType::create_volume: {
        std::uint64_t id, size, created;
        Uuid uuid;
        std::string name;
        if (!r.u(id) || !r.u(size) || !r.u(created) || !r.uuid(uuid) || !r.str(name) || !r.done())
          return bad("bad create_volume record");
        st = cat.apply_create_volume(id, name, size, uuid, created);
        break;
      }
      case RecordType::remove: {
        std::uint64_t id;
        if (!r.u(id) || !r.done()) return bad("bad remove record");
        st = cat.apply_remove(id);
        break;
      }
      case RecordType::grow: {
        std::uint64_t id, size;
        if (!r.u(id) || !r.u(size) || !r.done()) return bad("bad grow record");
        st = cat.apply_grow(id, size);
        break;
      }
      case RecordType::snapshot:
      case RecordType::clone: {
        std::uint64_t a, b, epoch, created;
        Uuid uuid;
        std::string name;
        if (!r.u(a) || !r.u(b) || !r.u(epoch) || !r.u(created) || !r.uuid(uuid) || !r.str(name) || !r.done())
          return bad("bad snapshot/clone record");
        st = static_cast<RecordType>(static_cast<std::uint16_t>(rh.type)) == RecordType::snapshot
                 ? cat.apply_snapshot(a, b, epoch, name, uuid, created)
                 : cat.apply_clone(a, b, epoch, name, uuid, created);
        break;
      }
      case RecordType::map_run: {
        std::uint64_t vol, vc, pc, count, birth;
        if (!r.u(vol) || !r.u(vc) || !r.u(pc) || !r.u(count) || !r.u(birth) || !r.done())
          return bad("bad map record");
        for (std::uint64_t k = 0; k < count && st; ++k)
          st = cat.apply_map(vol, vc + k, pc == kNone ? kNone : pc + k, birth, false);
        break;
      }
      default: return bad(fmt::format("unknown record type {}", static_cast<std::uint16_t>(rh.type)));
    }
    if (!st) return bad(st.message());
    ++applied;
  }
  if (pos != payload.size()) return bad("trailing bytes after the last record");
  return applied;
}

}  // namespace duplex::store
