#pragma once
// Per-volume I/O statistics for /metrics. Written on the volume's event loop, read by the metrics
// thread: every field is a relaxed atomic, so a scrape may see one operation's count before its
// bytes (harmless for monotonic counters) and never blocks or slows the I/O path.
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace duplex::volume {

enum class IoOp : std::uint8_t { read, write, flush, trim, write_zeroes };
inline constexpr std::size_t kIoOps = 5;
std::string_view to_string(IoOp op);

// Latency histograms exist for these operations only (trim and write_zeroes are metadata work
// whose latency says little); index into VolumeStats' histograms, or nullopt.
std::optional<std::size_t> latency_index(IoOp op);
inline constexpr std::array<IoOp, 3> kTimedOps = {IoOp::read, IoOp::write, IoOp::flush};

// Upper bounds of the latency buckets, 50 µs to 10 s (Prometheus `le`); one more bucket counts
// what is slower than the last bound (+Inf).
inline constexpr std::array<std::uint64_t, 17> kLatencyBoundsNs = {
    50'000,      100'000,       250'000,       500'000,       1'000'000,     2'500'000,
    5'000'000,   10'000'000,    25'000'000,    50'000'000,    100'000'000,   250'000'000,
    500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};
inline constexpr std::size_t kLatencyBuckets = kLatencyBoundsNs.size() + 1;

struct HistogramSnapshot {
  std::array<std::uint64_t, kLatencyBuckets> buckets{};  // per bucket, not cumulative
  std::uint64_t count = 0;
  std::uint64_t sum_ns = 0;
};

struct OpSnapshot {
  std::uint64_t ops = 0;
  std::uint64_t bytes = 0;
  std::uint64_t errors = 0;
};

struct VolumeStatsSnapshot {
  std::array<OpSnapshot, kIoOps> ops{};
  std::array<HistogramSnapshot, kTimedOps.size()> latency{};
  const OpSnapshot& op(IoOp o) const { return ops[static_cast<std::size_t>(o)]; }
};

class LatencyHistogram {
 public:
  void record(std::uint64_t ns) noexcept;
  HistogramSnapshot snapshot() const noexcept;

 private:
  std::array<std::atomic<std::uint64_t>, kLatencyBuckets> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_ns_{0};
};

class VolumeStats {
 public:
  // One completed operation: `bytes` moved (reads and writes; 0 for the others), whether it
  // succeeded, and how long it took.
  void record(IoOp op, std::uint64_t bytes, bool ok, std::chrono::nanoseconds elapsed) noexcept;
  VolumeStatsSnapshot snapshot() const noexcept;

 private:
  struct Counters {
    std::atomic<std::uint64_t> ops{0};
    std::atomic<std::uint64_t> bytes{0};
    std::atomic<std::uint64_t> errors{0};
  };
  std::array<Counters, kIoOps> ops_{};
  std::array<LatencyHistogram, kTimedOps.size()> latency_{};
};

}  // namespace duplex::volume
