#include "duplex/nbd/negotiation.h"

#include <algorithm>
#include <cstring>

namespace duplex::nbd {

std::string_view error_name(std::uint32_t e) {
  switch (e) {
    case kOk: return "OK";
    case kEPERM: return "EPERM";
    case kEIO: return "EIO";
    case kENOMEM: return "ENOMEM";
    case kEINVAL: return "EINVAL";
    case kENOSPC: return "ENOSPC";
    case kEOVERFLOW: return "EOVERFLOW";
    case kENOTSUP: return "ENOTSUP";
    case kESHUTDOWN: return "ESHUTDOWN";
    default: return "E?";
  }
}

namespace {

// Bounds-checked big-endian reader over option data.
class Cursor {
 public:
  explicit Cursor(std::span<const std::byte> d) : d_(d) {}
  bool u16(std::uint16_t& v) { return get(v); }
  bool u32(std::uint32_t& v) { return get(v); }
  bool str(std::size_t n, std::string& s) {
    if (n > left()) return false;
    s.assign(reinterpret_cast<const char*>(d_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  std::size_t left() const { return d_.size() - pos_; }

 private:
  template <typename T>
  bool get(T& v) {
    if (sizeof(T) > left()) return false;
    v = load_be<T>(d_.data() + pos_);
    pos_ += sizeof(T);
    return true;
  }
  std::span<const std::byte> d_;
  std::size_t pos_ = 0;
};

void put_bytes(std::vector<std::byte>& out, const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}
template <typename T>
void put_be(std::vector<std::byte>& out, T v) {
  unsigned char b[sizeof(T)];
  store_be<T>(b, v);
  put_bytes(out, b, sizeof b);
}

bool valid_utf8_name(std::string_view s) {
  // Export names and queries are UTF-8 without NUL; reject embedded NUL (never valid in a name).
  return s.find('\0') == std::string_view::npos;
}

}  // namespace

std::vector<std::byte> Negotiator::greeting() {
  ServerGreeting g{};
  g.magic.set(kNbdMagic);
  g.ihaveopt.set(kIHaveOpt);
  g.flags.set(kFlagFixedNewstyle | kFlagNoZeroes);
  std::vector<std::byte> out(sizeof g);
  std::memcpy(out.data(), &g, sizeof g);
  return out;
}

bool Negotiator::on_client_flags(std::uint32_t flags) {
  if (flags & ~(kClientFixedNewstyle | kClientNoZeroes)) {
    last_error_ = fmt::format("client sent unknown handshake flags {:#x}", flags);
    return false;
  }
  fixed_ = flags & kClientFixedNewstyle;
  no_zeroes_ = flags & kClientNoZeroes;
  return true;
}

void Negotiator::on_tls_started() {
  tls_active_ = true;
  structured_ = false;
  contexts_.clear();
  contexts_export_.clear();
}

std::uint16_t Negotiator::flags_for(const ExportInfo& e) const {
  std::uint16_t f = kFlagHasFlags | kFlagSendFlush | kFlagSendFua | kFlagCanMultiConn | kFlagSendCache;
  if (e.read_only) {
    f |= kFlagReadOnly;
  } else {
    f |= kFlagSendTrim | kFlagSendWriteZeroes | kFlagSendFastZero;
  }
  if (structured_) f |= kFlagSendDf;
  return f;
}

void Negotiator::reply(std::uint32_t option, std::uint32_t type, std::span<const std::byte> data) {
  OptionReplyHeader h{};
  h.magic.set(kOptReplyMagic);
  h.option.set(option);
  h.type.set(type);
  h.length.set(static_cast<std::uint32_t>(data.size()));
  put_bytes(out_, &h, sizeof h);
  if (!data.empty()) put_bytes(out_, data.data(), data.size());
}

template <typename... Args>
void Negotiator::error(std::uint32_t option, std::uint32_t type, fmt::format_string<Args...> f,
                       Args&&... args) {
  last_error_ = fmt::format(f, std::forward<Args>(args)...);
  reply(option, type, std::as_bytes(std::span(last_error_.data(), last_error_.size())));
}

Action Negotiator::on_oversized_option(std::uint32_t option) {
  ++options_seen_;
  if (!fixed_) return Action::close;
  error(option, kRepErrTooBig, "option {} data longer than {} bytes", option, kMaxOptionLength);
  return Action::next_option;
}

Action Negotiator::on_option(std::uint32_t option, std::span<const std::byte> data) {
  if (++options_seen_ > kMaxOptionsPerConnection) {
    last_error_ = "too many options";
    return Action::close;
  }
  if (option == kOptExportName) return opt_export_name(data);
  if (!fixed_) {
    // Non-fixed newstyle: only EXPORT_NAME exists, anything else ends the session.
    last_error_ = fmt::format("option {} from a client without fixed newstyle", option);
    return Action::close;
  }
  if (option == kOptAbort) {
    reply(option, kRepAck);
    last_error_ = "client aborted the handshake";
    return Action::close;
  }
  if (policy_.shutting_down) {
    error(option, kRepErrShutdown, "server is shutting down");
    return Action::next_option;
  }
  if (option == kOptStartTls) {
    if (!data.empty()) {
      error(option, kRepErrInvalid, "STARTTLS carries no data");
    } else if (tls_active_) {
      error(option, kRepErrInvalid, "TLS is already active");
    } else if (!policy_.tls_available) {
      error(option, kRepErrUnsup, "TLS is not configured on this server");
    } else {
      reply(option, kRepAck);
      return Action::start_tls;
    }
    return Action::next_option;
  }
  if (policy_.tls_required && !tls_active_) {
    error(option, kRepErrTlsReqd, "this server requires TLS: send NBD_OPT_STARTTLS first");
    return Action::next_option;
  }
  switch (option) {
    case kOptList: return opt_list(data);
    case kOptInfo:
    case kOptGo: return opt_info_go(option, data);
    case kOptStructuredReply:
      if (!data.empty()) {
        error(option, kRepErrInvalid, "STRUCTURED_REPLY carries no data");
      } else {
        structured_ = true;
        reply(option, kRepAck);
      }
      return Action::next_option;
    case kOptListMetaContext:
    case kOptSetMetaContext: return opt_meta(option, data);
    default: error(option, kRepErrUnsup, "option {} is not supported", option); return Action::next_option;
  }
}

Action Negotiator::opt_export_name(std::span<const std::byte> data) {
  std::string name(reinterpret_cast<const char*>(data.data()), data.size());
  if (policy_.tls_required && !tls_active_) {
    last_error_ = "EXPORT_NAME without TLS on a server that requires TLS";
    return Action::close;
  }
  if (policy_.shutting_down) {
    last_error_ = "server is shutting down";
    return Action::close;
  }
  auto e = valid_utf8_name(name) ? cat_.lookup(name) : std::nullopt;
  if (!e) {
    last_error_ = fmt::format("EXPORT_NAME: no export named '{}'", name);
    return Action::close;  // this option has no error reply: the spec says drop the session
  }
  if (contexts_export_ != e->name) contexts_.clear();
  export_ = std::move(*e);
  ExportNameReply r{};
  r.size.set(export_->size);
  r.flags.set(flags_for(*export_));
  put_bytes(out_, &r, sizeof r);
  if (!no_zeroes_) out_.resize(out_.size() + 124);
  return Action::transmission;
}

Action Negotiator::opt_list(std::span<const std::byte> data) {
  if (!data.empty()) {
    error(kOptList, kRepErrInvalid, "LIST carries no data");
    return Action::next_option;
  }
  for (const auto& e : cat_.list()) {
    std::vector<std::byte> d;
    put_be<std::uint32_t>(d, static_cast<std::uint32_t>(e.name.size()));
    put_bytes(d, e.name.data(), e.name.size());
    put_bytes(d, e.description.data(), e.description.size());
    reply(kOptList, kRepServer, d);
  }
  reply(kOptList, kRepAck);
  return Action::next_option;
}

Action Negotiator::opt_info_go(std::uint32_t option, std::span<const std::byte> data) {
  Cursor c(data);
  std::uint32_t name_len = 0;
  std::string name;
  std::uint16_t nreq = 0;
  if (!c.u32(name_len) || name_len > kMaxNameLength || !c.str(name_len, name) || !c.u16(nreq) ||
      c.left() != std::size_t{nreq} * 2) {
    error(option, kRepErrInvalid, "malformed {} request", option == kOptGo ? "GO" : "INFO");
    return Action::next_option;
  }
  bool want_name = false, want_desc = false;
  for (std::uint16_t i = 0; i < nreq; ++i) {
    std::uint16_t r = 0;
    (void)c.u16(r);
    want_name |= r == kInfoName;
    want_desc |= r == kInfoDescription;
  }
  auto e = valid_utf8_name(name) ? cat_.lookup(name) : std::nullopt;
  if (!e) {
    error(option, kRepErrUnknown, "no export named '{}'", name);
    return Action::next_option;
  }
  {
    InfoExport ie{};
    ie.type.set(kInfoExport);
    ie.size.set(e->size);
    ie.flags.set(flags_for(*e));
    reply(option, kRepInfo, std::as_bytes(std::span(&ie, 1)));
  }
  {
    InfoBlockSize bs{};
    bs.type.set(kInfoBlockSize);
    bs.minimum.set(e->min_block);
    bs.preferred.set(e->preferred_block);
    bs.maximum.set(e->max_block);
    reply(option, kRepInfo, std::as_bytes(std::span(&bs, 1)));
  }
  if (want_name) {
    std::vector<std::byte> d;
    put_be<std::uint16_t>(d, kInfoName);
    put_bytes(d, e->name.data(), e->name.size());
    reply(option, kRepInfo, d);
  }
  if (want_desc && !e->description.empty()) {
    std::vector<std::byte> d;
    put_be<std::uint16_t>(d, kInfoDescription);
    put_bytes(d, e->description.data(), e->description.size());
    reply(option, kRepInfo, d);
  }
  reply(option, kRepAck);
  if (option == kOptInfo) return Action::next_option;
  // Contexts selected for another export do not apply to this one.
  if (contexts_export_ != e->name) contexts_.clear();
  export_ = std::move(*e);
  return Action::transmission;
}

void Negotiator::match_contexts(const ExportInfo& e, std::string_view q, bool list,
                                std::vector<MetaContext>& into) const {
  auto add = [&](MetaContext::Kind k, std::string name, std::string snap) {
    for (const auto& m : into)
      if (m.name == name) return;
    into.push_back(MetaContext{0, k, std::move(name), std::move(snap)});
  };
  auto add_changed = [&](std::string_view prefix, std::string_view rest) {
    for (const auto& s : e.snapshots) {
      if ((list && rest.empty()) || rest == s)
        add(MetaContext::Kind::changed_since, std::string(prefix) + s, s);
    }
  };
  if (q == kContextBaseAllocation || (list && q == "base:")) {
    add(MetaContext::Kind::allocation, std::string(kContextBaseAllocation), {});
    return;
  }
  for (std::string_view prefix : {kContextChangedPrefix, kContextQemuDirtyPrefix}) {
    const std::string_view ns = prefix.substr(0, prefix.find(':') + 1);
    if (list && q == ns) {
      add_changed(prefix, {});
      return;
    }
    if (q.substr(0, prefix.size()) == prefix) {
      add_changed(prefix, q.substr(prefix.size()));
      return;
    }
  }
}

Action Negotiator::opt_meta(std::uint32_t option, std::span<const std::byte> data) {
  const bool list = option == kOptListMetaContext;
  if (!structured_) {
    error(option, kRepErrInvalid, "negotiate structured replies before metadata contexts");
    return Action::next_option;
  }
  Cursor c(data);
  std::uint32_t name_len = 0, nq = 0;
  std::string name;
  if (!c.u32(name_len) || name_len > kMaxNameLength || !c.str(name_len, name) || !c.u32(nq)) {
    error(option, kRepErrInvalid, "malformed metadata context request");
    return Action::next_option;
  }
  std::vector<std::string> queries;
  for (std::uint32_t i = 0; i < nq; ++i) {
    std::uint32_t ql = 0;
    std::string q;
    if (!c.u32(ql) || ql > kMaxNameLength || !c.str(ql, q)) {
      error(option, kRepErrInvalid, "malformed metadata context query {}", i);
      return Action::next_option;
    }
    if (q.find(':') == std::string::npos || !valid_utf8_name(q)) {
      error(option, kRepErrInvalid, "query '{}' does not start with a namespace", q);
      return Action::next_option;
    }
    queries.push_back(std::move(q));
  }
  if (c.left() != 0) {
    error(option, kRepErrInvalid, "trailing bytes after metadata context queries");
    return Action::next_option;
  }
  auto e = valid_utf8_name(name) ? cat_.lookup(name) : std::nullopt;
  if (!e) {
    error(option, kRepErrUnknown, "no export named '{}'", name);
    return Action::next_option;
  }
  std::vector<MetaContext> found;
  if (list && queries.empty()) {
    match_contexts(*e, "base:", true, found);
    match_contexts(*e, "x-duplex:", true, found);
    match_contexts(*e, "qemu:", true, found);
  }
  for (const auto& q : queries) match_contexts(*e, q, list, found);
  std::uint32_t next_id = 1;
  for (auto& m : found) {
    m.id = list ? 0 : next_id++;
    std::vector<std::byte> d;
    put_be<std::uint32_t>(d, m.id);
    put_bytes(d, m.name.data(), m.name.size());
    reply(option, kRepMetaContext, d);
  }
  reply(option, kRepAck);
  if (!list) {
    contexts_ = std::move(found);
    contexts_export_ = e->name;
  }
  return Action::next_option;
}

}  // namespace duplex::nbd
