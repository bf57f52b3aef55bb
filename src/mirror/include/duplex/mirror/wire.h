#pragma once
// The mirror link's wire format, all of it (docs/mirror-formats.md has the byte table). Every
// message is a fixed 96-byte header and an optional payload. The header carries its own CRC32C
// and the payload's, so a flipped bit anywhere is a protocol error that takes the link down
// instead of landing on a replica. Integers are big-endian, like the other wire protocols here.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "duplex/base/status.h"
#include "duplex/base/uuid.h"

namespace duplex::mirror::wire {

inline constexpr std::uint32_t kMagic = 0x44584D4C;  // "DXML"
inline constexpr std::uint16_t kVersion = 1;
inline constexpr std::size_t kHeaderSize = 96;
inline constexpr std::uint32_t kMaxPayload = 8u << 20;  // larger messages are a protocol error

enum class Type : std::uint16_t {
  hello = 1,        // first message on a connection (payload: JSON text)
  hello_reply = 2,  // answer to hello (status 0 = accepted; else refused, payload = reason text)
  ping = 3,         // offset = sender's steady clock in ns; pong echoes it
  pong = 4,
  write = 5,  // non-owner -> owner: a host write to order and apply (payload = data for op write)
  write_reply = 6,
  replicate = 7,  // owner -> peer: apply this write in this order (seq); payload = data for op write
  replicate_reply = 8,
  read = 9,         // a node that may not read locally asks the peer (length in header)
  read_reply = 10,  // payload = data
  flush = 11,
  flush_reply = 12,
  resync_data = 13,  // resync source -> target: region content
  resync_reply = 14,
  state = 15,         // one-way notices (in-sync set changed, peer leaving); payload JSON
  close = 16,         // orderly close with a reason text
  digest = 17,        // online verify: CRC32C of each 4 KiB block of offset/length (both 4 KiB aligned)
  digest_reply = 18,  // payload = one big-endian CRC32C per block
  // Front-end shared state (SCSI persistent reservations; opaque here, the front-end's format):
  shared_call = 19,  // non-owner -> owner: a change request; the reply's payload is the answer
  shared_call_reply = 20,
  shared_state = 21,  // owner -> peer: the state after change `seq` (kFlagForce: install even if not newer)
  shared_state_reply = 22,
  // Growing a mirrored volume (docs/mirror.md "Growing a mirrored volume"): the owner asks the
  // peer to hold `length` bytes (its metadata durably covers them, it serves that size) before
  // the owner accepts a write beyond the old end. Sent only to a peer whose hello lists the
  // "grow" feature. The reply: status; offset = the replier's size now, length = what its local
  // replica can hold; a refusal's payload is the reason text.
  grow = 23,
  grow_reply = 24,
  // One-way, owner -> peer, no payload: the owner is about to log offset/length in its activity
  // log for a write it will replicate next; the peer logs it in its own at once, so that the two
  // log updates run at the same time rather than one after the other. A hint only ever makes
  // the peer's log cover more. Sent only to a peer whose hello lists the "al_hint" feature.
  al_hint = 25,
};
inline constexpr std::uint16_t kMinType = 1, kMaxType = 25;
inline constexpr std::uint32_t kDigestBlock = 4096;

// compare_write (type write only, non-owner -> owner): COMPARE AND WRITE of `length` bytes; the
// payload is the bytes to compare, then the bytes to write (2 * length). The owner compares and
// writes under its range lock and replicates an ordinary write; its write_reply carries
// kFlagMiscompare and, in `offset`, the first differing byte's offset in the range when the
// compare failed (nothing written).
enum class Op : std::uint8_t { none = 0, write = 1, write_zeroes = 2, trim = 3, compare_write = 4 };
inline constexpr std::uint8_t kMaxOp = 4;
inline constexpr std::uint8_t kFlagFua = 1, kFlagNoUnmap = 2, kFlagMiscompare = 4, kFlagForce = 8;
inline constexpr std::uint8_t kKnownFlags = kFlagFua | kFlagNoUnmap | kFlagMiscompare | kFlagForce;

struct Header {
  Type type = Type::ping;
  Op op = Op::none;
  std::uint8_t flags = 0;
  std::int32_t status = 0;       // replies: 0 OK, else a duplex::Errc value
  std::uint64_t request_id = 0;  // replies carry the request's id
  Uuid volume;                   // the volume (lineage) this message is about
  std::uint64_t generation = 0;  // the sender's in-sync generation
  std::uint64_t seq = 0;         // owner's order number (replicate), else 0
  std::uint64_t offset = 0;
  std::uint64_t length = 0;  // byte length of the operation (may exceed payload for zeroes/trim)
  std::uint32_t payload_len = 0;
  std::uint32_t payload_crc = 0;  // CRC32C of the payload (0 when empty)
  friend bool operator==(const Header&, const Header&) = default;
};

// Byte offsets of the encoded header (big-endian integers).
namespace layout {
inline constexpr std::size_t magic = 0;         // u32
inline constexpr std::size_t version = 4;       // u16
inline constexpr std::size_t type = 6;          // u16
inline constexpr std::size_t op = 8;            // u8
inline constexpr std::size_t flags = 9;         // u8
inline constexpr std::size_t reserved0 = 10;    // u16, zero
inline constexpr std::size_t status = 12;       // i32
inline constexpr std::size_t request_id = 16;   // u64
inline constexpr std::size_t volume = 24;       // 16 bytes, RFC 4122 order
inline constexpr std::size_t generation = 40;   // u64
inline constexpr std::size_t seq = 48;          // u64
inline constexpr std::size_t offset = 56;       // u64
inline constexpr std::size_t length = 64;       // u64
inline constexpr std::size_t payload_len = 72;  // u32
inline constexpr std::size_t payload_crc = 76;  // u32
inline constexpr std::size_t reserved1 = 80;    // 12 bytes, zero
inline constexpr std::size_t header_crc = 92;   // u32: CRC32C of bytes [0, 92)
inline constexpr std::size_t end = 96;
}  // namespace layout
static_assert(layout::end == kHeaderSize);
static_assert(layout::header_crc + 4 == kHeaderSize);
static_assert(layout::reserved1 + 12 == layout::header_crc);
static_assert(sizeof(Uuid::bytes) == layout::generation - layout::volume);

// True for the types that answer a request (matched by request_id), including pong.
bool is_reply(Type t);
// The type that answers a request of type t (pong for ping), or none for one-way messages.
std::optional<Type> reply_type(Type t);
std::string_view type_name(Type t);

// The CRC32C of a payload as it goes in Header::payload_crc (0 for an empty payload).
std::uint32_t payload_crc(std::span<const std::byte> payload);
// Serialises h into out (big-endian fields, magic, version, reserved zero, header CRC32C last).
void encode(const Header& h, std::span<std::byte, kHeaderSize> out);
// Validates magic, version, header CRC, type, op and flags ranges, payload_len <= kMaxPayload,
// reserved bytes zero. Errors: Errc::corrupt (bad header CRC), Errc::version (another version),
// Errc::invalid (anything else malformed); each message says which field.
Result<Header> decode(std::span<const std::byte, kHeaderSize> in);
// CRC32C of the payload matches h.payload_crc and its size h.payload_len (Errc::corrupt if not).
Status check_payload(const Header& h, std::span<const std::byte> payload);

}  // namespace duplex::mirror::wire
