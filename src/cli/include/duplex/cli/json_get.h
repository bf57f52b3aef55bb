#pragma once
// Tolerant readers for the API's JSON: a missing field or one of another type reads as the default,
// so a reply from a newer or older duplexd never throws out of the renderer.
#include <cstdint>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace duplex::cli {

using nlohmann::json;

inline const json* field(const json& j, const std::string& key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  return it == j.end() ? nullptr : &*it;
}
// The field, or null.
inline const json& member(const json& j, const std::string& key) {
  static const json null;
  const json* f = field(j, key);
  return f != nullptr ? *f : null;
}
inline std::string str(const json& j, const std::string& key, std::string def = "") {
  const json* f = field(j, key);
  return f != nullptr && f->is_string() ? f->get<std::string>() : std::move(def);
}
inline std::uint64_t u64(const json& j, const std::string& key, std::uint64_t def = 0) {
  const json* f = field(j, key);
  if (f == nullptr) return def;
  if (f->is_number_unsigned()) return f->get<std::uint64_t>();
  if (f->is_number_integer() && f->get<std::int64_t>() >= 0)
    return static_cast<std::uint64_t>(f->get<std::int64_t>());
  return def;
}
inline double num(const json& j, const std::string& key, double def = 0.0) {
  const json* f = field(j, key);
  return f != nullptr && f->is_number() ? f->get<double>() : def;
}
inline bool flag(const json& j, const std::string& key, bool def = false) {
  const json* f = field(j, key);
  return f != nullptr && f->is_boolean() ? f->get<bool>() : def;
}
// An array field, or an empty array.
inline const json& list(const json& j, const std::string& key) {
  static const json empty = json::array();
  const json* f = field(j, key);
  return f != nullptr && f->is_array() ? *f : empty;
}
inline const json& object(const json& j, const std::string& key) {
  static const json empty = json::object();
  const json* f = field(j, key);
  return f != nullptr && f->is_object() ? *f : empty;
}
// A string array joined with ", " (Node's "nbd": ["127.0.0.11:10809"]); a plain string as is.
inline std::string joined(const json& j, const std::string& key) {
  const json* f = field(j, key);
  if (f == nullptr) return "";
  if (f->is_string()) return f->get<std::string>();
  std::string out;
  if (f->is_array()) {
    for (const auto& e : *f) {
      if (!e.is_string()) continue;
      if (!out.empty()) out += ", ";
      out += e.get<std::string>();
    }
  }
  return out;
}

}  // namespace duplex::cli
