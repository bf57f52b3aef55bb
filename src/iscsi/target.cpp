#include "duplex/iscsi/target.h"

#include <algorithm>
#include <cctype>

namespace duplex::iscsi {

namespace {
std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}
}  // namespace

Access Target::access_for(std::string_view initiator) const {
  auto it = acl.find(lower(initiator));
  return it == acl.end() ? default_access : it->second;
}

const Lun* Target::lun(std::uint64_t number) const {
  for (const auto& l : luns)
    if (l.number == number) return &l;
  return nullptr;
}

bool valid_iscsi_name(std::string_view name) {
  if (name.size() < 5 || name.size() > 223) return false;
  auto allowed = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == ':';
  };
  if (name.starts_with("iqn.")) {
    // iqn.YYYY-MM.reversed.domain[:anything]
    if (name.size() < 12 || !std::isdigit(static_cast<unsigned char>(name[4])) || name[8] != '-' ||
        name[11] != '.')
      return false;
    for (std::size_t i : {4, 5, 6, 7, 9, 10})
      if (!std::isdigit(static_cast<unsigned char>(name[i]))) return false;
    return std::all_of(name.begin(), name.end(), allowed);
  }
  auto hex_tail = [&](std::size_t prefix, std::initializer_list<std::size_t> lengths) {
    const std::string_view h = name.substr(prefix);
    if (std::find(lengths.begin(), lengths.end(), h.size()) == lengths.end()) return false;
    return std::all_of(h.begin(), h.end(),
                       [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  };
  if (name.starts_with("eui.")) return hex_tail(4, {16});
  if (name.starts_with("naa.")) return hex_tail(4, {16, 32});
  return false;
}

std::string iqn_component(std::string_view name) {
  std::string out;
  out.reserve(name.size());
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.')
      out.push_back(static_cast<char>(std::tolower(u)));
    else
      out.push_back('-');
  }
  return out;
}

std::uint64_t encode_lun(std::uint64_t number) {
  // SAM-5 4.7: peripheral device addressing below 256, flat space addressing up to 16383.
  if (number < 256) return number << 48;
  return (0x4000ULL | (number & 0x3fff)) << 48;
}

std::optional<std::uint64_t> decode_lun(std::uint64_t field) {
  const auto method = static_cast<unsigned>(field >> 62);
  if ((field & 0x0000ffffffffffffULL) != 0) return std::nullopt;  // second level not used
  const std::uint64_t top = field >> 48;
  switch (method) {
    case 0:  // peripheral: bus identifier must be 0 for a single level
      if (((top >> 8) & 0x3f) != 0) return std::nullopt;
      return top & 0xff;
    case 1: return top & 0x3fff;  // flat space
    default: return std::nullopt;
  }
}

}  // namespace duplex::iscsi
