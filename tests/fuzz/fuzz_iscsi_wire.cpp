// libFuzzer target: everything an iSCSI initiator controls before a session exists. Byte 0 picks
// the parser; the rest is its input: a BHS, a login text segment (then negotiated), or CHAP
// answers. Invariants besides the sanitizers: parse/encode round trips, negotiated values stay
// within the RFC's ranges.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "duplex/iscsi/chap.h"
#include "duplex/iscsi/pdu.h"
#include "duplex/iscsi/text.h"

using namespace duplex::iscsi;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::span<const std::uint8_t> in(data + 1, size - 1);
  switch (data[0] % 3) {
    case 0: {
      if (in.size() < kBhsSize) return 0;
      Bhs h(std::span<const std::uint8_t, kBhsSize>(in.data(), kBhsSize));
      if (validate_bhs(h, 262144).is_ok() && (h.data_segment_length() > 262144 || h.total_ahs_bytes() > 256))
        std::abort();
      (void)digest(in);
      break;
    }
    case 1: {
      auto kvs = parse_text(in);
      if (!kvs) return 0;
      auto again = parse_text(encode_text(*kvs));
      if (!again || *again != *kvs) std::abort();
      OperationalNegotiation n(TargetLimits{});
      if (auto r = n.apply(*kvs); r) {
        n.finish();
        const auto& p = n.params();
        if (p.first_burst_length > p.max_burst_length || p.max_connections != 1 ||
            p.error_recovery_level != 0 || p.initiator_mrdsl < 512 || p.max_outstanding_r2t == 0)
          std::abort();
      }
      break;
    }
    default: {
      auto kvs = parse_text(in);
      if (!kvs) return 0;
      ChapTarget t({"alice", "secret-of-16byte", std::string("target"), std::string("another-secret-16")});
      if (!t.on_algorithms("5,7")) std::abort();
      auto r = t.on_response(*kvs);
      // Without the secret the fuzzer cannot produce a valid response (2^-128).
      if (r || t.authenticated()) std::abort();
      for (const auto& kv : *kvs) (void)ChapTarget::decode_binary(kv.value);
      break;
    }
  }
  return 0;
}
