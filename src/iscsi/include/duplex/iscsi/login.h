#pragma once
// The login phase of one iSCSI connection (RFC 7143 §6), as pure logic: a Login Request PDU in,
// a Login Response PDU out. The connection layer reads PDUs and writes what this returns.
//
//   start --first PDU: InitiatorName, SessionType, TargetName checked (exists, ACL)-->
//   security (CSG 0): AuthMethod -> [CHAP_A -> CHAP_N/CHAP_R] --T, NSG 1|3--> operational | full
//   operational (CSG 1): operational keys --T, NSG 3--> full feature
//   any stage: an error -> a response with a non-zero status class, then the connection closes.
//
// A target that requires CHAP refuses a login that skips the security stage (0201). Request data
// with the C bit is collected until the last part; the target answers each part with an empty
// response.
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "duplex/iscsi/chap.h"
#include "duplex/iscsi/pdu.h"
#include "duplex/iscsi/text.h"

namespace duplex::iscsi {

// What the login needs to know about the targets this portal serves.
struct LoginPolicy {
  // Does `target` exist on this portal? (0203 otherwise)
  std::function<bool(const std::string& target)> target_exists;
  // May `initiator` log in to `target`? (0202 otherwise)
  std::function<bool(const std::string& initiator, const std::string& target)> allowed;
  // CHAP credentials if the target (or discovery, target "") requires CHAP.
  std::function<std::optional<ChapCredentials>(const std::string& target)> chap_for;
  // A new session handle (TSIH, never 0).
  std::function<std::uint16_t()> new_tsih;
  std::uint16_t tpgt = 1;
  TargetLimits limits;
};

struct LoginPdu {
  std::array<std::uint8_t, kBhsSize> bhs{};
  std::vector<std::uint8_t> data;
};

class LoginMachine {
 public:
  explicit LoginMachine(LoginPolicy policy) : policy_(std::move(policy)), ops_(policy_.limits) {}

  // Handles one Login Request. `close_after` is set when the response carries an error status.
  LoginPdu on_request(const Bhs& req, std::span<const std::uint8_t> data);

  bool full_feature() const { return full_feature_; }
  bool close_after() const { return failed_; }
  const SessionParams& params() const { return ops_.params(); }
  const std::array<std::uint8_t, 6>& isid() const { return isid_; }
  std::uint16_t tsih() const { return tsih_; }
  std::uint16_t cid() const { return cid_; }
  // Sequence numbers to continue with in full feature phase.
  std::uint32_t next_stat_sn() const { return stat_sn_; }
  std::uint32_t exp_cmd_sn() const { return exp_cmd_sn_; }
  // "iqn...,i,0x<ISID>": the SCSI initiator port name of this session.
  std::string initiator_port() const;

 private:
  LoginPdu respond(const Bhs& req, std::vector<KeyValue> kvs, bool transit, std::uint8_t nsg);
  LoginPdu fail(const Bhs& req, LoginStatus status, std::string why);
  Status first_request(const std::vector<KeyValue>& kvs);

  LoginPolicy policy_;
  OperationalNegotiation ops_;
  std::optional<ChapTarget> chap_;
  enum class Auth { none_needed, wants_chap, challenged, done } auth_ = Auth::none_needed;
  bool started_ = false;
  bool full_feature_ = false;
  bool failed_ = false;
  bool tpgt_sent_ = false;
  std::array<std::uint8_t, 6> isid_{};
  std::uint16_t tsih_ = 0;
  std::uint16_t cid_ = 0;
  std::uint32_t itt_ = 0;
  std::uint32_t stat_sn_ = 0;
  std::uint32_t exp_cmd_sn_ = 0;
  std::uint8_t stage_ = 0;
  std::vector<std::uint8_t> partial_;  // request text collected across C-bit PDUs
  std::string error_;

 public:
  const std::string& error() const { return error_; }
};

}  // namespace duplex::iscsi
