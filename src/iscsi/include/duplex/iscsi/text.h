#pragma once
// iSCSI text key=value data (RFC 7143 §6.1): the body of Login and Text PDUs, and the negotiation
// of the operational keys (§13). Parsing refuses anything malformed; negotiation follows the
// RFC's per-key rules (list, min, max, boolean OR/AND, declarative).
#include <cstdint>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "duplex/base/status.h"

namespace duplex::iscsi {

struct KeyValue {
  std::string key;
  std::string value;
  friend bool operator==(const KeyValue&, const KeyValue&) = default;
};

inline constexpr std::size_t kMaxKeyLength = 63;
inline constexpr std::size_t kMaxValueLength = 8192;  // the longest any key allows (RFC 7143 §6.1)

// Parses NUL-separated "key=value" pairs; a trailing pair without NUL is refused (the sender
// must terminate every pair; a pair split across PDUs is joined by the caller first).
Result<std::vector<KeyValue>> parse_text(std::span<const std::uint8_t> data);
std::vector<std::uint8_t> encode_text(const std::vector<KeyValue>& kvs);

// Values negotiated for a session and its connection (RFC 7143 §13).
struct SessionParams {
  bool header_digest = false;
  bool data_digest = false;
  std::uint32_t initiator_mrdsl = 8192;  // the initiator receives at most this per PDU: we obey it
  std::uint32_t target_mrdsl = 262144;   // we receive at most this per PDU: declared to the initiator
  std::uint32_t max_burst_length = 262144;
  std::uint32_t first_burst_length = 65536;
  bool initial_r2t = true;
  bool immediate_data = true;
  std::uint32_t max_outstanding_r2t = 1;
  bool data_pdu_in_order = true;
  bool data_sequence_in_order = true;
  std::uint32_t error_recovery_level = 0;
  std::uint32_t default_time2wait = 2;
  std::uint32_t default_time2retain = 20;
  std::uint32_t max_connections = 1;
  std::string initiator_name;
  std::string initiator_alias;
  std::string target_name;
  bool discovery = false;
};

// What this target offers (its side of every min/max/boolean rule).
struct TargetLimits {
  std::uint32_t max_recv_data_segment_length = 262144;
  std::uint32_t max_burst_length = 1 << 20;
  std::uint32_t first_burst_length = 256 << 10;
  bool initial_r2t = false;
  bool immediate_data = true;
  std::uint32_t max_outstanding_r2t = 16;
  bool allow_digests = true;
};

// Applies the operational keys of one login (or text) request and produces the answers.
// Declarations the target must make unasked (its MaxRecvDataSegmentLength, Target Portal Group
// Tag) are added by finish().
class OperationalNegotiation {
 public:
  explicit OperationalNegotiation(TargetLimits limits) : limits_(limits) {}

  // Errc::invalid: a protocol error (a key repeated, a malformed value for a declarative key).
  // Keys that are merely unacceptable get "Reject", unknown ones "NotUnderstood".
  Result<std::vector<KeyValue>> apply(const std::vector<KeyValue>& request);
  // Answers owed at the end of the operational stage; fixes FirstBurstLength <= MaxBurstLength.
  std::vector<KeyValue> finish();

  const SessionParams& params() const { return p_; }
  SessionParams& params() { return p_; }
  bool saw(const std::string& key) const { return seen_.count(key) > 0; }

 private:
  TargetLimits limits_;
  SessionParams p_;
  std::set<std::string> seen_;
  bool declared_mrdsl_ = false;
};

// Parses a decimal number in [lo, hi]; nullopt if malformed or out of range.
std::optional<std::uint64_t> parse_number(const std::string& v, std::uint64_t lo, std::uint64_t hi);

}  // namespace duplex::iscsi
