#pragma once
// CHAP and mutual CHAP for iSCSI login (RFC 7143 §12.1.3, RFC 1994), target side.
//
//   initiator: AuthMethod=CHAP          -> target: AuthMethod=CHAP
//   initiator: CHAP_A=<list>            -> target: CHAP_A=a, CHAP_I=i, CHAP_C=challenge
//   initiator: CHAP_N, CHAP_R [, CHAP_I, CHAP_C for mutual]
//                                       -> target: [CHAP_N, CHAP_R]  (or authentication failure)
//
// Refused: a mutual challenge equal to ours (reflection), secrets shorter than 12 bytes, an
// identifier outside 0..255, a response of the wrong length, a mutual secret equal to the
// initiator's. Responses are compared in constant time.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/iscsi/text.h"

namespace duplex::iscsi {

struct ChapCredentials {
  std::string user;                          // CHAP_N the initiator must send
  std::string secret;                        // shared secret, >= 12 bytes
  std::optional<std::string> target_user;    // mutual: our CHAP_N
  std::optional<std::string> target_secret;  // mutual: our secret (must differ from `secret`)
};

inline constexpr std::size_t kMinChapSecret = 12;

class ChapTarget {
 public:
  // Errc::invalid when the credentials themselves are unacceptable (checked at configuration).
  static Status validate(const ChapCredentials& c);
  explicit ChapTarget(ChapCredentials creds) : creds_(std::move(creds)) {}

  // CHAP_A offered by the initiator: choose the first algorithm we support, send a challenge.
  Result<std::vector<KeyValue>> on_algorithms(const std::string& list);
  // The initiator's answer. Errc::invalid means authentication failure (login status 0x0201).
  Result<std::vector<KeyValue>> on_response(const std::vector<KeyValue>& kvs);
  bool authenticated() const { return authenticated_; }

  // CHAP's response: H(id || secret || challenge). Exposed for tests and for a test initiator.
  static std::vector<std::uint8_t> response(int algorithm, std::uint8_t id, const std::string& secret,
                                            const std::vector<std::uint8_t>& challenge);
  // "0x..." hex or "0b..." base64 (RFC 7143 §6.1 binary values).
  static std::optional<std::vector<std::uint8_t>> decode_binary(const std::string& v);
  static std::string encode_hex(const std::vector<std::uint8_t>& b);

 private:
  ChapCredentials creds_;
  int algorithm_ = 0;
  std::uint8_t id_ = 0;
  std::vector<std::uint8_t> challenge_;
  bool authenticated_ = false;
};

}  // namespace duplex::iscsi
