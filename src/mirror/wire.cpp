#include "duplex/mirror/wire.h"

#include <algorithm>
#include <cstring>

#include "duplex/base/crc32c.h"
#include "duplex/base/endian.h"

namespace duplex::mirror::wire {

bool is_reply(Type t) {
  switch (t) {
    case Type::hello_reply:
    case Type::pong:
    case Type::write_reply:
    case Type::replicate_reply:
    case Type::read_reply:
    case Type::flush_reply:
    case Type::resync_reply:
    case Type::digest_reply:
    case Type::shared_call_reply:
    case Type::shared_state_reply:
    case Type::grow_reply: return true;
    default: return false;
  }
}

std::optional<Type> reply_type(Type t) {
  switch (t) {
    case Type::hello: return Type::hello_reply;
    case Type::ping: return Type::pong;
    case Type::write: return Type::write_reply;
    case Type::replicate: return Type::replicate_reply;
    case Type::read: return Type::read_reply;
    case Type::flush: return Type::flush_reply;
    case Type::resync_data: return Type::resync_reply;
    case Type::digest: return Type::digest_reply;
    case Type::shared_call: return Type::shared_call_reply;
    case Type::shared_state: return Type::shared_state_reply;
    case Type::grow: return Type::grow_reply;
    default: return std::nullopt;
  }
}

std::string_view type_name(Type t) {
  switch (t) {
    case Type::hello: return "hello";
    case Type::hello_reply: return "hello_reply";
    case Type::ping: return "ping";
    case Type::pong: return "pong";
    case Type::write: return "write";
    case Type::write_reply: return "write_reply";
    case Type::replicate: return "replicate";
    case Type::replicate_reply: return "replicate_reply";
    case Type::read: return "read";
    case Type::read_reply: return "read_reply";
    case Type::flush: return "flush";
    case Type::flush_reply: return "flush_reply";
    case Type::resync_data: return "resync_data";
    case Type::resync_reply: return "resync_reply";
    case Type::state: return "state";
    case Type::close: return "close";
    case Type::digest: return "digest";
    case Type::digest_reply: return "digest_reply";
    case Type::shared_call: return "shared_call";
    case Type::shared_call_reply: return "shared_call_reply";
    case Type::shared_state: return "shared_state";
    case Type::shared_state_reply: return "shared_state_reply";
    case Type::grow: return "grow";
    case Type::grow_reply: return "grow_reply";
    case Type::al_hint: return "al_hint";
  }
  return "unknown";
}

std::uint32_t payload_crc(std::span<const std::byte> payload) {
  return payload.empty() ? 0 : crc32c_span(payload);
}

void encode(const Header& h, std::span<std::byte, kHeaderSize> out) {
  std::byte* p = out.data();
  std::memset(p, 0, kHeaderSize);
  store_be<std::uint32_t>(p + layout::magic, kMagic);
  store_be<std::uint16_t>(p + layout::version, kVersion);
  store_be<std::uint16_t>(p + layout::type, static_cast<std::uint16_t>(h.type));
  p[layout::op] = static_cast<std::byte>(h.op);
  p[layout::flags] = static_cast<std::byte>(h.flags);
  store_be<std::uint32_t>(p + layout::status, static_cast<std::uint32_t>(h.status));
  store_be<std::uint64_t>(p + layout::request_id, h.request_id);
  std::memcpy(p + layout::volume, h.volume.bytes.data(), h.volume.bytes.size());
  store_be<std::uint64_t>(p + layout::generation, h.generation);
  store_be<std::uint64_t>(p + layout::seq, h.seq);
  store_be<std::uint64_t>(p + layout::offset, h.offset);
  store_be<std::uint64_t>(p + layout::length, h.length);
  store_be<std::uint32_t>(p + layout::payload_len, h.payload_len);
  store_be<std::uint32_t>(p + layout::payload_crc, h.payload_crc);
  store_be<std::uint32_t>(p + layout::header_crc, crc32c(p, layout::header_crc));
}

Result<Header> decode(std::span<const std::byte, kHeaderSize> in) {
  const std::byte* p = in.data();
  const auto magic = load_be<std::uint32_t>(p + layout::magic);
  if (magic != kMagic)
    return Status::error(Errc::invalid, "mirror link: bad magic {:#010x} (expected {:#010x})", magic, kMagic);
  // The version is checked before the CRC: a peer of another version may checksum differently,
  // and "version 2" says more to an operator than "bad checksum".
  const auto version = load_be<std::uint16_t>(p + layout::version);
  if (version != kVersion)
    return Status::error(Errc::version, "mirror link: peer speaks version {}, this node {}", version,
                         kVersion);
  const auto want_crc = load_be<std::uint32_t>(p + layout::header_crc);
  const auto got_crc = crc32c(p, layout::header_crc);
  if (want_crc != got_crc)
    return Status::error(Errc::corrupt, "mirror link: header CRC32C {:#010x}, computed {:#010x}", want_crc,
                         got_crc);
  const auto type = load_be<std::uint16_t>(p + layout::type);
  if (type < kMinType || type > kMaxType)
    return Status::error(Errc::invalid, "mirror link: unknown message type {}", type);
  const auto op = static_cast<std::uint8_t>(p[layout::op]);
  if (op > kMaxOp) return Status::error(Errc::invalid, "mirror link: unknown op {}", op);
  const auto flags = static_cast<std::uint8_t>(p[layout::flags]);
  if ((flags & ~kKnownFlags) != 0)
    return Status::error(Errc::invalid, "mirror link: unknown flags {:#04x}", flags);
  const auto zero = [](const std::byte* b, std::size_t n) {
    return std::all_of(b, b + n, [](std::byte x) { return x == std::byte{0}; });
  };
  if (!zero(p + layout::reserved0, 2) || !zero(p + layout::reserved1, layout::header_crc - layout::reserved1))
    return Status::error(Errc::invalid, "mirror link: reserved header bytes are not zero");
  Header h;
  h.payload_len = load_be<std::uint32_t>(p + layout::payload_len);
  if (h.payload_len > kMaxPayload)
    return Status::error(Errc::invalid, "mirror link: payload of {} bytes exceeds the {} byte limit",
                         h.payload_len, kMaxPayload);
  h.type = static_cast<Type>(type);
  h.op = static_cast<Op>(op);
  h.flags = flags;
  h.status = static_cast<std::int32_t>(load_be<std::uint32_t>(p + layout::status));
  h.request_id = load_be<std::uint64_t>(p + layout::request_id);
  std::memcpy(h.volume.bytes.data(), p + layout::volume, h.volume.bytes.size());
  h.generation = load_be<std::uint64_t>(p + layout::generation);
  h.seq = load_be<std::uint64_t>(p + layout::seq);
  h.offset = load_be<std::uint64_t>(p + layout::offset);
  h.length = load_be<std::uint64_t>(p + layout::length);
  h.payload_crc = load_be<std::uint32_t>(p + layout::payload_crc);
  if (h.payload_len == 0 && h.payload_crc != 0)
    return Status::error(Errc::invalid, "mirror link: payload CRC {:#010x} on an empty payload",
                         h.payload_crc);
  return h;
}

Status check_payload(const Header& h, std::span<const std::byte> payload) {
  if (payload.size() != h.payload_len)
    return Status::error(Errc::corrupt, "mirror link: {} payload of {} bytes, header says {}",
                         type_name(h.type), payload.size(), h.payload_len);
  const auto got = payload_crc(payload);
  if (got != h.payload_crc)
    return Status::error(Errc::corrupt, "mirror link: {} payload CRC32C {:#010x}, computed {:#010x}",
                         type_name(h.type), h.payload_crc, got);
  return Status::ok();
}

}  // namespace duplex::mirror::wire
