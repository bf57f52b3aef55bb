#pragma once
// Errors on the data path are values, never exceptions (exceptions are for startup only).
// A Status is cheap when OK (no allocation) and carries a human message when not: every error
// that reaches an operator names the object and the offset it concerns.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include <fmt/format.h>

namespace duplex {

// Error classes. Front-ends map them onto protocol errors (NBD errno, SCSI sense, HTTP status).
enum class Errc : std::uint8_t {
  ok = 0,
  invalid,       // malformed request or argument
  out_of_range,  // offset/length beyond the object's end
  not_found,
  exists,
  no_space,
  read_only,
  io_error,  // the device failed
  corrupt,   // metadata failed a checksum or a consistency rule; never guessed around
  version,   // on-disk or wire format of another version
  busy,      // lock held by another process or operation
  unsupported,
  shutdown,     // the service is stopping
  unavailable,  // a remote service (etcd, a peer) cannot be reached or has no quorum
  conflict,     // lost a compare-and-swap: someone changed the record first; re-read and retry
  timeout,      // a peer did not answer within its bound (the mirror link then declares it down)
};

std::string_view errc_name(Errc c);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Errc code, std::string message)
      : rep_(code == Errc::ok ? nullptr : std::make_shared<Rep>(Rep{code, std::move(message)})) {}

  static Status ok() { return {}; }
  template <typename... Args>
  static Status error(Errc code, fmt::format_string<Args...> f, Args&&... args) {
    return {code, fmt::format(f, std::forward<Args>(args)...)};
  }

  bool is_ok() const { return rep_ == nullptr; }
  explicit operator bool() const { return is_ok(); }
  Errc code() const { return rep_ ? rep_->code : Errc::ok; }
  const std::string& message() const;
  // "corrupt: pool p1: journal block 7 ..." — suitable for one log line.
  std::string to_string() const;

 private:
  struct Rep {
    Errc code;
    std::string message;
  };
  std::shared_ptr<const Rep> rep_;
};

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status s) : v_(std::move(s)) {}     // NOLINT(google-explicit-constructor)

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace duplex

// Propagate a failed Status out of a coroutine or a plain function.
#define DPX_CO_TRY(expr)                     \
  do {                                       \
    ::duplex::Status dpx_st_ = (expr);       \
    if (!dpx_st_.is_ok()) co_return dpx_st_; \
  } while (0)
#define DPX_TRY(expr)                     \
  do {                                    \
    ::duplex::Status dpx_st_ = (expr);    \
    if (!dpx_st_.is_ok()) return dpx_st_; \
  } while (0)
