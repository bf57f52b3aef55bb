#pragma once
// Option haggling of the fixed newstyle handshake, without I/O: the session reads an option
// header and its data, hands them to Negotiator::on_option(), writes out() and acts on the
// returned Action. The fuzzer drives the same code with arbitrary bytes.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "duplex/nbd/export.h"
#include "duplex/nbd/proto.h"

namespace duplex::nbd {

struct NegotiationPolicy {
  bool tls_available = false;  // a TLS context exists: STARTTLS is answered with ACK
  bool tls_required = false;   // FORCEDTLS: nothing but STARTTLS/ABORT before TLS
  bool shutting_down = false;
};

// One selected metadata context of a connection.
struct MetaContext {
  enum class Kind { allocation, changed_since };
  std::uint32_t id = 0;
  Kind kind = Kind::allocation;
  std::string name;      // as the client selected it
  std::string snapshot;  // changed_since: the snapshot
};

// What the connection continues with after one option.
enum class Action {
  next_option,   // send out(), read the next option
  start_tls,     // send out() (an ACK), then run the TLS handshake, then next option
  transmission,  // send out(), enter transmission with export()
  close,         // send out() (maybe empty), then close the connection
};

class Negotiator {
 public:
  Negotiator(const ExportCatalogue& catalogue, NegotiationPolicy policy) : cat_(catalogue), policy_(policy) {}

  // The 18 bytes the server sends first.
  static std::vector<std::byte> greeting();
  // Client flags (4 bytes). False: unknown flags, the connection must be dropped.
  bool on_client_flags(std::uint32_t flags);

  Action on_option(std::uint32_t option, std::span<const std::byte> data);
  // An option whose data was longer than kMaxOptionLength (the session skipped the data).
  Action on_oversized_option(std::uint32_t option);
  // After a successful TLS handshake: everything negotiated before is forgotten.
  void on_tls_started();

  // Bytes to send; the session clears it after writing.
  std::vector<std::byte>& out() { return out_; }

  // Results, valid after Action::transmission.
  const ExportInfo& export_info() const { return *export_; }
  bool structured_replies() const { return structured_; }
  const std::vector<MetaContext>& contexts() const { return contexts_; }
  std::uint16_t transmission_flags() const { return flags_for(*export_); }
  bool tls_active() const { return tls_active_; }
  bool fixed_newstyle() const { return fixed_; }
  // Why the last close/error happened (for the log).
  const std::string& last_error() const { return last_error_; }

  std::uint16_t flags_for(const ExportInfo& e) const;

 private:
  void reply(std::uint32_t option, std::uint32_t type, std::span<const std::byte> data = {});
  template <typename... Args>
  void error(std::uint32_t option, std::uint32_t type, fmt::format_string<Args...> f, Args&&... args);

  Action opt_export_name(std::span<const std::byte> data);
  Action opt_info_go(std::uint32_t option, std::span<const std::byte> data);
  Action opt_list(std::span<const std::byte> data);
  Action opt_meta(std::uint32_t option, std::span<const std::byte> data);
  // Contexts of export `e` matching query (LIST) or named exactly (SET).
  void match_contexts(const ExportInfo& e, std::string_view query, bool list,
                      std::vector<MetaContext>& into) const;

  const ExportCatalogue& cat_;
  NegotiationPolicy policy_;
  std::vector<std::byte> out_;
  bool fixed_ = true;
  bool no_zeroes_ = false;
  bool tls_active_ = false;
  bool structured_ = false;
  std::vector<MetaContext> contexts_;
  std::string contexts_export_;  // canonical export the contexts were selected for
  std::optional<ExportInfo> export_;
  std::string last_error_;
  unsigned options_seen_ = 0;
};

// The limit on options per connection (a client looping on options is dropped).
inline constexpr unsigned kMaxOptionsPerConnection = 4096;

}  // namespace duplex::nbd
