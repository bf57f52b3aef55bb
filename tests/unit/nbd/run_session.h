#pragma once
// Runs one whole NBD session over MemTransport, synchronously.
#include <memory>

#include "duplex/nbd/session.h"
#include "mem_transport.h"
#include "test_catalogue.h"

namespace duplex::nbd::testing {

struct SessionRun {
  bool transmitted = false;
  std::vector<std::byte> out;
  std::string reason;
};

inline SessionRun run_session(TestCatalogue& cat, std::vector<std::byte> in, std::size_t chunk = 1 << 20,
                              NegotiationPolicy pol = {}) {
  auto t = std::make_unique<MemTransport>(std::move(in), chunk);
  MemTransport* raw = t.get();
  SessionRun r;
  {
    Session s(std::move(t), cat, pol, SessionOptions{}, "test");
    r.transmitted = sync_wait(s.handshake());
    if (r.transmitted) {
      auto* v = cat.volume(s.export_info().name);
      if (v) sync_wait(s.transmission(v));
    }
    r.reason = s.close_reason();
    r.out = std::move(raw->out);
  }
  return r;
}

}  // namespace duplex::nbd::testing
