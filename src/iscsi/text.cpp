#include "duplex/iscsi/text.h"

#include <algorithm>
#include <charconv>

namespace duplex::iscsi {

namespace {
bool valid_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
         c == '+' || c == '@' || c == '_' || c == ':';
}

std::vector<std::string> split_list(const std::string& v) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = v.find(',', start);
    out.push_back(v.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

std::optional<bool> parse_bool(const std::string& v) {
  if (v == "Yes") return true;
  if (v == "No") return false;
  return std::nullopt;
}
const char* yes_no(bool b) { return b ? "Yes" : "No"; }
}  // namespace

std::optional<std::uint64_t> parse_number(const std::string& v, std::uint64_t lo, std::uint64_t hi) {
  if (v.empty() || v.size() > 20) return std::nullopt;
  std::uint64_t n = 0;
  int base = 10;
  std::size_t start = 0;
  if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'X')) {
    base = 16;
    start = 2;
  }
  auto [ptr, ec] = std::from_chars(v.data() + start, v.data() + v.size(), n, base);
  if (ec != std::errc() || ptr != v.data() + v.size()) return std::nullopt;
  if (n < lo || n > hi) return std::nullopt;
  return n;
}

Result<std::vector<KeyValue>> parse_text(std::span<const std::uint8_t> data) {
  std::vector<KeyValue> out;
  std::size_t pos = 0;
  while (pos < data.size()) {
    auto nul = std::find(data.begin() + static_cast<std::ptrdiff_t>(pos), data.end(), 0);
    if (nul == data.end())
      return Status::error(Errc::invalid, "iSCSI text: pair at byte {} is not NUL-terminated", pos);
    const std::string pair(data.begin() + static_cast<std::ptrdiff_t>(pos), nul);
    const std::size_t next = static_cast<std::size_t>(nul - data.begin()) + 1;
    if (pair.empty()) {  // padding NULs at the end of a segment are tolerated
      pos = next;
      continue;
    }
    const std::size_t eq = pair.find('=');
    if (eq == std::string::npos || eq == 0)
      return Status::error(Errc::invalid, "iSCSI text: '{}' is not key=value", pair.substr(0, 80));
    KeyValue kv{pair.substr(0, eq), pair.substr(eq + 1)};
    if (kv.key.size() > kMaxKeyLength)
      return Status::error(Errc::invalid, "iSCSI text: key of {} bytes (at most {})", kv.key.size(),
                           kMaxKeyLength);
    if (!std::all_of(kv.key.begin(), kv.key.end(), valid_key_char))
      return Status::error(Errc::invalid, "iSCSI text: key '{}' has an invalid character",
                           kv.key.substr(0, 80));
    if (kv.value.size() > kMaxValueLength)
      return Status::error(Errc::invalid, "iSCSI text: value of key {} is {} bytes", kv.key, kv.value.size());
    out.push_back(std::move(kv));
    pos = next;
  }
  return out;
}

std::vector<std::uint8_t> encode_text(const std::vector<KeyValue>& kvs) {
  std::vector<std::uint8_t> out;
  for (const auto& kv : kvs) {
    out.insert(out.end(), kv.key.begin(), kv.key.end());
    out.push_back('=');
    out.insert(out.end(), kv.value.begin(), kv.value.end());
    out.push_back(0);
  }
  return out;
}

Result<std::vector<KeyValue>> OperationalNegotiation::apply(const std::vector<KeyValue>& request) {
  std::vector<KeyValue> answer;
  auto reply = [&](const std::string& k, std::string v) { answer.push_back({k, std::move(v)}); };
  for (const auto& [key, value] : request) {
    if (!seen_.insert(key).second)
      return Status::error(Errc::invalid, "iSCSI login: key {} negotiated twice", key);
    auto number = [&](std::uint64_t lo, std::uint64_t hi) { return parse_number(value, lo, hi); };
    if (key == "HeaderDigest" || key == "DataDigest") {
      std::string chosen;
      for (const auto& v : split_list(value)) {
        if (v == "None" || (v == "CRC32C" && limits_.allow_digests)) {
          chosen = v;
          break;
        }
      }
      if (chosen.empty()) {
        reply(key, "Reject");
        continue;
      }
      (key == "HeaderDigest" ? p_.header_digest : p_.data_digest) = chosen == "CRC32C";
      reply(key, chosen);
    } else if (key == "MaxRecvDataSegmentLength") {
      // Declarative: the initiator says what it receives; we declare what we receive.
      auto n = number(512, (1u << 24) - 1);
      if (!n)
        return Status::error(Errc::invalid, "iSCSI login: MaxRecvDataSegmentLength={} is invalid", value);
      p_.initiator_mrdsl = static_cast<std::uint32_t>(*n);
      p_.target_mrdsl = limits_.max_recv_data_segment_length;
      reply(key, std::to_string(p_.target_mrdsl));
      declared_mrdsl_ = true;
    } else if (key == "MaxBurstLength" || key == "FirstBurstLength") {
      auto n = number(512, (1u << 24) - 1);
      if (!n) {
        reply(key, "Reject");
        continue;
      }
      const bool mb = key == "MaxBurstLength";
      const std::uint32_t v = std::min<std::uint32_t>(
          static_cast<std::uint32_t>(*n), mb ? limits_.max_burst_length : limits_.first_burst_length);
      (mb ? p_.max_burst_length : p_.first_burst_length) = v;
      reply(key, std::to_string(v));
    } else if (key == "MaxOutstandingR2T") {
      auto n = number(1, 65535);
      if (!n) {
        reply(key, "Reject");
        continue;
      }
      p_.max_outstanding_r2t =
          std::min<std::uint32_t>(static_cast<std::uint32_t>(*n), limits_.max_outstanding_r2t);
      reply(key, std::to_string(p_.max_outstanding_r2t));
    } else if (key == "ErrorRecoveryLevel") {
      auto n = number(0, 2);
      if (!n) {
        reply(key, "Reject");
        continue;
      }
      p_.error_recovery_level = 0;  // min with ours: we implement level 0
      reply(key, "0");
    } else if (key == "MaxConnections") {
      auto n = number(1, 65535);
      if (!n) {
        reply(key, "Reject");
        continue;
      }
      p_.max_connections = 1;  // one connection per session; multipath is done with sessions
      reply(key, "1");
    } else if (key == "DefaultTime2Wait" || key == "DefaultTime2Retain") {
      auto n = number(0, 3600);
      if (!n) {
        reply(key, "Reject");
        continue;
      }
      const bool wait = key == "DefaultTime2Wait";
      // Time2Wait is the max of both offers, Time2Retain the min; ours are 2 and 0 (ERL 0).
      const std::uint32_t v = wait ? std::max<std::uint32_t>(static_cast<std::uint32_t>(*n), 2) : 0;
      (wait ? p_.default_time2wait : p_.default_time2retain) = v;
      reply(key, std::to_string(v));
    } else if (key == "InitialR2T" || key == "DataPDUInOrder" || key == "DataSequenceInOrder") {
      auto b = parse_bool(value);
      if (!b) {
        reply(key, "Reject");
        continue;
      }
      // OR with ours: we accept out-of-order nothing (we do not need to), and R2T only if asked.
      bool& field = key == "InitialR2T"       ? p_.initial_r2t
                    : key == "DataPDUInOrder" ? p_.data_pdu_in_order
                                              : p_.data_sequence_in_order;
      const bool ours = key == "InitialR2T" ? limits_.initial_r2t : true;
      field = *b || ours;
      reply(key, yes_no(field));
    } else if (key == "ImmediateData") {
      auto b = parse_bool(value);
      if (!b) {
        reply(key, "Reject");
        continue;
      }
      p_.immediate_data = *b && limits_.immediate_data;
      reply(key, yes_no(p_.immediate_data));
    } else if (key == "InitiatorName") {
      if (value.empty() || value.size() > 223)
        return Status::error(Errc::invalid, "iSCSI login: InitiatorName of {} bytes", value.size());
      p_.initiator_name = value;
    } else if (key == "InitiatorAlias") {
      p_.initiator_alias = value;
    } else if (key == "TargetName") {
      p_.target_name = value;
    } else if (key == "SessionType") {
      if (value != "Discovery" && value != "Normal")
        return Status::error(Errc::invalid, "iSCSI login: SessionType={} is invalid", value);
      p_.discovery = value == "Discovery";
    } else if (key == "IFMarker" || key == "OFMarker") {
      reply(key, "No");  // markers are obsolete (RFC 7143 removed them); never used
    } else {
      reply(key, "NotUnderstood");
    }
  }
  return answer;
}

std::vector<KeyValue> OperationalNegotiation::finish() {
  std::vector<KeyValue> out;
  if (!declared_mrdsl_) {
    p_.target_mrdsl = limits_.max_recv_data_segment_length;
    out.push_back({"MaxRecvDataSegmentLength", std::to_string(p_.target_mrdsl)});
    declared_mrdsl_ = true;
  }
  p_.first_burst_length = std::min(p_.first_burst_length, p_.max_burst_length);
  return out;
}

}  // namespace duplex::iscsi
