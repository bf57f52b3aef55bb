#pragma once
// One NBD connection: handshake (option haggling through Negotiator), then transmission.
//
//   handshake():    greeting -> client flags -> options ... -> GO/EXPORT_NAME   (or close)
//                   STARTTLS upgrades the transport in place and restarts negotiation.
//   transmission(): reader loop  : header -> check_request() -> [payload] -> spawn execute()
//                   execute()    : volume I/O -> enqueue reply                (many at once)
//                   writer loop  : gathers queued replies into one write
//                   end          : EOF/DISC/error/stop -> wait for in-flight -> flush -> close
//
// Everything runs on one loop thread; nothing is locked. Back-pressure: at most max_inflight
// requests of a connection are executing; beyond that the reader stops reading the socket and
// TCP flow control pushes back on the client.
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "duplex/base/status.h"
#include "duplex/base/task.h"
#include "duplex/nbd/export.h"
#include "duplex/nbd/negotiation.h"
#include "duplex/nbd/proto.h"
#include "duplex/nbd/transport.h"
#include "duplex/volume/block_volume.h"

namespace duplex::nbd {

// --- request validation, without I/O (fuzzed) ---
struct TxState {
  std::uint64_t size = 0;
  bool read_only = false;
  bool structured = false;
  std::size_t contexts = 0;
  std::uint16_t tx_flags = 0;
  bool stopping = false;
  std::uint32_t max_payload = kMaxPayload;
};

struct Checked {
  std::uint32_t error = kOk;  // reply with this error (after reading/draining the payload)
  std::string message;        // for the structured error chunk and the log
  std::uint64_t payload = 0;  // bytes of WRITE data that follow the header
  bool disconnect = false;    // NBD_CMD_DISC
  bool fatal = false;         // bad magic: the stream cannot be resynchronised
};
Checked check_request(const Request& r, const TxState& s);
// Maps a volume error onto the protocol's errno for command `cmd`.
std::uint32_t to_nbd_error(const Status& s, std::uint16_t cmd);

// A page-aligned I/O buffer, recycled per connection.
class IoBuf {
 public:
  IoBuf() = default;
  explicit IoBuf(std::size_t cap);
  IoBuf(IoBuf&& o) noexcept : p_(std::exchange(o.p_, nullptr)), cap_(std::exchange(o.cap_, 0)) {}
  IoBuf& operator=(IoBuf&& o) noexcept;
  ~IoBuf();
  std::byte* data() const { return p_; }
  std::size_t capacity() const { return cap_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  std::byte* p_ = nullptr;
  std::size_t cap_ = 0;
};

class BufferCache {
 public:
  IoBuf get(std::size_t n);
  void put(IoBuf b);

 private:
  static int cls(std::size_t n);
  std::vector<IoBuf> free_[16];  // 4 KiB << i
};

struct SessionOptions {
  unsigned max_inflight = 128;
  // READ/WRITE payload bytes of a connection held in memory at once (requests executing and
  // replies not yet written); a client that does not read its replies cannot grow it further.
  std::size_t max_inflight_bytes = std::size_t{64} * 1024 * 1024;
  std::size_t read_buffer = std::size_t{256} * 1024;
};

struct SessionStats {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::uint64_t bytes_read = 0;     // served to the client
  std::uint64_t bytes_written = 0;  // written by the client
};

class Session {
 public:
  Session(std::unique_ptr<Transport> t, const ExportCatalogue& cat, NegotiationPolicy policy,
          SessionOptions opts, std::string id);
  ~Session();

  // True: an export was chosen (export_info()), continue with transmission().
  Task<bool> handshake();
  const ExportInfo& export_info() const { return neg_.export_info(); }
  const Negotiator& negotiator() const { return neg_; }
  Task<void> transmission(volume::BlockVolume* vol);

  // Shutdown: new requests are answered ESHUTDOWN; the owner closes the transport after a grace.
  void request_stop() { stopping_ = true; }
  Transport& transport() { return *t_; }
  const std::string& id() const { return id_; }
  const SessionStats& stats() const { return stats_; }
  const std::string& close_reason() const { return close_reason_; }

 private:
  struct Req {
    std::uint16_t flags, type;
    std::uint64_t cookie, offset;
    std::uint32_t length;
  };
  struct OutMsg;

  // Buffered reading.
  Task<Status> fill(std::size_t n);
  Task<Status> read_exact(std::byte* dst, std::size_t n);
  Task<Status> skip(std::uint64_t n);
  std::span<const std::byte> buffered() const { return {rbuf_.data() + rpos_, rend_ - rpos_}; }
  Task<Status> write_now(std::span<const std::byte> bytes);

  Task<void> execute(Req q, IoBuf payload);
  Task<void> block_status(Req q);
  void send_ok(const Req& q);
  void send_error(const Req& q, std::uint32_t err, std::string_view msg);
  void send_read(const Req& q, IoBuf data);
  void enqueue(std::unique_ptr<OutMsg> m);
  Task<void> writer_loop();
  void op_done();
  void wake();
  void release(std::size_t bytes) { inflight_bytes_ -= bytes; }

  struct Waiter {
    Session* s;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { s->waiter_ = h; }
    void await_resume() const noexcept {}
  };

  std::unique_ptr<Transport> t_;
  Negotiator neg_;
  SessionOptions opts_;
  std::string id_;
  IoBuf rbuf_;
  std::size_t rcap_ = 0, rpos_ = 0, rend_ = 0;
  BufferCache cache_;

  volume::BlockVolume* vol_ = nullptr;
  TxState tx_;
  std::vector<MetaContext> contexts_;
  unsigned inflight_ = 0;
  std::size_t inflight_bytes_ = 0;
  bool writing_ = false;
  bool dead_ = false;
  bool stopping_ = false;
  bool dirty_ = false;  // a write completed since the last flush
  std::coroutine_handle<> waiter_;
  std::vector<std::unique_ptr<OutMsg>> queue_;
  SessionStats stats_;
  std::string close_reason_;
};

}  // namespace duplex::nbd
