#pragma once
// The byte stream a session runs over: a TCP socket (optionally upgraded to TLS), or, in the
// fuzzers and unit tests, memory. Every operation completes on the session's loop thread.
#include <cstddef>
#include <span>
#include <string>

#include "duplex/base/status.h"
#include "duplex/base/task.h"

namespace duplex::nbd {

struct ConstBuf {
  const void* data;
  std::size_t size;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Reads at least one byte; 0 means the peer closed the stream.
  virtual Task<Result<std::size_t>> read_some(std::span<std::byte> buf) = 0;
  // Writes every byte of every buffer, in order.
  virtual Task<Status> write_all(std::span<const ConstBuf> bufs) = 0;
  // Can start_tls() work (a TLS context is configured)?
  virtual bool tls_capable() const = 0;
  virtual bool tls_active() const = 0;
  // Runs the server side of a TLS handshake over the stream.
  virtual Task<Status> start_tls() = 0;
  // Lets the event loop run the handlers that are ready before continuing (so that replies
  // completed in one batch leave in one write). Transports without a loop continue at once.
  virtual Task<void> yield() { co_return; }
  // Aborts pending reads/writes (they complete with an error) and closes.
  virtual void close() = 0;
  // For logs: "127.0.0.1:53412".
  virtual const std::string& peer() const = 0;
};

}  // namespace duplex::nbd
