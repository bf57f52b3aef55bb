#include "duplex/iscsi/login.h"

#include <fmt/format.h>

#include <algorithm>

namespace duplex::iscsi {

namespace {
constexpr std::uint8_t kTransit = 0x80, kContinue = 0x40;
constexpr std::uint8_t kSecurity = 0, kOperational = 1, kFullFeature = 3;
constexpr std::uint32_t kCmdWindow = 128;

bool is_security_key(const std::string& k) { return k == "AuthMethod" || k.rfind("CHAP_", 0) == 0; }
}  // namespace

std::string LoginMachine::initiator_port() const {
  std::string isid;
  for (auto b : isid_) isid += fmt::format("{:02x}", b);
  return fmt::format("{},i,0x{}", ops_.params().initiator_name, isid);
}

LoginPdu LoginMachine::respond(const Bhs& req, std::vector<KeyValue> kvs, bool transit, std::uint8_t nsg) {
  if (!tpgt_sent_ && !ops_.params().discovery && started_) {
    kvs.push_back({"TargetPortalGroupTag", std::to_string(policy_.tpgt)});
    tpgt_sent_ = true;
  }
  LoginPdu out;
  out.data = encode_text(kvs);
  BhsBuilder b(Opcode::login_response);
  const std::uint8_t csg = (req.flags() >> 2) & 0x3;
  b.flags(static_cast<std::uint8_t>((transit ? kTransit : 0) | (csg << 2) | (transit ? nsg : 0)))
      .byte(2, 0)
      .byte(3, 0)
      .data_segment_length(static_cast<std::uint32_t>(out.data.size()))
      .copy(8, isid_)
      .u16(14, tsih_)
      .itt(req.itt())
      .u32(24, stat_sn_++)
      .u32(28, exp_cmd_sn_)
      .u32(32, exp_cmd_sn_ + kCmdWindow - 1);
  out.bhs = b.bytes();
  return out;
}

LoginPdu LoginMachine::fail(const Bhs& req, LoginStatus status, std::string why) {
  failed_ = true;
  error_ = std::move(why);
  LoginPdu out;
  BhsBuilder b(Opcode::login_response);
  b.flags(static_cast<std::uint8_t>(req.flags() & 0x0c))
      .copy(8, isid_)
      .u16(14, 0)
      .itt(req.itt())
      .u32(24, stat_sn_++)
      .u32(28, exp_cmd_sn_)
      .u32(32, exp_cmd_sn_ + kCmdWindow - 1)
      .byte(36, static_cast<std::uint8_t>(static_cast<std::uint16_t>(status) >> 8))
      .byte(37, static_cast<std::uint8_t>(static_cast<std::uint16_t>(status)));
  out.bhs = b.bytes();
  return out;
}

Status LoginMachine::first_request(const std::vector<KeyValue>& kvs) {
  (void)kvs;
  const auto& p = ops_.params();
  if (p.initiator_name.empty()) return Status::error(Errc::invalid, "login without InitiatorName");
  if (!p.discovery && p.target_name.empty())
    return Status::error(Errc::invalid, "normal login without TargetName");
  return Status::ok();
}

LoginPdu LoginMachine::on_request(const Bhs& req, std::span<const std::uint8_t> data) {
  if (failed_ || full_feature_)
    return fail(req, LoginStatus::invalid_during_login, "login after the login phase ended");
  if (req.opcode() != Opcode::login_request)
    return fail(req, LoginStatus::initiator_error, "not a Login Request");
  const std::uint8_t flags = req.flags();
  const bool transit = flags & kTransit, cont = flags & kContinue;
  const std::uint8_t csg = (flags >> 2) & 0x3, nsg = flags & 0x3;
  if (transit && cont) return fail(req, LoginStatus::initiator_error, "T and C both set");
  if (req.byte(3) > 0) return fail(req, LoginStatus::unsupported_version, "Version-min above 0");
  if (csg == 2 || csg == kFullFeature)
    return fail(req, LoginStatus::initiator_error, "invalid current stage");
  if (transit && (nsg == 2 || nsg <= csg))
    return fail(req, LoginStatus::initiator_error, "invalid next stage");

  if (!started_) {
    std::copy_n(req.bytes().begin() + 8, 6, isid_.begin());
    tsih_ = req.u16(14);
    cid_ = req.u16(20);
    itt_ = req.itt();
    exp_cmd_sn_ = req.u32(24);
    stat_sn_ = req.u32(28);
    stage_ = csg;
  } else {
    std::array<std::uint8_t, 6> isid{};
    std::copy_n(req.bytes().begin() + 8, 6, isid.begin());
    if (isid != isid_ || req.u16(20) != cid_)
      return fail(req, LoginStatus::initiator_error, "ISID or CID changed during login");
    if (csg < stage_) return fail(req, LoginStatus::initiator_error, "stage went backwards");
    stage_ = csg;
  }
  if (tsih_ != 0)
    return fail(req, LoginStatus::session_does_not_exist, "session continuation is not supported");

  // Text split across PDUs: collect, answer with an empty response, process at the last part.
  partial_.insert(partial_.end(), data.begin(), data.end());
  if (partial_.size() > std::size_t{64} * 1024)
    return fail(req, LoginStatus::initiator_error, "login text over 64 KiB");
  if (cont) {
    LoginPdu ack = respond(req, {}, false, 0);
    return ack;
  }
  auto kvs = parse_text(partial_);
  partial_.clear();
  if (!kvs) return fail(req, LoginStatus::initiator_error, kvs.status().message());

  // Split security keys from the rest; the declarative ones of the first PDU go through ops_.
  std::vector<KeyValue> security, operational;
  for (auto& kv : *kvs) (is_security_key(kv.key) ? security : operational).push_back(kv);
  if (csg == kOperational && !security.empty())
    return fail(req, LoginStatus::initiator_error, "security keys in the operational stage");

  // Non-security keys are negotiated in whichever stage they arrive (an initiator may start
  // operational negotiation during the security stage); every offered key is answered.
  auto negotiated = ops_.apply(operational);
  if (!negotiated) return fail(req, LoginStatus::initiator_error, negotiated.status().message());
  std::vector<KeyValue> answer = std::move(*negotiated);

  if (!started_) {
    started_ = true;
    if (Status st = first_request(*kvs); !st) return fail(req, LoginStatus::missing_parameter, st.message());
    const auto& p = ops_.params();
    const std::string target = p.discovery ? std::string() : p.target_name;
    if (!p.discovery && !policy_.target_exists(target))
      return fail(req, LoginStatus::not_found, fmt::format("no target {}", target));
    if (!policy_.allowed(p.initiator_name, target))
      return fail(req, LoginStatus::authorization_failure,
                  fmt::format("initiator {} may not log in to {}", p.initiator_name,
                              target.empty() ? "discovery" : target));
    if (auto creds = policy_.chap_for(target)) {
      chap_.emplace(*creds);
      auth_ = Auth::wants_chap;
    }
    if (csg == kOperational && auth_ != Auth::none_needed)
      return fail(req, LoginStatus::authentication_failure,
                  "CHAP is required but the security stage was skipped");
  }

  if (csg == kSecurity) {
    std::string auth_method, chap_a;
    bool has_chap_r = false;
    for (const auto& kv : security) {
      if (kv.key == "AuthMethod") auth_method = kv.value;
      if (kv.key == "CHAP_A") chap_a = kv.value;
      if (kv.key == "CHAP_R") has_chap_r = true;
    }
    if (!auth_method.empty()) {
      std::vector<std::string> offered;
      for (std::size_t s = 0;;) {
        const std::size_t c = auth_method.find(',', s);
        offered.push_back(auth_method.substr(s, c == std::string::npos ? std::string::npos : c - s));
        if (c == std::string::npos) break;
        s = c + 1;
      }
      const std::string want = auth_ == Auth::none_needed ? "None" : "CHAP";
      if (std::find(offered.begin(), offered.end(), want) == offered.end()) {
        if (auth_ == Auth::none_needed)
          return fail(req, LoginStatus::authentication_failure,
                      "the initiator does not offer AuthMethod None");
        return fail(req, LoginStatus::authentication_failure,
                    "CHAP is required and the initiator does not offer it");
      }
      answer.insert(answer.begin(), {"AuthMethod", want});
    }
    if (!chap_a.empty()) {
      if (auth_ != Auth::wants_chap) return fail(req, LoginStatus::initiator_error, "CHAP_A out of sequence");
      auto r = chap_->on_algorithms(chap_a);
      if (!r) return fail(req, LoginStatus::authentication_failure, r.status().message());
      auth_ = Auth::challenged;
      answer.insert(answer.end(), r->begin(), r->end());
    } else if (has_chap_r) {
      if (auth_ != Auth::challenged) return fail(req, LoginStatus::initiator_error, "CHAP_R out of sequence");
      auto r = chap_->on_response(security);
      if (!r) return fail(req, LoginStatus::authentication_failure, r.status().message());
      auth_ = Auth::done;
      answer.insert(answer.end(), r->begin(), r->end());
    }
    const bool may_leave = auth_ == Auth::none_needed || auth_ == Auth::done;
    if (transit && !may_leave && auth_ != Auth::wants_chap && auth_ != Auth::challenged)
      return fail(req, LoginStatus::authentication_failure, "security stage left before authentication");
    if (transit && may_leave) {
      if (nsg == kFullFeature) {
        auto decl = ops_.finish();
        answer.insert(answer.end(), decl.begin(), decl.end());
        tsih_ = policy_.new_tsih();
        full_feature_ = true;
      }
      stage_ = nsg;
      return respond(req, std::move(answer), true, nsg);
    }
    return respond(req, std::move(answer), false, 0);
  }

  // Operational stage.
  if (transit) {
    auto decl = ops_.finish();
    answer.insert(answer.end(), decl.begin(), decl.end());
    tsih_ = policy_.new_tsih();
    full_feature_ = true;
    stage_ = kFullFeature;
    return respond(req, std::move(answer), true, kFullFeature);
  }
  return respond(req, std::move(answer), false, 0);
}

}  // namespace duplex::iscsi
