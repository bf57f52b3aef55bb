#include "duplex/base/status.h"

namespace duplex {

std::string_view errc_name(Errc c) {
  switch (c) {
    case Errc::ok: return "ok";
    case Errc::invalid: return "invalid";
    case Errc::out_of_range: return "out of range";
    case Errc::not_found: return "not found";
    case Errc::exists: return "exists";
    case Errc::no_space: return "no space";
    case Errc::read_only: return "read-only";
    case Errc::io_error: return "I/O error";
    case Errc::corrupt: return "corrupt";
    case Errc::version: return "version";
    case Errc::busy: return "busy";
    case Errc::unsupported: return "unsupported";
    case Errc::shutdown: return "shutdown";
    case Errc::unavailable: return "unavailable";
    case Errc::conflict: return "conflict";
    case Errc::timeout: return "timeout";
  }
  return "unknown";
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->message : kEmpty;
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  return fmt::format("{}: {}", errc_name(rep_->code), rep_->message);
}

}  // namespace duplex
