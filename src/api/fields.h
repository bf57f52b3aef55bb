#pragma once
// Reading a JSON request body field by field. The first fault wins and names its field; every
// later read is a no-op, so a handler reads all it needs and checks ok() once.
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace duplex::api {

struct Fault {
  std::string field;  // "" when no single field is at fault (e.g. malformed JSON)
  std::string message;
};

class BodyReader {
 public:
  // The body must be a JSON object whose keys are all in `allowed`.
  BodyReader(const std::string& body, std::initializer_list<std::string_view> allowed);

  bool ok() const { return !fault_; }
  const Fault& fault() const { return *fault_; }
  bool has(const char* field) const { return ok() && json_.contains(field); }

  std::optional<std::string> string(const char* field, bool required);
  std::optional<std::uint64_t> size(const char* field, bool required);
  std::optional<std::int64_t> integer(const char* field, bool required, std::int64_t min, std::int64_t max);
  std::optional<bool> boolean(const char* field, bool required);
  void fail(std::string field, std::string message);

 private:
  const nlohmann::json* get(const char* field, bool required);

  nlohmann::json json_;
  std::optional<Fault> fault_;
};

// An excerpt of untrusted text fit for an error message: at most 64 bytes, quoted.
std::string quote(std::string_view s);

}  // namespace duplex::api
