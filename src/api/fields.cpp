#include "fields.h"

#include <fmt/format.h>

#include <limits>

#include "duplex/api/handler.h"

namespace duplex::api {

using nlohmann::json;

std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 64;
  if (s.size() > kMax) return fmt::format("\"{}...\"", s.substr(0, kMax));
  return fmt::format("\"{}\"", s);
}

BodyReader::BodyReader(const std::string& body, std::initializer_list<std::string_view> allowed) {
  // Not the throwing parse: any bytes are a possible body.
  json_ = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (json_.is_discarded()) {
    fault_ = Fault{"", "the body is not valid JSON"};
    return;
  }
  if (!json_.is_object()) {
    fault_ = Fault{"", "the body must be a JSON object"};
    return;
  }
  for (const auto& [key, _] : json_.items()) {
    bool known = false;
    for (auto a : allowed) known = known || key == a;
    if (!known) {
      fault_ = Fault{key, fmt::format("unknown field {}", quote(key))};
      return;
    }
  }
}

void BodyReader::fail(std::string field, std::string message) {
  if (!fault_) fault_ = Fault{std::move(field), std::move(message)};
}

const json* BodyReader::get(const char* field, bool required) {
  if (fault_) return nullptr;
  auto it = json_.find(field);
  if (it == json_.end()) {
    if (required) fail(field, fmt::format("missing field \"{}\"", field));
    return nullptr;
  }
  return &*it;
}

std::optional<std::string> BodyReader::string(const char* field, bool required) {
  const json* j = get(field, required);
  if (!j) return std::nullopt;
  if (!j->is_string()) {
    fail(field, fmt::format("field \"{}\" must be a string", field));
    return std::nullopt;
  }
  return j->get<std::string>();
}

std::optional<std::uint64_t> BodyReader::size(const char* field, bool required) {
  const json* j = get(field, required);
  if (!j) return std::nullopt;
  if (j->is_number_unsigned()) return j->get<std::uint64_t>();
  if (j->is_string()) {
    auto r = parse_size(j->get_ref<const std::string&>());
    if (r) return *r;
    fail(field, fmt::format("field \"{}\": {}", field, r.status().message()));
    return std::nullopt;
  }
  fail(field, fmt::format("field \"{}\" must be a number of bytes (>= 0) or a string like \"10GiB\"", field));
  return std::nullopt;
}

std::optional<std::int64_t> BodyReader::integer(const char* field, bool required, std::int64_t min,
                                                std::int64_t max) {
  const json* j = get(field, required);
  if (!j) return std::nullopt;
  std::optional<std::int64_t> v;
  if (j->is_number_unsigned()) {
    const auto u = j->get<std::uint64_t>();
    if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      v = static_cast<std::int64_t>(u);
  } else if (j->is_number_integer()) {
    v = j->get<std::int64_t>();
  }
  if (!v || *v < min || *v > max) {
    fail(field, fmt::format("field \"{}\" must be an integer from {} to {}", field, min, max));
    return std::nullopt;
  }
  return v;
}

std::optional<bool> BodyReader::boolean(const char* field, bool required) {
  const json* j = get(field, required);
  if (!j) return std::nullopt;
  if (!j->is_boolean()) {
    fail(field, fmt::format("field \"{}\" must be true or false", field));
    return std::nullopt;
  }
  return j->get<bool>();
}

Result<std::uint64_t> parse_size(std::string_view s) {
  const std::string_view whole = s;
  std::uint64_t n = 0;
  std::size_t i = 0;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    const auto d = static_cast<std::uint64_t>(s[i] - '0');
    if (n > (std::numeric_limits<std::uint64_t>::max() - d) / 10)
      return Status::error(Errc::invalid, "size {} is too large", quote(whole));
    n = n * 10 + d;
  }
  if (i == 0)
    return Status::error(Errc::invalid,
                         "size {} must start with a number (e.g. \"10GiB\", \"512MiB\", \"4096\")",
                         quote(whole));
  s.remove_prefix(i);
  unsigned shift = 0;
  if (!s.empty()) {
    switch (s.front()) {
      case 'K':
      case 'k': shift = 10; break;
      case 'M':
      case 'm': shift = 20; break;
      case 'G':
      case 'g': shift = 30; break;
      case 'T':
      case 't': shift = 40; break;
      case 'P':
      case 'p': shift = 50; break;
      case 'B':
      case 'b': break;
      default:
        return Status::error(Errc::invalid, "size {} has an unknown suffix (K, M, G, T, P, KiB, ..)",
                             quote(whole));
    }
    if (shift != 0) {
      s.remove_prefix(1);
      if (!s.empty() && s.front() == 'i') s.remove_prefix(1);
    }
    if (!s.empty() && (s.front() == 'B' || s.front() == 'b')) s.remove_prefix(1);
    if (!s.empty())
      return Status::error(Errc::invalid, "size {} has an unknown suffix (K, M, G, T, P, KiB, ..)",
                           quote(whole));
  }
  if (shift != 0 && n > (std::numeric_limits<std::uint64_t>::max() >> shift))
    return Status::error(Errc::invalid, "size {} is too large", quote(whole));
  return n << shift;
}

std::pair<int, std::string_view> http_status_of(Errc c) {
  switch (c) {
    case Errc::ok: return {200, "ok"};
    case Errc::invalid:
    case Errc::out_of_range:
    case Errc::unsupported:
    case Errc::read_only: return {400, "invalid"};
    case Errc::not_found: return {404, "not_found"};
    case Errc::exists: return {409, "exists"};
    case Errc::conflict:
    case Errc::busy: return {409, "conflict"};
    case Errc::unavailable:
    case Errc::shutdown: return {503, "unavailable"};
    case Errc::no_space: return {507, "no_space"};
    default: return {500, "internal"};
  }
}

}  // namespace duplex::api
