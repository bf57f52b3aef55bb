#include "duplex/iscsi/chap.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <map>

namespace duplex::iscsi {

namespace {
// CHAP algorithm numbers (IANA PPP authentication algorithms): 5 MD5, 6 SHA-1, 7 SHA-256.
const EVP_MD* digest_of(int algorithm) {
  switch (algorithm) {
    case 5: return EVP_md5();
    case 6: return EVP_sha1();
    case 7: return EVP_sha256();
    default: return nullptr;
  }
}

std::size_t digest_size(int algorithm) {
  const EVP_MD* md = digest_of(algorithm);
  return md ? static_cast<std::size_t>(EVP_MD_get_size(md)) : 0;
}

Status auth_failure(const std::string& why) {
  return Status::error(Errc::invalid, "iSCSI CHAP authentication failed: {}", why);
}
}  // namespace

Status ChapTarget::validate(const ChapCredentials& c) {
  if (c.user.empty()) return Status::error(Errc::invalid, "CHAP user name is empty");
  if (c.secret.size() < kMinChapSecret)
    return Status::error(Errc::invalid, "CHAP secret of user {} is {} bytes; at least {} are required",
                         c.user, c.secret.size(), kMinChapSecret);
  if (c.target_secret) {
    if (!c.target_user || c.target_user->empty())
      return Status::error(Errc::invalid, "mutual CHAP needs a target user name");
    if (c.target_secret->size() < kMinChapSecret)
      return Status::error(Errc::invalid, "mutual CHAP secret is {} bytes; at least {} are required",
                           c.target_secret->size(), kMinChapSecret);
    if (*c.target_secret == c.secret)
      return Status::error(Errc::invalid, "mutual CHAP secret must differ from the initiator's secret");
  }
  return Status::ok();
}

std::vector<std::uint8_t> ChapTarget::response(int algorithm, std::uint8_t id, const std::string& secret,
                                               const std::vector<std::uint8_t>& challenge) {
  std::vector<std::uint8_t> out(EVP_MAX_MD_SIZE);
  unsigned int len = 0;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, digest_of(algorithm), nullptr);
  EVP_DigestUpdate(ctx, &id, 1);
  EVP_DigestUpdate(ctx, secret.data(), secret.size());
  EVP_DigestUpdate(ctx, challenge.data(), challenge.size());
  EVP_DigestFinal_ex(ctx, out.data(), &len);
  EVP_MD_CTX_free(ctx);
  out.resize(len);
  return out;
}

std::optional<std::vector<std::uint8_t>> ChapTarget::decode_binary(const std::string& v) {
  if (v.size() < 3 || v[0] != '0') return std::nullopt;
  std::vector<std::uint8_t> out;
  if (v[1] == 'x' || v[1] == 'X') {
    std::string hex = v.substr(2);
    if (hex.size() % 2) hex.insert(hex.begin(), '0');
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    for (std::size_t i = 0; i < hex.size(); i += 2) {
      const int hi = nib(hex[i]), lo = nib(hex[i + 1]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<std::uint8_t>(hi << 4 | lo));
    }
    return out;
  }
  if (v[1] == 'b' || v[1] == 'B') {
    const std::string b64 = v.substr(2);
    if (b64.size() % 4) return std::nullopt;
    out.resize(b64.size() / 4 * 3);
    const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(b64.data()),
                                  static_cast<int>(b64.size()));
    if (n < 0) return std::nullopt;
    std::size_t pad = 0;
    if (!b64.empty() && b64.back() == '=') ++pad;
    if (b64.size() > 1 && b64[b64.size() - 2] == '=') ++pad;
    out.resize(static_cast<std::size_t>(n) - pad);
    return out;
  }
  return std::nullopt;
}

std::string ChapTarget::encode_hex(const std::vector<std::uint8_t>& b) {
  static const char* digits = "0123456789abcdef";
  std::string s = "0x";
  for (auto x : b) {
    s += digits[x >> 4];
    s += digits[x & 15];
  }
  return s;
}

Result<std::vector<KeyValue>> ChapTarget::on_algorithms(const std::string& list) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    const std::string a = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (a == "5" || a == "6" || a == "7") {
      algorithm_ = std::stoi(a);
      break;
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (algorithm_ == 0) return auth_failure(fmt::format("no supported algorithm in CHAP_A={}", list));
  std::uint8_t rnd[1 + 32];
  if (RAND_bytes(rnd, sizeof rnd) != 1)
    return Status::error(Errc::io_error, "no random bytes for a CHAP challenge");
  id_ = rnd[0];
  challenge_.assign(rnd + 1, rnd + sizeof rnd);
  return std::vector<KeyValue>{{"CHAP_A", std::to_string(algorithm_)},
                               {"CHAP_I", std::to_string(id_)},
                               {"CHAP_C", encode_hex(challenge_)}};
}

Result<std::vector<KeyValue>> ChapTarget::on_response(const std::vector<KeyValue>& kvs) {
  if (algorithm_ == 0) return auth_failure("CHAP_R before CHAP_A");
  std::map<std::string, std::string> m;
  for (const auto& kv : kvs) m[kv.key] = kv.value;
  if (!m.count("CHAP_N") || !m.count("CHAP_R")) return auth_failure("CHAP_N or CHAP_R missing");
  const std::string& r = m["CHAP_R"];
  // Check the encoded length before decoding: a response is exactly one digest.
  const std::size_t want = digest_size(algorithm_);
  if (r.size() > 2 + 4 * want) return auth_failure("CHAP_R is too long");
  auto got = decode_binary(r);
  if (!got || got->size() != want) return auth_failure("CHAP_R is malformed");
  const auto expected = response(algorithm_, id_, creds_.secret, challenge_);
  const bool user_ok = m["CHAP_N"] == creds_.user;
  const bool resp_ok = CRYPTO_memcmp(got->data(), expected.data(), want) == 0;
  if (!user_ok || !resp_ok)
    return auth_failure(fmt::format("wrong user or secret for CHAP_N={}", m["CHAP_N"]));

  std::vector<KeyValue> out;
  const bool mutual_asked = m.count("CHAP_I") || m.count("CHAP_C");
  if (mutual_asked) {
    if (!creds_.target_secret) return auth_failure("initiator asked for mutual CHAP, none is configured");
    if (!m.count("CHAP_I") || !m.count("CHAP_C")) return auth_failure("mutual CHAP needs CHAP_I and CHAP_C");
    auto id = parse_number(m["CHAP_I"], 0, 255);
    if (!id) return auth_failure("CHAP_I out of range");
    if (m["CHAP_C"].size() > 2 + 2 * 1024) return auth_failure("CHAP_C is too long");
    auto challenge = decode_binary(m["CHAP_C"]);
    if (!challenge || challenge->empty() || challenge->size() > 1024)
      return auth_failure("CHAP_C is malformed");
    if (*challenge == challenge_) return auth_failure("the initiator reflected our challenge");
    out.push_back({"CHAP_N", *creds_.target_user});
    out.push_back({"CHAP_R", encode_hex(response(algorithm_, static_cast<std::uint8_t>(*id),
                                                 *creds_.target_secret, *challenge))});
  } else if (creds_.target_secret) {
    return auth_failure("mutual CHAP is required but the initiator did not ask for it");
  }
  authenticated_ = true;
  return out;
}

}  // namespace duplex::iscsi
