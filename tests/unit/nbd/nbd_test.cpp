#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "run_session.h"

using namespace duplex;
using namespace duplex::nbd;
using namespace duplex::nbd::testing;

namespace {

// Parses the server's transmission-phase replies (after the handshake bytes).
struct Reply {
  std::uint64_t cookie = 0;
  std::uint32_t error = 0;
  std::vector<std::byte> data;  // READ data (simple or OFFSET_DATA)
  std::map<std::uint32_t, std::vector<std::pair<std::uint32_t, std::uint32_t>>> extents;  // by context id
  bool done = false;
};

std::map<std::uint64_t, Reply> parse_replies(std::span<const std::byte> b, std::size_t pos,
                                             const std::map<std::uint64_t, std::uint32_t>& read_len) {
  std::map<std::uint64_t, Reply> out;
  while (pos + 16 <= b.size()) {
    const auto magic = load_be<std::uint32_t>(b.data() + pos);
    if (magic == kSimpleReplyMagic) {
      Reply& r = out[load_be<std::uint64_t>(b.data() + pos + 8)];
      r.cookie = load_be<std::uint64_t>(b.data() + pos + 8);
      r.error = load_be<std::uint32_t>(b.data() + pos + 4);
      r.done = true;
      pos += 16;
      auto it = read_len.find(r.cookie);
      if (!r.error && it != read_len.end()) {
        r.data.assign(b.begin() + static_cast<long>(pos), b.begin() + static_cast<long>(pos + it->second));
        pos += it->second;
      }
    } else if (magic == kStructuredReplyMagic) {
      const auto flags = load_be<std::uint16_t>(b.data() + pos + 4);
      const auto type = load_be<std::uint16_t>(b.data() + pos + 6);
      const auto cookie = load_be<std::uint64_t>(b.data() + pos + 8);
      const auto len = load_be<std::uint32_t>(b.data() + pos + 16);
      const std::byte* p = b.data() + pos + 20;
      Reply& r = out[cookie];
      r.cookie = cookie;
      r.done = flags & kReplyFlagDone;
      if (type == kReplyTypeOffsetData) r.data.assign(p + 8, p + len);
      if (type == kReplyTypeError) r.error = load_be<std::uint32_t>(p);
      if (type == kReplyTypeBlockStatus) {
        const auto id = load_be<std::uint32_t>(p);
        for (std::uint32_t i = 4; i + 8 <= len; i += 8)
          r.extents[id].emplace_back(load_be<std::uint32_t>(p + i), load_be<std::uint32_t>(p + i + 4));
      }
      pos += 20 + len;
    } else {
      ADD_FAILURE() << "bad reply magic at " << pos;
      break;
    }
  }
  return out;
}

// Length of the handshake part of the server output: greeting + option replies (to GO's ACK).
std::size_t handshake_len(std::span<const std::byte> b) {
  std::size_t pos = sizeof(ServerGreeting);
  while (pos + 20 <= b.size()) {
    const auto opt = load_be<std::uint32_t>(b.data() + pos + 8);
    const auto type = load_be<std::uint32_t>(b.data() + pos + 12);
    const auto len = load_be<std::uint32_t>(b.data() + pos + 16);
    pos += 20 + len;
    if (opt == kOptGo && type == kRepAck) break;
  }
  return pos;
}

std::vector<std::byte> bytes(std::string_view s) {
  std::vector<std::byte> v(s.size());
  std::memcpy(v.data(), s.data(), s.size());
  return v;
}

}  // namespace

TEST(NbdCheckRequest, ErrorsAreTheSpecs) {
  TxState s;
  s.size = 1 << 20;
  s.structured = true;
  s.contexts = 1;
  s.tx_flags = kFlagHasFlags | kFlagSendFua | kFlagSendFlush;
  auto chk = [&](std::uint16_t type, std::uint16_t flags, std::uint64_t off, std::uint32_t len) {
    Request r;
    r.magic.set(kRequestMagic);
    r.type.set(type);
    r.flags.set(flags);
    r.cookie.set(1);
    r.offset.set(off);
    r.length.set(len);
    return check_request(r, s);
  };
  EXPECT_EQ(chk(kCmdRead, 0, 0, 4096).error, kOk);
  EXPECT_EQ(chk(kCmdRead, 0, (1 << 20) - 1, 2).error, kEINVAL);
  EXPECT_EQ(chk(kCmdWrite, 0, (1 << 20) - 1, 2).error, kENOSPC);
  EXPECT_EQ(chk(kCmdWrite, 0, (1 << 20) - 1, 2).payload, 2u);  // drained even on error
  EXPECT_EQ(chk(kCmdWriteZeroes, 0, ~0ULL, 2).error, kENOSPC);
  EXPECT_EQ(chk(kCmdTrim, 0, ~0ULL - 1, 4).error, kEINVAL);  // overflow
  EXPECT_EQ(chk(kCmdRead, 0, 0, 0).error, kEINVAL);
  EXPECT_EQ(chk(kCmdRead, 0, 0, kMaxPayload + 1).error, kEINVAL);
  EXPECT_EQ(chk(kCmdRead, kCmdFlagDf, 0, kMaxPayload + 1).error, kEOVERFLOW);
  EXPECT_EQ(chk(kCmdRead, kCmdFlagReqOne, 0, 1).error, kEINVAL);
  EXPECT_EQ(chk(99, 0, 0, 1).error, kEINVAL);
  EXPECT_EQ(chk(kCmdFlush, 0, 0, 1).error, kEINVAL);
  EXPECT_EQ(chk(kCmdFlush, kCmdFlagFua, 0, 0).error, kOk);
  EXPECT_EQ(chk(kCmdWriteZeroes, kCmdFlagFastZero | kCmdFlagNoHole, 0, 1).error, kENOTSUP);
  EXPECT_TRUE(chk(kCmdDisc, 0, 0, 0).disconnect);
  s.read_only = true;
  EXPECT_EQ(chk(kCmdWrite, 0, 0, 1).error, kEPERM);
  EXPECT_EQ(chk(kCmdTrim, 0, 0, 1).error, kEPERM);
  s.read_only = false;
  s.contexts = 0;
  EXPECT_EQ(chk(kCmdBlockStatus, 0, 0, 1).error, kEINVAL);
  s.stopping = true;
  EXPECT_EQ(chk(kCmdRead, 0, 0, 1).error, kESHUTDOWN);
  Request bad{};
  EXPECT_TRUE(check_request(bad, s).fatal);
}

TEST(NbdNegotiation, GreetingAndUnknownFlags) {
  TestCatalogue cat;
  Negotiator n(cat, {});
  auto g = Negotiator::greeting();
  ASSERT_EQ(g.size(), 18u);
  EXPECT_EQ(load_be<std::uint64_t>(g.data()), kNbdMagic);
  EXPECT_FALSE(n.on_client_flags(1u << 5));
  EXPECT_TRUE(n.on_client_flags(kClientFixedNewstyle));
}

TEST(NbdNegotiation, TlsRequiredRefusesOptionsButAllowsAbort) {
  TestCatalogue cat;
  NegotiationPolicy p;
  p.tls_required = true;
  Negotiator n(cat, p);
  ASSERT_TRUE(n.on_client_flags(kClientFixedNewstyle));
  EXPECT_EQ(n.on_option(kOptList, {}), Action::next_option);
  EXPECT_EQ(load_be<std::uint32_t>(n.out().data() + 12), kRepErrTlsReqd);
  n.out().clear();
  EXPECT_EQ(n.on_option(kOptStartTls, {}), Action::next_option);  // TLS not available here
  EXPECT_EQ(load_be<std::uint32_t>(n.out().data() + 12), kRepErrUnsup);
  n.out().clear();
  EXPECT_EQ(n.on_option(kOptExportName, bytes("vol")), Action::close);
  EXPECT_EQ(n.on_option(kOptAbort, {}), Action::close);
}

TEST(NbdNegotiation, MetaContextsNeedStructuredRepliesAndMatchSnapshots) {
  TestCatalogue cat;
  Negotiator n(cat, {});
  ASSERT_TRUE(n.on_client_flags(kClientFixedNewstyle));
  Wire m;
  m.be<std::uint32_t>(3).str("vol").be<std::uint32_t>(1).be<std::uint32_t>(25).str(
      "x-duplex:changed-since:s1");
  n.on_option(kOptSetMetaContext, m.b);
  EXPECT_EQ(load_be<std::uint32_t>(n.out().data() + 12), kRepErrInvalid);
  n.out().clear();
  n.on_option(kOptStructuredReply, {});
  n.out().clear();
  n.on_option(kOptSetMetaContext, m.b);
  EXPECT_EQ(load_be<std::uint32_t>(n.out().data() + 12), kRepMetaContext);
  Wire l;  // LIST with no query: everything
  l.be<std::uint32_t>(3).str("vol").be<std::uint32_t>(0);
  n.out().clear();
  n.on_option(kOptListMetaContext, l.b);
  int contexts = 0;
  for (std::size_t p = 0; p + 20 <= n.out().size();) {
    contexts += load_be<std::uint32_t>(n.out().data() + p + 12) == kRepMetaContext;
    p += 20 + load_be<std::uint32_t>(n.out().data() + p + 16);
  }
  EXPECT_EQ(contexts, 3);  // base:allocation, x-duplex:changed-since:s1, qemu:dirty-bitmap:s1
  Wire bad;                // truncated query
  bad.be<std::uint32_t>(3).str("vol").be<std::uint32_t>(1).be<std::uint32_t>(40).str("base:");
  n.out().clear();
  n.on_option(kOptSetMetaContext, bad.b);
  EXPECT_EQ(load_be<std::uint32_t>(n.out().data() + 12), kRepErrInvalid);
}

class NbdSession : public ::testing::TestWithParam<std::size_t> {};

TEST_P(NbdSession, WriteReadBlockStatusAndErrorsKeepSync) {
  TestCatalogue cat;
  Wire w = standard_handshake(true);
  std::vector<std::byte> payload(8192);
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = std::byte(i * 7);
  w.req(kCmdWrite, kCmdFlagFua, 1, 65536, 8192);
  w.b.insert(w.b.end(), payload.begin(), payload.end());
  w.req(kCmdRead, 0, 2, 65536, 8192);
  w.req(kCmdRead, 0, 3, (1 << 20) - 1, 2);   // EINVAL
  w.req(kCmdWrite, 0, 4, (1 << 20) - 1, 2);  // ENOSPC, payload drained
  w.b.push_back(std::byte{1});
  w.b.push_back(std::byte{2});
  w.req(kCmdBlockStatus, 0, 5, 0, 1 << 20);
  w.req(kCmdFlush, 0, 6, 0, 0);
  w.req(kCmdWriteZeroes, 0, 7, 65536, 4096);
  w.req(kCmdRead, kCmdFlagDf, 8, 65536, 8192);
  w.req(kCmdDisc, 0, 9, 0, 0);
  auto r = run_session(cat, w.b, GetParam());
  ASSERT_TRUE(r.transmitted) << r.reason;
  auto replies = parse_replies(r.out, handshake_len(r.out), {});
  EXPECT_EQ(replies[1].error, kOk);
  EXPECT_EQ(replies[2].data, payload);
  EXPECT_EQ(replies[3].error, kEINVAL);
  EXPECT_EQ(replies[4].error, kENOSPC);
  ASSERT_EQ(replies[5].extents.size(), 2u);  // both contexts
  const auto& alloc = replies[5].extents[1];
  ASSERT_GE(alloc.size(), 3u);
  EXPECT_EQ(alloc[0], std::make_pair(65536u, kStateHole | kStateZero));
  EXPECT_EQ(alloc[1], std::make_pair(8192u, 0u));
  const auto& changed = replies[5].extents[2];
  ASSERT_GE(changed.size(), 2u);
  EXPECT_EQ(changed[1], std::make_pair(8192u, kStateDirty));
  EXPECT_EQ(replies[6].error, kOk);
  EXPECT_EQ(replies[7].error, kOk);
  std::vector<std::byte> expect = payload;
  std::fill(expect.begin(), expect.begin() + 4096, std::byte{0});
  EXPECT_EQ(replies[8].data, expect);
  EXPECT_EQ(replies.count(9), 0u);  // DISC has no reply
  EXPECT_EQ(cat.vol().fua_writes, 1u);
}

INSTANTIATE_TEST_SUITE_P(Chunks, NbdSession, ::testing::Values(1u << 20, 1u, 7u, 28u));

TEST(NbdSession, SimpleRepliesAndReadOnly) {
  TestCatalogue cat;
  Wire w = standard_handshake(false, "ro");
  w.req(kCmdWrite, 0, 1, 0, 4);
  w.str("abcd");
  w.req(kCmdRead, 0, 2, 0, 4);
  w.req(kCmdBlockStatus, 0, 3, 0, 4);
  w.req(kCmdRead, kCmdFlagDf, 4, 0, 4);  // DF without structured replies: invalid flag
  auto r = run_session(cat, w.b);
  ASSERT_TRUE(r.transmitted);
  auto replies = parse_replies(r.out, handshake_len(r.out), {{2, 4}});
  EXPECT_EQ(replies[1].error, kEPERM);
  EXPECT_EQ(replies[2].error, kOk);
  EXPECT_EQ(replies[2].data.size(), 4u);
  EXPECT_EQ(replies[3].error, kEINVAL);
  EXPECT_EQ(replies[4].error, kEINVAL);
}

TEST(NbdSession, VolumeErrorsBecomeEio) {
  TestCatalogue cat;
  cat.vol().fail_reads = true;
  Wire w = standard_handshake(true);
  w.req(kCmdRead, 0, 1, 0, 512);
  auto r = run_session(cat, w.b);
  auto replies = parse_replies(r.out, handshake_len(r.out), {});
  EXPECT_EQ(replies[1].error, kEIO);
  EXPECT_TRUE(replies[1].done);
}

TEST(NbdSession, BadMagicAndTruncationCloseWithoutCrash) {
  TestCatalogue cat;
  Wire w = standard_handshake(true);
  w.be<std::uint32_t>(0xdeadbeef).be<std::uint64_t>(0).be<std::uint64_t>(0).be<std::uint64_t>(0);
  auto r = run_session(cat, w.b);
  EXPECT_NE(r.reason.find("magic"), std::string::npos);
  Wire t = standard_handshake(true);
  t.req(kCmdWrite, 0, 1, 0, 4096);
  t.str("only a few bytes");
  r = run_session(cat, t.b);
  EXPECT_TRUE(r.transmitted);
  Wire opt;  // option header cut short
  opt.be<std::uint32_t>(kClientFixedNewstyle).be<std::uint64_t>(kIHaveOpt).be<std::uint16_t>(1);
  r = run_session(cat, opt.b);
  EXPECT_FALSE(r.transmitted);
}

TEST(NbdSession, ExportNameOldStyleEntry) {
  TestCatalogue cat;
  Wire w;
  w.be<std::uint32_t>(kClientFixedNewstyle);  // no NO_ZEROES: 124 zero bytes follow
  w.opt(kOptExportName, bytes("vol"));
  auto r = run_session(cat, w.b);
  ASSERT_TRUE(r.transmitted);
  EXPECT_EQ(r.out.size(), 18u + 10 + 124);
  Wire u;
  u.be<std::uint32_t>(kClientFixedNewstyle);
  u.opt(kOptExportName, bytes("nope"));
  r = run_session(cat, u.b);
  EXPECT_FALSE(r.transmitted);
}
